"""Chapter 3's suite: every roadmap step and ConvNeXt variant, and a depthwise 7x7 against a
dense 3x3 convolution over widths (time against MACs and memory traffic)."""

from __future__ import annotations

from typing import Any, Dict, List, Sequence

import torch
import torch.nn as nn

from hirilib.analytic import conv_cost
from hirilib.measure import count_flops, count_params, measure_latency
from hirilib.models.convnext import VARIANTS
from hirilib.models.convnext_roadmap import KERNEL_SWEEP, ROADMAP
from hirilib.registry import create_model

from . import main_variants, suite

main_variants("convnext", "convnext_tiny")


def make_conv(kind: str, channels: int) -> nn.Conv2d:
    """The conv that ``conv_cost`` describes."""
    if kind == "dw7x7":
        return nn.Conv2d(channels, channels, 7, padding=3, groups=channels)
    if kind == "dense3x3":
        return nn.Conv2d(channels, channels, 3, padding=1)
    raise ValueError(f"kind must be 'dw7x7' or 'dense3x3', got {kind!r}")


def time_model(name: str, device: str | torch.device = "cpu", batch: int = 1, warmup: int = 1,
               runs: int = 3, **kwargs) -> Dict[str, Any]:
    """Build a registered model, count its parameters and FLOPs (at 224, on the CPU) and
    time it on ``device``: one record of the chapter's timing suite."""
    model = create_model(name, **kwargs)
    record = {"kind": "roadmap" if name.startswith("convnext_roadmap") else "variant",
              "name": name, "params": count_params(model), "gflops": count_flops(model) / 1e9}
    record.update(measure_latency(model, (batch, 3, 224, 224), device=device, warmup=warmup, runs=runs))
    model.to("cpu")
    return record


def time_convs(device: str | torch.device = "cpu", batch: int = 1, size: int = 56,
               channels: Sequence[int] = (64, 128, 256, 512), warmup: int = 1,
               runs: int = 3, progress: bool = False) -> List[Dict[str, Any]]:
    """Time a depthwise 7x7 and a dense 3x3 conv on ``(batch, C, size, size)`` maps,
    with their MACs and minimum memory traffic (``conv_cost``); ``progress`` shows a
    progress bar."""
    from tqdm.auto import tqdm

    records = []
    pairs = [(kind, c) for kind in ("dw7x7", "dense3x3") for c in channels]
    for kind, c in tqdm(pairs, desc="convolutions timed", disable=not progress):
        cost = conv_cost(kind, c, size, batch)
        res = measure_latency(make_conv(kind, c), (batch, c, size, size), device=device,
                              warmup=warmup, runs=runs)
        records.append({"kind": "conv", "name": kind, "channels": c, "size": size,
                        "gflops": cost["macs"] / 1e9, "gbytes": cost["bytes"] / 1e9, **res})
    return records


@suite("convnext")
def bench_convnext(device: str | torch.device = "cuda", quick: bool = False) -> List[Dict[str, Any]]:
    """The chapter's timing suite: every roadmap step (step 1 is step 0's network and is
    left out), the five variants, and a depthwise 7x7 vs a dense 3x3 conv over widths.

    Records carry ``kind`` ("roadmap" / "variant" / "conv"), the name, params, GFLOPs
    (MACs) and ``measure_latency``'s fields (fp32, NCHW).  ``quick`` shrinks batch,
    runs and sizes so that a CPU finishes in about a minute.
    """
    batch, warmup, runs = (1, 1, 3) if quick else (64, 10, 30)
    names = [s.name for s in ROADMAP + KERNEL_SWEEP
             if s.name != "convnext_roadmap_01_enhanced_recipe"]
    names += [] if quick else list(VARIANTS)
    records = [time_model(n, device, batch, warmup, runs) for n in names]
    channels = (64, 128, 256) if quick else (64, 96, 128, 192, 256, 384, 512, 768)
    return records + time_convs(device, batch, 28 if quick else 56, channels, warmup, runs)
