"""Closed-form parameters and multiply-accumulates of HIRI-ViT's blocks and of any
``HIRIViT`` configuration (chapter 6), written from the architecture alone: nothing here
builds or traces a module, so ``hirilib.measure.count_flops`` can be checked against it
block by block, and costs can be extrapolated to inputs where tracing would be slow.

Counting follows ``hirilib.analytic.conventions`` (convs and linears 1 MAC per weight
use, biases free; BN 2 and LN 5 per element; 2x2 average pooling 4 per output element;
means 1 per input element; attention's two matrix products counted), plus nearest
upsampling at 1 per output element (fvcore's count for ``upsample_nearest2d``).

Each ``*_cost`` function returns a ``Cost(params, macs)``; costs add.

>>> from hirilib.models.hiri_vit import HIRI_VIT_CONFIGS
>>> round(hiri_vit_macs(HIRI_VIT_CONFIGS["hiri_vit_s"], 448) / 1e9, 3)
5.044
"""

from __future__ import annotations

from typing import Any, Dict, NamedTuple, Optional, Tuple

from .conventions import BN_PER_ELEMENT as BN
from .conventions import LN_PER_ELEMENT as LN
from .layers import ffn_macs, ffn_params, mha_macs, mha_params

UPSAMPLE_PER_ELEMENT = 1  # nearest upsampling: one per output element (fvcore)
POOL_2X2_PER_OUTPUT = 4   # 2x2 average pooling: one per window element


class Cost(NamedTuple):
    """Parameters and MACs of a module (``+`` adds them; ``k * cost`` repeats it)."""

    params: int
    macs: int

    def __add__(self, other: "Cost") -> "Cost":  # type: ignore[override]
        return Cost(self.params + other.params, self.macs + other.macs)

    def __rmul__(self, k: int) -> "Cost":  # type: ignore[override]
        return Cost(k * self.params, k * self.macs)


ZERO = Cost(0, 0)


def out_side(size: int, kernel: int, stride: int) -> int:
    """The output side of a conv with padding ``kernel // 2``: ceil(size / stride) for
    odd kernels."""
    p = kernel // 2
    return (size + 2 * p - kernel) // stride + 1


