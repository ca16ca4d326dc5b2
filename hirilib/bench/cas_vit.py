"""Chapter 5's suite: CAS-ViT as it is deployed (PyTorch eager, BN folded, ONNX
Runtime), and one CATM layer against attention as the map grows."""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any, Dict, List, Sequence

import torch
import torch.nn as nn

from hirilib import deploy
from hirilib.layers import MultiHeadAttention
from hirilib.measure import count_params, measure_latency
from hirilib.models.cas_vit import VARIANTS, ConvolutionalAdditiveTokenMixer
from hirilib.registry import create_model

from . import main_variants, suite

main_variants("cas_vit", "cas_vit_xs", "cas_vit_m")

BACKENDS = ("eager", "fused", "onnxruntime")


def time_backends(name: str, device: str | torch.device = "cpu", batch: int = 1,
                  resolution: int = 224, warmup: int = 2, runs: int = 10,
                  backends: Sequence[str] = BACKENDS,
                  **overrides) -> List[Dict[str, Any]]:
    """Time a registered model's forward pass (random weights, eval mode) as PyTorch
    runs it ("eager"), with every BatchNorm folded (``deploy.fuse_bn``, "fused"), and
    as ONNX Runtime runs the exported fused graph on the CPU ("onnxruntime"; skipped on
    a GPU or when ``onnxruntime`` is missing).  One record per backend, with
    ``measure_latency``'s fields and ``max_abs_diff``, the largest difference from the
    eager logits (on one input).  ``overrides`` go to ``create_model``."""
    device = torch.device(device)
    model = create_model(name, **overrides).eval()
    size = (batch, 3, resolution, resolution)
    x = torch.randn(*size)
    with torch.no_grad():
        want = model(x)
    fused = deploy.fuse_bn(model)
    runners: Dict[str, nn.Module] = {"eager": model, "fused": fused}
    tmp = None
    if "onnxruntime" in backends and device.type == "cpu" and deploy.onnx_available():
        tmp = tempfile.TemporaryDirectory()
        path = deploy.export_onnx(fused, Path(tmp.name) / f"{name}.onnx", size)
        runners["onnxruntime"] = deploy.OnnxRuntimeModel(deploy.onnx_session(path))
    records = []
    try:
        for backend in backends:
            if backend not in runners:
                continue
            run = runners[backend]
            with torch.no_grad():
                got = run.to("cpu")(x)
            rec = {"kind": "model", "name": name, "backend": backend,
                   "params": count_params(run), "resolution": resolution,
                   "max_abs_diff": (got - want).abs().max().item(),
                   "batchnorms": deploy.count_batchnorms(run)}
            rec.update(measure_latency(run, size, device=device, warmup=warmup,
                                       runs=runs))
            run.to("cpu")
            records.append(rec)
    finally:
        if tmp is not None:
            tmp.cleanup()
    return records


class _TokensMixer(nn.Module):
    """Attention on a map: ``(B, C, H, W)`` -> tokens -> ``MultiHeadAttention`` -> map,
    so that every layer of the comparison takes the same input."""

    def __init__(self, dim: int, heads: int, **kwargs):
        super().__init__()
        self.attn = MultiHeadAttention(dim, heads, **kwargs)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, C, H, W = x.shape
        t = self.attn(x.flatten(2).transpose(1, 2), H, W)     # (B, N, C)
        return t.transpose(1, 2).reshape(B, C, H, W)


def make_mixer(kind: str, dim: int = 64, heads: int = 1) -> nn.Module:
    """One token mixer on ``(B, dim, H, W)`` maps: ``"catm"``, ``"mha"`` (full
    attention, fused SDPA) or ``"linear_sra"`` (PVTv2-Li's, 7x7 pooled keys)."""
    if kind == "catm":
        return ConvolutionalAdditiveTokenMixer(dim)
    if kind == "mha":
        return _TokensMixer(dim, heads)
    if kind == "linear_sra":
        return _TokensMixer(dim, heads, linear=True)
    raise ValueError(f"kind must be 'catm', 'mha' or 'linear_sra', got {kind!r}")


def time_mixers(device: str | torch.device = "cpu", dim: int = 64,
                sides: Sequence[int] = (14, 28, 56), batch: int = 1, warmup: int = 2,
                runs: int = 10) -> List[Dict[str, Any]]:
    """Time CATM, full attention and linear SRA on ``(batch, dim, s, s)`` maps for each
    side s (a first stage of C = 64 at input 4 s)."""
    records = []
    for kind in ("catm", "linear_sra", "mha"):
        layer = make_mixer(kind, dim).eval()
        for s in sides:
            rec = {"kind": "mixer", "name": kind, "dim": dim, "side": s}
            rec.update(measure_latency(layer, (batch, dim, s, s), device=device,
                                       warmup=warmup, runs=runs))
            records.append(rec)
    return records


@suite("cas_vit")
def bench_cas_vit(device: str | torch.device = "cuda",
                  quick: bool = False) -> List[Dict[str, Any]]:
    """The chapter's timing suite: XS and M (all four variants in full mode) in PyTorch
    eager, BN-fused and, on a CPU, ONNX Runtime, at 224 (batch 1: latency); and CATM
    against full attention and linear SRA on first-stage maps of growing size.

    Records carry ``kind`` ("model" / "mixer") and ``measure_latency``'s fields (fp32,
    NCHW, no ``torch.compile``).  ``quick`` shrinks runs and sizes for a CPU.
    """
    warmup, runs = (2, 10) if quick else (10, 50)
    names = ["cas_vit_xs", "cas_vit_m"] if quick else list(VARIANTS)
    records = []
    for name in names:
        records += time_backends(name, device, 1, 224, warmup, runs)
    sides = (14, 28, 56) if quick else (14, 28, 56, 80, 112, 160)
    return records + time_mixers(device, 64, sides, 1, warmup, runs)
