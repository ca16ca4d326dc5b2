"""HIRI-ViT: Scaling Vision Transformer with High Resolution Inputs.

Yao, Li, Pan, Mei; IEEE TPAMI 2024 (arXiv 2403.11999).  Chapter 6 of the book builds it.

A four-stage hybrid ViT fed a 448 x 448 image costs about four times what it costs at
224 (Table 7: 4.7 -> 21.5 GFLOPs).  HIRI-ViT adds a fifth stage in front, so that at
448 its last four stages see the maps a four-stage net sees at 224 (56, 28, 14, 7), and
makes the two high-resolution stages cheap by splitting each convolutional operation
into two parallel branches: a light one at full resolution and a heavier one at half.

What the paper's text fixes (Sec. 3-4; its Table 1, the per-stage widths, depths, ratios
and heads, is not available to us, and no code has been published):

* ``HRStem`` (Sec. 4.1): a stride-2 3x3 conv, then a high-resolution branch (a
  depthwise conv, then a strided conv) and a low-resolution branch (a strided conv, then
  a 3x3 and a 1x1 conv), summed and normalised by BN; stride 4 overall.
* ``HRBlock`` (Sec. 4.2): a depthwise conv at full resolution, plus a stride-2 depthwise
  3x3 conv with BN, a feed-forward (FC, act, FC) at half resolution and an upsampling by
  repetition; the two are "fused" (we add them).  Two HR-blocks replace each CFFN block
  of stages 1-2.
* ``IRDSa`` / ``IRDSb`` (Sec. 4.3): the downsampling between stages.  IRDS-a (the first
  two): a stride-2 3x3 conv that expands the channels, then a 1x1 conv that compresses
  them.  IRDS-b (the last two): a MobileNetV2 inverted residual with norm and activation
  only after its first conv, plus an extra downsampling shortcut.
* Stage 3 holds CFFN blocks only, stages 4-5 Transformer blocks (MHA without spatial
  reduction, then CFFN); BN in the first three stages and before every CFFN, LN for the
  attention of the last two (Sec. 4.4).  CFFN(X) = FC(DWConv(z) + z), z = act(FC(X)).

Everything else is ours and is a field of ``HIRIViTConfig`` or an entry of the tables
below, each with the reason for its value, calibrated against the GFLOPs the paper
prints: the four-stage S at 224 (4.7) and 448 (21.5), five stages + HR-stem at 448 (5.1)
and HIRI-ViT-S at 448 (about 5.0).  Any input side from ``min_input_size`` up works (the
paper runs HIRI-ViT at 224 too, Sec. 5.1): each stride-2 layer rounds up (H/2 below
means ceil(H/2)), the HR-blocks upsample to their branch's exact size and the IRDS
shortcuts pool an odd map's edge alone; at multiples of 2^(n+1) nothing is rounded.
Table 7's ablation path is ``hirilib.models.hiri_vit_table7``; published numbers are in
``hirilib.reference.HIRI_VIT``, closed-form costs in ``hirilib.analytic.hiri_vit``,
timings in ``hirilib.bench.hiri_vit``.  No pretrained weights exist.

>>> import torch, hirilib
>>> m = hirilib.create_model("hiri_vit_s").eval()
>>> [tuple(f.shape[1:]) for f in m.forward_pyramid(torch.zeros(1, 3, 128, 128))]
[(32, 32, 32), (64, 16, 16), (128, 8, 8), (320, 4, 4), (448, 2, 2)]
>>> m.forward_features(torch.zeros(1, 3, 224, 224)).shape[-2:]
torch.Size([4, 4])
"""

from __future__ import annotations

import dataclasses
import math
from collections import OrderedDict
from dataclasses import dataclass
from functools import partial
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import torch
import torch.nn as nn
import torch.nn.functional as F
from einops import rearrange

from hirilib.layers import (CFFN, ClassifierHead, ConvNormAct, DropPath, HierarchicalBackbone,
                            Mlp, MultiHeadAttention, Stage, TokenNorm, check_int,
                            check_model_args, check_positive_ints, check_rate,
                            drop_path_schedule, fan_out_init, make_act)
from hirilib.registry import register_model

__all__ = ["HRStem", "ConvStem", "ViTStem", "HRBlock", "FFNBlock", "TransformerBlock",
           "IRDSa", "IRDSb", "DownsampleShortcut", "MViTDownsample", "HIRIViTConfig",
           "HIRIViT", "HIRI_VIT_CONFIGS", "HIRI_VIT_NANO", "four_stage_config",
           "hiri_vit_config", "Table7Row", "TABLE7", "table7_config", "config_diff"]

BLOCKS = ("hr", "ffn", "transformer")
STEMS = ("vit", "conv", "hr")

# ------------------------------------------------------------------------- stems


