"""HIRI-ViT: Scaling Vision Transformer with High Resolution Inputs.

Yao, Li, Pan, Mei; IEEE TPAMI 2024 (arXiv 2403.11999).  Chapter 6 of the book builds it.

A four-stage hybrid ViT fed a 448 x 448 image costs about four times what it costs at
224 (Table 7: 4.7 -> 21.5 GFLOPs).  HIRI-ViT adds a fifth stage in front, so that at
448 its last four stages see the maps a four-stage net sees at 224 (56, 28, 14, 7), and
makes the two high-resolution stages cheap by splitting each convolutional operation
into two parallel branches: a light one at full resolution and a heavier one at half.

What the paper's text fixes (Sec. 3-4; its Table 1, the per-stage widths, depths, ratios
and heads, is not available, and no code has been published):

* ``HRStem`` (Sec. 4.1): a stride-2 3x3 conv, then a high-resolution branch (a
  depthwise conv, then a strided conv) and a low-resolution branch (a strided conv, then
  a 3x3 and a 1x1 conv), summed and normalised by BN; stride 4 overall.
* ``HRBlock`` (Sec. 4.2): a depthwise conv at full resolution, plus a stride-2 depthwise
  3x3 conv with BN, a feed-forward (FC, act, FC) at half resolution and an upsampling by
  repetition; the two are added.  Two HR-blocks replace each CFFN block of stages 1-2.
* ``IRDSa`` / ``IRDSb`` (Sec. 4.3): the downsampling between stages.  IRDS-a (the first
  two): a stride-2 3x3 conv that expands the channels, then a 1x1 conv that compresses
  them.  IRDS-b (the last two): a MobileNetV2 inverted residual with norm and activation
  only after its first conv, plus an extra downsampling shortcut.
* Stage 3 holds CFFN blocks only, stages 4-5 Transformer blocks (MHA without spatial
  reduction, then CFFN); BN in the first three stages and before every CFFN, LN for the
  attention of the last two (Sec. 4.4).  CFFN(X) = FC(DWConv(z) + z), z = act(FC(X)).

Everything else is ours and is a named argument of ``HIRIViT`` or an entry of the tables
below, each with the reason for its value.  The values were calibrated against the
GFLOPs the paper does print: the four-stage S at 224 (4.7) and 448 (21.5), five stages +
HR-stem at 448 (5.1) and HIRI-ViT-S at 448 (about 5.0).  ``TABLE7`` walks the paper's
ablation (its Table 7) from a four-stage M-ViT to HIRI-ViT-S, one registered model per
row, ``hiri_vit_table7_NN_<what changes>``.  Published numbers are in
``hirilib.reference.HIRI_VIT``, closed-form costs in ``hirilib.analytic.hiri_vit``,
timings in ``hirilib.bench.hiri_vit``.  No pretrained weights exist.

>>> import torch, hirilib
>>> m = hirilib.create_model("hiri_vit_s").eval()
>>> [tuple(f.shape[1:]) for f in m.forward_pyramid(torch.zeros(1, 3, 128, 128))]
[(32, 32, 32), (64, 16, 16), (128, 8, 8), (320, 4, 4), (448, 2, 2)]
"""

from __future__ import annotations

import math
from collections import OrderedDict
from functools import partial
from typing import Any, Dict, List, NamedTuple, Optional, Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F
from einops import rearrange

from hirilib.layers import (CFFN, ClassifierHead, ConvNormAct, DropPath, HierarchicalBackbone,
                            Mlp, MultiHeadAttention, Stage, TokenNorm, check_int,
                            check_model_args, check_positive_ints, drop_path_schedule,
                            fan_out_init, make_act)
from hirilib.registry import register_model

