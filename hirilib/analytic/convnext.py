"""Closed-form costs for chapter 3: the ConvNeXt block, and a convolution's
multiply-accumulates against the bytes it must move (its arithmetic intensity)."""

from __future__ import annotations

from typing import Dict


def convnext_block_macs(dim: int, height: int, width: int, kernel_size: int = 7) -> int:
    """Multiply-accumulates of one ConvNeXt block's convs and linears on a
    ``height x width`` map (the LayerNorm's 5 per element are left out).

    A depthwise k x k conv does k^2 MACs per output element, each 1x1 layer 4C^2 per
    position: ``H W C (k^2 + 8C)``.  At C = 96 the MLP costs 8C / k^2, about 16 times
    the conv.

    >>> convnext_block_macs(96, 56, 56) == 56 * 56 * 96 * (49 + 8 * 96)
    True
    """
    return height * width * dim * (kernel_size ** 2 + 8 * dim)


def conv_cost(kind: str, channels: int, size: int, batch: int = 1,
              bytes_per_element: int = 4) -> Dict[str, float]:
    """MACs and the minimum memory traffic of a stride-1 'same' conv on a
    ``(batch, C, size, size)`` map: read the input and the weights once, write the
    output once.  ``kind`` is ``"dw7x7"`` (depthwise 7x7) or ``"dense3x3"``.

    Intensity = MACs / bytes.  For the depthwise conv, 49 MACs per output element
    against 2 x 4 bytes of input and output per element: about 49/8 = 6 MACs per
    byte whatever C (the weights, 49 C values, are negligible); the dense 3x3 does
    9C MACs per output element, so its intensity grows as 9C/8.

    >>> c = conv_cost("dw7x7", 96, 56)
    >>> c["macs"] == 49 * 96 * 56 * 56
    True
    """
    if kind not in ("dw7x7", "dense3x3"):
        raise ValueError(f"kind must be 'dw7x7' or 'dense3x3', got {kind!r}")
    k, dense = (7, False) if kind == "dw7x7" else (3, True)
    hw = size * size
    weights = k * k * channels * (channels if dense else 1)
    macs = batch * hw * weights
    bytes_moved = bytes_per_element * (2 * batch * channels * hw + weights)
    return {"macs": macs, "bytes": bytes_moved, "intensity": macs / bytes_moved}