class HRStem(nn.Module):
    """HR-stem (Sec. 4.1, Fig. 3c): ``(B, C_in, H, W) -> (B, C, H/4, W/4)``.

    A stride-2 3x3 conv (as in the Conv-stem) to ``hidden`` channels; then two branches
    on that H/2 map, summed and normalised by BN:

    * high resolution: a depthwise ``kernel_size`` conv (+ BN, act; ours), then a
      stride-2 3x3 conv (the kernel is ours: the Conv-stem's);
    * low resolution: a stride-2 3x3 conv first, then a 3x3 and a 1x1 conv (BN and act
      between them; ours).

    The final BN folds into the last conv of both branches at inference (``bn_fusion``).
    """

    #: BN(high + low) folds into both branches' last convs (``hirilib.deploy.fuse_bn``)
    bn_fusion = (("norm", ("high.1", "low.2"), "after"),)

    def __init__(self, in_chans: int, dim: int, hidden: Optional[int] = None,
                 kernel_size: int = 3, act: str = "gelu"):
        super().__init__()
        hidden = hidden or dim
        self.conv = ConvNormAct(in_chans, hidden, 3, 2, bias=False, act=act)
        self.high = nn.Sequential(
            ConvNormAct(hidden, hidden, kernel_size, groups=hidden, bias=False,
                        act=act),
            nn.Conv2d(hidden, dim, 3, 2, 1, bias=False))
        self.low = nn.Sequential(
            ConvNormAct(hidden, dim, 3, 2, bias=False, act=act),
            ConvNormAct(dim, dim, 3, bias=False, act=act),
            nn.Conv2d(dim, dim, 1, bias=False))
        self.norm = nn.BatchNorm2d(dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, C_in, H, W)
        x = self.conv(x)                                  # (B, hidden, H/2, W/2)
        return self.norm(self.high(x) + self.low(x))      # (B, C, H/4, W/4)


class ConvStem(nn.Sequential):
    """Conv-stem (Sec. 4.1, Fig. 3b; Xiao et al. 2021): stacked 3x3 convs with BN,
    ``(B, C_in, H, W) -> (B, C, H/4, W/4)``: a stride-2 conv to ``hidden`` channels,
    ``num_mid`` stride-1 convs, and a stride-2 conv to C.  All of it is ours: the
    authors' Wave-ViT stem is a 7x7/2 conv + BN + ReLU, two 3x3 convs + BN + ReLU, then a
    3x3/2 projection with LN; ours keeps its layout but makes the first conv 3x3 (the
    HR-stem's first conv is 3x3, "like the Conv-stem"), uses GELU and ends in BN."""

    def __init__(self, in_chans: int, dim: int, hidden: Optional[int] = None,
                 num_mid: int = 2, act: str = "gelu"):
        hidden = hidden or dim
        layers = [ConvNormAct(in_chans, hidden, 3, 2, bias=False, act=act)]
        layers += [ConvNormAct(hidden, hidden, 3, bias=False, act=act)
                   for _ in range(num_mid)]
        layers.append(ConvNormAct(hidden, dim, 3, 2, bias=False))
        super().__init__(*layers)


class ViTStem(ConvNormAct):
    """ViT-stem (Sec. 4.1, Fig. 3a): one 7x7 stride-4 conv, then a norm (PVTv2's patch
    embedding); ``(B, C_in, H, W) -> (B, C, H/4, W/4)``.  Table 7 rows 1-4."""

    def __init__(self, in_chans: int, dim: int, norm: str = "ln"):
        super().__init__(in_chans, dim, 7, 4, bias=True, norm=norm)


# ------------------------------------------------------------------------- blocks


class HRBlock(nn.Module):
    """HR-block (Sec. 4.2, Fig. 4) on a map ``(B, C, H, W)``:

        high = BN(DWConv_k(x))                                   # full resolution
        low  = FC2(act(FC1(BN(DWConv_3x3/2(x)))))                # half resolution
        out  = x + DropPath(high + Upsample_nearest(low))

    The paper fixes the branches and says their outputs are "fused"; adding them, the
    BN after the high-resolution conv, the outer residual and ``kernel_size`` (3) are
    ours.  The upsampling repeats each low-resolution position 2 x 2 and crops to the
    branch's exact size, so odd maps work (H/2 is rounded up).  Every BN directly
    follows a conv, so all of them fold into it at inference (the paper's reason for
    BN, Sec. 4.4).  The FCs are 1x1 convs on the map (the same weights as Linear layers
    on tokens).  With ``mlp_ratio`` twice the CFFN ratio it replaces, a pair of
    HR-blocks costs the same FC MACs as that CFFN block: the FFN runs on a map with 4
    times fewer positions.
    """

    def __init__(self, dim: int, mlp_ratio: float = 16.0, kernel_size: int = 3,
                 act: str = "gelu", drop_path: float = 0.0):
        super().__init__()
        hidden = int(dim * mlp_ratio)
        self.dim = dim
        self.high = ConvNormAct(dim, dim, kernel_size, groups=dim, bias=False)
        self.low = nn.Sequential(OrderedDict(
            down=ConvNormAct(dim, dim, 3, 2, groups=dim, bias=False),  # DW 3x3/2 + BN
            fc1=nn.Conv2d(dim, hidden, 1),
            act=make_act(act),
            fc2=nn.Conv2d(hidden, dim, 1)))
        self.drop_path = DropPath.make(drop_path)

    def forward(self, x: torch.Tensor) -> torch.Tensor:             # (B, C, H, W)
        high = self.high(x)                                          # (B, C, H, W)
        low = self.low(x)                                # (B, C, ceil(H/2), ceil(W/2))
        low = F.interpolate(low, size=high.shape[-2:], mode="nearest")  # repeat 2x2
        return x + self.drop_path(high + low)                        # (B, C, H, W)


