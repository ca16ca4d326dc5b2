"""Normalisation layers for both memory layouts used in the book.

Convolutional stages keep feature maps channels-first ``(B, C, H, W)``;
Transformer stages keep tokens ``(B, N, C)``.  ``LayerNorm2d`` normalises a
channels-first map over C (ConvNeXt's "channels_first" LayerNorm), and
``TokenNorm`` lets a token block choose BN or LN, which is the switch HIRI-ViT
flips in its early stages and inside every CFFN (HIRI-ViT Sec. 4.4).
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F


class LayerNorm2d(nn.LayerNorm):
    """LayerNorm over the channel axis of a ``(B, C, H, W)`` tensor.

    Equal to permuting to channels-last, applying ``nn.LayerNorm(C)`` and
    permuting back; the parameters are the same, so weights move freely
    between the two forms.
    """

    def __init__(self, num_channels: int, eps: float = 1e-6, affine: bool = True):
        super().__init__(num_channels, eps=eps, elementwise_affine=affine)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.ndim != 4 or x.shape[1] != self.normalized_shape[0]:
            raise ValueError(f"LayerNorm2d expects (B, {self.normalized_shape[0]}, H, W), "
                             f"got {tuple(x.shape)}")
        x = x.permute(0, 2, 3, 1)  # (B, H, W, C)
        x = F.layer_norm(x, self.normalized_shape, self.weight, self.bias, self.eps)
        return x.permute(0, 3, 1, 2)  # (B, C, H, W)


class TokenNorm(nn.Module):
    """BatchNorm or LayerNorm over the channels of tokens ``(B, N, C)``.

    ``kind="ln"`` is ``nn.LayerNorm(C)``; ``kind="bn"`` is ``nn.BatchNorm1d(C)``
    applied over the batch and all N tokens (statistics per channel), which
    at inference folds into the neighbouring linear layer.
    """

    def __init__(self, dim: int, kind: str = "ln", eps: float | None = None):
        super().__init__()
        if kind not in ("ln", "bn"):
            raise ValueError(f"norm kind must be 'ln' or 'bn', got {kind!r}")
        self.kind = kind
        if kind == "ln":
            self.norm = nn.LayerNorm(dim, eps=1e-6 if eps is None else eps)
        else:
            self.norm = nn.BatchNorm1d(dim, eps=1e-5 if eps is None else eps)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, N, C)
        if self.kind == "ln":
            return self.norm(x)
        return self.norm(x.transpose(1, 2)).transpose(1, 2)  # BN wants (B, C, N)


def make_norm(kind: str | None, dim: int, eps: float | None = None) -> nn.Module:
    """The norm of tokens ``(B, N, C)``: ``TokenNorm(dim, kind)``, or ``nn.Identity()``
    when ``kind`` is None."""
    return nn.Identity() if kind is None else TokenNorm(dim, kind, eps)


def norm2d(kind: str, dim: int, eps: float | None = None) -> nn.Module:
    """The norm of a ``(B, C, H, W)`` map: ``'bn'`` (BatchNorm2d, eps 1e-5) or ``'ln'``
    (channels-first ``LayerNorm2d``, eps 1e-6 as in ConvNeXt)."""
    if kind == "bn":
        return nn.BatchNorm2d(dim, eps=1e-5 if eps is None else eps)
    if kind == "ln":
        return LayerNorm2d(dim, eps=1e-6 if eps is None else eps)
    raise ValueError(f"norm must be 'bn' or 'ln', got {kind!r}")


ACTIVATIONS = {"relu": nn.ReLU, "gelu": nn.GELU, "silu": nn.SiLU, "hardswish": nn.Hardswish}


def make_act(kind: str) -> nn.Module:
    """An activation by name: one of ``ACTIVATIONS`` ('relu', 'gelu', 'silu', 'hardswish')."""
    if kind not in ACTIVATIONS:
        raise ValueError(f"act must be one of {sorted(ACTIVATIONS)}, got {kind!r}")
    return ACTIVATIONS[kind]()
