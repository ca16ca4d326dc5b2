"""Pretrained weights: read a checkpoint, fetch one from the Hugging Face Hub,
load it into one of our models.

Each model file keeps only what is its own (the Hub repository of each
variant and ``convert_state_dict``, which maps published keys onto ours);
the rest is here, so that every model fails the same clear way offline:
``PretrainedWeightsUnavailable`` names the repository, the file to fetch and
how to pass it with ``path=``.
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path
from typing import Mapping, Optional

import torch
import torch.nn as nn


class PretrainedWeightsUnavailable(OSError):
    """The Hugging Face Hub could not be reached, or the download failed."""


def read_checkpoint(path: str | os.PathLike) -> Mapping[str, torch.Tensor]:
    """The tensors of a ``.safetensors``, ``.bin`` or ``.pth`` file (read on the CPU)."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise FileNotFoundError(f"no checkpoint file at {path}")
    if path.suffix == ".safetensors":
        try:
            from safetensors.torch import load_file
        except ImportError as e:
            raise ImportError("reading a .safetensors file needs the safetensors package "
                              "(pip install safetensors); or pass the pytorch_model.bin "
                              "file of the same repository") from e
        return load_file(str(path))
    return torch.load(path, map_location="cpu", weights_only=True)


def hub_reachable(timeout: float = 3.0) -> bool:
    """Whether a TCP connection to the Hub opens within ``timeout`` seconds
    (assumed True behind a proxy, which a direct probe cannot judge)."""
    import socket
    from urllib.parse import urlparse

    if any(os.environ.get(v) for v in ("HTTPS_PROXY", "https_proxy", "HTTP_PROXY", "http_proxy",
                                       "ALL_PROXY", "all_proxy")):
        return True
    url = urlparse(os.environ.get("HF_ENDPOINT", "https://huggingface.co"))
    port = url.port or (443 if url.scheme == "https" else 80)
    try:
        socket.create_connection((url.hostname, port), timeout=timeout).close()
        return True
    except OSError:
        return False


def download_weights(repo: str, revision: Optional[str] = None,
                     cache_dir: Optional[str] = None) -> Path:
    """The weights file of Hub repository ``repo`` (e.g. ``timm/pvt_v2_b0.in1k``).

    The local Hub cache is tried first, with no network access.  Otherwise, if
    the Hub cannot be reached, ``PretrainedWeightsUnavailable`` is raised at once
    (not after the client's retries), saying which file to fetch and how to
    pass it with ``path=``.
    """
    how = (f"On a machine with internet access, download "
           f"https://huggingface.co/{repo}/resolve/main/pytorch_model.bin and pass the file: "
           f"load_pretrained(model, path='pytorch_model.bin').")
    try:
        with warnings.catch_warnings():  # e.g. tqdm's "IProgress not found" in a notebook
            warnings.simplefilter("ignore")
            from huggingface_hub import hf_hub_download
    except ImportError as e:
        raise PretrainedWeightsUnavailable(
            f"huggingface_hub is not installed, so {repo} cannot be fetched "
            f"(pip install huggingface_hub). {how}") from e
    try:
        import safetensors  # noqa: F401
        files = ["model.safetensors", "pytorch_model.bin"]
    except ImportError:
        files = ["pytorch_model.bin"]
    kw = dict(repo_id=repo, revision=revision, cache_dir=cache_dir)
    for filename in files:  # the local cache first: no network needed
        try:
            return Path(hf_hub_download(filename=filename, local_files_only=True, **kw))
        except Exception:
            pass
    offline = os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in ("1", "true", "yes", "on")
    if offline or not hub_reachable():
        why = "HF_HUB_OFFLINE is set" if offline else "no connection to huggingface.co"
        raise PretrainedWeightsUnavailable(
            f"could not download {repo}: the Hugging Face Hub is unreachable from this "
            f"machine ({why}) and the weights are not in the local cache. {how}")
    last: Optional[BaseException] = None
    for filename in files:
        try:
            return Path(hf_hub_download(filename=filename, **kw))
        except Exception as e:  # connection, proxy, missing file: try the next, then explain
            last = e
    raise PretrainedWeightsUnavailable(
        f"could not download {repo}: the Hugging Face Hub is unreachable from this machine "
        f"or the download failed ({type(last).__name__}: {last}). {how}") from last


def load_weights(model: nn.Module, state_dict: Mapping[str, torch.Tensor],
                 head_prefix: str = "head.", source: str = "the checkpoint") -> nn.Module:
    """Load a state dict already in our keys into ``model``; returns the model.

    A classifier (keys under ``head_prefix``) whose shape differs from the
    model's (another number of classes) is skipped with a warning and the
    model keeps its own; any other missing or unexpected key is an error.
    """
    own = model.state_dict()
    sd = dict(state_dict)
    skipped = [k for k in sd if k.startswith(head_prefix)
               and (k not in own or own[k].shape != sd[k].shape)]
    if skipped:
        warnings.warn(f"the classifier in {source} ({', '.join(f'{k} {tuple(sd[k].shape)}' for k in skipped)}) "
                      f"does not fit the model's; loading everything else")
        for k in skipped:
            del sd[k]
    missing, unexpected = model.load_state_dict(sd, strict=False)
    missing = [k for k in missing if not (skipped and k.startswith(head_prefix))]
    if missing or unexpected:
        raise ValueError(f"{source} does not fit this model: missing {missing[:5]}, "
                         f"unexpected {unexpected[:5]}")
    return model
