"""Preparing a trained model for inference: fold every BatchNorm into its neighbouring
convolution or linear layer.

At inference a BatchNorm is a fixed per-channel affine map, y = s * x + t with
s = gamma / sqrt(running_var + eps) and t = beta - s * running_mean, so it can be
multiplied into the layer next to it and disappear:

* BN **after** a conv or linear layer ``z = W x + b``:  W' = s W (row-wise),
  b' = s b + t.
* BN **before** a linear layer or a 1x1 convolution that alone consumes its output
  (a pre-norm), or before a global mean and then such a layer (a BN head):
  W' = W diag(s), b' = b + W t.  (Not before a padded k x k convolution: the zeros
  it pads would no longer be zeros.)

CAS-ViT is built for this (its deployable speed is its point), and HIRI-ViT's BN in
the CFFN folds into the first FC; the paper attributes its +7.6% inference speed-up
at equal accuracy to BN replacing LN in the CFFN (Sec. 4.4).  Which pairs are folded is structural, never guessed from a trace:

* in every ``nn.Sequential`` (``ConvNormAct`` included), a ``Conv2d`` / ``Conv1d`` /
  ``Linear`` directly followed by a ``BatchNorm``;
* pairs a module declares in its ``bn_fusion`` attribute: ``(bn_name, layer_name,
  "before" | "after")`` relative to the module (``CFFN``, ``ConvFFN`` and
  ``ClassifierHead`` declare theirs; a model file does the same for its own blocks).
  ``layer_name`` may also be a tuple of names with ``"after"``: a BN applied to the
  **sum** of those layers' outputs (HIRI-ViT's HR-stem sums two branches, then BN).
  BN(a + b) = s a + s b + t, so every layer is scaled by s and the shift t goes into
  the first one's bias.
  A BN "before" several layers that all consume its output (a head with a
  distillation classifier) names them as a tuple and is folded into each.

>>> import torch, torch.nn as nn
>>> net = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU()).eval()
>>> fused = fuse_bn(net)
>>> [type(m).__name__ for m in fused]
['Conv2d', 'Identity', 'ReLU']

The second half of deployment is leaving PyTorch: ``export_onnx`` writes a model as
an ONNX graph, and ``onnx_session`` / ``run_onnx`` run it with ONNX Runtime on the
CPU, the form in which a model ships to servers and phones.  ``onnx_op_counts`` and
``token_matmuls`` read an exported graph, to see which operations a model really
needs.  ``onnx`` and ``onnxruntime`` are optional: without them these functions raise
``OnnxUnavailable``, whose message says what to install.
"""

from __future__ import annotations

import copy
import warnings
from collections import Counter
from pathlib import Path
from typing import Dict, Optional, Sequence, Tuple

import torch
import torch.nn as nn

_BN = (nn.BatchNorm1d, nn.BatchNorm2d)
_LAYERS = (nn.Conv1d, nn.Conv2d, nn.Linear)


def _bn_affine(bn: nn.Module) -> Tuple[torch.Tensor, torch.Tensor]:
    """(s, t) with BN(x) = s * x + t per channel, at inference."""
    if not bn.track_running_stats or bn.running_var is None:
        raise ValueError(f"{bn} keeps no running statistics, so it cannot be folded")
    s = torch.rsqrt(bn.running_var + bn.eps)
    if bn.affine:
        s = s * bn.weight
        t = bn.bias - s * bn.running_mean
    else:
        t = -s * bn.running_mean
    return s, t


def _ensure_bias(layer: nn.Module) -> torch.Tensor:
    if layer.bias is None:
        layer.bias = nn.Parameter(torch.zeros(layer.weight.shape[0], dtype=layer.weight.dtype,
                                              device=layer.weight.device))
    return layer.bias


@torch.no_grad()
def fold_bn_after(layer: nn.Module, bn: nn.Module, shift: bool = True) -> None:
    """Fold ``bn`` (which follows ``layer``) into ``layer``, in place.  ``shift=False``
    folds only the scale (the other summands of a BN after a sum, see ``fuse_bn``)."""
    s, t = _bn_affine(bn)
    if layer.weight.shape[0] != s.numel():
        raise ValueError(f"{bn} has {s.numel()} channels, {layer} has {layer.weight.shape[0]}")
    shape = (-1,) + (1,) * (layer.weight.ndim - 1)
    bias = _ensure_bias(layer)
    layer.weight.mul_(s.reshape(shape))
    bias.copy_(bias * s + t if shift else bias * s)