__all__ = ["HRStem", "ConvStem", "ViTStem", "HRBlock", "FFNBlock", "TransformerBlock",
           "IRDSa", "IRDSb", "DownsampleShortcut", "ConvDownsample", "HIRIViT",
           "HIRI_VIT_CONFIGS", "HIRI_VIT_NANO", "four_stage_config", "Table7Row",
           "TABLE7",
           "table7_config", "config_diff"]

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
    ``num_mid`` stride-1 convs, and a stride-2 conv to C.  Ours: the layout of the
    authors' Wave-ViT stem with its first 7x7 made 3x3 (the HR-stem's first conv is 3x3,
    "like the Conv-stem"), ``num_mid=2``, GELU."""

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

    The paper fixes the branches; the BN after the high-resolution conv, the outer
    residual and ``kernel_size`` (3) are ours.  Every BN directly follows a conv, so
    all of them fold into it at inference (the paper's reason for BN, Sec. 4.4).  The
    FCs are 1x1 convs on the map (the same weights as Linear layers on tokens).  With
    ``mlp_ratio`` twice the CFFN ratio it replaces, a pair of HR-blocks costs the same
    FC MACs as that CFFN block: the FFN runs on a map with 4 times fewer positions.
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
        low = self.low(x)                                            # (B, C, H/2, W/2)
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
    bias) to the new width, ``(B, C_in, H, W) -> (B, C_out, H/2, W/2)``.  Ours: the
    text says only that an extra downsampling shortcut stabilises training; this is
    ResNet-D's (He et al. 2019), the simplest one that sees every input position."""

    def __init__(self, in_dim: int, out_dim: int):
        super().__init__(OrderedDict(pool=nn.AvgPool2d(2),
                                     conv=nn.Conv2d(in_dim, out_dim, 1)))


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


class ConvDownsample(ConvNormAct):
    """M-ViT's downsampling (Sec. 5.4, Fig. 5a): one stride-2 3x3 conv that raises the
    width, then a norm (PVTv2's and Wave-ViT's).  Table 7 rows 1-5."""

    def __init__(self, in_dim: int, out_dim: int, norm: str = "ln"):
        super().__init__(in_dim, out_dim, 3, 2, bias=True, norm=norm)


# ------------------------------------------------------------------------- the network


def _per_stage(name: str, values: Sequence, n: int, allowed: Sequence = ()) -> tuple:
    values = tuple(values)
    if len(values) != n:
        raise ValueError(f"{name} needs {n} entries (one per stage), got {values!r}")
    if allowed and any(v not in allowed for v in values):
        raise ValueError(f"{name} entries must be one of {', '.join(allowed)}, "
                         f"got {values!r}")
    return values


def _choice(name: str, value, allowed: Sequence) -> str:
    if value not in allowed:
        raise ValueError(f"{name} must be one of {', '.join(map(repr, allowed))}, "
                         f"got {value!r}")
    return value


