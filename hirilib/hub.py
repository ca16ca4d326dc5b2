"""Pretrained weights: read a checkpoint file, fetch one from the Hugging Face Hub,
load it into one of our models.

Each model file keeps only what is its own (the Hub repository of each variant,
given to ``register_model``, and ``convert_state_dict``, which maps published
keys onto ours); ``hirilib.create_model(name, pretrained=True)`` or
``checkpoint=path`` does the rest through the functions here, so every model
fails the same clear way:

* a file that is missing, empty, truncated, not a checkpoint, holds something
  other than tensors, or whose keys or shapes do not fit the model raises one
  ``CheckpointError`` naming the file and the reason.  Files are read with
  ``torch.load(weights_only=True)``, which never runs code from the file; we
  never suggest turning that off.  ``.safetensors`` files (preferred where a
  source has them) are read by a small reader here, with no extra package.
* offline, ``PretrainedWeightsUnavailable`` names the repository, the file to
  fetch and how to pass it with ``checkpoint=``.
"""

from __future__ import annotations

import json
import os
import pickle
import struct
import warnings
import zipfile
from pathlib import Path
from typing import Dict, Mapping, Optional

import torch
import torch.nn as nn


class CheckpointError(ValueError):
    """A checkpoint file that cannot be read, or whose weights do not fit the model."""


class PretrainedWeightsUnavailable(OSError):
    """The Hugging Face Hub could not be reached, or the download failed."""


_SAFETENSORS_DTYPES = {
    "F64": torch.float64, "F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16,
    "I64": torch.int64, "I32": torch.int32, "I16": torch.int16, "I8": torch.int8,
    "U8": torch.uint8, "BOOL": torch.bool,
}


def _read_safetensors(path: Path) -> Dict[str, torch.Tensor]:
    """The safetensors format: an 8-byte little-endian header length, a JSON header
    ``{name: {dtype, shape, data_offsets}}``, then the raw little-endian bytes."""
    data = path.read_bytes()
    if len(data) < 8:
        raise CheckpointError(f"{path} is not a valid .safetensors file (only {len(data)} bytes)")
    (n,) = struct.unpack("<Q", data[:8])
    if n > len(data) - 8:
        raise CheckpointError(f"{path} is truncated: its header says {n} bytes of header, "
                              f"the file has {len(data) - 8} after the length")
    try:
        header = json.loads(data[8:8 + n])
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise CheckpointError(f"{path} is not a valid .safetensors file (bad header: {e})") from None
    body = memoryview(data)[8 + n:]
    out = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        try:
            dtype = _SAFETENSORS_DTYPES[info["dtype"]]
            start, end = info["data_offsets"]
            shape = info["shape"]
        except (KeyError, TypeError, ValueError):
            raise CheckpointError(f"{path}: tensor {name!r} has a malformed header entry") from None
        if end > len(body):
            raise CheckpointError(f"{path} is truncated: tensor {name!r} ends at byte {end}, "
                                  f"the data has {len(body)}")
        t = torch.frombuffer(bytearray(body[start:end]), dtype=dtype) if end > start else \
            torch.empty(0, dtype=dtype)
        out[name] = t.reshape(shape)
    return out


def _unwrap(obj, path: Path) -> Dict[str, torch.Tensor]:
    """The state dict inside what a checkpoint file holds (training scripts wrap it
    in ``{"model": ...}`` or ``{"state_dict": ...}``)."""
    for _ in range(3):
        if isinstance(obj, Mapping) and not any(isinstance(v, torch.Tensor) for v in obj.values()):
            inner = next((obj[k] for k in ("state_dict", "model", "model_ema", "module")
                          if isinstance(obj.get(k), Mapping)), None)
            if inner is None:
                break
            obj = inner
    if not isinstance(obj, Mapping):
        raise CheckpointError(f"{path} holds a {type(obj).__name__}, not a state dict "
                              f"(a mapping from parameter names to tensors)")
    tensors = {k: v for k, v in obj.items() if isinstance(v, torch.Tensor)}
    if not tensors:
        raise CheckpointError(f"{path} holds no tensors (keys: {list(obj)[:5]})")
    return {(k[len("module."):] if k.startswith("module.") else k): v for k, v in tensors.items()}


def read_checkpoint(path: str | os.PathLike) -> Dict[str, torch.Tensor]:
    """The tensors of a ``.safetensors``, ``.bin`` or ``.pth`` file, read on the CPU
    (a ``module.`` prefix and a ``{"model": ...}`` wrapper are removed).

    Any problem raises ``CheckpointError`` naming the file and the reason.
    """
    path = Path(path).expanduser()
    if not path.exists():
        raise CheckpointError(f"no checkpoint file at {path}")
    if not path.is_file():
        raise CheckpointError(f"{path} is a directory, not a checkpoint file")
    if path.stat().st_size == 0:
        raise CheckpointError(f"{path} is empty (0 bytes): the download or copy did not finish")
    if path.suffix == ".safetensors":
        return _unwrap(_read_safetensors(path), path)
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        if "Unsupported global" in str(e):
            raise CheckpointError(
                f"{path} contains Python objects other than tensors, which hirilib does not "
                f"load (it reads checkpoints with weights_only=True, so no code from a file is "
                f"ever run). Save the model's state_dict() alone, or use a .safetensors "
                f"file") from None
        detail = str(e).split("WeightsUnpickler error:")[-1].strip().splitlines()[0]
        raise CheckpointError(f"{path} is not a PyTorch checkpoint (unpickling failed: "
                              f"{detail})") from None
    except (EOFError, zipfile.BadZipFile) as e:
        raise CheckpointError(f"{path} is truncated or damaged ({type(e).__name__}): "
                              f"download or copy it again") from None
    except RuntimeError as e:
        msg = str(e).splitlines()[0]
        if "zip" in msg.lower() or "archive" in msg.lower() or "file" in msg.lower():
            raise CheckpointError(f"{path} is truncated or damaged ({msg}): download or copy "
                                  f"it again") from None
        raise CheckpointError(f"{path} could not be read as a checkpoint ({msg})") from None
    except Exception as e:  # anything else torch.load raises on garbage
        raise CheckpointError(f"{path} is not a PyTorch checkpoint ({type(e).__name__}: "
                              f"{str(e).splitlines()[0] if str(e) else ''})") from None
    return _unwrap(obj, path)


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


