"""How close a model comes to what the device can do: peaks, achieved rates, intensity.

A device has two limits: how many floating-point operations it can do per second (the
*compute roof*) and how many bytes it can move to and from memory per second (the
*memory roof*).  A kernel that does I operations per byte it moves (its arithmetic
intensity) can run at most at min(peak FLOP/s, I x bandwidth): the roofline (Williams,
Waterman and Patterson, 2009).  Depthwise convolutions, normalisations and
rearrangements do few operations per byte and sit under the memory roof; large matrix
products sit under the compute roof.

Note the units: the papers' "FLOPs" are multiply-accumulates; a device's peak counts a
multiply-accumulate as **two** operations.  ``achieved_tflops`` converts.

Two sources of peaks: ``DATASHEET`` (the vendor's published dense figures, by device
name) and ``measure_peaks`` (a large matrix product and a large copy timed on the device
itself: what is practically reachable, on any device, a CPU included).
"""

from __future__ import annotations

import time
from typing import Any, Dict, Optional

import torch

#: Vendor datasheet peaks, dense (no structured sparsity): TFLOP/s per precision and memory
#: bandwidth in GB/s.  fp16/bf16 are tensor-core figures with fp32 accumulate; 'fp32' is
#: the non-tensor-core rate.  Sources: NVIDIA T4, A100, H100 and H200 datasheets.
DATASHEET: Dict[str, Dict[str, float]] = {
    "T4": {"fp32": 8.1, "fp16": 65.0, "bandwidth_gbs": 320.0},
    "A100-SXM4-40GB": {"fp32": 19.5, "tf32": 156.0, "fp16": 312.0, "bf16": 312.0,
                       "bandwidth_gbs": 1555.0},
    "A100-SXM4-80GB": {"fp32": 19.5, "tf32": 156.0, "fp16": 312.0, "bf16": 312.0,
                       "bandwidth_gbs": 2039.0},
    "H100 80GB HBM3": {"fp32": 67.0, "tf32": 494.7, "fp16": 989.4, "bf16": 989.4,
                       "bandwidth_gbs": 3350.0},
    "H200": {"fp32": 67.0, "tf32": 494.7, "fp16": 989.4, "bf16": 989.4, "bandwidth_gbs": 4800.0},
    "L4": {"fp32": 30.3, "fp16": 121.0, "bf16": 121.0, "bandwidth_gbs": 300.0},
}


def datasheet_peak(device_name: str, dtype: str = "fp32") -> Optional[Dict[str, float]]:
    """``{"tflops": ..., "bandwidth_gbs": ...}`` for a device whose name contains a
    ``DATASHEET`` key (e.g. 'Tesla T4', 'NVIDIA H100 80GB HBM3'), or None."""
    for key in sorted(DATASHEET, key=len, reverse=True):
        if key.lower() in device_name.lower():
            spec = DATASHEET[key]
            if dtype in spec:
                return {"tflops": spec[dtype], "bandwidth_gbs": spec["bandwidth_gbs"],
                        "source": f"datasheet ({key}, dense {dtype})"}
    return None


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _best_time(fn, device: torch.device, runs: int) -> float:
    fn()
    _sync(device)
    best = float("inf")
    for _ in range(runs):
        t0 = time.perf_counter()
        fn()
        _sync(device)
        best = min(best, time.perf_counter() - t0)
    return best


def measure_peaks(device: str | torch.device = "cpu", dtype: str = "fp32", size: int = 0,
                  runs: int = 5) -> Dict[str, Any]:
    """The practically reachable rates on ``device``: a square matrix product (TFLOP/s,
    counting a multiply-accumulate as 2) and a large tensor copy (GB/s, read + write).
    The best of ``runs`` timings (interference only ever slows a run down)."""
    device = torch.device(device)
    tdtype = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}[dtype]
    n = size or (8192 if device.type == "cuda" else 1024)
    a = torch.randn(n, n, device=device, dtype=tdtype)
    b = torch.randn(n, n, device=device, dtype=tdtype)
    t = _best_time(lambda: a @ b, device, runs)
    elems = (1 << 28) if device.type == "cuda" else (1 << 24)
    src = torch.empty(elems, device=device, dtype=torch.float32)
    dst = torch.empty_like(src)
    tc = _best_time(lambda: dst.copy_(src), device, runs)
    return {"tflops": 2 * n ** 3 / t / 1e12, "bandwidth_gbs": 2 * src.nbytes / tc / 1e9,
            "source": f"measured: {n}x{n} {dtype} matmul, {src.nbytes >> 20} MiB copy"}


def achieved_tflops(macs: float, seconds: float) -> float:
    """Operations per second, in TFLOP/s, of ``macs`` multiply-accumulates in ``seconds``
    (a multiply-accumulate is 2 operations, as device peaks count them)."""
    return 2 * macs / seconds / 1e12


def roof(intensity_flops_per_byte: float, peak_tflops: float, bandwidth_gbs: float) -> float:
    """The roofline: the best TFLOP/s a kernel of this arithmetic intensity can reach."""
    return min(peak_tflops, intensity_flops_per_byte * bandwidth_gbs / 1e3)
