"""Counting a model: parameters and FLOPs.

FLOPs follow the papers' convention: one multiply-accumulate is one FLOP
("GFLOPs" in PVTv2, ConvNeXt, Hire-MLP, CAS-ViT and HIRI-ViT are G-MACs).
They are counted with fvcore, plus handles for the ops fvcore does not know.
Element-wise ops (add, activations, softmax, scaling) are not counted, as in
the papers; they are listed in ``ZERO_COST_OPS``.  Any other op that no
handle counts raises ``UncountedOpError``: a silently skipped op would make
a FLOP figure wrong without anyone noticing.

fvcore's BatchNorm count depends on its version (older: 4 per element; the
release pinned here: 2 per element at inference), and LayerNorm costs 5 per
element; ``BN_PER_ELEMENT`` and ``LN_PER_ELEMENT`` in ``hirilib.analytic`` say
which convention the closed forms use, and ``bn_flop_handle(k)`` counts BN at
``k`` per element for a paper that used another fvcore.

The model's own input check runs while counting (the trace calls ``forward``),
so no FLOP figure is ever given for an input the model would refuse.
"""

from __future__ import annotations

import math
from contextlib import contextmanager
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


def bn_flop_handle(per_element: int) -> Callable:
    """A handle that counts ``aten::batch_norm`` at ``per_element`` MACs per element
    (pass it as ``count_flops(..., handles={"aten::batch_norm": bn_flop_handle(4)})``)."""
    def handle(inputs, outputs) -> int:
        return per_element * math.prod(_shape(inputs[0]))
    return handle


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


def _int_list(v) -> List[int]:
    """A traced int or int-list argument (a constant, or a list built from constants)."""
    k = v.toIValue()
    if k is None and v.node().kind() == "prim::ListConstruct":
        k = [i.toIValue() for i in v.node().inputs()]
    if k is None or (isinstance(k, (list, tuple)) and any(i is None for i in k)):
        raise UncountedOpError("avg_pool2d with a kernel size that is not a constant")
    return list(k) if isinstance(k, (list, tuple)) else [k, k]


def _avg_pool_handle(inputs, outputs) -> int:
    # one accumulate per window element per output element
    k = _int_list(inputs[1])
    return math.prod(_shape(outputs[0])) * math.prod(k if len(k) == 2 else k * 2)


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


def _fvcore_nn():
    """``fvcore.nn``, imported without the deprecation warnings that newer PyTorch raises
    about fvcore's own use of ``torch.jit.script`` (in fvcore's focal-loss module, which
    counting never uses): they say nothing about the counts, and would land in the book's
    pages and in a student's test report."""
    import warnings

    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r"`torch\.jit\.\w+` is deprecated")
        warnings.filterwarnings("ignore", category=DeprecationWarning, module=r"(fvcore|iopath)")
        import fvcore.nn
    return fvcore.nn


def flop_analysis(model: nn.Module, inputs, handles: Optional[Dict[str, Callable]] = None):
    """fvcore's ``FlopCountAnalysis`` with our handles; raises on uncounted ops.

    ``inputs`` is a tensor, a tuple of arguments (tensors first, then e.g. H and
    W), or a shape such as ``(1, 3, 224, 224)``.
    """
    FlopCountAnalysis = _fvcore_nn().FlopCountAnalysis

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
            f"(count_flops(..., handles={{op: fn}}) or hirilib.measure.flops.EXTRA_FLOP_HANDLES), "
            f"or, if the op is element-wise, add it to hirilib.measure.flops.ZERO_COST_OPS.")
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


def flops_by_stage(model: nn.Module, inputs=(1, 3, 224, 224),
                   handles: Optional[Dict[str, Callable]] = None) -> Dict[str, int]:
    """Multiply-accumulates of each part of a hierarchical backbone (``stem``, ``stages``,
    ``head``): ``{"stem": ..., "stage 1": ..., ..., "head": ...}``; anything else at the
    top level is reported under its own name.  Sums to ``count_flops``."""
    fa = flop_analysis(model, inputs, handles)
    prefix = "module." if isinstance(fa._model, _BindArgs) else ""
    counts = {k[len(prefix):]: int(v) for k, v in fa.by_module().items()
              if k.startswith(prefix) and k != prefix.rstrip(".")}
    out: Dict[str, int] = {}
    for name, n in counts.items():
        parts = name.split(".")
        if len(parts) == 1 and name != "stages":
            out[name] = n
        elif len(parts) == 2 and parts[0] == "stages":
            out[f"stage {int(parts[1]) + 1}"] = n
    total = int(fa.total())
    rest = total - sum(out.values())
    if rest:
        out["other"] = rest
    return out


def count_activations(model: nn.Module, inputs=(1, 3, 224, 224)) -> int:
    """The number of output elements of the convolutions, linear layers and matrix products
    (attention included) of one forward pass: the "activations" of Dollar et al.
    (Fast and Accurate Model Scaling, CVPR 2021), a better predictor of a model's memory
    traffic, hence of its runtime on a GPU, than its FLOPs.

    >>> count_activations(nn.Linear(10, 5), (2, 10))
    10
    """
    ActivationCountAnalysis = _fvcore_nn().ActivationCountAnalysis

    tensors, extra = _prepare(model, inputs)
    wrapped = _BindArgs(model, extra) if extra else model
    aca = ActivationCountAnalysis(wrapped, tensors)
    aca.set_op_handle(**{"aten::scaled_dot_product_attention":
                         lambda inputs, outputs: math.prod(_shape(outputs[0]))})
    aca.unsupported_ops_warnings(False).uncalled_modules_warnings(False)
    with _eval_mode(model), torch.no_grad():
        return int(aca.total())


def blank_model(name: str, **kwargs) -> nn.Module:
    """A registered model whose weights are all zero, built in a fraction of a second.

    For counting parameters and FLOPs, which do not depend on the weights:
    initialising ConvNeXt-XL's 350 M weights takes seconds.  (Zeros rather than
    uninitialised memory, whose arbitrary bits may be NaNs or denormal numbers.)
    """
    from hirilib.registry import create_model

    with torch.device("meta"):
        model = create_model(name, **kwargs)
    model = model.to_empty(device="cpu").eval()
    with torch.no_grad():
        for t in list(model.parameters()) + list(model.buffers()):
            t.zero_()
    return model