class HIRIViT(HierarchicalBackbone):
    """HIRI-ViT (Yao et al. 2024), and every network of its ablation path (Table 7): a
    stem, then stages of HR-blocks, CFFN blocks or Transformer blocks, each after a
    downsampling layer, then LN, a global average pool and a linear classifier.

    The defaults are HIRI-ViT-S.  Per-stage arguments have one entry per stage (four or
    five stages); arguments marked *ours* are reconstruction choices (the paper's Table
    1 is not available), each explained in chapter 6.

    Args:
        dims, depths: widths and blocks per stage (ours).  An ``"hr"`` stage counts
            HR-blocks (two per CFFN block they replace).
        blocks: ``"hr"`` | ``"ffn"`` | ``"transformer"`` per stage (the paper's: HR, HR,
            CFFN, Transformer, Transformer).
        mlp_ratios: hidden width / C of each stage's FFN: the CFFN's, or the HR-block's
            low-resolution FFN (ours: 8, 16, 8, 4, 4).
        sr_ratios: key/value spatial reduction of the attention (1: none, as in
            HIRI-ViT's stages 4-5; M-ViT reduces by 4 and 2 in stages 1-2, Wave-ViT's).
        head_dim: channels per attention head (ours: 32, as in the authors' Wave-ViT).
        stem: ``"hr"`` (HR-stem) | ``"conv"`` (Conv-stem) | ``"vit"`` (7x7/4 conv).
        stem_dim: hidden width of the Conv- and HR-stems (ours: the first stage's width,
            or 32 for the four-stage nets).
        stem_mid: stride-1 3x3 convs in the middle of the Conv-stem (ours: 2).
        downsample: ``"irds"`` (IRDS-a, then IRDS-b) | ``"conv"`` (3x3/2 conv + norm).
        num_irds_a: how many of the downsamplings are IRDS-a (default: all but the last
            two, which are IRDS-b: 2 of 4 for five stages, 1 of 3 for four).
        irds_ratio: hidden width / C_in of both IRDS forms (ours: 4).
        irds_shortcut: the downsampling shortcut in IRDS (the paper's for IRDS-b; ours
            for IRDS-a too).
        ffn: ``"cffn"`` (Eq. 2) | ``"mlp"`` (M-ViT's FFN, Table 7 row 1).
        norm: ``"bn"`` | ``"ln"``: the pre-norm of every FFN, the norm of the ViT-stem
            and of conv downsamplings into FFN-only stages (Table 7 row 4 switches it).
        attn_norm: the pre-norm of attention, and of conv downsamplings into attention
            stages (LN, Sec. 4.4).
        hr_kernel_size: kernel of the HR-blocks' full-resolution depthwise conv (ours:
            3, "lightweight"); stem_kernel_size: the same in the HR-stem (ours: 3).
        act: activation everywhere (ours: GELU, the FFNs' in PVTv2 and Wave-ViT).
        head_norm: the norm of the last map before pooling (LN, like the last stages).
        qkv_bias, drop_rate, attn_drop_rate, drop_path_rate, use_sdpa: as in PVTv2.
    """

    def __init__(self, in_chans: int = 3, num_classes: int = 1000,
                 dims: Sequence[int] = (32, 64, 128, 320, 448),
                 depths: Sequence[int] = (2, 6, 4, 8, 3),
                 blocks: Sequence[str] = ("hr", "hr", "ffn", "transformer",
                                          "transformer"),
                 mlp_ratios: Sequence[float] = (8, 16, 8, 4, 4),
                 sr_ratios: Optional[Sequence[int]] = None, head_dim: int = 32,
                 stem: str = "hr", stem_dim: Optional[int] = None, stem_mid: int = 2,
                 downsample: str = "irds", num_irds_a: Optional[int] = None,
                 irds_ratio: float = 4.0, irds_shortcut: bool = True, ffn: str = "cffn",
                 norm: str = "bn", attn_norm: str = "ln", hr_kernel_size: int = 3,
                 stem_kernel_size: int = 3, act: str = "gelu", head_norm: str = "ln",
                 qkv_bias: bool = True, drop_rate: float = 0.0,
                 attn_drop_rate: float = 0.0, drop_path_rate: float = 0.0,
                 use_sdpa: bool = True):
        super().__init__()
        check_model_args(num_classes, in_chans, drop_path_rate)
        n = len(check_positive_ints("depths", depths))
        if n < 2:
            raise ValueError(f"HIRI-ViT needs at least two stages, got "
                             f"depths={depths!r}")
        dims = check_positive_ints("dims", dims, n)
        blocks = _per_stage("blocks", blocks, n, BLOCKS)
        sr_ratios = check_positive_ints("sr_ratios", sr_ratios or (1,) * n, n)
        mlp_ratios = _per_stage("mlp_ratios", mlp_ratios, n)
        if any(isinstance(r, bool) or not isinstance(r, (int, float)) or r <= 0
               for r in mlp_ratios):
            raise ValueError(f"mlp_ratios must be positive numbers, got {mlp_ratios!r}")
        check_int("head_dim", head_dim, 1)
        for C, kind in zip(dims, blocks):
            if kind == "transformer" and C % head_dim:
                raise ValueError(f"an attention stage of width {C} cannot be split "
                                 f"into heads of head_dim={head_dim} channels")
        _choice("stem", stem, STEMS)
        _choice("downsample", downsample, ("irds", "conv"))
        _choice("ffn", ffn, ("cffn", "mlp"))
        for name, value in (("norm", norm), ("attn_norm", attn_norm),
                            ("head_norm", head_norm)):
            _choice(name, value, ("bn", "ln"))
        num_irds_a = max(0, n - 3) if num_irds_a is None else num_irds_a
        check_int("num_irds_a", num_irds_a, 0)
        if num_irds_a > n - 1:
            raise ValueError(f"num_irds_a={num_irds_a}, but there are only {n - 1} "
                             f"downsamplings")
        check_int("stem_mid", stem_mid, 0)
        for name, k in (("hr_kernel_size", hr_kernel_size),
                        ("stem_kernel_size", stem_kernel_size)):
            if check_int(name, k, 1) % 2 == 0:
                raise ValueError(f"{name} must be odd (padding k // 2 keeps the size), "
                                 f"got {k}")

        self.in_chans, self.num_classes = in_chans, num_classes
        # the input at which stages 2-n see the maps a four-stage net sees at 224
        self.default_resolution = 224 * 2 ** max(0, n - 4)
        self.dims, self.depths, self.blocks = dims, tuple(depths), blocks
        self.sr_ratios = sr_ratios
        self.num_features = dims[-1]

        if stem == "hr":
            self.stem = HRStem(in_chans, dims[0], stem_dim, stem_kernel_size, act)
        elif stem == "conv":
            self.stem = ConvStem(in_chans, dims[0], stem_dim, stem_mid, act=act)
        else:
            self.stem = ViTStem(in_chans, dims[0], norm)

        dpr = drop_path_schedule(drop_path_rate, sum(depths))
        stages, j = [], 0
        for i in range(n):
            kind, C, r = blocks[i], dims[i], mlp_ratios[i]
            if i == 0:
                down = nn.Identity()
            elif downsample == "conv":
                down = ConvDownsample(dims[i - 1], C,
                                      attn_norm if kind == "transformer" else norm)
            elif i <= num_irds_a:
                down = IRDSa(dims[i - 1], C, irds_ratio, act, irds_shortcut)
            else:
                down = IRDSb(dims[i - 1], C, irds_ratio, act, irds_shortcut)
            stage_blocks = []
            for k in range(depths[i]):
                if kind == "hr":
                    blk = HRBlock(C, r, hr_kernel_size, act, dpr[j + k])
                elif kind == "ffn":
                    blk = FFNBlock(C, r, ffn, norm, act, drop_rate, dpr[j + k])
                else:
                    blk = TransformerBlock(C, C // head_dim, r, sr_ratios[i], ffn, norm,
                                           attn_norm, act, qkv_bias, drop_rate,
                                           attn_drop_rate, dpr[j + k], use_sdpa)
                stage_blocks.append(blk)
            stages.append(Stage(down, stage_blocks))
            j += depths[i]
        self.stages = nn.ModuleList(stages)
        self.head = ClassifierHead(dims[-1], num_classes, norm=head_norm,
                                   norm_first=True)
        self.apply(fan_out_init)

    # -- which inputs work -----------------------------------------------------------

    @property
    def strides(self) -> List[int]:
        """The stride of each stage's map: 4, 8, 16, 32 (, 64)."""
        return [4 * 2 ** i for i in range(len(self.stages))]

    @property
    def size_multiple(self) -> int:
        """Input sides must be multiples of this: 2**(n + 1) for n stages (64 for five,
        32 for four), so that every stride-2 layer halves its map exactly (the HR-blocks
        upsample by exactly 2, the IRDS shortcuts pool 2x2), and of s_i * R_i for a
        stage whose keys and values are reduced by R_i."""
        m = 2 ** (len(self.stages) + 1)
        for s, r in zip(self.strides, self.sr_ratios):
            if r > 1:
                m = math.lcm(m, s * r)
        return m

    @property
    def min_input_size(self) -> int:
        """The smallest input side: ``size_multiple`` (the last map is then 1 x 1 or
        2 x 2)."""
        return self.size_multiple

    @property
    def display_name(self) -> str:
        return f"HIRI-ViT ({len(self.stages)} stages)"

    @property
    def size_reason(self) -> str:
        return (f"a /4 stem, then {len(self.stages) - 1} downsamplings that each halve the "
                f"map exactly")


