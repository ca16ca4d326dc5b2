"""Chapter 2's suite: PVTv2-B2 with SRA, linear SRA and full attention, latency against
the input resolution."""

from __future__ import annotations

import os
from typing import Any, Dict, List, Mapping, Sequence, Tuple

import torch
import torch.nn as nn

from hirilib.measure import measure_latency
from hirilib.registry import create_model

from . import main_variants, suite

main_variants("pvt_v2", "pvt_v2_b0", "pvt_v2_b2")

#: The three attention flavours chapter 2 compares, as (model name, overrides).
ATTENTION_COMPARISON: Dict[str, Tuple[str, Dict[str, Any]]] = {
    "B2 (SRA)": ("pvt_v2_b2", {}),
    "B2-Li (linear SRA)": ("pvt_v2_b2_li", {}),
    "B2, full attention": ("pvt_v2_b2", {"sr_ratios": (1, 1, 1, 1)}),
}


def latency_vs_resolution(models: Mapping[str, Tuple[str, Dict[str, Any]]] | Sequence[str],
                          resolutions: Sequence[int], device: str | torch.device = "cpu",
                          batch_size: int = 1, dtype: str = "fp32", warmup: int = 5,
                          runs: int = 20, channels_last: bool = False, compile: bool = False,
                          use_sdpa: bool = True, progress: bool = False
                          ) -> List[Dict[str, Any]]:
    """Median forward latency of each model at each square resolution.

    ``models`` maps a label to ``(registered name, overrides)`` (see
    ``ATTENTION_COMPARISON``), or is a list of registered names.  One record
    per (model, resolution), with ``hirilib.measure.measure_latency``'s fields
    (median, spread, settings, device).  A run that exhausts GPU memory, or whose
    explicit attention matrices would need more than 80% of the device's memory
    (then it is not attempted), gives a record with ``"oom": True`` instead.
    ``progress`` shows a progress bar (tqdm) over the (model, resolution) pairs.
    """
    from tqdm.auto import tqdm

    if not isinstance(models, Mapping):
        models = {n: (n, {}) for n in models}
    device = torch.device(device)
    budget = 0.8 * _memory_bytes(device)
    records = []
    bar = tqdm(total=len(models) * len(resolutions), desc="forward passes timed",
               disable=not progress)
    for label, (name, overrides) in models.items():
        model = create_model(name, **{**overrides, "use_sdpa": use_sdpa})
        for res in resolutions:
            bar.set_postfix_str(f"{label} at {res} px")
            bar.update()
            rec: Dict[str, Any] = {"label": label, "model": name,
                                   "overrides": {k: list(v) if isinstance(v, tuple) else v
                                                 for k, v in overrides.items()},
                                   "resolution": res, "use_sdpa": use_sdpa}
            need = 0 if use_sdpa else _attention_bytes(model, res, batch_size)
            if need > budget:  # would not fit: say so rather than crash the machine
                rec.update(oom=True, estimated_bytes=need, batch_size=batch_size, dtype=dtype)
                records.append(rec)
                continue
            try:
                rec.update(measure_latency(model, (batch_size, 3, res, res), device=device,
                                           dtype=dtype, channels_last=channels_last,
                                           compile=compile, warmup=warmup, runs=runs))
            except torch.cuda.OutOfMemoryError:
                rec.update(oom=True, batch_size=batch_size, dtype=dtype)
            finally:
                if device.type == "cuda":
                    torch.cuda.empty_cache()
            records.append(rec)
        del model
    bar.close()
    return records


def _memory_bytes(device: torch.device) -> int:
    """Memory of the device: the GPU's, or the machine's RAM for the CPU."""
    if device.type == "cuda":
        return torch.cuda.get_device_properties(device).total_memory
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")


def _attention_bytes(model: nn.Module, res: int, batch: int) -> int:
    """fp32 bytes of the largest explicit attention matrices (scores, softmax and a
    temporary, each B x heads x N x M) at a res x res input."""
    worst = 0
    for stage, (h, w) in zip(model.stages, model.stage_sizes(res, res)):
        a = stage.blocks[0].attn
        worst = max(worst, batch * a.num_heads * h * w * a.kv_tokens(h, w) * 4)
    return 3 * worst


@suite("pvt_v2")
def bench_pvt_v2(device: str | torch.device = "cpu", quick: bool = False,
                 progress: bool = False) -> List[Dict[str, Any]]:
    """The chapter-2 latency suite: B2 (SRA), B2-Li and B2 with full attention,
    batch 1, fp32, with the explicit softmax(QK^T)V of the official code (whose memory
    grows with N^2: the chapter shows where full attention runs out), at input
    resolutions 224 ... 1024 (quick: 96, 128, 160 with few runs, so that a CPU finishes
    in seconds).  The models' default, the fused kernel, is what
    ``latency_vs_resolution(..., use_sdpa=True)`` measures."""
    if quick:
        return latency_vs_resolution(ATTENTION_COMPARISON, (96, 128, 160), device,
                                     warmup=1, runs=3, use_sdpa=False, progress=progress)
    return latency_vs_resolution(ATTENTION_COMPARISON,
                                 (224, 320, 448, 512, 640, 768, 896, 1024), device,
                                 warmup=10, runs=30, use_sdpa=False, progress=progress)
