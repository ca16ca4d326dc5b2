"""Benchmark suites: the measurements behind the book's timing figures.

``python -m hirilib bench SUITE`` runs a suite on the best device present and writes
``book/results/SUITE.json`` (records + device + versions + date + command, see
``hirilib.measure.results``).  Chapters call the same functions: on a GPU they
measure afresh, on a CPU they measure a quick version and plot the GPU file.

A suite is a function ``(device, quick) -> list of records``, registered with
``@suite(name)`` in this package's file for its family:

    attention   chapter 1: one attention / FFN layer against the map size
    pvt_v2      chapter 2: PVTv2-B2 with SRA, linear SRA and full attention
    convnext    chapter 3: the roadmap steps, the variants, depthwise vs dense convs
    train       chapter 8: the data side and the training step, images/s and data wait
"""

from __future__ import annotations

from typing import Callable, Dict, List

import torch

SUITES: Dict[str, Callable[..., List[dict]]] = {}


def suite(name: str):
    """Register a benchmark suite under ``name``."""
    def deco(fn):
        if name in SUITES and SUITES[name] is not fn:
            raise ValueError(f"a suite named {name!r} is already registered")
        SUITES[name] = fn
        return fn
    return deco


def run_suite(name: str, device: str | torch.device | None = None, quick: bool | None = None):
    """Run suite ``name``; returns (records, settings)."""
    from hirilib.runtime import get_device, quick_mode

    if name not in SUITES:
        raise ValueError(f"unknown suite {name!r}; choose one of {', '.join(sorted(SUITES))}")
    device = torch.device(device) if device is not None else get_device()
    quick = quick_mode() if quick is None else quick
    records = SUITES[name](device=device, quick=quick)
    return records, {"suite": name, "quick": quick, "device_type": device.type}


# The suites, one file per family (importing them registers them).
from . import attention, convnext, pvt_v2, train  # noqa: E402,F401
