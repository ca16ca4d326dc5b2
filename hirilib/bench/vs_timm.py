"""Chapter 7's check on our own speed: our models against timm's, as ratios.

timm is the reference implementation most readers would otherwise use.  For each model
timm also has (PVTv2-B0, PVTv2-B2, ConvNeXt-T) both are built in the same process with
the same weights (timm's, converted to our keys), fed the same input under the same
settings, and timed in interleaved rounds (ours, timm's, ours, timm's ...), so that
clock boosts, thermal drift and other processes hit both alike.  The result is the ratio
timm's time / our time per round (> 1: ours is faster), reported as a median with its
25th-75th percentile spread.  timm is needed by this suite only.
"""

from __future__ import annotations

import statistics
import time
from typing import Any, Callable, Dict, List

import torch
import torch.nn as nn

from hirilib.measure.timing import device_name
from hirilib.registry import create_model, get_entry

from . import suite

#: Our models that timm also implements (same names in both).
MODELS = ("pvt_v2_b0", "pvt_v2_b2", "convnext_tiny")


def import_timm():
    """timm, or a ``ValueError`` saying how to install it (optional dependency)."""
    try:
        from hirilib.book import import_timm as _import  # stands in for a missing torchvision
    except ImportError:
        _import = None
    try:
        return _import() if _import else __import__("timm")
    except Exception as e:
        raise ValueError(f"the vs-timm suite needs timm, which cannot be imported here "
                         f"({type(e).__name__}: {e}); install it with: pip install timm") from None


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def interleaved_ratio(run_ours: Callable[[], Any], run_theirs: Callable[[], Any],
                      device: str | torch.device = "cpu", rounds: int = 10, runs: int = 5,
                      warmup: int = 3, clock: Callable[[], float] = time.perf_counter
                      ) -> Dict[str, float]:
    """Time two callables in alternating rounds; per round the ratio of their median times
    (theirs / ours).  Returns the median ratio, its 25th and 75th percentiles, and each
    side's overall median in ms.  (``clock`` is the timer, replaceable in tests.)"""
    device = torch.device(device)

    def median_ms(fn) -> float:
        times = []
        for _ in range(runs):
            _sync(device)
            t0 = clock()
            fn()
            _sync(device)
            times.append((clock() - t0) * 1e3)
        return statistics.median(times)

    for _ in range(warmup):
        run_ours()
        run_theirs()
    ours, theirs, ratios = [], [], []
    for i in range(rounds):
        first, second = (run_ours, run_theirs) if i % 2 == 0 else (run_theirs, run_ours)
        a, b = median_ms(first), median_ms(second)
        o, t = (a, b) if i % 2 == 0 else (b, a)
        ours.append(o)
        theirs.append(t)
        ratios.append(t / o)
    q = statistics.quantiles(ratios, n=4) if len(ratios) > 1 else [ratios[0]] * 3
    return {"ratio": statistics.median(ratios), "ratio_p25": q[0], "ratio_p75": q[2],
            "ours_ms": statistics.median(ours), "theirs_ms": statistics.median(theirs),
            "rounds": rounds, "runs": runs}


def compare(ours: nn.Module, theirs: nn.Module, input_size, device: str | torch.device = "cpu",
            dtype: str = "fp32", channels_last: bool = False, **kw) -> Dict[str, Any]:
    """``interleaved_ratio`` of two models' forward passes on the same input and settings."""
    device = torch.device(device)
    dt = {"fp32": None, "fp16": torch.float16, "bf16": torch.bfloat16}[dtype]
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    ours = ours.to(device).eval().to(memory_format=fmt)
    theirs = theirs.to(device).eval().to(memory_format=fmt)
    x = torch.randn(*input_size, device=device).contiguous(memory_format=fmt)

    def runner(m):
        def run():
            with torch.inference_mode(), torch.autocast(device.type, dtype=dt or torch.float32,
                                                        enabled=dt is not None):
                m(x)
        return run

    r = interleaved_ratio(runner(ours), runner(theirs), device, **kw)
    return {**r, "input_size": list(input_size), "dtype": dtype, "channels_last": channels_last,
            "device": device_name(device)}


@suite("vs-timm")
def bench_vs_timm(device: str | torch.device = "cpu", quick: bool = False) -> List[Dict[str, Any]]:
    """Our pvt_v2_b0, pvt_v2_b2 and convnext_tiny against timm's, same weights and settings:
    batch 1 (latency) and a large batch (throughput: 64 on a GPU, 8 on a CPU), fp32 and
    autocast where native, channels_last for ConvNeXt (where it helps)."""
    from tqdm.auto import tqdm

    timm = import_timm()
    device = torch.device(device)
    names = MODELS[:1] if quick else MODELS
    res = 64 if quick else 224
    batches = (1,) if quick else ((1, 8) if device.type == "cpu" else (1, 64))
    dtypes = ["fp32"] if device.type != "cuda" else ["fp32", "fp16"] + (
        ["bf16"] if torch.cuda.is_bf16_supported(including_emulation=False) else [])
    kw = (dict(rounds=3, runs=2, warmup=1) if quick else
          dict(rounds=6, runs=5, warmup=2) if device.type == "cpu" else
          dict(rounds=10, runs=10, warmup=10))
    records = []
    for name in tqdm(names, desc="vs-timm", leave=False):
        theirs = timm.create_model(name, pretrained=False)
        ours = create_model(name)
        ours.load_state_dict(get_entry(name).converter(theirs.state_dict()))
        for b in batches:
            for dt in dtypes:
                for cl in ((False, True) if name.startswith("convnext") else (False,)):
                    r = compare(ours, theirs, (b, 3, res, res), device, dt, cl, **kw)
                    records.append({"model": name, "batch_size": b, **r})
        del ours, theirs
    return records
