"""Turning images into tokens or maps, and maps into coarser maps.

``OverlapPatchEmbed`` is PVTv2's patch embedding (Sec. 3.1): a convolution
whose kernel is larger than its stride (7/4 for the first stage, 3/2 after),
zero-padded by ``kernel // 2``, so neighbouring patches overlap and the
embedding sees across patch borders; then LayerNorm.  ``PatchEmbed`` is the
non-overlapping "patchify" stem of ViT, Swin and ConvNeXt (kernel = stride).
``ConvDownsample`` is ConvNeXt's separate downsampling layer (a norm, then a
2x2 stride-2 conv), and ``ConvNormAct`` the conv + norm + activation unit that
the convolutional stems and downsamplings of Hire-MLP, CAS-ViT and HIRI-ViT
are made of.
"""

from __future__ import annotations

from typing import Optional

import torch
import torch.nn as nn
from einops import rearrange

from .checks import check_int, static_shape
from .norm import make_act, norm2d


class OverlapPatchEmbed(nn.Module):
    """Image or map ``(B, C_in, H, W)`` -> tokens ``(B, H/s * W/s, C)``, (H/s, W/s)."""

    def __init__(self, in_chans: int = 3, embed_dim: int = 64, patch_size: int = 7,
                 stride: int = 4, norm_eps: float = 1e-5):
        super().__init__()
        check_int("patch_size", patch_size, 1)
        check_int("stride", stride, 1)
        if patch_size <= stride:
            raise ValueError(f"an overlapping patch embedding needs kernel > stride, "
                             f"got kernel {patch_size} and stride {stride}")
        self.in_chans, self.stride = in_chans, stride
        self.proj = nn.Conv2d(in_chans, embed_dim, patch_size, stride,
                              padding=patch_size // 2)
        self.norm = nn.LayerNorm(embed_dim, eps=norm_eps)

    def forward(self, x: torch.Tensor):
        if x.ndim != 4 or static_shape(x)[1] != self.in_chans:
            raise ValueError(f"OverlapPatchEmbed expects (B, {self.in_chans}, H, W), "
                             f"got {static_shape(x)}")
        x = self.proj(x)                                     # (B, C, H/s, W/s)
        H, W = x.shape[-2:]
        x = self.norm(rearrange(x, "b c h w -> b (h w) c"))  # (B, N, C)
        return x, H, W


class PatchEmbed(nn.Sequential):
    """Non-overlapping patches: a ``p x p`` conv of stride ``p`` (+ an optional norm),
    ``(B, C_in, H, W) -> (B, C, H/p, W/p)``.  ConvNeXt's stem with p = 4 and LN
    (ConvNeXt Sec. 2.2, "patchify"), ViT's with p = 16.  Keys ``0`` (conv), ``1`` (norm)."""

    def __init__(self, in_chans: int, dim: int, patch_size: int = 4, norm: Optional[str] = None):
        check_int("patch_size", patch_size, 1)
        layers = [nn.Conv2d(in_chans, dim, kernel_size=patch_size, stride=patch_size)]
        if norm:
            layers.append(norm2d(norm, dim))
        super().__init__(*layers)


class ConvDownsample(nn.Sequential):
    """A norm, then a ``k x k`` stride-``k`` conv (ConvNeXt Sec. 2.6, "separate
    downsampling layers": the norm before it keeps training stable when the resolution
    changes).  ``(B, C_in, H, W) -> (B, C_out, H/k, W/k)``; keys ``0`` (norm), ``1`` (conv)."""

    def __init__(self, in_dim: int, out_dim: int, norm: str = "ln", kernel_size: int = 2):
        super().__init__(norm2d(norm, in_dim),
                         nn.Conv2d(in_dim, out_dim, kernel_size=kernel_size, stride=kernel_size))


class ConvNormAct(nn.Sequential):
    """``Conv2d`` (padding ``kernel // 2`` unless given), then an optional norm
    (``'bn'`` / ``'ln'``) and an optional activation (``'relu'``, ``'gelu'`` ...).
    Keys ``conv``, ``norm``, ``act``."""

    def __init__(self, in_dim: int, out_dim: int, kernel_size: int = 3, stride: int = 1,
                 padding: Optional[int] = None, groups: int = 1, bias: bool = True,
                 norm: Optional[str] = "bn", act: Optional[str] = None):
        super().__init__()
        padding = kernel_size // 2 if padding is None else padding
        self.conv = nn.Conv2d(in_dim, out_dim, kernel_size, stride, padding, groups=groups,
                              bias=bias)
        if norm:
            self.norm = norm2d(norm, out_dim)
        if act:
            self.act = make_act(act)
