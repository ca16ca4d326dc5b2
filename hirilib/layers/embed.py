"""Turning images into tokens, and tokens into coarser tokens.

``OverlapPatchEmbed`` is PVTv2's patch embedding (Sec. 3.1): a convolution
whose kernel is larger than its stride (7/4 for the first stage, 3/2 after),
zero-padded by ``kernel // 2``, so neighbouring patches overlap and the
embedding sees across patch borders; then LayerNorm.
"""

from __future__ import annotations

import torch
import torch.nn as nn
from einops import rearrange


class OverlapPatchEmbed(nn.Module):
    """Image or map ``(B, C_in, H, W)`` -> tokens ``(B, H/s * W/s, C)`` and (H/s, W/s)."""

    def __init__(self, in_chans: int = 3, embed_dim: int = 64, patch_size: int = 7,
                 stride: int = 4, norm_eps: float = 1e-5):
        super().__init__()
        if patch_size <= stride:
            raise ValueError(f"an overlapping patch embedding needs kernel > stride, "
                             f"got kernel {patch_size} and stride {stride}")
        self.in_chans, self.stride = in_chans, stride
        self.proj = nn.Conv2d(in_chans, embed_dim, patch_size, stride, padding=patch_size // 2)
        self.norm = nn.LayerNorm(embed_dim, eps=norm_eps)

    def forward(self, x: torch.Tensor):
        if x.ndim != 4 or x.shape[1] != self.in_chans:
            raise ValueError(f"OverlapPatchEmbed expects (B, {self.in_chans}, H, W), "
                             f"got {tuple(x.shape)}")
        x = self.proj(x)                                   # (B, C, H/s, W/s)
        H, W = x.shape[-2:]
        x = self.norm(rearrange(x, "b c h w -> b (h w) c"))  # (B, N, C)
        return x, H, W