def _ffn(kind: str, dim: int, mlp_ratio: float, norm: Optional[str], act: str,
         drop: float) -> nn.Module:
    """The FFN of a block with its pre-norm inside: CFFN (Eq. 2) or a plain Mlp."""
    hidden, act_layer = int(dim * mlp_ratio), partial(make_act, act)
    if kind == "cffn":
        return CFFN(dim, hidden, act_layer=act_layer, drop=drop, norm=norm)
    if kind == "mlp":
        return Mlp(dim, hidden, act_layer=act_layer, drop=drop, norm=norm)
    raise ValueError(f"ffn must be 'cffn' or 'mlp', got {kind!r}")


class FFNBlock(nn.Module):
    """A CFFN block (stage 3; stages 1-2 of the four-stage nets): on a map
    ``(B, C, H, W)``, ``x + DropPath(CFFN(BN(x)))`` over its H*W tokens.  The BN
    pre-norm folds into the CFFN's first FC at inference."""

    def __init__(self, dim: int, mlp_ratio: float = 8.0, ffn: str = "cffn",
                 norm: str = "bn", act: str = "gelu", drop: float = 0.0,
                 drop_path: float = 0.0):
        super().__init__()
        self.mlp = _ffn(ffn, dim, mlp_ratio, norm, act, drop)
        self.drop_path = DropPath.make(drop_path)

    def forward(self, x: torch.Tensor) -> torch.Tensor:       # (B, C, H, W)
        H, W = x.shape[-2:]
        t = rearrange(x, "b c h w -> b (h w) c")                # (B, N, C)
        t = t + self.drop_path(self.mlp(t, H, W))
        return rearrange(t, "b (h w) c -> b c h w", h=H, w=W)


class TransformerBlock(nn.Module):
    """A Transformer block (stages 4-5; every stage of M-ViT) on a map ``(B, C, H, W)``:

        t = t + DropPath(MHA(LN(t)))      # attn_norm: LN (Sec. 4.4); sr_ratio 1 here
        t = t + DropPath(CFFN(BN(t)))     # norm: BN before every CFFN (Sec. 4.4)

    over the H*W tokens t.  ``sr_ratio`` > 1 reduces keys and values as in PVT (M-ViT's
    stages 1-2, Table 7 rows 1-2)."""

    def __init__(self, dim: int, num_heads: int, mlp_ratio: float = 4.0,
                 sr_ratio: int = 1, ffn: str = "cffn", norm: str = "bn",
                 attn_norm: str = "ln", act: str = "gelu", qkv_bias: bool = True,
                 drop: float = 0.0, attn_drop: float = 0.0, drop_path: float = 0.0,
                 use_sdpa: bool = True):
        super().__init__()
        self.norm1 = TokenNorm(dim, attn_norm)
        self.attn = MultiHeadAttention(dim, num_heads, qkv_bias=qkv_bias,
                                       sr_ratio=sr_ratio, attn_drop=attn_drop,
                                       proj_drop=drop, use_sdpa=use_sdpa)
        self.mlp = _ffn(ffn, dim, mlp_ratio, norm, act, drop)
        self.drop_path = DropPath.make(drop_path)

    def forward(self, x: torch.Tensor) -> torch.Tensor:       # (B, C, H, W)
        H, W = x.shape[-2:]
        t = rearrange(x, "b c h w -> b (h w) c")                # (B, N, C)
        t = t + self.drop_path(self.attn(self.norm1(t), H, W))
        t = t + self.drop_path(self.mlp(t, H, W))
        return rearrange(t, "b (h w) c -> b c h w", h=H, w=W)


# ------------------------------------------------------------------------- downsampling


class DownsampleShortcut(nn.Sequential):
    """The downsampling shortcut of IRDS: 2x2 average pooling, then a 1x1 conv (with
    bias) to the new width, ``(B, C_in, H, W) -> (B, C_out, ceil(H/2), ceil(W/2))``.
    Ours: the text says only that an extra downsampling shortcut stabilises training;
    this is ResNet-D's (He et al. 2019), the simplest one that sees every input
    position.  On an odd map the last window holds the edge positions alone (its mean
    over them), so the shortcut's map matches the stride-2 conv's."""

    def __init__(self, in_dim: int, out_dim: int):
        pool = nn.AvgPool2d(2, ceil_mode=True, count_include_pad=False)
        super().__init__(OrderedDict(pool=pool, conv=nn.Conv2d(in_dim, out_dim, 1)))


