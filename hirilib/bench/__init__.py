"""Benchmark suites: the measurements behind the book's timing figures.

``python -m hirilib bench SUITE`` runs a suite on the best device present and writes
``hirilib/results/SUITE.json`` (records + device + versions + date + command, see
``hirilib.measure.results``).  Chapters call the same functions: on a GPU they
measure afresh, on a CPU they measure a quick version and plot the GPU file.

A suite is a function ``(device, quick) -> list of records``, registered with
``@suite(name)`` in this package's file for its family:

    attention   chapter 1: one attention / FFN layer against the map size
    pvt_v2      chapter 2: PVTv2-B2 with SRA, linear SRA and full attention
    convnext    chapter 3: the roadmap steps, the variants, depthwise vs dense convs
    hire_mlp    chapter 4: the Hire-MLP variants against the input size
    cas_vit     chapter 5: eager vs BN-fused vs ONNX Runtime; CATM vs attention by size
    hiri_vit    chapter 6: GFLOPs, latency and memory against the input resolution;
                BN vs LN in the CFFN, and BN folded
    train       chapter 8: the data side and the training step, images/s and data wait
    models      chapter 7: every family's main variants over resolutions and settings
    vs-timm     chapter 7: our models against timm's, interleaved, as ratios
"""

from __future__ import annotations

from typing import Callable, Dict, List

import torch

SUITES: Dict[str, Callable[..., List[dict]]] = {}

#: The variants of each family that the cross-family suites ("models", "vs-timm")
#: measure; each family's file names its own with ``main_variants``.
MAIN_VARIANTS: Dict[str, List[str]] = {}


def main_variants(family: str, *names: str) -> None:
    """Declare the variants of ``family`` that stand for it in the cross-family suites
    (smallest first: quick mode measures only the first)."""
    MAIN_VARIANTS[family] = list(names)


def suite(name: str):
    """Register a benchmark suite under ``name``."""
    def deco(fn):
        if name in SUITES and SUITES[name] is not fn:
            raise ValueError(f"a suite named {name!r} is already registered")
        SUITES[name] = fn
        return fn
    return deco


def run_suite(name: str, device: str | torch.device | None = None, quick: bool | None = None,
              **options):
    """Run suite ``name`` (with its own ``options``, e.g. ``families=``); returns
    (records, settings)."""
    from hirilib.runtime import get_device, quick_mode

    if name not in SUITES:
        raise ValueError(f"unknown suite {name!r}; choose one of {', '.join(sorted(SUITES))}")
    device = torch.device(device) if device is not None else get_device()
    quick = quick_mode() if quick is None else quick
    records = SUITES[name](device=device, quick=quick, **options)
    return records, {"suite": name, "quick": quick, "device_type": device.type, **options}


# The suites, one file per family (importing them registers them).
from . import attention, cas_vit, convnext, hire_mlp, hiri_vit, pvt_v2, train  # noqa: E402,F401
from . import models, vs_timm  # noqa: E402,F401  (across families: import them last)
