"""Measuring a model: parameters, FLOPs, latency, throughput, peak memory,
and the results-file format that chapters plot from.

FLOPs follow the papers' convention: one multiply-accumulate is one FLOP
("GFLOPs" in PVTv2, ConvNeXt, Hire-MLP, CAS-ViT and HIRI-ViT are G-MACs).
They are counted with fvcore, plus handles for the ops fvcore does not know.
Element-wise ops (add, activations, softmax, scaling) are not counted, as in
the papers; they are listed in ``ZERO_COST_OPS``.  Any other op that no
handle counts raises ``UncountedOpError``: a silently skipped op would make
a FLOP figure wrong without anyone noticing.
"""

from __future__ import annotations

import datetime as _dt
import json
import math
import os
import platform
import statistics
import sys
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence

import torch
import torch.nn as nn

# ----------------------------------------------------------------------------- parameters


def count_params(model: nn.Module, trainable_only: bool = False) -> int:
    """Number of parameters (shared parameters counted once).

    >>> count_params(nn.Linear(10, 5))
    55
    """
    seen, total = set(), 0
    for p in model.parameters():
        if id(p) in seen or (trainable_only and not p.requires_grad):
            continue
        seen.add(id(p))
        total += p.numel()
    return total


# ----------------------------------------------------------------------------- FLOPs

#: Ops deliberately counted as zero, following the papers' counters (mmcv,
#: torchprofile, fvcore), which count only multiply-accumulates of convs,
#: linears, matmuls, norms and poolings.
ZERO_COST_OPS = frozenset({
    "aten::add", "aten::add_", "aten::sub", "aten::sub_", "aten::rsub",
    "aten::mul", "aten::mul_", "aten::div", "aten::div_", "aten::neg",
    "aten::gelu", "aten::gelu_", "aten::relu", "aten::relu_", "aten::silu", "aten::silu_",
    "aten::sigmoid", "aten::sigmoid_", "aten::tanh", "aten::hardswish", "aten::hardswish_",
    "aten::hardsigmoid", "aten::softmax", "aten::exp", "aten::sqrt", "aten::rsqrt",
    "aten::pow", "aten::abs", "aten::erf", "aten::dropout", "aten::feature_dropout",
    "aten::pad", "aten::constant_pad_nd", "aten::reflection_pad2d", "aten::unflatten",
    "aten::repeat", "aten::repeat_interleave", "aten::expand_as", "aten::clone",
    "aten::masked_fill", "aten::fill_", "aten::bernoulli_", "aten::empty_like",
    "aten::scalar_tensor", "aten::ones_like", "aten::where", "aten::flip",
    # max-pooling compares and never multiplies (ReLU, max(x, 0), is free too);
    # fvcore skips it, and ResNet-50's 4.09 GFLOPs leave it out
    "aten::max_pool2d",
})


class UncountedOpError(RuntimeError):
    """An op ran that no FLOP handle counts and that is not known to be free."""


def _shape(v) -> List[int]:
    return list(v.type().sizes())


def _sdpa_handle(inputs, outputs) -> int:
    # aten::scaled_dot_product_attention(q (..., N, d), k (..., M, d), v (..., M, dv))
    q, k, v = (_shape(t) for t in inputs[:3])
    batch = math.prod(q[:-2])
    n, d, m, dv = q[-2], q[-1], k[-2], v[-1]
    return batch * n * m * d + batch * n * m * dv  # Q K^T, then A V


def _mean_handle(inputs, outputs) -> int:
    # A mean reads every input element once, as fvcore counts adaptive_avg_pool2d.
    return math.prod(_shape(inputs[0]))


def _avg_pool_handle(inputs, outputs) -> int:
    # one accumulate per window element per output element
    k = inputs[1].toIValue()
    return math.prod(_shape(outputs[0])) * math.prod(k if isinstance(k, (list, tuple)) else [k, k])


EXTRA_FLOP_HANDLES: Dict[str, Callable] = {
    "aten::scaled_dot_product_attention": _sdpa_handle,
    "aten::mean": _mean_handle,
    "aten::avg_pool2d": _avg_pool_handle,
}


class _BindArgs(nn.Module):
    """Calls ``module(*tensors, *extra)``: fvcore traces tensor inputs only."""

    def __init__(self, module: nn.Module, extra: Sequence[Any]):
        super().__init__()
        self.module, self.extra = module, tuple(extra)

    def forward(self, *tensors):
        return self.module(*tensors, *self.extra)


@contextmanager
def _eval_mode(model: nn.Module):
    was = model.training
    model.eval()
    try:
        yield model
    finally:
        model.train(was)