class IRDSa(nn.Module):
    """IRDS-a (Sec. 4.3, Fig. 5b), the first two downsamplings:
    ``(B, C_in, H, W) -> (B, C_out, H/2, W/2)``,

        out = BN(Conv1x1(act(BN(Conv3x3/2(x))))) + shortcut(x)

    the 3x3 conv expanding to ``ratio * C_in`` channels and the 1x1 compressing them.
    Ours: ``ratio`` 4, the norms (BN after both convs) and the shortcut (the layer is an
    inverted *residual* downsampling with "two parallel branches")."""

    def __init__(self, in_dim: int, out_dim: int, ratio: float = 4.0, act: str = "gelu",
                 shortcut: bool = True):
        super().__init__()
        hidden = int(in_dim * ratio)
        self.conv = nn.Sequential(
            ConvNormAct(in_dim, hidden, 3, 2, bias=False, act=act),
            ConvNormAct(hidden, out_dim, 1, bias=False))
        self.shortcut = DownsampleShortcut(in_dim, out_dim) if shortcut else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:   # (B, C_in, H, W)
        y = self.conv(x)                                     # (B, C_out, H/2, W/2)
        return y if self.shortcut is None else y + self.shortcut(x)


class IRDSb(nn.Module):
    """IRDS-b (Sec. 4.3, Fig. 5c), the last two downsamplings:
    ``(B, C_in, H, W) -> (B, C_out, H/2, W/2)``,

        out = Conv1x1(DWConv3x3/2(act(BN(Conv1x1(x))))) + shortcut(x)

    MobileNetV2's inverted residual (expand, depthwise, project) with norm and
    activation only after the first conv, plus the extra downsampling shortcut that
    stabilises training (the paper's).  Ours: ``ratio`` 4 (the FFNs' habit; MobileNetV2
    uses 6) and the form of the shortcut (``DownsampleShortcut``)."""

    def __init__(self, in_dim: int, out_dim: int, ratio: float = 4.0, act: str = "gelu",
                 shortcut: bool = True):
        super().__init__()
        hidden = int(in_dim * ratio)
        self.conv = nn.Sequential(ConvNormAct(in_dim, hidden, 1, bias=False, act=act),
                                  nn.Conv2d(hidden, hidden, 3, 2, 1, groups=hidden),
                                  nn.Conv2d(hidden, out_dim, 1))
        self.shortcut = DownsampleShortcut(in_dim, out_dim) if shortcut else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:   # (B, C_in, H, W)
        y = self.conv(x)                                     # (B, C_out, H/2, W/2)
        return y if self.shortcut is None else y + self.shortcut(x)


class MViTDownsample(ConvNormAct):
    """M-ViT's downsampling (Sec. 5.4, Fig. 5a): one stride-2 3x3 conv that raises the
    width, then a norm (PVTv2's and Wave-ViT's).  Table 7 rows 1-5 and HIRI-ViT-Nano.
    (Not ``hirilib.layers.ConvDownsample``, ConvNeXt's norm-then-2x2 conv.)"""

    def __init__(self, in_dim: int, out_dim: int, norm: str = "ln"):
        super().__init__(in_dim, out_dim, 3, 2, bias=True, norm=norm)

# ------------------------------------------------------------------------- the network


def _one_of(name: str, value, allowed: Sequence) -> None:
    if value not in allowed:
        raise ValueError(f"{name} must be one of {', '.join(map(repr, allowed))}, "
                         f"got {value!r}")