@torch.no_grad()
def fold_bn_before(bn: nn.Module, layer: nn.Module) -> None:
    """Fold ``bn`` (whose output only ``layer`` consumes) into ``layer``, in place.
    ``layer`` is a Linear or a 1x1 (unpadded, ungrouped) convolution."""
    if isinstance(layer, (nn.Conv1d, nn.Conv2d)) and (
            any(k != 1 for k in layer.kernel_size) or layer.groups != 1):
        raise ValueError(f"a BN before {layer} cannot be folded into it exactly (only into a "
                         f"1x1, ungrouped convolution or a linear layer)")
    s, t = _bn_affine(bn)
    w = layer.weight.reshape(layer.weight.shape[0], -1)           # (out, in)
    if w.shape[1] != s.numel():
        raise ValueError(f"{bn} has {s.numel()} channels, {layer} takes {w.shape[1]}")
    bias = _ensure_bias(layer)
    bias.add_(w @ t)
    w.mul_(s[None, :])


def _get(module: nn.Module, path: str):
    for part in path.split("."):
        module = getattr(module, part, None)
        if module is None:
            return None
    return module


def _set(module: nn.Module, path: str, new: nn.Module) -> None:
    *parents, last = path.split(".")
    for part in parents:
        module = getattr(module, part)
    setattr(module, last, new)


def _as_bn(m: nn.Module):
    """The BatchNorm inside ``m`` (``m`` itself, or a ``TokenNorm`` of kind 'bn'), or None."""
    if isinstance(m, _BN):
        return m
    inner = getattr(m, "norm", None)
    if getattr(m, "kind", None) == "bn" and isinstance(inner, _BN):
        return inner
    return None


def fuse_bn(model: nn.Module, inplace: bool = False) -> nn.Module:
    """A copy of ``model`` (or ``model`` itself with ``inplace``) in eval mode with every
    foldable BatchNorm folded into its neighbour and replaced by ``nn.Identity``.

    The outputs are unchanged up to float rounding (tested at fp32 with a tight
    tolerance); a BatchNorm with no neighbour to fold into stays.
    """
    model = model if inplace else copy.deepcopy(model)
    model.eval()
    for module in list(model.modules()):
        if isinstance(module, nn.Sequential):
            names = list(module._modules)
            for a, b in zip(names, names[1:]):
                layer, bn = module._modules[a], module._modules[b]
                if isinstance(layer, _LAYERS) and isinstance(bn, _BN):
                    fold_bn_after(layer, bn)
                    module._modules[b] = nn.Identity()
        for bn_name, layer_names, where in getattr(module, "bn_fusion", ()):
            bn = _as_bn(_get(module, bn_name))
            if bn is None:  # already folded, or not a BatchNorm in this configuration
                continue
            if where not in ("before", "after"):
                raise ValueError(f"bn_fusion position must be 'before' or 'after', got "
                                 f"{where!r}")
            names = (layer_names,) if isinstance(layer_names, str) else tuple(layer_names)
            layers = [_get(module, n) for n in names]
            if where == "after":
                # one layer, or several whose outputs are summed before the BN:
                # BN(a + b) = s a + s b + t, so each is scaled, the first takes the shift
                if not all(isinstance(m, _LAYERS) for m in layers):
                    continue
                for j, layer in enumerate(layers):
                    fold_bn_after(layer, bn, shift=j == 0)
            else:
                # a BN whose output every one of these layers consumes; absent ones
                # (None) are skipped, and with none left the BN stays
                layers = [m for m in layers if m is not None]
                if not layers or not all(isinstance(m, _LAYERS) for m in layers):
                    continue  # e.g. a head without a classifier
                for layer in layers:
                    fold_bn_before(bn, layer)
            _set(module, bn_name, nn.Identity())
    return model


def count_batchnorms(model: nn.Module) -> int:
    """The number of BatchNorm modules left in ``model``."""
    return sum(isinstance(m, _BN) for m in model.modules())


