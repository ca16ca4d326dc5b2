"""Multi-head self-attention, written out, with key/value spatial reduction.

Chapter 1 derives it; PVTv2 (chapter 2) and HIRI-ViT's late stages reuse it.

    Attention(Q, K, V) = softmax(Q K^T / sqrt(d)) V                    (Vaswani et al. 2017, Eq. 1)
    MHA(X) = Concat(head_1, ..., head_h) W^O,  head_i = Attention(X W_i^Q, X W_i^K, X W_i^V)

With spatial reduction (PVT, Wang et al. 2021, Sec. 3.3) the keys and values
are computed from a smaller map: the N = H*W tokens are reshaped to (C, H, W),
reduced by a stride-R convolution (SRA) or pooled to a fixed P x P grid
(linear SRA, PVTv2 Sec. 3.3), and normalised, so K and V have M = N / R^2
(or P^2) rows instead of N, and the cost of Q K^T falls from N^2 C to N M C.

Parameter names (``q``, ``kv``, ``proj``, ``sr``, ``norm``) follow the PVTv2
code, so its checkpoints map onto these modules key for key.
"""

from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F
from einops import rearrange

from .checks import check_int, check_rate, check_tokens, nearest_multiples


def scaled_dot_product_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
                                 dropout: nn.Module | None = None) -> torch.Tensor:
    """softmax(q k^T / sqrt(d)) v, for q (..., N, d), k and v (..., M, d)."""
    scale = 1.0 / math.sqrt(q.shape[-1])
    attn = (q * scale) @ k.transpose(-2, -1)  # (..., N, M)
    attn = attn.softmax(dim=-1)
    if dropout is not None:
        attn = dropout(attn)
    return attn @ v  # (..., N, d)


