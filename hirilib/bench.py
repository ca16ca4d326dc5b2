"""Benchmark suites: the measurements behind the book's GPU figures.

``python -m hirilib bench SUITE --out book/results/SUITE.json`` runs a suite on
the best device present and writes a results file (records + device +
versions + date + command).  Chapters call the same functions: on a GPU they
measure afresh, on a CPU they measure a quick version and plot the GPU file.
A suite is a function ``(device, quick) -> list of records``.
"""

from __future__ import annotations

from typing import Callable, Dict, List

import torch

from .profile import measure_latency

SUITES: Dict[str, Callable[..., List[dict]]] = {}


def suite(name: str):
    """Register a benchmark suite under ``name``."""
    def deco(fn):
        SUITES[name] = fn
        return fn
    return deco


def attention_grid(quick: bool) -> List[int]:
    """Side lengths H = W of the token grids measured in chapter 1."""
    return [16, 32, 48, 64] if quick else [16, 32, 48, 64, 80, 96, 112, 128]


@suite("attention")
def bench_attention(device: str | torch.device = "cpu", quick: bool = True,
                    dim: int = 64, heads: int = 1, batch: int = 1) -> List[dict]:
    """Latency of one attention layer (full, SRA R=2/4/8, linear SRA) and of one
    FFN layer (Mlp, ConvFFN, CFFN) against the side of the token grid.

    PVTv2-B2's first stage is the setting: C = 64, one head, 4x hidden FFN.
    Full attention uses the fused kernel (``use_sdpa``) so that its memory stays
    linear in the tokens, and every variant is timed the same way.
    """
    from .layers import CFFN, ConvFFN, Mlp, MultiHeadAttention

    variants = {"full attention": dict(sr_ratio=1), "SRA R=2": dict(sr_ratio=2),
                "SRA R=4": dict(sr_ratio=4), "SRA R=8": dict(sr_ratio=8),
                "linear SRA (7x7)": dict(linear=True)}
    ffns = {"Mlp": Mlp, "ConvFFN": ConvFFN, "CFFN": CFFN}
    runs, warmup = (10, 3) if quick else (50, 10)
    records = []
    for side in attention_grid(quick):
        x_shape = (batch, side * side, dim)
        for name, kw in variants.items():
            if side % kw.get("sr_ratio", 1):
                continue
            m = MultiHeadAttention(dim, heads, use_sdpa=True, **kw)
            r = measure_latency(m, x_shape, device=device, warmup=warmup, runs=runs,
                                extra_args=(side, side))
            records.append({"layer": "attention", "variant": name, "side": side, **r})
        for name, cls in ffns.items():
            r = measure_latency(cls(dim, 8 * dim), x_shape, device=device, warmup=warmup,
                                runs=runs, extra_args=(side, side))
            records.append({"layer": "ffn", "variant": name, "side": side, **r})
    return records


def _register_model_suites() -> None:
    """Suites defined beside their models (``bench_<paper>`` functions)."""
    import hirilib.models as models
    import importlib
    import pkgutil

    for m in pkgutil.iter_modules(models.__path__):
        mod = importlib.import_module(f"hirilib.models.{m.name}")
        fn = getattr(mod, f"bench_{m.name}", None)
        if fn is not None:
            SUITES.setdefault(m.name, fn)


def run_suite(name: str, device: str | torch.device | None = None, quick: bool | None = None):
    """Run suite ``name``; returns (records, settings)."""
    from . import quick_mode
    from .runtime import get_device

    _register_model_suites()
    if name not in SUITES:
        raise ValueError(f"unknown suite {name!r}; choose one of {sorted(SUITES)}")
    device = torch.device(device) if device is not None else get_device()
    quick = quick_mode() if quick is None else quick
    records = SUITES[name](device=device, quick=quick)
    return records, {"suite": name, "quick": quick, "device_type": device.type}


def find_results(name: str):
    """The results file ``book/results/<name>.json`` seen from the repository root,
    from ``chapters/`` (where the book executes notebooks) or from the current
    folder; None if it has not been measured yet."""
    from pathlib import Path

    for base in (Path("book/results"), Path("../book/results"), Path(".")):
        p = base / f"{name}.json"
        if p.is_file():
            return p
    return None
