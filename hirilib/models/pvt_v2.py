"""PVTv2: Improved Baselines with Pyramid Vision Transformer.

Wang, Xie, Li, Fan, Song, Liang, Lu, Luo, Shao; Computational Visual Media 2022
(arXiv 2106.13797).  Chapter 2 of the book builds it.

PVTv2 keeps PVTv1's four-stage pyramid (strides 4, 8, 16, 32) and changes three
things:

1. **Overlapping patch embedding**: a zero-padded convolution whose kernel is
   larger than its stride (7/4, then 3/2), instead of cutting the image into
   disjoint patches -> ``hirilib.layers.OverlapPatchEmbed``.
2. **Convolutional feed-forward**: a 3x3 depthwise convolution between the
   FFN's two linear layers, which also replaces the fixed-size position
   embedding -> ``hirilib.layers.ConvFFN``.
3. **Linear spatial-reduction attention**: keys and values from a 7x7 average
   pool, so attention costs O(N) instead of O(N^2 / R^2)
   -> ``hirilib.layers.MultiHeadAttention(linear=True)`` (the ``_li`` variant).

Everything else follows the official code (``whai362/PVT``,
``classification/pvt_v2.py``), which is what the published parameter counts
and checkpoints come from: pre-norm blocks with LayerNorm eps 1e-6, patch-
embedding and reduction LayerNorms with eps 1e-5, qkv bias everywhere,
a 1x1-conv + GELU reduction and an extra ReLU in the FFN of the linear
variant, and a head made of the last stage's LayerNorm, a mean over tokens
and a linear layer.  Module names follow the stage-wise layout of timm
(``stages.i.blocks.j``), with ``patch_embed`` inside each stage;
``convert_state_dict`` maps timm's and the official repository's keys onto
ours.

>>> import torch, hirilib
>>> m = hirilib.create_model("pvt_v2_b0").eval()
>>> [tuple(f.shape) for f in m.forward_pyramid(torch.zeros(1, 3, 64, 64))]
[(1, 32, 16, 16), (1, 64, 8, 8), (1, 160, 4, 4), (1, 256, 2, 2)]
"""

from __future__ import annotations

import math
import re
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

import torch
import torch.nn as nn
from einops import rearrange

from hirilib.hub import PretrainedWeightsUnavailable, download_weights, load_weights, read_checkpoint
from hirilib.layers import ConvFFN, DropPath, MultiHeadAttention, OverlapPatchEmbed
from hirilib.registry import register_model

__all__ = [
    "PyramidVisionTransformerV2", "PVTv2Stage", "Block", "init_weights",
    "PVT_V2_CONFIGS", "REFERENCE", "stage_sizes", "attention_macs", "closed_form_params",
    "closed_form_macs", "convert_state_dict", "load_pretrained", "download_pretrained",
    "hub_repo", "PretrainedWeightsUnavailable", "ATTENTION_COMPARISON",
    "latency_vs_resolution", "bench_pvt_v2",
]

# ----------------------------------------------------------------------------- variants

#: Hyper-parameters of each variant (official factories; timm's are identical).
#: All variants use heads (1, 2, 5, 8) and reduction ratios (8, 4, 2, 1);
#: B5 is the only one with MLP ratio 4 in every stage.
PVT_V2_CONFIGS: Dict[str, Dict[str, Any]] = {
    "pvt_v2_b0": dict(embed_dims=(32, 64, 160, 256), depths=(2, 2, 2, 2), mlp_ratios=(8, 8, 4, 4)),
    "pvt_v2_b1": dict(embed_dims=(64, 128, 320, 512), depths=(2, 2, 2, 2), mlp_ratios=(8, 8, 4, 4)),
    "pvt_v2_b2": dict(embed_dims=(64, 128, 320, 512), depths=(3, 4, 6, 3), mlp_ratios=(8, 8, 4, 4)),
    "pvt_v2_b2_li": dict(embed_dims=(64, 128, 320, 512), depths=(3, 4, 6, 3),
                         mlp_ratios=(8, 8, 4, 4), linear=True),
    "pvt_v2_b3": dict(embed_dims=(64, 128, 320, 512), depths=(3, 4, 18, 3), mlp_ratios=(8, 8, 4, 4)),
    "pvt_v2_b4": dict(embed_dims=(64, 128, 320, 512), depths=(3, 8, 27, 3), mlp_ratios=(8, 8, 4, 4)),
    "pvt_v2_b5": dict(embed_dims=(64, 128, 320, 512), depths=(3, 6, 40, 3), mlp_ratios=(4, 4, 4, 4)),
}
for _cfg in PVT_V2_CONFIGS.values():
    _cfg.setdefault("num_heads", (1, 2, 5, 8))
    _cfg.setdefault("sr_ratios", (8, 4, 2, 1))
    _cfg.setdefault("linear", False)