class MultiHeadAttention(nn.Module):
    """Multi-head self-attention on tokens ``(B, N, C)`` laid out on an H x W grid.

    Args:
        dim: channels C (split evenly over the heads).
        num_heads: number of heads h; each head has d = C / h channels.
        qkv_bias: bias in the query and key/value projections.
        sr_ratio: key/value spatial reduction R (1 = none). Keys and values are
            computed from a Conv2d(C, C, kernel=R, stride=R) of the map, then
            LayerNorm, so they have N / R^2 rows.
        linear: PVTv2's linear SRA instead: adaptive average pooling to
            ``pool_size`` x ``pool_size``, 1x1 conv, LayerNorm, GELU. Keys and
            values then have ``pool_size**2`` rows whatever the resolution.
        use_sdpa: compute the attention with ``F.scaled_dot_product_attention``
            (a fused kernel: faster, and memory linear in N on a GPU), the default;
            ``False`` runs the explicit softmax(QK^T)V that chapter 1 derives (the
            two are tested equal).
        sr_norm_eps: eps of the reduction's LayerNorm (1e-5 in PVTv2's code).
    """

    def __init__(self, dim: int, num_heads: int = 8, qkv_bias: bool = True,
                 sr_ratio: int = 1, linear: bool = False, pool_size: int = 7,
                 attn_drop: float = 0.0, proj_drop: float = 0.0,
                 use_sdpa: bool = True, sr_norm_eps: float = 1e-5):
        super().__init__()
        check_int("num_heads", num_heads, 1)
        check_int("sr_ratio", sr_ratio, 1)
        check_int("pool_size", pool_size, 1)
        check_rate("attn_drop", attn_drop)
        check_rate("proj_drop", proj_drop)
        if dim % num_heads != 0:
            raise ValueError(f"dim {dim} is not divisible by num_heads {num_heads}: each head "
                             f"gets dim / num_heads channels")
        self.dim, self.num_heads = dim, num_heads
        self.head_dim = dim // num_heads
        self.sr_ratio, self.linear, self.pool_size = sr_ratio, linear, pool_size
        self.use_sdpa = use_sdpa

        self.q = nn.Linear(dim, dim, bias=qkv_bias)       # W^Q for all heads at once
        self.kv = nn.Linear(dim, 2 * dim, bias=qkv_bias)  # W^K and W^V, fused
        self.attn_drop_p = attn_drop
        self.attn_drop = nn.Dropout(attn_drop)
        self.proj = nn.Linear(dim, dim)                   # W^O
        self.proj_drop = nn.Dropout(proj_drop)

        if linear:
            self.pool = nn.AdaptiveAvgPool2d(pool_size)
            self.sr = nn.Conv2d(dim, dim, kernel_size=1)
            self.norm = nn.LayerNorm(dim, eps=sr_norm_eps)
            self.act = nn.GELU()
        elif sr_ratio > 1:
            self.sr = nn.Conv2d(dim, dim, kernel_size=sr_ratio, stride=sr_ratio)
            self.norm = nn.LayerNorm(dim, eps=sr_norm_eps)

    def kv_tokens(self, H: int, W: int) -> int:
        """M, the number of key/value tokens for an H x W map."""
        if self.linear:
            return self.pool_size ** 2
        return (H // self.sr_ratio) * (W // self.sr_ratio)

    def _check(self, x: torch.Tensor, H: int, W: int) -> None:
        check_tokens(x, self.dim, H, W, type(self).__name__)
        R = self.sr_ratio
        if not self.linear and R > 1:
            if H < R or W < R:
                raise ValueError(f"reduction ratio {R} is larger than the {H} x {W} map; "
                                 f"use sr_ratio <= {min(H, W)}")
            if H % R or W % R:
                side = H if H % R else W
                raise ValueError(f"reduction ratio {R} needs H and W divisible by {R}, got "
                                 f"{H} x {W}; the nearest sizes that work are "
                                 f"{nearest_multiples(side, R)}")

    def reduce(self, x: torch.Tensor, H: int, W: int) -> torch.Tensor:
        """The tokens keys and values are computed from: (B, N, C) -> (B, M, C)."""
        if not self.linear and self.sr_ratio == 1:
            return x
        x = rearrange(x, "b (h w) c -> b c h w", h=H, w=W)
        if self.linear:
            x = self.sr(self.pool(x))                    # (B, C, P, P)
        else:
            x = self.sr(x)                               # (B, C, H/R, W/R)
        x = self.norm(rearrange(x, "b c h w -> b (h w) c"))  # (B, M, C)
        return self.act(x) if self.linear else x

    def forward(self, x: torch.Tensor, H: int, W: int) -> torch.Tensor:
        self._check(x, H, W)
        h = self.num_heads
        q = rearrange(self.q(x), "b n (h d) -> b h n d", h=h)          # (B, h, N, d)
        kv = self.kv(self.reduce(x, H, W))                             # (B, M, 2C)
        k, v = rearrange(kv, "b m (two h d) -> two b h m d", two=2, h=h)
        # k, v: (B, h, M, d) each
        if self.use_sdpa:
            p = self.attn_drop_p if self.training else 0.0
            out = F.scaled_dot_product_attention(q, k, v, dropout_p=p)
        else:
            out = scaled_dot_product_attention(q, k, v, self.attn_drop)
        out = rearrange(out, "b h n d -> b n (h d)")                   # (B, N, C)
        return self.proj_drop(self.proj(out))

    def extra_repr(self) -> str:
        mode = "linear" if self.linear else f"sr_ratio={self.sr_ratio}"
        return f"dim={self.dim}, num_heads={self.num_heads}, {mode}, sdpa={self.use_sdpa}"


class SRA(MultiHeadAttention):
    """Spatial-reduction attention (PVT Sec. 3.3): keys/values from a stride-R conv."""

    def __init__(self, dim: int, num_heads: int = 8, sr_ratio: int = 2, **kwargs):
        super().__init__(dim, num_heads, sr_ratio=sr_ratio, linear=False, **kwargs)


class LinearSRA(MultiHeadAttention):
    """Linear spatial-reduction attention (PVTv2 Sec. 3.3): keys/values from a
    P x P average pool, so the cost grows linearly with the number of tokens."""

    def __init__(self, dim: int, num_heads: int = 8, pool_size: int = 7, **kwargs):
        kwargs.pop("sr_ratio", None)
        super().__init__(dim, num_heads, linear=True, pool_size=pool_size, **kwargs)