def _prepare(model: nn.Module, inputs) -> tuple:
    if isinstance(inputs, torch.Tensor):
        inputs = (inputs,)
    elif isinstance(inputs, (list, tuple)) and inputs and all(isinstance(i, int) for i in inputs):
        p = next(model.parameters(), None)
        inputs = (torch.zeros(*inputs, device=p.device if p is not None else "cpu"),)
    inputs = tuple(inputs)
    tensors = tuple(i for i in inputs if isinstance(i, torch.Tensor))
    extra = inputs[len(tensors):]
    if any(isinstance(i, torch.Tensor) for i in extra):
        raise ValueError("put tensor inputs before non-tensor ones (e.g. (x, H, W))")
    return tensors, extra


def flop_analysis(model: nn.Module, inputs, handles: Optional[Dict[str, Callable]] = None):
    """fvcore's ``FlopCountAnalysis`` with our handles; raises on uncounted ops.

    ``inputs`` is a tensor, a tuple of arguments (tensors first, then e.g. H and
    W), or a shape such as ``(1, 3, 224, 224)``.
    """
    from fvcore.nn import FlopCountAnalysis

    tensors, extra = _prepare(model, inputs)
    wrapped = _BindArgs(model, extra) if extra else model
    fa = FlopCountAnalysis(wrapped, tensors)
    fa.set_op_handle(**{**EXTRA_FLOP_HANDLES, **(handles or {})})
    fa.unsupported_ops_warnings(False).uncalled_modules_warnings(False)
    with _eval_mode(model), torch.no_grad():
        fa.total()  # runs the trace
        skipped = {op: n for op, n in fa.unsupported_ops().items() if op not in ZERO_COST_OPS}
    if skipped:
        raise UncountedOpError(
            f"FLOPs of these ops would be silently skipped: {skipped}. Register a handle "
            f"(count_flops(..., handles={{op: fn}}) or hirilib.profile.EXTRA_FLOP_HANDLES), "
            f"or, if the op is element-wise, add it to hirilib.profile.ZERO_COST_OPS.")
    return fa


def count_flops(model: nn.Module, inputs=(1, 3, 224, 224),
                handles: Optional[Dict[str, Callable]] = None) -> int:
    """Multiply-accumulates of one forward pass (the papers' "FLOPs").

    >>> count_flops(nn.Linear(10, 5), (2, 10))  # 2 rows x 10 x 5
    100
    """
    return int(flop_analysis(model, inputs, handles).total())


def flops_by_module(model: nn.Module, inputs=(1, 3, 224, 224), depth: int = 1,
                    handles: Optional[Dict[str, Callable]] = None) -> Dict[str, int]:
    """FLOPs per submodule, down to ``depth`` levels of names."""
    fa = flop_analysis(model, inputs, handles)
    prefix = "module." if isinstance(fa._model, _BindArgs) else ""
    out = {}
    for name, n in fa.by_module().items():
        if name.startswith(prefix) and name.count(".") - prefix.count(".") == depth - 1 and name != prefix.rstrip("."):
            out[name[len(prefix):]] = int(n)
    return out


# ----------------------------------------------------------------------------- timing

_DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


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


def measure_throughput(model: nn.Module, batch_size: int = 64, resolution: int = 224,
                       **kwargs) -> Dict[str, Any]:
    """Images per second at a large batch (``measure_latency`` at that batch)."""
    return measure_latency(model, (batch_size, 3, resolution, resolution), **kwargs)


# ----------------------------------------------------------------------------- results files

RESULTS_FORMAT = 1


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
    return f"CPU: {cpu} ({torch.get_num_threads()} threads)"


def environment() -> Dict[str, Any]:
    """Device, versions and date, stored beside every measured figure."""
    import hirilib

    return {
        "device": device_name(),
        "torch": torch.__version__,
        "cuda": torch.version.cuda if torch.cuda.is_available() else None,
        "python": platform.python_version(),
        "hirilib": hirilib.__version__,
        "platform": platform.platform(),
        "date": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
    }


def save_results(path: str | os.PathLike, records: List[Dict[str, Any]],
                 settings: Optional[Dict[str, Any]] = None,
                 command: Optional[str] = None) -> Path:
    """Write a results file: the records plus device, versions, date and command.

    The file is written to a temporary name and renamed, so an interrupted
    run never leaves half a file where a good one was.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    doc = {"format": RESULTS_FORMAT, **environment(),
           "command": command if command is not None else " ".join(sys.argv),
           "settings": settings or {}, "records": records}
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(doc, indent=1, default=float) + "\n")
    tmp.replace(path)
    return path


def load_results(path: str | os.PathLike) -> Dict[str, Any]:
    """Read a results file written by ``save_results`` (checks its fields)."""
    doc = json.loads(Path(path).read_text())
    missing = {"format", "device", "torch", "date", "command", "records"} - set(doc)
    if missing:
        raise ValueError(f"{path} is not a hirilib results file (missing {sorted(missing)})")
    return doc


def describe(doc: Dict[str, Any]) -> str:
    """One line naming where and when a results file was measured."""
    return (f"measured on {doc['device']}, torch {doc['torch']}, {doc['date'][:10]} "
            f"(`{doc['command']}`)")