@dataclass(frozen=True)
class HIRIViTConfig:
    """The architecture of a ``HIRIViT``: one entry per stage (four or five stages, or
    more) for the per-stage fields; the defaults are HIRI-ViT-S.  Fields marked *ours*
    are reconstruction choices (the paper's Table 1 is not available to us), each
    explained in chapter 6.  It validates itself: a bad value is a ``ValueError`` that
    quotes it.

    >>> HIRIViTConfig(dims=(32, 64, 128, 320)).dims
    Traceback (most recent call last):
      ...
    ValueError: dims needs 5 entries (one per stage), got (32, 64, 128, 320)
    """

    #: widths and blocks per stage (ours); an ``"hr"`` stage counts HR-blocks (two per
    #: CFFN block they replace)
    dims: Tuple[int, ...] = (32, 64, 128, 320, 448)
    depths: Tuple[int, ...] = (2, 6, 4, 8, 3)
    #: ``"hr"`` | ``"ffn"`` | ``"transformer"`` per stage (the paper's: HR, HR, CFFN,
    #: Transformer, Transformer)
    blocks: Tuple[str, ...] = ("hr", "hr", "ffn", "transformer", "transformer")
    #: hidden width / C of each stage's FFN: the CFFN's, or the HR-block's
    #: low-resolution FFN (ours)
    mlp_ratios: Tuple[float, ...] = (8, 16, 8, 4, 4)
    #: key/value spatial reduction of the attention (1: none, as in HIRI-ViT's stages
    #: 4-5; M-ViT reduces by 4 and 2 in stages 1-2, Wave-ViT's); None: all 1
    sr_ratios: Optional[Tuple[int, ...]] = None
    #: channels per attention head (ours: 32, as in the authors' Wave-ViT)
    head_dim: int = 32
    #: ``"hr"`` (HR-stem) | ``"conv"`` (Conv-stem) | ``"vit"`` (7x7/4 conv)
    stem: str = "hr"
    #: hidden width of the Conv- and HR-stems (ours; None: the first stage's width)
    stem_dim: Optional[int] = None
    #: stride-1 3x3 convs in the middle of the Conv-stem (ours: 2)
    stem_mid: int = 2
    #: ``"irds"`` (IRDS-a, then IRDS-b) | ``"conv"`` (3x3/2 conv + norm, M-ViT's)
    downsample: str = "irds"
    #: how many downsamplings are IRDS-a (None: all but the last two, which are IRDS-b)
    num_irds_a: Optional[int] = None
    #: hidden width / C_in of both IRDS forms (ours: 4)
    irds_ratio: float = 4.0
    #: the downsampling shortcut in IRDS (the paper's for IRDS-b; ours for IRDS-a)
    irds_shortcut: bool = True
    #: ``"cffn"`` (Eq. 2) | ``"mlp"`` (M-ViT's FFN, Table 7 row 1)
    ffn: str = "cffn"
    #: ``"bn"`` | ``"ln"``: the pre-norm of every FFN, the norm of the ViT-stem and of
    #: conv downsamplings into FFN-only stages (Table 7 row 4 switches it)
    norm: str = "bn"
    attn_norm: str = "ln"   # attention's pre-norm, and conv downsamplings' before it
    #: the HR-blocks' and HR-stem's full-resolution DW kernel (ours: 3, "lightweight")
    hr_kernel_size: int = 3
    stem_kernel_size: int = 3
    #: activation everywhere (ours: GELU, the FFNs' in PVTv2 and Wave-ViT)
    act: str = "gelu"
    head_norm: str = "ln"   # the norm of the last map before pooling
    qkv_bias: bool = True                    # these four as in PVTv2
    drop_rate: float = 0.0
    attn_drop_rate: float = 0.0
    use_sdpa: bool = True

    def __post_init__(self):
        n = len(check_positive_ints("depths", self.depths))
        if n < 2:
            raise ValueError(f"HIRI-ViT needs at least two stages, got "
                             f"depths={self.depths!r}")
        seq = partial(object.__setattr__, self)     # frozen: store the tuples once
        seq("depths", tuple(self.depths))
        seq("dims", check_positive_ints("dims", self.dims, n))
        if self.sr_ratios is not None:
            seq("sr_ratios", check_positive_ints("sr_ratios", self.sr_ratios, n))
        for name in ("blocks", "mlp_ratios"):
            values = tuple(getattr(self, name))
            if len(values) != n:
                raise ValueError(f"{name} needs {n} entries (one per stage), got "
                                 f"{values!r}")
            seq(name, values)
        if any(b not in BLOCKS for b in self.blocks):
            raise ValueError(f"blocks entries must be one of {', '.join(BLOCKS)}, "
                             f"got {self.blocks!r}")
        if any(isinstance(r, bool) or not isinstance(r, (int, float)) or r <= 0
               for r in self.mlp_ratios):
            raise ValueError(f"mlp_ratios must be positive numbers, got "
                             f"{self.mlp_ratios!r}")
        check_int("head_dim", self.head_dim, 1)
        for C, kind in zip(self.dims, self.blocks):
            if kind == "transformer" and C % self.head_dim:
                raise ValueError(f"an attention stage of width {C} cannot be split "
                                 f"into heads of head_dim={self.head_dim} channels")
        _one_of("stem", self.stem, STEMS)
        _one_of("downsample", self.downsample, ("irds", "conv"))
        _one_of("ffn", self.ffn, ("cffn", "mlp"))
        for name in ("norm", "attn_norm", "head_norm"):
            _one_of(name, getattr(self, name), ("bn", "ln"))
        if self.stem_dim is not None:
            check_int("stem_dim", self.stem_dim, 1)
        if self.num_irds_a is not None and check_int("num_irds_a", self.num_irds_a,
                                                     0) > n - 1:
            raise ValueError(f"num_irds_a={self.num_irds_a}, but there are only {n - 1} "
                             f"downsamplings")
        check_int("stem_mid", self.stem_mid, 0)
        for name in ("hr_kernel_size", "stem_kernel_size"):
            k = getattr(self, name)
            if check_int(name, k, 1) % 2 == 0:
                raise ValueError(f"{name} must be odd (padding k // 2 keeps the size), "
                                 f"got {k}")
        if not isinstance(self.irds_ratio, (int, float)) or self.irds_ratio <= 0:
            raise ValueError(f"irds_ratio must be a positive number, got "
                             f"{self.irds_ratio!r}")
        check_rate("drop_rate", self.drop_rate)
        check_rate("attn_drop_rate", self.attn_drop_rate)

    @property
    def reductions(self) -> Tuple[int, ...]:
        """``sr_ratios``, with None read as no reduction in any stage."""
        return self.sr_ratios or (1,) * len(self.depths)

    @property
    def irds_a_count(self) -> int:
        """``num_irds_a``, with None read as all downsamplings but the last two."""
        return max(0, len(self.depths) - 3) if self.num_irds_a is None else self.num_irds_a

    def replace(self, **changes) -> "HIRIViTConfig":
        """A copy with ``changes``; an unknown field is a ``ValueError`` listing them."""
        return dataclasses.replace(self, **_known_fields(changes))