def hub_offline() -> bool:
    """Whether ``HF_HUB_OFFLINE`` asks for no network access."""
    return os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in ("1", "true", "yes", "on")


def download_weights(repo: str, revision: Optional[str] = None,
                     cache_dir: Optional[str] = None) -> Path:
    """The weights file of Hub repository ``repo`` (e.g. ``timm/pvt_v2_b0.in1k``),
    ``model.safetensors`` where the repository has one, else ``pytorch_model.bin``.

    The local Hub cache is tried first, with no network access.  Otherwise, if
    the Hub cannot be reached, ``PretrainedWeightsUnavailable`` is raised at once
    (not after the client's retries), saying which file to fetch and how to
    pass it with ``checkpoint=``.
    """
    how = (f"On a machine with internet access, download "
           f"https://huggingface.co/{repo}/resolve/main/model.safetensors and pass the file: "
           f"hirilib.create_model(name, checkpoint='model.safetensors').")
    try:
        with warnings.catch_warnings():  # e.g. tqdm's "IProgress not found" in a notebook
            warnings.simplefilter("ignore")
            from huggingface_hub import hf_hub_download
    except ImportError as e:
        raise PretrainedWeightsUnavailable(
            f"huggingface_hub is not installed, so {repo} cannot be fetched "
            f"(pip install huggingface_hub). {how}") from e
    files = ["model.safetensors", "pytorch_model.bin"]
    kw = dict(repo_id=repo, revision=revision, cache_dir=cache_dir)
    for filename in files:  # the local cache first: no network needed
        try:
            return Path(hf_hub_download(filename=filename, local_files_only=True, **kw))
        except Exception:
            pass
    if hub_offline() or not hub_reachable():
        why = "HF_HUB_OFFLINE is set" if hub_offline() else "no connection to huggingface.co"
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
    model keeps its own; any other missing, unexpected or misshapen key raises
    ``CheckpointError`` naming ``source``.
    """
    own = model.state_dict()
    sd = dict(state_dict)
    skipped = [k for k in sd if k.startswith(head_prefix)
               and (k not in own or own[k].shape != sd[k].shape)]
    skipped_shapes = {k: tuple(sd.pop(k).shape) for k in skipped}
    missing = [k for k in own if k not in sd and not (skipped and k.startswith(head_prefix))
               and not k.endswith("num_batches_tracked")]  # a counter, not a weight
    unexpected = [k for k in sd if k not in own]
    shapes = [f"{k} {tuple(sd[k].shape)} vs {tuple(own[k].shape)}"
              for k in sd if k in own and own[k].shape != sd[k].shape]
    if missing or unexpected or shapes:
        parts = []
        if missing:
            parts.append(f"{len(missing)} missing (e.g. {missing[:3]})")
        if unexpected:
            parts.append(f"{len(unexpected)} unexpected (e.g. {unexpected[:3]})")
        if shapes:
            parts.append(f"{len(shapes)} of another shape (e.g. {shapes[:2]})")
        raise CheckpointError(f"{source} does not fit this {type(model).__name__}: "
                              f"{'; '.join(parts)}. Is it the weights of another variant?")
    if skipped:  # warned only once everything else is known to fit
        warnings.warn(f"the classifier in {source} "
                      f"({', '.join(f'{k} {v}' for k, v in skipped_shapes.items())}) "
                      f"does not fit the model's; loading everything else")
    model.load_state_dict(sd, strict=False)
    return model


def verify_torch_zip(path: str | os.PathLike) -> Path:
    """Check a ``torch.save`` file's integrity before it is loaded: such a file is a
    zip archive whose members carry CRC-32 checksums, which ``torch.load`` does not
    verify (a flipped byte inside a tensor would load silently).  Returns the path;
    raises ``CheckpointError`` naming the file and the first damaged member."""
    path = Path(path)
    try:
        with zipfile.ZipFile(path) as z:
            bad = z.testzip()
    except (zipfile.BadZipFile, OSError, EOFError, ValueError) as e:
        raise CheckpointError(
            f"{path} is not an intact torch file (not a readable zip archive: {e})"
        ) from None
    except Exception as e:  # zlib errors of a damaged compressed member
        raise CheckpointError(f"{path} is damaged ({type(e).__name__}: {e})") from None
    if bad is not None:
        raise CheckpointError(
            f"{path} is damaged: member {bad!r} fails its CRC check (the file was "
            "changed or cut after it was written); use another copy"
        )
    return path
