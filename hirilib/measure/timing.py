"""Timing a model: latency, throughput and peak memory, measured the same way everywhere.

Warm-up runs first (kernel selection, caches, ``torch.compile``), then timed runs
with the device synchronised: CUDA events on a GPU, ``perf_counter`` on a CPU.
Every record carries the median, the spread (25th-75th percentile, min, max) and
the settings (batch, precision, memory format, compile), so that no figure is
shown without how it was measured.
"""

from __future__ import annotations

import platform
import statistics
import time
from typing import Any, Dict, List, Sequence

import torch
import torch.nn as nn

_DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}


def sync(device: torch.device) -> None:
    """Wait for the work queued on ``device`` (a GPU's stream; nothing on a CPU)."""
    device = torch.device(device)
    if device.type == "cuda":
        torch.cuda.synchronize(device)


_sync = sync


def measure_latency(model: nn.Module, input_size: Sequence[int] = (1, 3, 224, 224),
                    device: str | torch.device = "cpu", dtype: str = "fp32",
                    channels_last: bool = False, compile: bool = False,
                    warmup: int = 5, runs: int = 20, extra_args: Sequence[Any] = ()
                    ) -> Dict[str, Any]:
    """Time one forward pass: warm-up, then ``runs`` synchronised runs.

    On CUDA each run is timed with CUDA events; on CPU with ``perf_counter``.
    ``dtype`` 'fp16' / 'bf16' run under autocast (weights stay fp32).
    Returns the median, the spread (25th-75th percentile, min, max) in
    milliseconds, throughput in images/s, peak memory (CUDA only), and the
    settings, so that every figure can state how it was measured.
    """
    device = torch.device(device)
    if dtype not in _DTYPES:
        raise ValueError(f"dtype must be one of {sorted(_DTYPES)}, got {dtype!r}")
    model = model.to(device).eval()
    x = torch.randn(*input_size, device=device)
    if channels_last and x.ndim == 4:
        model = model.to(memory_format=torch.channels_last)
        x = x.contiguous(memory_format=torch.channels_last)
    fn = torch.compile(model) if compile else model
    autocast = torch.autocast(device.type, dtype=_DTYPES[dtype], enabled=dtype != "fp32")
    times: List[float] = []
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    with torch.inference_mode(), autocast:
        for _ in range(warmup):
            fn(x, *extra_args)
        _sync(device)
        for _ in range(runs):
            if device.type == "cuda":
                start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
                start.record()
                fn(x, *extra_args)
                end.record()
                torch.cuda.synchronize(device)
                times.append(start.elapsed_time(end))
            else:
                t0 = time.perf_counter()
                fn(x, *extra_args)
                times.append((time.perf_counter() - t0) * 1e3)
    q = statistics.quantiles(times, n=4) if len(times) > 1 else [times[0]] * 3
    median = statistics.median(times)
    return {
        "median_ms": median, "p25_ms": q[0], "p75_ms": q[2],
        "min_ms": min(times), "max_ms": max(times),
        "throughput_img_s": input_size[0] / (median / 1e3),
        "peak_mem_mb": (torch.cuda.max_memory_allocated(device) / 2**20
                        if device.type == "cuda" else None),
        "batch_size": input_size[0], "input_size": list(input_size), "dtype": dtype,
        "channels_last": channels_last, "compile": compile, "warmup": warmup, "runs": runs,
        "device": device_name(device),
    }


class _TensorMemoryTracker:
    """Bytes held by the tensors that the ops run under it create (a
    ``TorchDispatchMode``): each new storage is added when an op returns it and
    subtracted when the last tensor using it is freed; ``peak`` is the maximum."""

    def __init__(self):
        from torch.utils._python_dispatch import TorchDispatchMode
        from torch.utils._pytree import tree_flatten

        tracker = self

        class _Mode(TorchDispatchMode):
            def __torch_dispatch__(self, func, types, args=(), kwargs=None):
                out = func(*args, **(kwargs or {}))
                for t in tree_flatten(out)[0]:
                    if isinstance(t, torch.Tensor):
                        tracker._add(t)
                return out

        self.mode = _Mode()
        self.live: Dict[int, List[int]] = {}  # storage address -> [bytes, users]
        self.current = self.peak = 0

    def _add(self, t: torch.Tensor) -> None:
        import weakref

        storage = t.untyped_storage()
        key = storage.data_ptr()
        if key == 0:  # an empty tensor
            return
        if key in self.live:
            self.live[key][1] += 1
        else:
            self.live[key] = [storage.nbytes(), 1]
            self.current += storage.nbytes()
            self.peak = max(self.peak, self.current)
        weakref.finalize(t, self._drop, key)

    def _drop(self, key: int) -> None:
        entry = self.live.get(key)
        if entry is None:
            return
        entry[1] -= 1
        if entry[1] == 0:
            self.current -= entry[0]
            del self.live[key]


def measure_memory(model: nn.Module, input_size: Sequence[int] = (1, 3, 224, 224),
                   device: str | torch.device = "cpu",
                   dtype: str = "fp32") -> Dict[str, Any]:
    """Peak memory of the tensors one inference forward pass creates (activations and
    output; the weights and the input, which exist before the call, are not included).

    On CUDA: ``torch.cuda.max_memory_allocated`` during the pass, minus what was
    allocated before it.  On a CPU, where PyTorch keeps no such statistic, every
    tensor an op returns is tracked (a ``TorchDispatchMode``) until it is freed, and
    the peak of their sum is reported; buffers a kernel allocates and frees inside
    itself are not seen.  Returns ``peak_mem_mb`` (MiB), ``method``, ``weights_mb``
    and the settings.

    >>> r = measure_memory(nn.Linear(1024, 4096), (64, 1024))
    >>> r["peak_mem_mb"]  # the (64, 4096) fp32 output: 1 MiB
    1.0
    """
    device = torch.device(device)
    if dtype not in _DTYPES:
        raise ValueError(f"dtype must be one of {sorted(_DTYPES)}, got {dtype!r}")
    model = model.to(device).eval()
    x = torch.randn(*input_size, device=device)
    autocast = torch.autocast(device.type, dtype=_DTYPES[dtype],
                              enabled=dtype != "fp32")
    weights = sum(t.numel() * t.element_size()
                  for t in list(model.parameters()) + list(model.buffers()))
    with torch.inference_mode(), autocast:
        if device.type == "cuda":
            _sync(device)
            torch.cuda.reset_peak_memory_stats(device)
            before = torch.cuda.memory_allocated(device)
            out = model(x)
            _sync(device)
            peak = torch.cuda.max_memory_allocated(device) - before
            method = "torch.cuda.max_memory_allocated"
        else:
            tracker = _TensorMemoryTracker()
            with tracker.mode:
                out = model(x)
            peak = tracker.peak
            method = "tensors created by the ops, tracked on the CPU"
    del out
    return {"peak_mem_mb": peak / 2**20, "weights_mb": weights / 2**20,
            "method": method, "batch_size": input_size[0],
            "input_size": list(input_size), "dtype": dtype, "device": device_name(device)}


def measure_throughput(model: nn.Module, batch_size: int = 64, resolution: int = 224,
                       **kwargs) -> Dict[str, Any]:
    """Images per second at a large batch (``measure_latency`` at that batch)."""
    return measure_latency(model, (batch_size, 3, resolution, resolution), **kwargs)


def device_name(device: str | torch.device | None = None) -> str:
    """'NVIDIA H100 80GB HBM3', or the CPU's name with its core count."""
    device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    n = torch.get_num_threads()
    return f"CPU: {cpu} ({n} thread{'s' if n != 1 else ''})"