def _known_fields(fields: Dict[str, Any]) -> Dict[str, Any]:
    names = [f.name for f in dataclasses.fields(HIRIViTConfig)]
    unknown = [k for k in fields if k not in names]
    if unknown:
        raise TypeError(f"HIRIViTConfig got an unexpected keyword argument "
                        f"'{unknown[0]}'; its fields are {', '.join(names)}")
    return fields


class HIRIViT(HierarchicalBackbone):
    """HIRI-ViT (Yao et al. 2024), and every network of its ablation path (Table 7): a
    stem, then stages of HR-blocks, CFFN blocks or Transformer blocks, each after a
    downsampling layer, then LN, a global average pool and a linear classifier.

    ``HIRIViT(config)`` builds a ``HIRIViTConfig``; ``HIRIViT(dims=..., ...)`` builds
    one from its fields (on top of ``config`` where given: HIRI-ViT-S by default).
    """

    #: ``create_model`` overrides accepted besides the constructor's: the config's fields
    override_fields = tuple(f.name for f in dataclasses.fields(HIRIViTConfig))

    def __init__(self, config: Optional[HIRIViTConfig] = None, *, in_chans: int = 3,
                 num_classes: int = 1000, drop_path_rate: float = 0.0, **kwargs):
        super().__init__()
        check_model_args(num_classes, in_chans, drop_path_rate)
        if config is not None and not isinstance(config, HIRIViTConfig):
            raise TypeError(f"config must be a HIRIViTConfig, got "
                            f"{type(config).__name__}; fields go as keywords")
        cfg = (config.replace(**kwargs) if config is not None
               else HIRIViTConfig(**_known_fields(kwargs)))
        self.config, self.in_chans, self.num_classes = cfg, in_chans, num_classes
        n = len(cfg.depths)
        # the input at which stages 2-n see the maps a four-stage net sees at 224
        self.default_resolution = 224 * 2 ** max(0, n - 4)
        self.dims, self.depths, self.blocks = cfg.dims, cfg.depths, cfg.blocks
        self.sr_ratios = cfg.reductions
        self.num_features = cfg.dims[-1]
        self.stem = _stem(cfg, in_chans)
        dpr = drop_path_schedule(drop_path_rate, sum(cfg.depths))
        stages, j = [], 0
        for i in range(n):
            down = _downsample(cfg, i)
            make = _block(cfg, i)
            blocks = [make(dpr[j + k]) for k in range(cfg.depths[i])]
            stages.append(Stage(down, blocks))
            j += cfg.depths[i]
        self.stages = nn.ModuleList(stages)
        self.head = ClassifierHead(cfg.dims[-1], num_classes, norm=cfg.head_norm,
                                   norm_first=True)
        self.apply(fan_out_init)

    # -- which inputs work -----------------------------------------------------------

    @property
    def strides(self) -> List[int]:
        """The stride of each stage's map: 4, 8, 16, 32 (, 64); a stage's map is
        ceil(H / stride) x ceil(W / stride)."""
        return [4 * 2 ** i for i in range(len(self.stages))]

    @property
    def size_multiple(self) -> int:
        """1: any side works (each stride-2 layer rounds up), except where a stage
        reduces keys and values by R_i (Table 7 rows 1-2): there the sides must be
        multiples of s_i * R_i so that the reduction sees whole R_i x R_i patches."""
        m = 1
        for s, r in zip(self.strides, self.sr_ratios):
            if r > 1:
                m = math.lcm(m, s * r)
        return m

    @property
    def min_input_size(self) -> int:
        """The smallest input side: 2**(n + 1) for n stages (64 for five, 32 for four:
        the last map is then 1 x 1), or ``size_multiple`` if larger."""
        return max(2 ** (len(self.stages) + 1), self.size_multiple)

    @property
    def display_name(self) -> str:
        return f"HIRI-ViT ({len(self.stages)} stages)"

    @property
    def size_reason(self) -> str:
        if self.size_multiple > 1:
            return "its keys and values are reduced by strided convs"
        return f"a /4 stem, then {len(self.stages) - 1} downsamplings"


def _stem(cfg: HIRIViTConfig, in_chans: int) -> nn.Module:
    if cfg.stem == "hr":
        return HRStem(in_chans, cfg.dims[0], cfg.stem_dim, cfg.stem_kernel_size, cfg.act)
    if cfg.stem == "conv":
        return ConvStem(in_chans, cfg.dims[0], cfg.stem_dim, cfg.stem_mid, act=cfg.act)
    return ViTStem(in_chans, cfg.dims[0], cfg.norm)


