"""What training a model costs in memory, measured on any device (a CPU included).

Training memory is, to first order, the weights, their gradients, the optimizer's state
(AdamW keeps two numbers per weight) and the activations that autograd saves for the
backward pass.  The first three follow from the parameter count; the last is *measured*
here, exactly, by recording every tensor autograd saves during one forward pass
(``torch.autograd.graph.saved_tensors_hooks``), counting each storage once.  That is the
same on a CPU as on a GPU for the same code (fused GPU kernels, e.g. flash attention, save
less), so a machine without a GPU can estimate which batch fits on a 16 GB T4, and say
that it is an estimate.

>>> import torch.nn as nn
>>> m = nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 4))
>>> r = training_memory(m, (2, 8))
>>> r["param_bytes"] == (8 * 16 + 16 + 16 * 4 + 4) * 4
True
"""

from __future__ import annotations

from typing import Any, Dict, Sequence

import torch
import torch.nn as nn

_DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}


def saved_activation_bytes(model: nn.Module, input_size: Sequence[int], dtype: str = "fp32",
                           device: str | torch.device = "cpu") -> int:
    """Bytes of the tensors autograd saves for backward in one training-mode forward pass
    on a random input of ``input_size`` (under autocast for 'fp16' / 'bf16'); each storage
    counted once, the input and the parameters excluded."""
    device = torch.device(device)
    model = model.to(device).train()
    x = torch.randn(*input_size, device=device)
    params = {p.untyped_storage().data_ptr() for p in model.parameters()}
    seen: Dict[int, int] = {}

    def pack(t: torch.Tensor):
        s = t.untyped_storage()
        ptr = s.data_ptr()
        if ptr not in params and ptr != x.untyped_storage().data_ptr():
            seen[ptr] = max(seen.get(ptr, 0), s.nbytes())
        return t

    autocast = torch.autocast(device.type, dtype=_DTYPES[dtype], enabled=dtype != "fp32")
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t), autocast:
        out = model(x)
    del out
    return sum(seen.values())


def training_memory(model: nn.Module, input_size: Sequence[int], dtype: str = "fp32",
                    optimizer_states: int = 2, device: str | torch.device = "cpu"
                    ) -> Dict[str, Any]:
    """The parts of training memory for one step at ``input_size``: weights (fp32),
    gradients (fp32), optimizer state (``optimizer_states`` fp32 numbers per weight: 2 for
    AdamW), and the saved activations (measured).  Bytes; ``total_bytes`` is their sum
    (allocator overhead, workspace and the CUDA context come on top)."""
    n = sum(p.numel() for p in model.parameters())
    params = 4 * n
    acts = saved_activation_bytes(model, input_size, dtype, device)
    total = params * (2 + optimizer_states) + acts
    return {"param_bytes": params, "grad_bytes": params, "optimizer_bytes": params * optimizer_states,
            "activation_bytes": acts, "total_bytes": total, "batch_size": input_size[0],
            "input_size": list(input_size), "dtype": dtype}


def max_batch_estimate(model: nn.Module, resolution: int, budget_bytes: float = 16e9,
                       dtype: str = "fp16", reserve_bytes: float = 1.5e9,
                       in_chans: int = 3) -> Dict[str, Any]:
    """Estimate the largest training batch that fits in ``budget_bytes`` (16 GB: a T4).

    Saved activations are measured at batch 1 and batch 2: their difference is what one
    more image costs, and what is left at batch 1 is a fixed part (under autocast, the
    half-precision copies of the weights that autograd keeps).  Add fp32 weights,
    gradients and AdamW's two states, leave ``reserve_bytes`` for the CUDA context,
    cuDNN workspaces and fragmentation, and divide.  An estimate: label it as one."""
    shape = lambda b: (b, in_chans, resolution, resolution)  # noqa: E731
    a1 = saved_activation_bytes(model, shape(1), dtype)
    a2 = saved_activation_bytes(model, shape(2), dtype)
    per_image = max(a2 - a1, 1)
    n = sum(p.numel() for p in model.parameters())
    fixed = 4 * n * 4 + max(a1 - per_image, 0)   # weights, grads, AdamW; cast copies
    room = budget_bytes - reserve_bytes - fixed
    batch = int(room // per_image) if room > 0 else 0
    return {"resolution": resolution, "dtype": dtype, "per_image_activation_bytes": per_image,
            "fixed_bytes": fixed, "budget_bytes": budget_bytes, "reserve_bytes": reserve_bytes,
            "max_batch": batch, "method": (
                f"saved activations measured with autograd hooks at batch 1 and 2 "
                f"({dtype} autocast; their difference is the cost of one image), plus fp32 "
                f"weights, gradients and AdamW state; {reserve_bytes / 1e9:.1f} GB kept for "
                f"the CUDA context and workspaces")}