#: Published numbers each variant is checked against.  ``params_m`` and
#: ``gflops`` are the released code's counts (GFLOPs = G multiply-accumulates
#: at 224 x 224, including the attention matrix products, as the official
#: ``get_flops.py`` counts them); ``paper_*`` are the paper's figures (for B2-Li
#: and B4 those of the official README); ``drop_path_rate`` and ``clip_grad`` are
#: the ImageNet training settings of the official configs (the factories default
#: to a drop-path rate of 0, as timm's do).
REFERENCE: Dict[str, Dict[str, Any]] = {
    "pvt_v2_b0": dict(params_m=3.67, gflops=0.571, paper_params_m=3.4, paper_gflops=0.6, top1=70.5,
                      drop_path_rate=0.1, clip_grad=None),
    "pvt_v2_b1": dict(params_m=14.01, gflops=2.119, paper_params_m=13.1, paper_gflops=2.1, top1=78.7,
                      drop_path_rate=0.1, clip_grad=None),
    "pvt_v2_b2": dict(params_m=25.36, gflops=4.045, paper_params_m=25.4, paper_gflops=4.0, top1=82.0,
                      drop_path_rate=0.1, clip_grad=None),
    "pvt_v2_b2_li": dict(params_m=22.55, gflops=3.909, paper_params_m=22.6, paper_gflops=3.9,
                         top1=82.1, drop_path_rate=0.1, clip_grad=None),
    "pvt_v2_b3": dict(params_m=45.24, gflops=6.922, paper_params_m=45.2, paper_gflops=6.9, top1=83.2,
                      drop_path_rate=0.3, clip_grad=1.0),
    "pvt_v2_b4": dict(params_m=62.56, gflops=10.136, paper_params_m=62.6, paper_gflops=10.1,
                      top1=83.6, drop_path_rate=0.3, clip_grad=1.0),
    "pvt_v2_b5": dict(params_m=81.96, gflops=11.752, paper_params_m=82.0, paper_gflops=11.8,
                      top1=83.8, drop_path_rate=0.3, clip_grad=1.0),
}


# ----------------------------------------------------------------------------- cost model

