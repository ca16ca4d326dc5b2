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
ours.  Published numbers are in ``hirilib.reference.PVT_V2``, closed-form costs in
``hirilib.analytic.pvt_v2``, timings in ``hirilib.bench.pvt_v2``.

>>> import torch, hirilib
>>> m = hirilib.create_model("pvt_v2_b0").eval()
>>> [tuple(f.shape) for f in m.forward_pyramid(torch.zeros(1, 3, 64, 64))]
[(1, 32, 16, 16), (1, 64, 8, 8), (1, 160, 4, 4), (1, 256, 2, 2)]
"""

from __future__ import annotations

import math
import re
from typing import Any, Dict, List, Mapping, Sequence, Tuple

import torch
import torch.nn as nn
from einops import rearrange

from hirilib.layers import (ConvFFN, DropPath, MultiHeadAttention, OverlapPatchEmbed,
                            check_image, check_int, check_model_args,
                            check_positive_ints, drop_path_schedule, fan_out_init)
from hirilib.registry import register_model

__all__ = ["PyramidVisionTransformerV2", "PVTv2Stage", "Block",
           "PVT_V2_CONFIGS", "convert_state_dict"]

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

# ----------------------------------------------------------------------------- modules

class Block(nn.Module):
    """PVTv2 encoder block: pre-norm attention and ConvFFN, each residual.

        x = x + DropPath(Attention(LN(x)))   # SRA, or linear SRA
        x = x + DropPath(ConvFFN(LN(x)))     # fc1, [ReLU], DWConv 3x3, GELU, fc2
    """

    def __init__(self, dim: int, num_heads: int, mlp_ratio: float = 4.0,
                 sr_ratio: int = 1, linear: bool = False, qkv_bias: bool = True,
                 drop: float = 0.0, attn_drop: float = 0.0, drop_path: float = 0.0,
                 norm_eps: float = 1e-6, pool_size: int = 7, use_sdpa: bool = True):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=norm_eps)
        self.attn = MultiHeadAttention(dim, num_heads, qkv_bias=qkv_bias,
                                       sr_ratio=sr_ratio, linear=linear,
                                       pool_size=pool_size, attn_drop=attn_drop,
                                       proj_drop=drop, use_sdpa=use_sdpa)
        self.drop_path = DropPath.make(drop_path)
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
        use_sdpa: fused ``F.scaled_dot_product_attention`` (the default; faster, and
            memory linear in the tokens on a GPU); False runs the explicit
            softmax(QK^T)V of chapter 1, as the official code does (tested equal).
    """

    def __init__(self, in_chans: int = 3, num_classes: int = 1000,
                 embed_dims: Sequence[int] = (64, 128, 320, 512),
                 depths: Sequence[int] = (3, 4, 6, 3), num_heads: Sequence[int] = (1, 2, 5, 8),
                 mlp_ratios: Sequence[float] = (8, 8, 4, 4), sr_ratios: Sequence[int] = (8, 4, 2, 1),
                 linear: bool = False, qkv_bias: bool = True, drop_rate: float = 0.0,
                 attn_drop_rate: float = 0.0, drop_path_rate: float = 0.0, norm_eps: float = 1e-6,
                 pool_size: int = 7, use_sdpa: bool = True):
        super().__init__()
        check_model_args(num_classes, in_chans, drop_path_rate)
        n = len(check_positive_ints("depths", depths))
        embed_dims = check_positive_ints("embed_dims", embed_dims, n)
        num_heads = check_positive_ints("num_heads", num_heads, n)
        sr_ratios = check_positive_ints("sr_ratios", sr_ratios, n)
        if len(mlp_ratios) != n or any(not r > 0 for r in mlp_ratios):
            raise ValueError(f"mlp_ratios needs {n} positive numbers, got {mlp_ratios!r}")
        self.in_chans, self.num_classes = in_chans, num_classes
        self.embed_dims, self.depths = embed_dims, tuple(depths)
        self.sr_ratios, self.linear = sr_ratios, linear
        self.strides = tuple([4] + [2] * (n - 1))
        self.num_features = embed_dims[-1]

        dpr = drop_path_schedule(drop_path_rate, sum(depths))  # 0 for the first block
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
        self.apply(fan_out_init)  # the official initialisation (hirilib.layers.init)

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

    @property
    def min_input_size(self) -> int:
        """The smallest input side: ``size_multiple``, or 1 for the linear variant."""
        return self.size_multiple

    def stage_sizes(self, H: int, W: int) -> List[Tuple[int, int]]:
        """The (H_i, W_i) token grid of each stage for an H x W input (padded convs
        round up: ceil(H / s))."""
        sizes = []
        for stride in self.strides:
            H, W = -(-H // stride), -(-W // stride)
            sizes.append((H, W))
        return sizes

    def check_input(self, x: torch.Tensor) -> None:
        """Raise a ``TypeError``/``ValueError`` that says what works if ``x`` cannot be
        processed (``hirilib.layers.check_image``)."""
        m = self.size_multiple
        check_image(x, self.in_chans, multiple=m, min_size=m, name="PVTv2",
                    why="each stride-R key/value reduction must tile its stage's map")

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
        self.num_classes = check_int("num_classes", num_classes, 0)
        self.head = nn.Linear(self.num_features, num_classes) if num_classes > 0 else nn.Identity()
        self.head.apply(fan_out_init)


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


# ----------------------------------------------------------------------------- factories

def _create(variant: str, num_classes: int, in_chans: int, drop_path_rate: float,
            **overrides) -> PyramidVisionTransformerV2:
    cfg = {**PVT_V2_CONFIGS[variant], **overrides}
    model = PyramidVisionTransformerV2(in_chans=in_chans, num_classes=num_classes,
                                       drop_path_rate=drop_path_rate, **cfg)
    model.variant = variant
    return model


@register_model(pretrained="timm/pvt_v2_b0.in1k", converter=convert_state_dict)
def pvt_v2_b0(num_classes: int = 1000, in_chans: int = 3, drop_path_rate: float = 0.0,
              **kwargs) -> PyramidVisionTransformerV2:
    """PVTv2-B0: C = 32, 64, 160, 256; depths 2, 2, 2, 2 (3.67 M params)."""
    return _create("pvt_v2_b0", num_classes, in_chans, drop_path_rate, **kwargs)


@register_model(pretrained="timm/pvt_v2_b1.in1k", converter=convert_state_dict)
def pvt_v2_b1(num_classes: int = 1000, in_chans: int = 3, drop_path_rate: float = 0.0,
              **kwargs) -> PyramidVisionTransformerV2:
    """PVTv2-B1: C = 64, 128, 320, 512; depths 2, 2, 2, 2 (14.01 M params)."""
    return _create("pvt_v2_b1", num_classes, in_chans, drop_path_rate, **kwargs)


@register_model(pretrained="timm/pvt_v2_b2.in1k", converter=convert_state_dict)
def pvt_v2_b2(num_classes: int = 1000, in_chans: int = 3, drop_path_rate: float = 0.0,
              **kwargs) -> PyramidVisionTransformerV2:
    """PVTv2-B2: C = 64, 128, 320, 512; depths 3, 4, 6, 3 (25.36 M params)."""
    return _create("pvt_v2_b2", num_classes, in_chans, drop_path_rate, **kwargs)


@register_model(pretrained="timm/pvt_v2_b2_li.in1k", converter=convert_state_dict)
def pvt_v2_b2_li(num_classes: int = 1000, in_chans: int = 3, drop_path_rate: float = 0.0,
                 **kwargs) -> PyramidVisionTransformerV2:
    """PVTv2-B2-Li: B2 with linear SRA in all stages (22.55 M params)."""
    return _create("pvt_v2_b2_li", num_classes, in_chans, drop_path_rate, **kwargs)


@register_model(pretrained="timm/pvt_v2_b3.in1k", converter=convert_state_dict)
def pvt_v2_b3(num_classes: int = 1000, in_chans: int = 3, drop_path_rate: float = 0.0,
              **kwargs) -> PyramidVisionTransformerV2:
    """PVTv2-B3: C = 64, 128, 320, 512; depths 3, 4, 18, 3 (45.24 M params)."""
    return _create("pvt_v2_b3", num_classes, in_chans, drop_path_rate, **kwargs)


@register_model(pretrained="timm/pvt_v2_b4.in1k", converter=convert_state_dict)
def pvt_v2_b4(num_classes: int = 1000, in_chans: int = 3, drop_path_rate: float = 0.0,
              **kwargs) -> PyramidVisionTransformerV2:
    """PVTv2-B4: C = 64, 128, 320, 512; depths 3, 8, 27, 3 (62.56 M params)."""
    return _create("pvt_v2_b4", num_classes, in_chans, drop_path_rate, **kwargs)


@register_model(pretrained="timm/pvt_v2_b5.in1k", converter=convert_state_dict)
def pvt_v2_b5(num_classes: int = 1000, in_chans: int = 3, drop_path_rate: float = 0.0,
              **kwargs) -> PyramidVisionTransformerV2:
    """PVTv2-B5: C = 64, 128, 320, 512; depths 3, 6, 40, 3; MLP ratio 4 (81.96 M params)."""
    return _create("pvt_v2_b5", num_classes, in_chans, drop_path_rate, **kwargs)