# ------------------------------------------------------------------------- variants

#: HIRI-ViT-S/B/L: all values ours (the paper's Table 1 is not available).
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
#:    lands in the paper's middle group, its four-stage counterpart at Fig. 1's 8.2 G
#:    at 224; L lands above the large group's 11.7 G and far below MaxViT-L (Sec. 5.1).
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
#: * a Conv-stem (Table 7 row 5: +0.4% over the ViT-stem) with no middle convs: two
#:   stride-2 3x3 convs with BN (3 -> 16 -> 32), the cheapest stem that still sees
#:   overlapping 3x3 neighbourhoods (two middle convs at 64 x 64, stem_mid=2, would
#:   be 17% of the model's FLOPs at 128 px); chapter 8's ablation sets it against the
#:   ViT-stem;
#: * BN + CFFN blocks in the two early stages (Table 7 rows 2-4: no attention on big
#:   maps, BN instead of LN), whose depthwise conv gives the locality a small dataset
#:   cannot teach a transformer in a few epochs;
#: * attention only at the small late maps: 64 tokens (8 x 8) and 16 (4 x 4) at 128 px,
#:   where it is cheap and sees the whole image;
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


# ------------------------------------------------------------------------- Table 7


class Table7Row(NamedTuple):
    """One row of the paper's Table 7: the registered name, what it changes, the
    ``HIRIViT`` arguments it sets (on top of the previous row), and the input size."""

    name: str
    description: str
    diff: Dict[str, Any]
    resolution: int


