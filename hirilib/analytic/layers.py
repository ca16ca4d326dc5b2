"""Closed-form counts of the shared layers: attention and the FFNs (chapter 1).

For N = H*W query tokens of C channels, h heads, and M key/value tokens:

    Q projection           N C^2
    K and V projections    2 M C^2
    Q K^T                  N M C      (h heads x N x M x C/h)
    A V                    N M C
    output projection      N C^2

so full attention (M = N) costs 4 N C^2 + 2 N^2 C, quadratic in N; with
spatial reduction R, M = N / R^2, plus the reduction conv's N C^2 and its
LayerNorm's 5 M C; with PVTv2's linear SRA, M = P^2 is fixed and the cost is
linear in N.
"""

from __future__ import annotations

from .conventions import BN_PER_ELEMENT, LN_PER_ELEMENT


def mha_macs(H: int, W: int, C: int, sr_ratio: int = 1, linear: bool = False,
             pool_size: int = 7, batch: int = 1) -> int:
    """MACs of ``MultiHeadAttention(C, sr_ratio=R | linear=True)`` on an H x W map."""
    N = H * W
    if linear:
        P2 = pool_size ** 2
        M = P2
        reduce = C * H * W + P2 * C * C + LN_PER_ELEMENT * P2 * C  # pool, 1x1 conv, LN
    elif sr_ratio > 1:
        M = (H // sr_ratio) * (W // sr_ratio)
        reduce = M * C * C * sr_ratio ** 2 + LN_PER_ELEMENT * M * C  # RxR conv, LN
    else:
        M, reduce = N, 0
    proj = N * C * C + 2 * M * C * C + N * C * C  # W^Q, W^K and W^V, W^O
    attn = 2 * N * M * C                          # Q K^T and A V over all heads
    return batch * (proj + attn + reduce)


def mha_params(C: int, sr_ratio: int = 1, linear: bool = False, qkv_bias: bool = True) -> int:
    """Parameters of ``MultiHeadAttention``: W^Q, W^K, W^V, W^O (+ reduction conv, LN)."""
    p = 4 * C * C + (3 * C if qkv_bias else 0) + C
    if linear:
        p += C * C + C + 2 * C
    elif sr_ratio > 1:
        p += C * C * sr_ratio ** 2 + C + 2 * C
    return p


def ffn_macs(H: int, W: int, C: int, hidden: int, kind: str = "mlp", norm: str | None = None,
             kernel_size: int = 3, batch: int = 1) -> int:
    """MACs of ``Mlp`` / ``ConvFFN`` / ``CFFN`` on an H x W map of C channels.

    The two linear layers cost 2 N C E; the depthwise k x k conv of ConvFFN and
    CFFN adds N E k^2 (one k x k filter per hidden channel).  A BN pre-norm adds
    2 N C, an LN one 5 N C.
    """
    N = H * W
    macs = 2 * N * C * hidden
    if kind in ("convffn", "cffn"):
        macs += N * hidden * kernel_size ** 2
    elif kind != "mlp":
        raise ValueError(f"kind must be 'mlp', 'convffn' or 'cffn', got {kind!r}")
    if norm == "bn":
        macs += BN_PER_ELEMENT * N * C
    elif norm == "ln":
        macs += LN_PER_ELEMENT * N * C
    return batch * macs


def ffn_params(C: int, hidden: int, kind: str = "mlp", kernel_size: int = 3,
               norm: str | None = None) -> int:
    """Parameters of ``Mlp`` / ``ConvFFN`` / ``CFFN``: 2 C E + E + C, + E (k^2 + 1) for the DWConv."""
    p = 2 * C * hidden + hidden + C
    if kind in ("convffn", "cffn"):
        p += hidden * kernel_size ** 2 + hidden
    if norm is not None:
        p += 2 * C
    return p
