"""Weights: every broken checkpoint gives one clear ``CheckpointError`` naming the file and
the reason, safetensors files are read without extra packages, and ``pretrained=True``
fetches the weights of the variant asked for, for every family, through one code path."""

from __future__ import annotations

import collections
import json
import struct

import pytest
import torch

import hirilib
import hirilib.hub as hub
from hirilib import registry
from hirilib.hub import CheckpointError, PretrainedWeightsUnavailable


def _small():
    return hirilib.create_model("pvt_v2_b0", depths=(1, 1, 1, 1)).eval()


def _save_safetensors(tensors, path):
    """Written by hand from the format's description, independently of the reader."""
    header, offset, blobs = {}, 0, []
    names = {torch.float32: "F32", torch.int64: "I64"}
    for k, t in tensors.items():
        b = t.contiguous().numpy().tobytes()
        header[k] = {"dtype": names[t.dtype], "shape": list(t.shape),
                     "data_offsets": [offset, offset + len(b)]}
        offset += len(b)
        blobs.append(b)
    h = json.dumps(header).encode()
    path.write_bytes(struct.pack("<Q", len(h)) + h + b"".join(blobs))


def test_safetensors_round_trip(tmp_path):
    src = _small()
    path = tmp_path / "model.safetensors"
    _save_safetensors({k: v for k, v in src.state_dict().items()}, path)
    dst = hirilib.create_model("pvt_v2_b0", depths=(1, 1, 1, 1), checkpoint=path)
    assert all(torch.equal(a, b) for a, b in zip(src.state_dict().values(),
                                                 dst.state_dict().values()))


def test_wrapped_and_ddp_checkpoints_load(tmp_path):
    src = _small()
    path = tmp_path / "ckpt.pth"
    torch.save({"model": {f"module.{k}": v for k, v in src.state_dict().items()}, "epoch": 3},
               path)
    dst = hirilib.create_model("pvt_v2_b0", depths=(1, 1, 1, 1), checkpoint=path)
    assert torch.equal(dst.head.weight, src.head.weight)


class NotATensor:  # a pickled global: weights_only loading must refuse it
    pass


@pytest.mark.parametrize("make, reason", [
    (lambda p: None, r"no checkpoint file at"),
    (lambda p: p.write_bytes(b""), r"is empty \(0 bytes\)"),
    (lambda p: p.write_bytes(bytes(range(256)) * 4), r"is not a PyTorch checkpoint|truncated"),
    (lambda p: p.write_text("hello"), r"is not a PyTorch checkpoint|truncated"),
    (lambda p: torch.save({"x": NotATensor()}, p), r"Python objects other than tensors"),
    (lambda p: torch.save([torch.zeros(2)], p), r"holds a list, not a state dict"),
    (lambda p: torch.save({"epoch": 3}, p), r"holds no tensors"),
])
def test_broken_files_name_the_file_and_the_reason(tmp_path, make, reason):
    path = tmp_path / "weights.pth"
    make(path)
    with pytest.raises(CheckpointError, match=reason) as e:
        hirilib.create_model("pvt_v2_b0", checkpoint=path)
    assert str(path) in str(e.value)
    assert "weights_only=False" not in str(e.value)  # never the unsafe advice


def test_truncated_files(tmp_path):
    src = _small()
    good = tmp_path / "good.pth"
    torch.save(src.state_dict(), good)
    data = good.read_bytes()
    cut = tmp_path / "cut.pth"
    cut.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match=r"cut\.pth.*(truncated|not a PyTorch)"):
        hub.read_checkpoint(cut)
    st = tmp_path / "cut.safetensors"
    _save_safetensors(dict(src.state_dict()), st)
    st.write_bytes(st.read_bytes()[:-100])
    with pytest.raises(CheckpointError, match=r"cut\.safetensors is truncated"):
        hub.read_checkpoint(st)


def test_weights_of_another_variant(tmp_path):
    path = tmp_path / "b1.pth"
    with torch.device("meta"):
        b1 = hirilib.create_model("pvt_v2_b1")
    torch.save({k: torch.zeros(v.shape) for k, v in b1.state_dict().items()}, path)
    with pytest.raises(CheckpointError, match=r"b1\.pth does not fit this PyramidVisionTransformerV2.*"
                                              r"another shape.*another variant"):
        hirilib.create_model("pvt_v2_b0", checkpoint=path)
    torch.save({"foo.weight": torch.zeros(2)}, path)
    with pytest.raises(CheckpointError, match=r"missing.*unexpected \(e\.g\. \['foo\.weight'\]\)"):
        hirilib.create_model("pvt_v2_b0", checkpoint=path)


@pytest.mark.parametrize("name", hirilib.list_models(pretrained=True))
def test_pretrained_fetches_that_variants_weights(name, monkeypatch, tmp_path):
    """``pretrained=True`` asks the Hub for the variant's own repository (the issue: a
    ConvNeXt-B once fetched ConvNeXt-T's), converts its keys and loads them."""
    entry = registry.get_entry(name)
    assert name in entry.pretrained and entry.converter is not None
    asked = []

    def fake_download(repo, revision=None, cache_dir=None):
        asked.append(repo)
        raise PretrainedWeightsUnavailable(f"offline test: {repo}")

    monkeypatch.setattr(hub, "download_weights", fake_download)
    with torch.device("meta"), pytest.raises(PretrainedWeightsUnavailable):
        hirilib.create_model(name, pretrained=True)
    assert asked == [entry.pretrained]


@pytest.mark.parametrize("reachable", [True, False])
def test_offline_says_how_to_pass_a_file(monkeypatch, reachable):
    """Offline (the probe fails, or the download does) the error names the Hub repository
    and says how to pass a local file; the local cache is tried first."""
    hf = pytest.importorskip("huggingface_hub")
    calls = []

    def unreachable(*args, **kwargs):
        calls.append(kwargs.get("local_files_only", False))
        raise ConnectionError("Failed to resolve 'huggingface.co'")

    monkeypatch.setattr(hf, "hf_hub_download", unreachable)
    monkeypatch.setattr(hub, "hub_reachable", lambda timeout=3.0: reachable)
    with pytest.raises(PretrainedWeightsUnavailable,
                       match=r"unreachable.*timm/convnext_small\.fb_in1k.*checkpoint="):
        with torch.device("meta"):
            hirilib.create_model("convnext_small", pretrained=True)
    assert calls and calls[0] is True             # the local cache first
    assert any(not c for c in calls) == reachable  # the network only when reachable


def test_classifier_of_another_size_is_skipped_with_a_warning(tmp_path):
    src = _small()
    path = tmp_path / "w.pth"
    torch.save(collections.OrderedDict(src.state_dict()), path)
    with pytest.warns(UserWarning, match="classifier"):
        m = hirilib.create_model("pvt_v2_b0", depths=(1, 1, 1, 1), num_classes=10,
                                 checkpoint=path)
    assert m.head.out_features == 10
    assert torch.equal(m.stages[0].patch_embed.proj.weight, src.stages[0].patch_embed.proj.weight)