_S = HIRI_VIT_CONFIGS["hiri_vit_s"]

#: Table 7, in order (the paper's numbers: ``hirilib.reference.HIRI_VIT_TABLE7``).
#: Row 1, M-ViT (Sec. 5.4: PVT-like, ViT-stem, MHA + FFN everywhere, K/V reduced by a
#: strided conv in stages 1-2 only, single-conv downsampling, LN): widths and depths of
#: the four-stage S; reduction ratios 4 and 2 (Wave-ViT's); FFN ratio 6 in stages 1-2
#: (ours, a calibration: row 3 must *enlarge* the ratio and still lower GFLOPs and
#: parameters; 6 -> 8 does, 4 -> 8 and 8 -> 12 would not).
TABLE7: List[Table7Row] = [
    Table7Row("hiri_vit_table7_01_mvit", "M-ViT: ViT-stem, MHA (K/V reduced in stages "
              "1-2) + FFN in all four stages, conv downsampling, LN",
              dict(dims=(64, 128, 320, 448), depths=(3, 4, 8, 3),
                   blocks=("transformer",) * 4, mlp_ratios=(6, 6, 4, 4),
                   sr_ratios=(4, 2, 1, 1), stem="vit", stem_dim=None, downsample="conv",
                   ffn="mlp", norm="ln"), 224),
    Table7Row("hiri_vit_table7_02_cffn", "FFN -> CFFN", dict(ffn="cffn"), 224),
    Table7Row("hiri_vit_table7_03_no_early_mha", "no MHA in stages 1-2 (CFFN blocks, "
              "ratio 6 -> 8)",
              dict(blocks=("ffn", "ffn", "transformer", "transformer"),
                   mlp_ratios=(8, 8, 4, 4), sr_ratios=(1, 1, 1, 1)), 224),
    Table7Row("hiri_vit_table7_04_batch_norm",
              "LN -> BN in stages 1-2 and before every CFFN", dict(norm="bn"), 224),
    Table7Row("hiri_vit_table7_05_conv_stem", "ViT-stem -> Conv-stem",
              dict(stem="conv", stem_dim=32), 224),
    Table7Row("hiri_vit_table7_06_irds", "conv downsampling -> IRDS",
              dict(downsample="irds"), 224),
    Table7Row("hiri_vit_table7_07_input_448", "input 224 -> 448 (the same network)",
              {}, 448),
    Table7Row("hiri_vit_table7_08_five_stages", "four stages -> five: a new stage 1 at "
              "stride 4 (one CFFN block, width 32)",
              dict(dims=_S["dims"], depths=(1, 3, 4, 8, 3),
                   blocks=("ffn", "ffn", "ffn", "transformer", "transformer"),
                   mlp_ratios=(4, 8, 8, 4, 4), sr_ratios=(1,) * 5), 448),
    Table7Row("hiri_vit_table7_09_hr_stem", "Conv-stem -> HR-stem", dict(stem="hr"),
              448),
    Table7Row("hiri_vit_table7_10_hr_blocks", "each CFFN block of stages 1-2 -> two "
              "HR-blocks (= HIRI-ViT-S)",
              dict(blocks=_S["blocks"], depths=_S["depths"],
                   mlp_ratios=_S["mlp_ratios"]), 448),
    Table7Row("hiri_vit_table7_11_ema_distillation",
              "+ EMA distillation (training only: the same network)", {}, 448),
]

_TABLE7_CONFIGS: Dict[str, Dict[str, Any]] = {}
_cfg = {}
for _row in TABLE7:
    _cfg = _TABLE7_CONFIGS[_row.name] = {**_cfg, **_row.diff}


def table7_config(name: str, **overrides) -> Dict[str, Any]:
    """The ``HIRIViT`` arguments of a Table 7 row (cumulative), with overrides.

    >>> table7_config("hiri_vit_table7_05_conv_stem")["stem"]
    'conv'
    """
    if name not in _TABLE7_CONFIGS:
        raise ValueError(f"unknown Table 7 row {name!r}; the rows are "
                         f"{sorted(_TABLE7_CONFIGS)}")
    return {**_TABLE7_CONFIGS[name], **overrides}