def stage_sizes(model: "PyramidVisionTransformerV2", H: int, W: int) -> List[Tuple[int, int]]:
    """The (H_i, W_i) token grid of each stage for an H x W input.

    >>> import torch, hirilib
    >>> with torch.device("meta"):
    ...     m = hirilib.create_model("pvt_v2_b0")
    >>> stage_sizes(m, 224, 224)
    [(56, 56), (28, 28), (14, 14), (7, 7)]
    """
    sizes = []
    for stride in model.strides:
        H, W = -(-H // stride), -(-W // stride)  # padded conv: ceil(H / stride)
        sizes.append((H, W))
    return sizes


def attention_macs(model: "PyramidVisionTransformerV2", H: int, W: int) -> int:
    """MACs of all attention layers of ``model`` on an H x W input, from the
    closed-form count ``hirilib.analytic.mha_macs`` (chapter 1, section 1.4),
    without running anything.  This is what lets chapter 2 extrapolate full
    attention to resolutions where tracing it would need tens of GB.
    """
    from hirilib.analytic import mha_macs

    total = 0
    for stage, (h, w) in zip(model.stages, stage_sizes(model, H, W)):
        for blk in stage.blocks:
            a = blk.attn
            total += mha_macs(h, w, a.dim, a.sr_ratio, a.linear, a.pool_size)
    return total


def closed_form_params(embed_dims: Sequence[int], depths: Sequence[int],
                       mlp_ratios: Sequence[float], sr_ratios: Sequence[int] = (8, 4, 2, 1),
                       linear: bool = False, num_classes: int = 1000, in_chans: int = 3,
                       **unused) -> int:
    """Parameter count of a PVTv2 configuration from the architecture alone.

    Per stage i with C = C_i, E = mlp_ratio * C and kernel k (7, then 3):
    patch embedding k^2 C_{i-1} C + C (conv) + 2C (LayerNorm); per block two
    LayerNorms (4C), attention (``analytic.mha_params``) and ConvFFN
    (``analytic.ffn_params``); the stage LayerNorm 2C; and the head C_4 K + K.

    >>> closed_form_params(**PVT_V2_CONFIGS["pvt_v2_b2"])
    25362856
    """
    from hirilib.analytic import ffn_params, mha_params

    total, prev = 0, in_chans
    for i, (C, L, e, R) in enumerate(zip(embed_dims, depths, mlp_ratios, sr_ratios)):
        k = 7 if i == 0 else 3
        total += k * k * prev * C + C + 2 * C                  # patch embedding + its LN
        block = 4 * C + mha_params(C, R, linear) + ffn_params(C, int(C * e), "convffn")
        total += L * block + 2 * C                             # blocks + stage LN
        prev = C
    return total + (prev * num_classes + num_classes if num_classes > 0 else 0)


def closed_form_macs(embed_dims: Sequence[int], depths: Sequence[int],
                     mlp_ratios: Sequence[float], sr_ratios: Sequence[int] = (8, 4, 2, 1),
                     linear: bool = False, num_classes: int = 1000, in_chans: int = 3,
                     H: int = 224, W: Optional[int] = None, pool_size: int = 7, **unused) -> int:
    """Multiply-accumulates of one forward pass of a PVTv2 configuration on an
    H x W image, from the architecture alone, counted as ``count_flops`` counts
    them (chapter 1's closed forms: convs and linears without bias, LayerNorm 5
    per element, pooling and the final mean 1 per input element).

    Per stage, with N_i tokens of C channels: the patch embedding N_i k^2 C_{i-1} C
    plus its LayerNorm; per block two LayerNorms, attention
    (``analytic.mha_macs``) and ConvFFN (``analytic.ffn_macs``); the stage
    LayerNorm; then the mean over the last stage's tokens and the classifier.

    >>> closed_form_macs(**PVT_V2_CONFIGS["pvt_v2_b2"], H=224)  # 4.05 G, as released
    4045842240
    """
    from hirilib.analytic import LN_PER_ELEMENT as LN, ffn_macs, mha_macs

    W = H if W is None else W
    total, prev, h, w = 0, in_chans, H, W
    for i, (C, L, e, R) in enumerate(zip(embed_dims, depths, mlp_ratios, sr_ratios)):
        k, s = (7, 4) if i == 0 else (3, 2)
        h, w = -(-h // s), -(-w // s)
        N = h * w
        total += N * k * k * prev * C + LN * N * C                     # patch embedding
        block = (2 * LN * N * C + mha_macs(h, w, C, R, linear, pool_size)
                 + ffn_macs(h, w, C, int(C * e), "convffn"))
        total += L * block + LN * N * C                                # blocks, stage LN
        prev = C
    total += h * w * prev                                              # mean over tokens
    return total + (prev * num_classes if num_classes > 0 else 0)      # classifier


# ----------------------------------------------------------------------------- modules

def init_weights(m: nn.Module) -> None:
    """The official initialisation (applied to every submodule with ``apply``).

    Linear: truncated normal, std 0.02, bias 0.  LayerNorm: weight 1, bias 0.
    Conv2d: normal(0, sqrt(2 / fan_out)), fan_out = k*k*C_out/groups, bias 0
    (this covers the patch embeddings, the reduction convs and the depthwise
    convs of the FFN).
    """
    if isinstance(m, nn.Linear):
        nn.init.trunc_normal_(m.weight, std=0.02)
        if m.bias is not None:
            nn.init.zeros_(m.bias)
    elif isinstance(m, nn.LayerNorm):
        nn.init.ones_(m.weight)
        nn.init.zeros_(m.bias)
    elif isinstance(m, nn.Conv2d):
        fan_out = m.kernel_size[0] * m.kernel_size[1] * m.out_channels // m.groups
        nn.init.normal_(m.weight, 0.0, math.sqrt(2.0 / fan_out))
        if m.bias is not None:
            nn.init.zeros_(m.bias)


class Block(nn.Module):
    """PVTv2 encoder block: pre-norm attention and ConvFFN, each residual.

        x = x + DropPath(Attention(LN(x)))   # SRA, or linear SRA
        x = x + DropPath(ConvFFN(LN(x)))     # fc1, [ReLU], DWConv 3x3, GELU, fc2
    """

    def __init__(self, dim: int, num_heads: int, mlp_ratio: float = 4.0, sr_ratio: int = 1,
                 linear: bool = False, qkv_bias: bool = True, drop: float = 0.0,
                 attn_drop: float = 0.0, drop_path: float = 0.0, norm_eps: float = 1e-6,
                 pool_size: int = 7, use_sdpa: bool = False):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=norm_eps)
        self.attn = MultiHeadAttention(dim, num_heads, qkv_bias=qkv_bias, sr_ratio=sr_ratio,
                                       linear=linear, pool_size=pool_size, attn_drop=attn_drop,
                                       proj_drop=drop, use_sdpa=use_sdpa)
        self.drop_path = DropPath(drop_path) if drop_path > 0 else nn.Identity()
        self.norm2 = nn.LayerNorm(dim, eps=norm_eps)
        self.mlp = ConvFFN(dim, int(dim * mlp_ratio), drop=drop, extra_relu=linear)

    def forward(self, x: torch.Tensor, H: int, W: int) -> torch.Tensor:  # (B, N, C)
        x = x + self.drop_path(self.attn(self.norm1(x), H, W))
        x = x + self.drop_path(self.mlp(self.norm2(x), H, W))
        return x  # (B, N, C)


class PVTv2Stage(nn.Module):
    """One pyramid level: overlapping patch embedding, blocks, LayerNorm.

    ``(B, C_in, H, W) -> (B, C, H/s, W/s)`` with s the embedding's stride
    (4 for the first stage, 2 after; sizes round up when H is not a multiple).
    """

    def __init__(self, in_chans: int, dim: int, depth: int, patch_size: int, stride: int,
                 num_heads: int, mlp_ratio: float, sr_ratio: int, linear: bool,
                 drop_path: Sequence[float], norm_eps: float = 1e-6, **block_kwargs):
        super().__init__()
        self.patch_embed = OverlapPatchEmbed(in_chans, dim, patch_size, stride)  # LN eps 1e-5
        self.blocks = nn.ModuleList([
            Block(dim, num_heads, mlp_ratio, sr_ratio, linear, drop_path=drop_path[j],
                  norm_eps=norm_eps, **block_kwargs)
            for j in range(depth)])
        self.norm = nn.LayerNorm(dim, eps=norm_eps)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x, H, W = self.patch_embed(x)                           # (B, N, C), N = H*W
        for blk in self.blocks:
            x = blk(x, H, W)                                    # (B, N, C)
        x = self.norm(x)
        return rearrange(x, "b (h w) c -> b c h w", h=H, w=W)   # (B, C, H, W)


class PyramidVisionTransformerV2(nn.Module):
    """PVTv2 (Wang et al. 2022): four stages of overlapping patch embedding +
    (linear) spatial-reduction Transformer blocks, then mean pooling and a
    linear classifier.  There is no class token and no position embedding, so
    any input whose sides are multiples of ``size_multiple`` works.

    Args:
        in_chans, num_classes: input channels; classes (0: no head).
        embed_dims, depths, num_heads, mlp_ratios, sr_ratios: per stage.
        linear: linear SRA (7x7 average pool) in every stage, and the extra
            ReLU in the FFN (PVTv2-Li).  ``sr_ratios`` are then unused.
        qkv_bias: bias in the q and kv projections.
        drop_rate, attn_drop_rate: dropout after projections / on attention.
        drop_path_rate: stochastic depth, linearly from 0 to this over all blocks.
        norm_eps: eps of the block and stage LayerNorms (1e-6 in every official
            factory; the patch-embedding and reduction LayerNorms keep 1e-5).
        pool_size: P of linear SRA.
        use_sdpa: fused ``F.scaled_dot_product_attention`` (faster on GPU).
    """

    def __init__(self, in_chans: int = 3, num_classes: int = 1000,
                 embed_dims: Sequence[int] = (64, 128, 320, 512),
                 depths: Sequence[int] = (3, 4, 6, 3), num_heads: Sequence[int] = (1, 2, 5, 8),
                 mlp_ratios: Sequence[float] = (8, 8, 4, 4), sr_ratios: Sequence[int] = (8, 4, 2, 1),
                 linear: bool = False, qkv_bias: bool = True, drop_rate: float = 0.0,
                 attn_drop_rate: float = 0.0, drop_path_rate: float = 0.0, norm_eps: float = 1e-6,
                 pool_size: int = 7, use_sdpa: bool = False):
        super().__init__()
        n = len(depths)
        for name, v in (("embed_dims", embed_dims), ("num_heads", num_heads),
                        ("mlp_ratios", mlp_ratios), ("sr_ratios", sr_ratios)):
            if len(v) != n:
                raise ValueError(f"{name} has {len(v)} entries but depths has {n}")
        self.in_chans, self.num_classes = in_chans, num_classes
        self.embed_dims, self.depths = tuple(embed_dims), tuple(depths)
        self.sr_ratios, self.linear = tuple(sr_ratios), linear
        self.strides = tuple([4] + [2] * (n - 1))
        self.num_features = embed_dims[-1]

        # stochastic depth: 0 for the first block, drop_path_rate for the last
        dpr = torch.linspace(0, drop_path_rate, sum(depths), device="cpu").tolist()
        self.stages = nn.ModuleList()
        cur = 0
        for i in range(n):
            self.stages.append(PVTv2Stage(
                in_chans if i == 0 else embed_dims[i - 1], embed_dims[i], depths[i],
                patch_size=7 if i == 0 else 3, stride=self.strides[i],
                num_heads=num_heads[i], mlp_ratio=mlp_ratios[i], sr_ratio=sr_ratios[i],
                linear=linear, drop_path=dpr[cur:cur + depths[i]], norm_eps=norm_eps,
                qkv_bias=qkv_bias, drop=drop_rate, attn_drop=attn_drop_rate,
                pool_size=pool_size, use_sdpa=use_sdpa))
            cur += depths[i]
        self.head = nn.Linear(embed_dims[-1], num_classes) if num_classes > 0 else nn.Identity()
        self.apply(init_weights)

    # -- which inputs work ---------------------------------------------------------------

    @property
    def size_multiple(self) -> int:
        """Input sides must be multiples of this.

        A stride-R reduction conv must tile its map exactly, or it would drop
        the last rows and columns of keys and values; stage i's map is the
        input divided by s_i = 4, 8, 16, 32, so the input must be a multiple
        of s_i * R_i in every stage with R_i > 1: 32 for every SRA variant.
        Linear SRA pools adaptively, and the padded patch embeddings round
        up, so the linear variant (or R = 1 everywhere) takes any size.
        """
        m, s = 1, 1
        for stride, r in zip(self.strides, self.sr_ratios):
            s *= stride
            if not self.linear and r > 1:
                m = math.lcm(m, s * r)
        return m

    def check_input(self, x: torch.Tensor) -> None:
        """Raise a ``ValueError`` that says what works if ``x`` cannot be processed."""
        if not isinstance(x, torch.Tensor) or x.ndim != 4:
            shape = tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
            raise ValueError(f"PVTv2 expects images (B, {self.in_chans}, H, W), got {shape}")
        if x.shape[1] != self.in_chans:
            raise ValueError(f"PVTv2 was built for {self.in_chans}-channel images "
                             f"(B, {self.in_chans}, H, W) but got {x.shape[1]} channels "
                             f"(shape {tuple(x.shape)}); build it with in_chans={x.shape[1]} "
                             f"or convert the input")
        H, W = x.shape[-2:]
        if not self.linear:
            s = 1
            for i, ((h, w), r) in enumerate(zip(stage_sizes(self, H, W), self.sr_ratios)):
                s *= self.strides[i]
                if r > 1 and (h < r or w < r):
                    raise ValueError(
                        f"the reduction ratio sr_ratio={r} of stage {i + 1} is larger than its "
                        f"{h} x {w} map (input {H} x {W}); it needs inputs of at least "
                        f"{s * r} x {s * r}, or a smaller sr_ratio")
        m = self.size_multiple
        bad = [d for d in (H, W) if d % m]
        if bad:
            d = bad[0]
            lo, hi = (d // m) * m, (d // m + 1) * m
            near = f"{lo} and {hi}" if lo > 0 else f"{hi}"
            raise ValueError(
                f"PVTv2 with spatial-reduction attention needs input sides divisible by {m} "
                f"(each stride-R reduction must tile its stage's map), got {H} x {W}; "
                f"the nearest sizes that work are {near}")

    # -- forward -------------------------------------------------------------------------

    def forward_pyramid(self, x: torch.Tensor) -> List[torch.Tensor]:
        """The four stage outputs ``(B, C_i, H/s_i, W/s_i)``, s_i = 4, 8, 16, 32
        (each after its stage's LayerNorm), for dense-prediction heads."""
        self.check_input(x)
        feats = []
        for stage in self.stages:
            x = stage(x)             # (B, C_i, H_i, W_i)
            feats.append(x)
        return feats

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """The last stage's map after its LayerNorm, ``(B, C_4, H/32, W/32)``."""
        self.check_input(x)
        for stage in self.stages:
            x = stage(x)
        return x

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        """Mean over the tokens of the last map, then the linear classifier."""
        x = x.mean(dim=(-2, -1))  # (B, C_4)
        return x if pre_logits else self.head(x)  # (B, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))

    def reset_classifier(self, num_classes: int) -> None:
        """A fresh (officially initialised) head for ``num_classes`` classes."""
        self.num_classes = num_classes
        self.head = nn.Linear(self.num_features, num_classes) if num_classes > 0 else nn.Identity()
        self.head.apply(init_weights)


# ----------------------------------------------------------------------------- factories

def _create(variant: str, num_classes: int, in_chans: int, drop_path_rate: float,
            **overrides) -> PyramidVisionTransformerV2:
    cfg = {**PVT_V2_CONFIGS[variant], **overrides}
    model = PyramidVisionTransformerV2(in_chans=in_chans, num_classes=num_classes,
                                       drop_path_rate=drop_path_rate, **cfg)
    model.variant = variant
    return model


@register_model
def pvt_v2_b0(num_classes: int = 1000, in_chans: int = 3, drop_path_rate: float = 0.0,
              **kwargs) -> PyramidVisionTransformerV2:
    """PVTv2-B0: C = 32, 64, 160, 256; depths 2, 2, 2, 2 (3.67 M params)."""
    return _create("pvt_v2_b0", num_classes, in_chans, drop_path_rate, **kwargs)


@register_model
def pvt_v2_b1(num_classes: int = 1000, in_chans: int = 3, drop_path_rate: float = 0.0,
              **kwargs) -> PyramidVisionTransformerV2:
    """PVTv2-B1: C = 64, 128, 320, 512; depths 2, 2, 2, 2 (14.01 M params)."""
    return _create("pvt_v2_b1", num_classes, in_chans, drop_path_rate, **kwargs)


@register_model
def pvt_v2_b2(num_classes: int = 1000, in_chans: int = 3, drop_path_rate: float = 0.0,
              **kwargs) -> PyramidVisionTransformerV2:
    """PVTv2-B2: C = 64, 128, 320, 512; depths 3, 4, 6, 3 (25.36 M params)."""
    return _create("pvt_v2_b2", num_classes, in_chans, drop_path_rate, **kwargs)


@register_model
def pvt_v2_b2_li(num_classes: int = 1000, in_chans: int = 3, drop_path_rate: float = 0.0,
                 **kwargs) -> PyramidVisionTransformerV2:
    """PVTv2-B2-Li: B2 with linear SRA in all stages (22.55 M params)."""
    return _create("pvt_v2_b2_li", num_classes, in_chans, drop_path_rate, **kwargs)


@register_model
def pvt_v2_b3(num_classes: int = 1000, in_chans: int = 3, drop_path_rate: float = 0.0,
              **kwargs) -> PyramidVisionTransformerV2:
    """PVTv2-B3: C = 64, 128, 320, 512; depths 3, 4, 18, 3 (45.24 M params)."""
    return _create("pvt_v2_b3", num_classes, in_chans, drop_path_rate, **kwargs)


@register_model
def pvt_v2_b4(num_classes: int = 1000, in_chans: int = 3, drop_path_rate: float = 0.0,
              **kwargs) -> PyramidVisionTransformerV2:
    """PVTv2-B4: C = 64, 128, 320, 512; depths 3, 8, 27, 3 (62.56 M params)."""
    return _create("pvt_v2_b4", num_classes, in_chans, drop_path_rate, **kwargs)


@register_model
def pvt_v2_b5(num_classes: int = 1000, in_chans: int = 3, drop_path_rate: float = 0.0,
              **kwargs) -> PyramidVisionTransformerV2:
    """PVTv2-B5: C = 64, 128, 320, 512; depths 3, 6, 40, 3; MLP ratio 4 (81.96 M params)."""
    return _create("pvt_v2_b5", num_classes, in_chans, drop_path_rate, **kwargs)


# ----------------------------------------------------------------------------- checkpoints

_TIMM_RULES = [
    (re.compile(r"^patch_embed\."), "stages.0.patch_embed."),
    (re.compile(r"^stages\.(\d+)\.downsample\."), r"stages.\1.patch_embed."),
    (re.compile(r"\.mlp\.dwconv\.(weight|bias)$"), r".mlp.dwconv.dwconv.\1"),
]
_OFFICIAL_RULES = [
    (re.compile(r"^patch_embed(\d+)\."), lambda m: f"stages.{int(m.group(1)) - 1}.patch_embed."),
    (re.compile(r"^block(\d+)\."), lambda m: f"stages.{int(m.group(1)) - 1}.blocks."),
    (re.compile(r"^norm(\d+)\."), lambda m: f"stages.{int(m.group(1)) - 1}.norm."),
]


def convert_state_dict(state_dict: Mapping[str, torch.Tensor]) -> Dict[str, torch.Tensor]:
    """Map a PVTv2 checkpoint from timm or from the official repository onto our keys.

    timm (``timm/pvt_v2_*`` on the Hugging Face Hub) keeps stage 1's embedding
    at ``patch_embed``, the later ones at ``stages.i.downsample`` and the FFN's
    depthwise conv at ``mlp.dwconv``; the official code uses ``patch_embed{i}``,
    ``block{i}.j`` and ``norm{i}`` (1-based) and ``mlp.dwconv.dwconv`` as we do.
    Our own keys pass through unchanged; a ``module.`` prefix (DDP) is removed.

    >>> sd = {"patch_embed.proj.weight": 0, "stages.1.downsample.norm.bias": 1,
    ...       "stages.0.blocks.0.mlp.dwconv.weight": 2, "stages.3.norm.weight": 3}
    >>> list(convert_state_dict(sd))  # doctest: +NORMALIZE_WHITESPACE
    ['stages.0.patch_embed.proj.weight', 'stages.1.patch_embed.norm.bias',
     'stages.0.blocks.0.mlp.dwconv.dwconv.weight', 'stages.3.norm.weight']
    >>> list(convert_state_dict({"block2.1.attn.sr.weight": 0, "norm4.bias": 1}))
    ['stages.1.blocks.1.attn.sr.weight', 'stages.3.norm.bias']
    """
    for wrapper in ("state_dict", "model"):
        inner = state_dict.get(wrapper) if isinstance(state_dict, Mapping) else None
        if isinstance(inner, Mapping):
            state_dict = inner
    keys = [k[len("module."):] if k.startswith("module.") else k for k in state_dict]
    official = any(re.match(r"^(patch_embed|block|norm)\d+\.", k) for k in keys)
    rules = _OFFICIAL_RULES if official else _TIMM_RULES
    out: Dict[str, torch.Tensor] = {}
    for key, value in zip(keys, state_dict.values()):
        new = key
        for pattern, repl in rules:
            new = pattern.sub(repl, new)
        out[new] = value
    return out


def hub_repo(name: str) -> str:
    """The Hub repository of timm's ImageNet-1k weights for variant ``name``."""
    return f"timm/{name}.in1k"


def download_pretrained(name: str, revision: Optional[str] = None,
                        cache_dir: Optional[str] = None) -> Path:
    """timm's weights for ``name`` from the Hub (or the local Hub cache); the file's path."""
    return download_weights(hub_repo(name), revision=revision, cache_dir=cache_dir)


def load_pretrained(model: PyramidVisionTransformerV2, name: Optional[str] = None,
                    path: Optional[str | Path] = None, strict: bool = True,
                    revision: Optional[str] = None, cache_dir: Optional[str] = None
                    ) -> PyramidVisionTransformerV2:
    """Load ImageNet-1k weights into ``model`` and return it.

    With ``path`` the weights come from that local file (timm's
    ``model.safetensors`` / ``pytorch_model.bin``, or an official ``.pth``);
    otherwise timm's published weights for ``name`` (default: the variant the
    model was built as) are fetched from the Hugging Face Hub, repository
    ``timm/<name>.in1k``.  If the model's classifier has a different number of
    classes, the checkpoint's head is skipped (with a warning) and the rest
    is loaded.  Offline, a ``PretrainedWeightsUnavailable`` error says how to
    pass a local file.
    """
    name = name or getattr(model, "variant", None)
    if path is None:
        if name not in PVT_V2_CONFIGS:
            raise ValueError(f"no pretrained weights known for {name!r}; pass name= one of "
                             f"{sorted(PVT_V2_CONFIGS)} or path= a local checkpoint")
        path = download_pretrained(name, revision=revision, cache_dir=cache_dir)
    return load_weights(model, convert_state_dict(read_checkpoint(path)), head_prefix="head.",
                        source=str(path))


# ----------------------------------------------------------------------------- benchmark

#: The three attention flavours chapter 2 compares, as (model name, overrides).
ATTENTION_COMPARISON: Dict[str, Tuple[str, Dict[str, Any]]] = {
    "B2 (SRA)": ("pvt_v2_b2", {}),
    "B2-Li (linear SRA)": ("pvt_v2_b2_li", {}),
    "B2, full attention": ("pvt_v2_b2", {"sr_ratios": (1, 1, 1, 1)}),
}


def latency_vs_resolution(models: Mapping[str, Tuple[str, Dict[str, Any]]] | Sequence[str],
                          resolutions: Sequence[int], device: str | torch.device = "cpu",
                          batch_size: int = 1, dtype: str = "fp32", warmup: int = 5,
                          runs: int = 20, channels_last: bool = False, compile: bool = False,
                          use_sdpa: bool = False) -> List[Dict[str, Any]]:
    """Median forward latency of each model at each square resolution.

    ``models`` maps a label to ``(registered name, overrides)`` (see
    ``ATTENTION_COMPARISON``), or is a list of registered names.  One record
    per (model, resolution), with ``hirilib.profile.measure_latency``'s fields
    (median, spread, settings, device).  A run that exhausts GPU memory, or whose
    explicit attention matrices would need more than 80% of the device's memory
    (then it is not attempted), gives a record with ``"oom": True`` instead.
    """
    from hirilib.profile import measure_latency
    from hirilib.registry import create_model

    if not isinstance(models, Mapping):
        models = {n: (n, {}) for n in models}
    device = torch.device(device)
    budget = 0.8 * _memory_bytes(device)
    records = []
    for label, (name, overrides) in models.items():
        model = create_model(name, **{**overrides, "use_sdpa": use_sdpa})
        for res in resolutions:
            rec: Dict[str, Any] = {"label": label, "model": name,
                                   "overrides": {k: list(v) if isinstance(v, tuple) else v
                                                 for k, v in overrides.items()},
                                   "resolution": res, "use_sdpa": use_sdpa}
            need = 0 if use_sdpa else _attention_bytes(model, res, batch_size)
            if need > budget:  # would not fit: say so rather than crash the machine
                rec.update(oom=True, estimated_bytes=need, batch_size=batch_size, dtype=dtype)
                records.append(rec)
                continue
            try:
                rec.update(measure_latency(model, (batch_size, 3, res, res), device=device,
                                           dtype=dtype, channels_last=channels_last,
                                           compile=compile, warmup=warmup, runs=runs))
            except torch.cuda.OutOfMemoryError:
                rec.update(oom=True, batch_size=batch_size, dtype=dtype)
            finally:
                if device.type == "cuda":
                    torch.cuda.empty_cache()
            records.append(rec)
        del model
    return records


def _memory_bytes(device: torch.device) -> int:
    """Memory of the device: the GPU's, or the machine's RAM for the CPU."""
    if device.type == "cuda":
        return torch.cuda.get_device_properties(device).total_memory
    import os

    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")


def _attention_bytes(model: PyramidVisionTransformerV2, res: int, batch: int) -> int:
    """fp32 bytes of the largest explicit attention matrices (scores, softmax and a
    temporary, each B x heads x N x M) at a res x res input."""
    worst = 0
    for stage, (h, w) in zip(model.stages, stage_sizes(model, res, res)):
        a = stage.blocks[0].attn
        worst = max(worst, batch * a.num_heads * h * w * a.kv_tokens(h, w) * 4)
    return 3 * worst


def bench_pvt_v2(device: str | torch.device = "cpu", quick: bool = False) -> List[Dict[str, Any]]:
    """The chapter-2 latency suite: B2 (SRA), B2-Li and B2 with full attention,
    batch 1, fp32, explicit softmax(QK^T)V as in the official code, at input
    resolutions 224 ... 1024 (quick: 224, 256, 288 with few runs)."""
    if quick:
        return latency_vs_resolution(ATTENTION_COMPARISON, (224, 256, 288), device,
                                     warmup=1, runs=3)
    return latency_vs_resolution(ATTENTION_COMPARISON, (224, 320, 448, 512, 640, 768, 896, 1024),
                                 device, warmup=10, runs=30)