def _downsample(cfg: HIRIViTConfig, i: int) -> nn.Module:
    """The layer in front of stage i: none for the first, then IRDS-a, IRDS-b or
    M-ViT's single conv."""
    if i == 0:
        return nn.Identity()
    cin, cout = cfg.dims[i - 1], cfg.dims[i]
    if cfg.downsample == "conv":
        return MViTDownsample(cin, cout, cfg.attn_norm if cfg.blocks[i] == "transformer"
                              else cfg.norm)
    irds = IRDSa if i <= cfg.irds_a_count else IRDSb
    return irds(cin, cout, cfg.irds_ratio, cfg.act, cfg.irds_shortcut)


def _block(cfg: HIRIViTConfig, i: int) -> Callable[[float], nn.Module]:
    """A maker of stage i's blocks, given each block's drop-path rate."""
    kind, C, r = cfg.blocks[i], cfg.dims[i], cfg.mlp_ratios[i]
    if kind == "hr":
        return lambda dp: HRBlock(C, r, cfg.hr_kernel_size, cfg.act, dp)
    if kind == "ffn":
        return lambda dp: FFNBlock(C, r, cfg.ffn, cfg.norm, cfg.act, cfg.drop_rate, dp)
    return lambda dp: TransformerBlock(
        C, C // cfg.head_dim, r, cfg.reductions[i], cfg.ffn, cfg.norm, cfg.attn_norm,
        cfg.act, cfg.qkv_bias, cfg.drop_rate, cfg.attn_drop_rate, dp, cfg.use_sdpa)


# ------------------------------------------------------------------------- variants

#: HIRI-ViT-S/B/L: all values ours (the paper's Table 1 is not available to us).
#: S: stages 2-5 take the widths of the authors' Wave-ViT-S (64, 128, 320, 448), whose
#:    four-stage cost at 224 is Table 7's 4.7 G; the new 112 x 112 stage 1 gets half
#:    of stage 2's width (32).  Depths: stages 2-5 as Wave-ViT-S's (3, 4, 6, 3) with
#:    stage 4 deepened to 8, which the 224 -> 448 cost ratio of Table 7 (4.7 -> 21.5)
#:    requires (only 14 x 14 attention is quadratic enough to lift the ratio above
#:    4.5); HR stages count two HR-blocks per CFFN block: stage 1 one pair, stage 2
#:    three.  mlp_ratios: 4 in the Transformer stages, 8 in the CFFN stage (PVTv2's
#:    stages 1-2); the HR-blocks' low-resolution FFN 16 in stage 2 (twice the CFFN
#:    ratio it replaces, so a pair costs the same FC MACs) and 8 in stage 1 (kept
#:    lean: the five-stage budget over the four-stage one is only about 0.3 G).
#: B and L: the same depths and ratios, wider ("one depth pattern, three widths"): B
#:    lands in the paper's middle group at 448, its four-stage counterpart at 224 near
#:    Fig. 1's 8.2 G (one reading of Fig. 1: chapter 6 weighs it against the others);
#:    L lands above the large group's 11.7 G and far below MaxViT-L (Sec. 5.1).
HIRI_VIT_CONFIGS: Dict[str, Dict[str, Any]] = {
    "hiri_vit_s": dict(dims=(32, 64, 128, 320, 448)),
    "hiri_vit_b": dict(dims=(48, 96, 192, 384, 512)),
    "hiri_vit_l": dict(dims=(64, 128, 256, 512, 640)),
}
for _cfg in HIRI_VIT_CONFIGS.values():
    _cfg.update(depths=(2, 6, 4, 8, 3),
                blocks=("hr", "hr", "ffn", "transformer", "transformer"),
                mlp_ratios=(8, 16, 8, 4, 4), stem="hr", stem_dim=_cfg["dims"][0])


#: HIRI-ViT-Nano (ours), sized for 128 x 128 inputs and a short run on a small dataset
#: (chapter 8's Imagenette records).  It keeps what HIRI-ViT says matters and drops what
#: only pays at 448 px:
#: * four stages, not five: the fifth stage and the HR-stem/HR-blocks exist to make a
#:   448 input cost what 224 does; at 128 the four-stage maps are already small (32, 16,
#:   8, 4), so the stages are fewer and the budget goes into width (32 -> 256);
#: * a Conv-stem (Table 7 row 5: +0.4% over the ViT-stem; chapter 8's ablation sets
#:   them against each other) with no middle convs: two stride-2 3x3 convs with BN
#:   (3 -> 16 -> 32), the cheapest stem that sees overlapping 3x3 neighbourhoods (two
#:   middle convs at 64 x 64, stem_mid=2, would be 17% of the FLOPs at 128 px);
#: * BN + CFFN blocks in the two early stages (Table 7 rows 2-4: no attention on big
#:   maps, BN instead of LN), whose depthwise conv gives the locality a small dataset
#:   cannot teach a transformer in a few epochs;
#: * attention only at the small late maps (8 x 8 and 4 x 4 at 128 px): cheap there;
#: * single-conv downsampling (3x3/2 + norm), not IRDS: at these widths IRDS's 4x
#:   expansion would cost about as much as a stage's blocks;
#: * depths 1, 1, 2, 2 and FFN ratio 4 everywhere: about 0.09 GFLOPs at 128 px, so that
#:   a 5-epoch run on Imagenette takes about ten minutes on one CPU core at 96 px.
HIRI_VIT_NANO: Dict[str, Any] = dict(
    dims=(32, 64, 128, 256), depths=(1, 1, 2, 2),
    blocks=("ffn", "ffn", "transformer", "transformer"), mlp_ratios=(4, 4, 4, 4),
    stem="conv", stem_dim=16, stem_mid=0, downsample="conv")


