"""Closed-form costs for chapter 3: the ConvNeXt block, and a convolution's
multiply-accumulates against the bytes it must move (its arithmetic intensity)."""

from __future__ import annotations

from typing import Dict, Sequence

from .conventions import LN_PER_ELEMENT as LN


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


def convnext_macs(depths: Sequence[int] = (3, 3, 9, 3),
                  dims: Sequence[int] = (96, 192, 384, 768), num_classes: int = 1000,
                  H: int = 224, W: int | None = None, kernel_size: int = 7,
                  in_chans: int = 3) -> int:
    """Multiply-accumulates of a whole ConvNeXt on an H x W image, counted as
    ``count_flops`` counts them (biases free, LayerNorm 5 per element, the mean 1 per
    input element), so that the variants can be costed without tracing them.

    Stem: a 4x4/4 conv, LN.  Stage i > 1: LN, 2x2/2 conv.  Every block:
    ``convnext_block_macs`` plus its LN.  Head: the mean over the last map, LN, Linear.

    >>> convnext_macs(H=224)  # ConvNeXt-T: the paper's 4.5 G
    4470437376
    """
    W = H if W is None else W
    h, w = H // 4, W // 4
    total = h * w * 16 * in_chans * dims[0] + LN * h * w * dims[0]       # stem
    for i, (depth, C) in enumerate(zip(depths, dims)):
        if i > 0:
            total += LN * h * w * dims[i - 1]                             # LN, then ...
            h, w = h // 2, w // 2
            total += h * w * 4 * dims[i - 1] * C                          # 2x2/2 conv
        total += depth * (convnext_block_macs(C, h, w, kernel_size) + LN * h * w * C)
    C = dims[-1]
    return total + h * w * C + LN * C + (C * num_classes if num_classes else 0)


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