# ----------------------------------------------------------------------------- ONNX

ONNX_INSTALL = "pip install onnx onnxruntime"


class OnnxUnavailable(ImportError):
    """``onnx`` or ``onnxruntime`` is missing; the message says how to install it."""


def _require(module: str):
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError:
        raise OnnxUnavailable(f"{module} is not installed here; install it with "
                              f"`{ONNX_INSTALL}` (in a notebook: %pip install onnx "
                              f"onnxruntime), then run the cell again") from None


def onnx_available() -> bool:
    """True when both ``onnx`` and ``onnxruntime`` can be imported."""
    import importlib.util

    return all(importlib.util.find_spec(m) is not None for m in ("onnx", "onnxruntime"))


def export_onnx(model: nn.Module, path: str | Path,
                input_size: Sequence[int] = (1, 3, 224, 224), opset: int = 17,
                dynamic_batch: bool = True) -> Path:
    """Write ``model`` (in eval mode) as an ONNX graph for inputs of ``input_size``;
    the batch dimension stays free with ``dynamic_batch``.  Input ``"image"``, output
    ``"logits"``.  Returns the path.

    Uses PyTorch's TorchScript-based exporter, which needs nothing beyond torch (the
    newer ``dynamo=True`` exporter also needs the ``onnxscript`` package); its
    deprecation notice is silenced here.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    p = next(model.parameters(), None)
    x = torch.zeros(*input_size, device=p.device if p is not None else "cpu")
    axes = {"image": {0: "batch"}, "logits": {0: "batch"}} if dynamic_batch else None
    was = model.training
    model.eval()
    try:
        with warnings.catch_warnings(), torch.no_grad():
            warnings.simplefilter("ignore")  # the exporter's deprecation, tracer notes
            torch.onnx.export(model, (x,), str(path), input_names=["image"],
                              output_names=["logits"], dynamic_axes=axes,
                              opset_version=opset, dynamo=False)
    finally:
        model.train(was)
    return path


def onnx_session(path: str | Path, threads: Optional[int] = None,
                 providers: Sequence[str] = ("CPUExecutionProvider",)):
    """An ONNX Runtime session for the graph at ``path`` (all graph optimisations on),
    with ``threads`` intra-op threads (default: as many as torch uses, for a fair
    comparison with PyTorch)."""
    ort = _require("onnxruntime")
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads or torch.get_num_threads()
    opts.inter_op_num_threads = 1
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    return ort.InferenceSession(str(path), sess_options=opts, providers=list(providers))


def run_onnx(session, x: torch.Tensor) -> torch.Tensor:
    """Run ``session`` on ``x`` (a float32 tensor); its first output, as a tensor."""
    name = session.get_inputs()[0].name
    out = session.run(None, {name: x.detach().cpu().float().contiguous().numpy()})
    return torch.from_numpy(out[0])


class OnnxRuntimeModel(nn.Module):
    """An ONNX Runtime session behind a module's ``forward``, so that it is timed with
    ``hirilib.measure.measure_latency`` exactly as the PyTorch models are (the CPU
    tensor is handed to ONNX Runtime without a copy)."""

    def __init__(self, session):
        super().__init__()
        self.session = session

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return run_onnx(self.session, x)


def onnx_op_counts(path: str | Path) -> Dict[str, int]:
    """How many nodes of each operator type the ONNX graph at ``path`` has."""
    onnx = _require("onnx")
    graph = onnx.load(str(path)).graph
    return dict(Counter(node.op_type for node in graph.node))


def token_matmuls(path: str | Path) -> int:
    """The number of ``MatMul`` nodes in the graph at ``path`` that multiply two
    computed tensors (neither is a weight): attention's ``Q K^T`` and ``A V`` are such
    products of tokens by tokens, while a linear layer multiplies by a stored weight."""
    onnx = _require("onnx")
    graph = onnx.load(str(path)).graph
    stored = {t.name for t in graph.initializer}
    for n in graph.node:  # topologically sorted: what is computed from weights alone
        if n.op_type == "Constant" or (n.input and all(i in stored for i in n.input)):
            stored.update(n.output)
    return sum(1 for n in graph.node
               if n.op_type == "MatMul" and not any(i in stored for i in n.input))