def quarter(size: int) -> int:
    """The side after any of the stems (two stride-2 3x3 convs, or a 7x7/4 conv):
    ceil(size / 4)."""
    return -(-size // 4)


def conv_cost(cin: int, cout: int, k: int, H: int, W: int, stride: int = 1,
              groups: int = 1, bias: bool = False) -> Cost:
    """A k x k conv (padding k // 2) on an H x W map: k^2 C_in/g C_out per output
    position."""
    Ho, Wo = out_side(H, k, stride), out_side(W, k, stride)
    weights = k * k * (cin // groups) * cout
    return Cost(weights + (cout if bias else 0), Ho * Wo * weights)


def norm_cost(kind: str, C: int, positions: int) -> Cost:
    """BN (2 per element) or LN (5 per element) over C channels at ``positions``."""
    return Cost(2 * C, (BN if kind == "bn" else LN) * C * positions)


def conv_norm_cost(cin: int, cout: int, k: int, H: int, W: int, stride: int = 1,
                   groups: int = 1, bias: bool = False, norm: str = "bn") -> Cost:
    """``ConvNormAct``: the conv, then its norm on the output map."""
    Ho, Wo = out_side(H, k, stride), out_side(W, k, stride)
    return (conv_cost(cin, cout, k, H, W, stride, groups, bias)
            + norm_cost(norm, cout, Ho * Wo))


# ------------------------------------------------------------------------- stems


def hr_stem_cost(in_chans: int, dim: int, H: int, W: int, hidden: Optional[int] = None,
                 kernel_size: int = 3) -> Cost:
    """HR-stem on an H x W image: 3x3/2 conv + BN to ``hidden`` at H/2; high branch
    DW k x k + BN, then 3x3/2 conv; low branch 3x3/2 conv + BN, 3x3 conv + BN, 1x1 conv;
    the sum's BN at H/4.

    >>> hr_stem_cost(3, 32, 448, 448).macs  # 0.43 G: well under the Conv-stem's 1.09 G
    426295296
    """
    h = hidden or dim
    H2, W2 = out_side(H, 3, 2), out_side(W, 3, 2)
    H4, W4 = out_side(H2, 3, 2), out_side(W2, 3, 2)
    first = conv_norm_cost(in_chans, h, 3, H, W, 2)
    high = (conv_norm_cost(h, h, kernel_size, H2, W2, groups=h)
            + conv_cost(h, dim, 3, H2, W2, 2))
    low = (conv_norm_cost(h, dim, 3, H2, W2, 2) + conv_norm_cost(dim, dim, 3, H4, W4)
           + conv_cost(dim, dim, 1, H4, W4))
    return first + high + low + norm_cost("bn", dim, H4 * W4)


def conv_stem_cost(in_chans: int, dim: int, H: int, W: int,
                   hidden: Optional[int] = None, num_mid: int = 2) -> Cost:
    """Conv-stem: 3x3/2 conv + BN to ``hidden``, ``num_mid`` 3x3 convs + BN at H/2, and
    a 3x3/2 conv + BN to ``dim``."""
    h = hidden or dim
    H2, W2 = out_side(H, 3, 2), out_side(W, 3, 2)
    return (conv_norm_cost(in_chans, h, 3, H, W, 2)
            + num_mid * conv_norm_cost(h, h, 3, H2, W2)
            + conv_norm_cost(h, dim, 3, H2, W2, 2))


def vit_stem_cost(in_chans: int, dim: int, H: int, W: int, norm: str = "ln") -> Cost:
    """ViT-stem: a 7x7 stride-4 conv with bias, then a norm."""
    return conv_norm_cost(in_chans, dim, 7, H, W, 4, bias=True, norm=norm)


# ------------------------------------------------------------------------- blocks


def hr_block_cost(dim: int, mlp_ratio: float, H: int, W: int,
                  kernel_size: int = 3) -> Cost:
    """HR-block on an H x W map of C channels, E = ``mlp_ratio`` * C:

        high: DW k x k + BN at H x W                    H W C (k^2 + 2)
        low:  DW 3x3/2 + BN, FC C->E, FC E->C at H/2    (H W / 4) C (9 + 2 + 2E)
        nearest upsampling back to H x W                H W C

    >>> high_and_up, low = 56 * 56 * 64 * (9 + 2 + 1), 28 * 28 * 64 * (9 + 2 + 2 * 1024)
    >>> hr_block_cost(64, 16, 56, 56).macs == high_and_up + low
    True
    """
    hidden = int(dim * mlp_ratio)
    Hl, Wl = out_side(H, 3, 2), out_side(W, 3, 2)
    high = conv_norm_cost(dim, dim, kernel_size, H, W, groups=dim)
    low = (conv_norm_cost(dim, dim, 3, H, W, 2, groups=dim)
           + conv_cost(dim, hidden, 1, Hl, Wl, bias=True)
           + conv_cost(hidden, dim, 1, Hl, Wl, bias=True))
    return high + low + Cost(0, UPSAMPLE_PER_ELEMENT * H * W * dim)


def ffn_block_cost(dim: int, mlp_ratio: float, H: int, W: int, ffn: str = "cffn",
                   norm: str = "bn") -> Cost:
    """A CFFN block: its pre-norm and the FFN (chapter 1's ``ffn_macs``): the two FCs
    cost 2 H W C E, CFFN's depthwise 3x3 H W E 9."""
    hidden = int(dim * mlp_ratio)
    return Cost(ffn_params(dim, hidden, ffn, norm=norm),
                ffn_macs(H, W, dim, hidden, ffn, norm))


def transformer_block_cost(dim: int, mlp_ratio: float, H: int, W: int,
                           sr_ratio: int = 1, ffn: str = "cffn", norm: str = "bn",
                           attn_norm: str = "ln", qkv_bias: bool = True) -> Cost:
    """A Transformer block: the attention's pre-norm and attention (chapter 1's
    ``mha_macs``: 4 N C^2 + 2 N^2 C without reduction), then the FFN block."""
    attn = Cost(mha_params(dim, sr_ratio, qkv_bias=qkv_bias),
                mha_macs(H, W, dim, sr_ratio))
    return (norm_cost(attn_norm, dim, H * W) + attn
            + ffn_block_cost(dim, mlp_ratio, H, W, ffn, norm))


# ------------------------------------------------------------------------- downsampling


def shortcut_cost(in_dim: int, out_dim: int, H: int, W: int) -> Cost:
    """The downsampling shortcut: 2x2 average pool (the last window of an odd side
    holding one position), then a 1x1 conv with bias."""
    Ho, Wo = -(-H // 2), -(-W // 2)
    pool = Cost(0, POOL_2X2_PER_OUTPUT * Ho * Wo * in_dim)
    return pool + conv_cost(in_dim, out_dim, 1, Ho, Wo, bias=True)


def irds_a_cost(in_dim: int, out_dim: int, H: int, W: int, ratio: float = 4.0,
                shortcut: bool = True) -> Cost:
    """IRDS-a on an H x W map: 3x3/2 conv + BN to r C_in, 1x1 conv + BN to C_out,
    [+ shortcut]."""
    h = int(in_dim * ratio)
    Ho, Wo = out_side(H, 3, 2), out_side(W, 3, 2)
    cost = conv_norm_cost(in_dim, h, 3, H, W, 2) + conv_norm_cost(h, out_dim, 1, Ho, Wo)
    return cost + (shortcut_cost(in_dim, out_dim, H, W) if shortcut else ZERO)


def irds_b_cost(in_dim: int, out_dim: int, H: int, W: int, ratio: float = 4.0,
                shortcut: bool = True) -> Cost:
    """IRDS-b on an H x W map: 1x1 conv + BN to r C_in (at full resolution), DW 3x3/2
    with bias, 1x1 conv with bias to C_out, [+ shortcut]."""
    h = int(in_dim * ratio)
    Ho, Wo = out_side(H, 3, 2), out_side(W, 3, 2)
    cost = (conv_norm_cost(in_dim, h, 1, H, W)
            + conv_cost(h, h, 3, H, W, 2, groups=h, bias=True)
            + conv_cost(h, out_dim, 1, Ho, Wo, bias=True))
    return cost + (shortcut_cost(in_dim, out_dim, H, W) if shortcut else ZERO)


def conv_downsample_cost(in_dim: int, out_dim: int, H: int, W: int,
                         norm: str = "ln") -> Cost:
    """M-ViT's downsampling: a 3x3/2 conv with bias, then a norm."""
    return conv_norm_cost(in_dim, out_dim, 3, H, W, 2, bias=True, norm=norm)


def head_cost(dim: int, H: int, W: int, num_classes: int = 1000,
              norm: str = "ln") -> Cost:
    """The head: a norm over the last H x W map, the mean over positions, the
    classifier."""
    K = num_classes
    fc = Cost(dim * K + K, dim * K) if K else ZERO
    return norm_cost(norm, dim, H * W) + Cost(0, H * W * dim) + fc


# ---------------------------------------------------------------------- a whole network


def hiri_vit_costs(cfg: Dict[str, Any], H: int, W: Optional[int] = None,
                   num_classes: int = 1000, in_chans: int = 3) -> Dict[str, Cost]:
    """The cost of every part of the ``HIRIViT`` that ``cfg`` (its arguments) describes
    on an H x W input, keyed as the model's modules: ``stem``, ``stages.i.downsample``,
    ``stages.i.blocks`` (all blocks of stage i) and ``head``."""
    from hirilib.models.hiri_vit import HIRIViTConfig

    c = HIRIViTConfig(**cfg)         # validated, the defaults filled in
    W = H if W is None else W
    dims, depths, blocks, ratios = c.dims, c.depths, c.blocks, c.mlp_ratios
    n, sr, num_a = len(dims), c.reductions, c.irds_a_count
    out: Dict[str, Cost] = {}
    if c.stem == "hr":
        out["stem"] = hr_stem_cost(in_chans, dims[0], H, W, c.stem_dim,
                                   c.stem_kernel_size)
    elif c.stem == "conv":
        out["stem"] = conv_stem_cost(in_chans, dims[0], H, W, c.stem_dim, c.stem_mid)
    else:
        out["stem"] = vit_stem_cost(in_chans, dims[0], H, W, c.norm)
    h, w = quarter(H), quarter(W)
    for i in range(n):
        C, kind, r = dims[i], blocks[i], ratios[i]
        if i > 0:
            prev = dims[i - 1]
            if c.downsample == "conv":
                norm = c.attn_norm if kind == "transformer" else c.norm
                down = conv_downsample_cost(prev, C, h, w, norm)
            elif i <= num_a:
                down = irds_a_cost(prev, C, h, w, c.irds_ratio, c.irds_shortcut)
            else:
                down = irds_b_cost(prev, C, h, w, c.irds_ratio, c.irds_shortcut)
            out[f"stages.{i}.downsample"] = down
            h, w = out_side(h, 3, 2), out_side(w, 3, 2)
        if kind == "hr":
            block = hr_block_cost(C, r, h, w, c.hr_kernel_size)
        elif kind == "ffn":
            block = ffn_block_cost(C, r, h, w, c.ffn, c.norm)
        else:
            block = transformer_block_cost(C, r, h, w, sr[i], c.ffn, c.norm,
                                           c.attn_norm, c.qkv_bias)
        out[f"stages.{i}.blocks"] = depths[i] * block
    out["head"] = head_cost(dims[-1], h, w, num_classes, c.head_norm)
    return out


def hiri_vit_macs(cfg: Dict[str, Any], H: int, W: Optional[int] = None, **kw) -> int:
    """Total MACs of a ``HIRIViT`` configuration on an H x W input."""
    return sum(cost.macs for cost in hiri_vit_costs(cfg, H, W, **kw).values())


def hiri_vit_params(cfg: Dict[str, Any], **kw) -> int:
    """Total parameters of a ``HIRIViT`` configuration."""
    return sum(cost.params for cost in hiri_vit_costs(cfg, 256, **kw).values())


def stage_sizes(cfg: Dict[str, Any], H: int,
                W: Optional[int] = None) -> Tuple[Tuple[int, int], ...]:
    """The map of each stage: ceil(H/4), ceil(H/8), ...

    >>> stage_sizes({"dims": (1, 1, 1, 1, 1)}, 448)
    ((112, 112), (56, 56), (28, 28), (14, 14), (7, 7))
    >>> stage_sizes({"dims": (1, 1, 1, 1, 1)}, 224)[-1]
    (4, 4)
    """
    W = H if W is None else W
    n = len(cfg["dims"])
    return tuple((-(-H // (4 * 2 ** i)), -(-W // (4 * 2 ** i))) for i in range(n))