def config_diff(a: Dict[str, Any], b: Dict[str, Any]) -> Dict[str, tuple]:
    """The arguments two configurations set differently: ``{name: (a's, b's)}``
    (an argument one leaves unset is None there, the constructor's default)."""
    keys = list(a) + [k for k in b if k not in a]
    return {k: (a.get(k), b.get(k)) for k in keys if a.get(k) != b.get(k)}


# ------------------------------------------------------------------------- factories


def _create(cfg: Dict[str, Any], resolution: int, num_classes: int, in_chans: int,
            drop_path_rate: float, **overrides) -> HIRIViT:
    model = HIRIViT(in_chans=in_chans, num_classes=num_classes,
                    drop_path_rate=drop_path_rate, **{**cfg, **overrides})
    model.default_resolution = resolution  # the input size the variant is meant for
    return model


@register_model
def hiri_vit_s(num_classes: int = 1000, in_chans: int = 3, drop_path_rate: float = 0.0,
               **kwargs) -> HIRIViT:
    """HIRI-ViT-S (ours, reconstructed): C = 32, 64, 128, 320, 448; for 448 inputs."""
    return _create(HIRI_VIT_CONFIGS["hiri_vit_s"], 448, num_classes, in_chans,
                   drop_path_rate, **kwargs)


@register_model
def hiri_vit_b(num_classes: int = 1000, in_chans: int = 3, drop_path_rate: float = 0.0,
               **kwargs) -> HIRIViT:
    """HIRI-ViT-B (ours, reconstructed): C = 48, 96, 192, 384, 512; for 448 inputs."""
    return _create(HIRI_VIT_CONFIGS["hiri_vit_b"], 448, num_classes, in_chans,
                   drop_path_rate, **kwargs)


@register_model
def hiri_vit_l(num_classes: int = 1000, in_chans: int = 3, drop_path_rate: float = 0.0,
               **kwargs) -> HIRIViT:
    """HIRI-ViT-L (ours, reconstructed): C = 64, 128, 256, 512, 640; for 448 inputs."""
    return _create(HIRI_VIT_CONFIGS["hiri_vit_l"], 448, num_classes, in_chans,
                   drop_path_rate, **kwargs)


@register_model
def hiri_vit_nano(num_classes: int = 1000, in_chans: int = 3,
                  drop_path_rate: float = 0.0, **kwargs) -> HIRIViT:
    """HIRI-ViT-Nano (ours): four stages, C = 32, 64, 128, 256; for 128 inputs."""
    return _create(HIRI_VIT_NANO, 128, num_classes, in_chans, drop_path_rate, **kwargs)


@register_model
def hiri_vit_s_4stage(num_classes: int = 1000, in_chans: int = 3,
                      drop_path_rate: float = 0.0, **kwargs) -> HIRIViT:
    """The four-stage counterpart of HIRI-ViT-S, for 224 inputs (= Table 7 row 6)."""
    return _create(four_stage_config(HIRI_VIT_CONFIGS["hiri_vit_s"]), 224, num_classes,
                   in_chans, drop_path_rate, **kwargs)


@register_model
def hiri_vit_b_4stage(num_classes: int = 1000, in_chans: int = 3,
                      drop_path_rate: float = 0.0, **kwargs) -> HIRIViT:
    """The four-stage counterpart of HIRI-ViT-B, for 224 inputs."""
    return _create(four_stage_config(HIRI_VIT_CONFIGS["hiri_vit_b"]), 224, num_classes,
                   in_chans, drop_path_rate, **kwargs)


@register_model
def hiri_vit_l_4stage(num_classes: int = 1000, in_chans: int = 3,
                      drop_path_rate: float = 0.0, **kwargs) -> HIRIViT:
    """The four-stage counterpart of HIRI-ViT-L, for 224 inputs."""
    return _create(four_stage_config(HIRI_VIT_CONFIGS["hiri_vit_l"]), 224, num_classes,
                   in_chans, drop_path_rate, **kwargs)


def _row(name: str, num_classes: int, in_chans: int, drop_path_rate: float,
         **kwargs) -> HIRIViT:
    res = next(r.resolution for r in TABLE7 if r.name == name)
    return _create(table7_config(name), res, num_classes, in_chans, drop_path_rate,
                   **kwargs)