def four_stage_config(cfg: Dict[str, Any]) -> Dict[str, Any]:
    """The four-stage counterpart of a five-stage configuration, for 224 inputs (ours;
    for S it is Table 7 row 6): stages 2-5 of the five-stage net with each pair of
    HR-blocks back to one CFFN block (half the HR ratio), a Conv-stem with the
    five-stage stage-1 width as its hidden width, and IRDS-a once, then IRDS-b twice.

    >>> four_stage_config(HIRI_VIT_CONFIGS["hiri_vit_s"])["depths"]
    (3, 4, 8, 3)
    """
    if len(cfg["dims"]) != 5 or tuple(cfg["blocks"][:2]) != ("hr", "hr"):
        raise ValueError("four_stage_config takes a five-stage HIRI-ViT configuration")
    depths, ratios = cfg["depths"], cfg["mlp_ratios"]
    return dict(dims=tuple(cfg["dims"][1:]),
                depths=(depths[1] // 2,) + tuple(depths[2:]),
                blocks=("ffn", "ffn", "transformer", "transformer"),
                mlp_ratios=(ratios[1] / 2,) + tuple(ratios[2:]),
                stem="conv", stem_dim=cfg["dims"][0])


# Table 7's path lives beside the model; it reads HIRI_VIT_CONFIGS above, so it is
# imported only now (hirilib.models imports this file first, whichever is asked for).
from hirilib.models.hiri_vit_table7 import (TABLE7, Table7Row, config_diff,  # noqa: E402
                                            table7_config)


# ------------------------------------------------------------------------- factories

#: Every registered variant: name -> (its ``HIRIViTConfig`` fields, the input side it
#: is meant for, what it is).  The five-stage nets are meant for 448 (the paper also
#: runs them at 224 and 384, Sec. 5.1); their four-stage counterparts for 224 (ours).
VARIANTS: Dict[str, Tuple[Dict[str, Any], int, str]] = {}
for _name, _cfg in HIRI_VIT_CONFIGS.items():
    _size = _name[len("hiri_vit_"):].upper()
    _dims = ", ".join(map(str, _cfg["dims"]))
    VARIANTS[_name] = (_cfg, 448, f"HIRI-ViT-{_size} (ours, reconstructed): C = {_dims}.")
    VARIANTS[_name + "_4stage"] = (four_stage_config(_cfg), 224,
                                   f"The four-stage counterpart of HIRI-ViT-{_size} "
                                   f"(ours), for 224 inputs.")
VARIANTS["hiri_vit_nano"] = (HIRI_VIT_NANO, 128, "HIRI-ViT-Nano (ours): four stages, "
                             "C = 32, 64, 128, 256, for 128 inputs.")
for _i, _row in enumerate(TABLE7, 1):
    VARIANTS[_row.name] = (table7_config(_row.name), _row.resolution,
                           f"Table 7 row {_i}: {_row.description}.")


def hiri_vit_config(name: str) -> Dict[str, Any]:
    """The ``HIRIViTConfig`` fields of a registered variant.

    >>> hiri_vit_config("hiri_vit_s_4stage")["depths"]
    (3, 4, 8, 3)
    """
    if name not in VARIANTS:
        raise ValueError(f"unknown HIRI-ViT variant {name!r}; the variants are "
                         f"{', '.join(sorted(VARIANTS))}")
    return dict(VARIANTS[name][0])


def _factory(name: str, fields: Dict[str, Any], resolution: int, doc: str):
    """The registered function of one variant; any ``HIRIViTConfig`` field is an
    override, e.g. ``create_model("hiri_vit_table7_01_mvit", mlp_ratios=(8, 8, 4, 4))``."""
    config = HIRIViTConfig(**fields)

    def factory(num_classes: int = 1000, in_chans: int = 3, drop_path_rate: float = 0.0,
                **kwargs) -> HIRIViT:
        model = HIRIViT(config, num_classes=num_classes, in_chans=in_chans,
                        drop_path_rate=drop_path_rate, **kwargs)
        model.default_resolution = resolution  # the input size the variant is meant for
        return model

    factory.__name__ = factory.__qualname__ = name
    factory.__doc__ = doc
    return factory


for _name, (_cfg, _res, _doc) in VARIANTS.items():
    globals()[_name] = register_model(_factory(_name, _cfg, _res, _doc))