# One registered model per row of Table 7, in order; any HIRIViT argument is an
# override, e.g. ``create_model("hiri_vit_table7_01_mvit", mlp_ratios=(8, 8, 4, 4))``.

@register_model
def hiri_vit_table7_01_mvit(num_classes=1000, in_chans=3, drop_path_rate=0.0, **kwargs):
    """Table 7 row 1: the four-stage M-ViT baseline (82.7%)."""
    return _row("hiri_vit_table7_01_mvit", num_classes, in_chans, drop_path_rate,
                **kwargs)


@register_model
def hiri_vit_table7_02_cffn(num_classes=1000, in_chans=3, drop_path_rate=0.0, **kwargs):
    """Table 7 row 2: every FFN becomes a CFFN (82.9%)."""
    return _row("hiri_vit_table7_02_cffn", num_classes, in_chans, drop_path_rate,
                **kwargs)


@register_model
def hiri_vit_table7_03_no_early_mha(num_classes=1000, in_chans=3, drop_path_rate=0.0,
                                    **kwargs):
    """Table 7 row 3: no attention in stages 1-2, wider CFFNs there (82.9%)."""
    return _row("hiri_vit_table7_03_no_early_mha", num_classes, in_chans,
                drop_path_rate, **kwargs)


@register_model
def hiri_vit_table7_04_batch_norm(num_classes=1000, in_chans=3, drop_path_rate=0.0,
                                  **kwargs):
    """Table 7 row 4: BN in stages 1-2 and before every CFFN (83.0%)."""
    return _row("hiri_vit_table7_04_batch_norm", num_classes, in_chans, drop_path_rate,
                **kwargs)


@register_model
def hiri_vit_table7_05_conv_stem(num_classes=1000, in_chans=3, drop_path_rate=0.0,
                                 **kwargs):
    """Table 7 row 5: the Conv-stem (83.4%)."""
    return _row("hiri_vit_table7_05_conv_stem", num_classes, in_chans, drop_path_rate,
                **kwargs)


@register_model
def hiri_vit_table7_06_irds(num_classes=1000, in_chans=3, drop_path_rate=0.0, **kwargs):
    """Table 7 row 6: IRDS between stages (83.6%, 4.7 GFLOPs at 224)."""
    return _row("hiri_vit_table7_06_irds", num_classes, in_chans, drop_path_rate,
                **kwargs)


@register_model
def hiri_vit_table7_07_input_448(num_classes=1000, in_chans=3, drop_path_rate=0.0,
                                 **kwargs):
    """Table 7 row 7: row 6's network at 448 x 448 (21.5 GFLOPs)."""
    return _row("hiri_vit_table7_07_input_448", num_classes, in_chans, drop_path_rate,
                **kwargs)


@register_model
def hiri_vit_table7_08_five_stages(num_classes=1000, in_chans=3, drop_path_rate=0.0,
                                   **kwargs):
    """Table 7 row 8: five stages at 448 (84.0%)."""
    return _row("hiri_vit_table7_08_five_stages", num_classes, in_chans, drop_path_rate,
                **kwargs)


@register_model
def hiri_vit_table7_09_hr_stem(num_classes=1000, in_chans=3, drop_path_rate=0.0,
                               **kwargs):
    """Table 7 row 9: the HR-stem (84.0%, 5.1 GFLOPs at 448)."""
    return _row("hiri_vit_table7_09_hr_stem", num_classes, in_chans, drop_path_rate,
                **kwargs)


@register_model
def hiri_vit_table7_10_hr_blocks(num_classes=1000, in_chans=3, drop_path_rate=0.0,
                                 **kwargs):
    """Table 7 row 10: HR-blocks in stages 1-2, i.e. HIRI-ViT-S (84.1%)."""
    return _row("hiri_vit_table7_10_hr_blocks", num_classes, in_chans, drop_path_rate,
                **kwargs)


@register_model
def hiri_vit_table7_11_ema_distillation(num_classes=1000, in_chans=3,
                                        drop_path_rate=0.0, **kwargs):
    """Table 7 row 11: HIRI-ViT-S trained with EMA distillation (84.3%); the network is
    row 10's, the change is in training (``hirilib.train``)."""
    return _row("hiri_vit_table7_11_ema_distillation", num_classes, in_chans,
                drop_path_rate, **kwargs)
