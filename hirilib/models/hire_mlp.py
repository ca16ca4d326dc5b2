"""Hire-MLP (Guo et al., "Hire-MLP: Vision MLP via Hierarchical Rearrangement",
CVPR 2022).  Chapter 4 builds it.

MLP-Mixer mixes all N tokens of an image with one N x N weight matrix, which ties
the network to one resolution.  Hire-MLP mixes tokens only inside small **regions**
(Sec. 3): the *inner-region rearrangement* folds p consecutive rows (or columns)
into the channels, so that a plain channel-mixing MLP sees exactly one region's p
tokens, and the *cross-region rearrangement* shifts the map circularly by a few
tokens before the fold (and back after it), so that successive blocks group tokens
across region borders.  Nothing depends on the number of tokens: any input size
works, and the cost is linear in H * W.

The defaults follow the official code (``ggjy/Hire-Wave-MLP.pytorch``,
``mlp_based/hire_mlp.py``) where it and the paper differ: BatchNorm everywhere, a
7x7/4 stem with padding 2, the three branches fused by split attention (a softmax
over the branches; the paper's plain sum is ``fusion="sum"``), and the shift steps
``(k mod stride) * dilation`` of block k in each stage.  ``convert_state_dict``
maps the official checkpoints' keys onto ours.  Published numbers:
``hirilib.reference.HIRE_MLP``; closed-form counts: ``hirilib.analytic.hire_mlp``.

>>> import torch, hirilib
>>> m = hirilib.create_model("hire_mlp_tiny", embed_dims=(8, 16, 24, 32)).eval()
>>> [tuple(f.shape) for f in m.forward_pyramid(torch.zeros(1, 3, 72, 88))]
[(1, 8, 18, 22), (1, 16, 9, 11), (1, 24, 5, 6), (1, 32, 3, 3)]
"""

from __future__ import annotations

import re
from typing import Dict, List, Sequence, Tuple

import torch
import torch.nn as nn
from einops import rearrange

from hirilib.layers import (ClassifierHead, ConvNormAct, DropPath, HierarchicalBackbone, Mlp,
                            Stage, check_int, check_model_args, check_positive_ints,
                            drop_path_schedule, trunc_normal_init)
from hirilib.layers.checks import static_shape
from hirilib.registry import register_model

__all__ = ["inner_region_rearrange", "inner_region_restore", "cross_region_shift",
           "cross_region_restore", "region_mixing", "step_schedule", "branch_weights",
           "fuse_branches", "InnerRegionBranch",
           "SplitAttention", "HireModule", "HireBlock", "HireMLP", "VARIANTS",
           "convert_state_dict", "min_input_size"]

#: the spatial axis each branch mixes along, and its dimension in (B, C, H, W)
AXES = {"h": 2, "w": 3}


def _axis(axis: str) -> int:
    if axis not in AXES:
        raise ValueError(f"axis must be 'h' (along the height) or 'w' (the width), "
                         f"got {axis!r}")
    return AXES[axis]


# ---------------------------------------------------------------------- rearrangements


def inner_region_rearrange(x: torch.Tensor, region: int, axis: str = "h"
                           ) -> torch.Tensor:
    """Fold each region of ``region`` consecutive rows (``axis='h'``) or columns
    (``'w'``) into the channels (Sec. 3, Fig. 2, "rearrange"):
    ``(B, C, H, W) -> (B, C*p, H/p, W)``, channel ``c*p + o`` holding row ``g*p + o``.

    A 1x1 convolution on the result is a fully connected layer over the p tokens
    (and C channels) of one region.  H (or W) must be a multiple of p.
    """
    if _axis(axis) == 2:
        return rearrange(x, "b c (g p) w -> b (c p) g w", p=region)  # (B, C p, H/p, W)
    return rearrange(x, "b c h (g p) -> b (c p) h g", p=region)      # (B, C p, H, W/p)


def inner_region_restore(x: torch.Tensor, region: int, axis: str = "h") -> torch.Tensor:
    """The inverse of ``inner_region_rearrange`` (Fig. 2, "restore"):
    ``(B, C*p, H/p, W) -> (B, C, H, W)``."""
    if _axis(axis) == 2:
        return rearrange(x, "b (c p) g w -> b c (g p) w", p=region)  # (B, C, H, W)
    return rearrange(x, "b (c p) h g -> b c h (g p)", p=region)      # (B, C, H, W)


def cross_region_shift(x: torch.Tensor, step: int, region: int, axis: str = "h"
                       ) -> torch.Tensor:
    """Cross-region rearrangement (Sec. 3): roll the map circularly by ``step`` tokens
    along ``axis`` (content moves down / right), then pad it circularly at the bottom /
    right to a whole number of regions of ``region`` tokens.

    The padding comes *after* the shift and repeats the first rows of the shifted
    map, so the last region wraps around to the top, like the shift itself.
    ``(B, C, H, W) -> (B, C, H', W)`` with H' the next multiple of p (axis 'h').
    """
    dim = _axis(axis)
    size = static_shape(x)[dim]
    pad = -size % region
    if pad > size:
        what = "rows" if axis == "h" else "columns"
        raise ValueError(f"a map of {size} {what} cannot be padded circularly to a "
                         f"whole region of {region} (that takes {pad} copied {what}): "
                         f"it needs at least {-(-region // 2)} {what}, half the region")
    if step:
        x = torch.roll(x, step, dim)                  # token i -> i + step (mod size)
    if pad:
        x = torch.cat([x, x.narrow(dim, 0, pad)], dim)  # circular padding at the end
    return x


def cross_region_restore(x: torch.Tensor, step: int, size: int, axis: str = "h"
                         ) -> torch.Tensor:
    """Undo ``cross_region_shift``: crop to the first ``size`` rows / columns, then roll
    back by ``-step``; every token returns to where it came from."""
    dim = _axis(axis)
    x = x.narrow(dim, 0, size)                              # drop the padding
    return torch.roll(x, -step, dim) if step else x


def region_mixing(x: torch.Tensor, region: int, step: int, mlp, axis: str = "h"
                  ) -> torch.Tensor:
    """One branch of the Hire module as a function: shift and pad, rearrange, apply
    ``mlp`` (any map ``(B, C*p, H'/p, W) -> (B, C*p, H'/p, W)``), restore, crop, shift
    back.  ``(B, C, H, W) -> (B, C, H, W)``."""
    size = static_shape(x)[_axis(axis)]
    t = cross_region_shift(x, step, region, axis)           # (B, C, H', W)
    t = inner_region_rearrange(t, region, axis)             # (B, C p, H'/p, W)
    t = mlp(t)                                              # (B, C p, H'/p, W)
    t = inner_region_restore(t, region, axis)               # (B, C, H', W)
    return cross_region_restore(t, step, size, axis)        # (B, C, H, W)


def step_schedule(depth: int, stride: int, dilation: int) -> List[int]:
    """The shift step of each block of a stage: ``(k mod stride) * dilation`` for block
    k, so the first block never shifts and the next ones cycle through the steps.

    >>> step_schedule(4, 2, 2), step_schedule(5, 3, 1)
    ([0, 2, 0, 2], [0, 1, 2, 0, 1])
    """
    return [(k % stride) * dilation for k in range(depth)]


def min_input_size(regions: Sequence[int]) -> int:
    """The smallest input side a Hire-MLP with these region sizes takes: every stage's
    map must hold at least half a region, so that circular padding can complete it
    (``cross_region_shift``).  Sizes: a 7x7/4 stem with padding 2, then /2 convs.

    >>> min_input_size((4, 3, 3, 2))
    19
    """
    side = 3                                          # the 7x7 stem needs H + 4 >= 7
    while True:
        n, ok = (side - 3) // 4 + 1, True
        for i, p in enumerate(regions):
            n = n if i == 0 else -(-n // 2)
            ok = ok and 2 * n >= p
        if ok:
            return side
        side += 1


# --------------------------------------------------------------------- the Hire module


class InnerRegionBranch(nn.Module):
    """One spatial branch of the Hire module (Sec. 3): mixes the tokens of regions of
    ``region`` consecutive rows (``axis='h'``) or columns (``'w'``), after a
    cross-region shift of ``step`` tokens.

    The mixing MLP acts on the folded channels ``C*p``: 1x1 conv to a bottleneck of
    ``C // 2`` channels (no bias), BatchNorm, ReLU, 1x1 conv back to ``C*p``.
    """

    #: the BN after the first 1x1 conv folds into it (``hirilib.deploy.fuse_bn``)
    bn_fusion = (("norm", "fc1", "after"),)

    def __init__(self, dim: int, region: int, step: int = 0, axis: str = "h"):
        super().__init__()
        _axis(axis)
        self.region = check_int("region", region, 1)
        self.step = check_int("step", step, 0)
        self.axis = axis
        hidden = dim // 2
        self.fc1 = nn.Conv2d(dim * region, hidden, 1, bias=False)
        self.norm = nn.BatchNorm2d(hidden)
        self.act = nn.ReLU()
        self.fc2 = nn.Conv2d(hidden, dim * region, 1)

    def mlp(self, t: torch.Tensor) -> torch.Tensor:   # (B, C p, H'/p, W)
        return self.fc2(self.act(self.norm(self.fc1(t))))

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, C, H, W)
        return region_mixing(x, self.region, self.step, self.mlp, self.axis)

    def extra_repr(self) -> str:
        return f"axis={self.axis!r}, region={self.region}, step={self.step}"


class SplitAttention(nn.Module):
    """Fuse K branches with weights per channel that sum to 1 over the branches (the
    official code's fusion, after ResNeSt's split attention; Sec. 3):

    a = softmax_k(MLP(mean_{H,W}(sum_k x_k))),   out = sum_k a_k * x_k.

    The MLP is 1x1 conv C -> C/4, GELU, 1x1 conv C/4 -> K*C; its output channel j is
    channel ``j // K`` of branch ``j % K`` (interleaved, as in the official code).
    """

    def __init__(self, dim: int, branches: int = 3):
        super().__init__()
        self.branches = branches
        self.mlp = Mlp(dim, dim // 4, dim * branches, use_conv=True)

    def logits(self, xs: Sequence[torch.Tensor]) -> torch.Tensor:
        """The MLP's output ``(B, K*C, 1, 1)`` from the branches' pooled sum."""
        a = sum(xs).mean((2, 3), keepdim=True)                      # (B, C, 1, 1)
        return self.mlp(a)                                          # (B, C K, 1, 1)

    def weights(self, xs: Sequence[torch.Tensor]) -> torch.Tensor:
        """The fusion weights ``(K, B, C, 1, 1)``, summing to 1 over K."""
        return branch_weights(self.logits(xs), self.branches)

    def forward(self, xs: Sequence[torch.Tensor]) -> torch.Tensor:
        return fuse_branches(xs, self.logits(xs))                   # (B, C, H, W)


def branch_weights(logits: torch.Tensor, branches: int = 3) -> torch.Tensor:
    """Interleaved logits ``(B, C*K, 1, 1)`` (channel j: channel j // K of branch j % K)
    -> weights ``(K, B, C, 1, 1)``, a softmax over the K branches per channel."""
    logits = rearrange(logits, "b (c k) 1 1 -> k b c 1 1", k=branches)
    return logits.softmax(dim=0)                                    # over the branches


def fuse_branches(xs: Sequence[torch.Tensor], logits: torch.Tensor) -> torch.Tensor:
    """Split-attention fusion of branches ``xs`` (each ``(B, C, H, W)``) with the
    fusion MLP's interleaved ``logits (B, C*K, 1, 1)``:
    ``sum_k softmax_k(logits) * x_k``."""
    a = branch_weights(logits, len(xs))                             # (K, B, C, 1, 1)
    return sum(a[k] * x for k, x in enumerate(xs))                  # (B, C, H, W)


class HireModule(nn.Module):
    """The Hire module (Sec. 3, Fig. 2): three branches on a map ``(B, C, H, W)``,
    fused, then a 1x1 projection.

    * ``h_branch``: tokens mixed inside regions of p rows (``InnerRegionBranch``);
    * ``w_branch``: the same along the columns;
    * ``c_branch``: a 1x1 conv, channels mixed per token, no shift;
    * fusion: ``"softmax"`` (split attention, the official default) or ``"sum"`` (the
      paper's text: h + w + c).
    """

    def __init__(self, dim: int, region: int, step: int = 0, fusion: str = "softmax"):
        super().__init__()
        if fusion not in ("softmax", "sum"):
            raise ValueError(f"fusion must be 'softmax' (split attention, the official "
                             f"code) or 'sum' (the paper's plain sum), got {fusion!r}")
        self.dim, self.fusion = dim, fusion
        self.h_branch = InnerRegionBranch(dim, region, step, "h")
        self.w_branch = InnerRegionBranch(dim, region, step, "w")
        self.c_branch = nn.Conv2d(dim, dim, 1)
        self.reweight = SplitAttention(dim, 3) if fusion == "softmax" else None
        self.proj = nn.Conv2d(dim, dim, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:       # (B, C, H, W)
        h = self.h_branch(x)                                   # (B, C, H, W)
        w = self.w_branch(x)                                   # (B, C, H, W)
        c = self.c_branch(x)                                   # (B, C, H, W)
        x = self.reweight([h, w, c]) if self.reweight is not None else h + w + c
        return self.proj(x)                                    # (B, C, H, W)


class HireBlock(nn.Module):
    """A Hire-MLP block (Sec. 3): two pre-norm residual branches, with BatchNorm.

    x <- x + DropPath(Hire(BN(x))),   x <- x + DropPath(MLP(BN(x))),

    the MLP being 1x1 conv C -> rC, GELU, 1x1 conv rC -> C.
    """

    #: the MLP's BN pre-norm folds into its first 1x1 conv (``hirilib.deploy.fuse_bn``)
    bn_fusion = (("norm2", "mlp.fc1", "before"),)

    def __init__(self, dim: int, region: int, step: int = 0, mlp_ratio: float = 4.0,
                 drop_path: float = 0.0, fusion: str = "softmax"):
        super().__init__()
        self.norm1 = nn.BatchNorm2d(dim)
        self.hire = HireModule(dim, region, step, fusion)
        self.norm2 = nn.BatchNorm2d(dim)
        self.mlp = Mlp(dim, int(dim * mlp_ratio), use_conv=True)
        self.drop_path = DropPath.make(drop_path)

    def forward(self, x: torch.Tensor) -> torch.Tensor:               # (B, C, H, W)
        x = x + self.drop_path(self.hire(self.norm1(x)))
        return x + self.drop_path(self.mlp(self.norm2(x)))


# ------------------------------------------------------------------------- the network


class HireMLP(HierarchicalBackbone):
    """Hire-MLP (Sec. 3, Table A.1): a 7x7/4 conv stem, four stages of ``HireBlock`` s
    with 3x3/2 conv downsamplings between them (conv, BN, ReLU), and a BN, mean, Linear
    head.

    Args:
        depths, embed_dims, mlp_ratios: blocks, channels and MLP widening per stage.
        regions: the region size p of each stage (4, 3, 3, 2).
        step_strides, step_dilations: block k of stage i shifts by
            ``(k mod step_strides[i]) * step_dilations[i]`` tokens (``step_schedule``).
        fusion: ``"softmax"`` (split attention, the official code) or ``"sum"``.
        num_classes, in_chans, drop_path_rate: as for every model here; drop path
            rises linearly over all blocks.
    """

    #: any side works (each stage pads its regions), from ``min_input_size`` up
    size_multiple = 1
    display_name = "Hire-MLP"
    size_reason = ("smaller inputs leave a stage's map too small to pad circularly to "
                   "whole regions")

    def __init__(self, depths: Sequence[int] = (2, 2, 4, 2),
                 embed_dims: Sequence[int] = (64, 128, 320, 512),
                 mlp_ratios: Sequence[float] = (4, 4, 4, 4),
                 regions: Sequence[int] = (4, 3, 3, 2),
                 step_strides: Sequence[int] = (2, 2, 3, 2),
                 step_dilations: Sequence[int] = (2, 2, 1, 1),
                 fusion: str = "softmax", num_classes: int = 1000, in_chans: int = 3,
                 drop_path_rate: float = 0.0):
        super().__init__()
        check_model_args(num_classes, in_chans, drop_path_rate)
        depths = check_positive_ints("depths", depths)
        n = len(depths)
        embed_dims = check_positive_ints("embed_dims", embed_dims, n)
        regions = check_positive_ints("regions", regions, n)
        step_strides = check_positive_ints("step_strides", step_strides, n)
        dilations = tuple(check_int("step_dilations", d, 0) for d in step_dilations)
        if len(dilations) != n or len(tuple(mlp_ratios)) != n:
            raise ValueError(f"step_dilations and mlp_ratios need {n} entries (one per "
                             f"stage), got {tuple(step_dilations)!r} and "
                             f"{tuple(mlp_ratios)!r}")
        self.in_chans, self.num_classes = in_chans, num_classes
        self.embed_dims, self.regions = list(embed_dims), list(regions)
        self.num_features = embed_dims[-1]
        self.min_input_size = min_input_size(regions)
        self.steps = [step_schedule(d, s, t)
                      for d, s, t in zip(depths, step_strides, dilations)]
        self.stem = ConvNormAct(in_chans, embed_dims[0], 7, stride=4, padding=2,
                                norm="bn", act="relu")        # (B, C1, H/4, W/4)
        dpr = drop_path_schedule(drop_path_rate, sum(depths))
        stages, j = [], 0
        for i, (dim, p, ratio) in enumerate(zip(embed_dims, regions, mlp_ratios)):
            down = (ConvNormAct(embed_dims[i - 1], dim, 3, stride=2, padding=1,
                                norm="bn", act="relu") if i > 0 else nn.Identity())
            blocks = [HireBlock(dim, p, step, ratio, dpr[j + k], fusion)
                      for k, step in enumerate(self.steps[i])]
            stages.append(Stage(down, blocks))                 # (B, C_i, H_i, W_i)
            j += len(blocks)
        self.stages = nn.ModuleList(stages)
        self.head = ClassifierHead(embed_dims[-1], num_classes, norm="bn",
                                   norm_first=True)
        self.apply(trunc_normal_init)    # convs and Linear: truncated normal, std .02

    def stage_sizes(self, H: int, W: int) -> List[Tuple[int, int]]:
        """The map size of each stage for an H x W input (stem: floor((H - 3) / 4) + 1,
        then ceil(H / 2) per downsampling)."""
        sizes, h, w = [], (H - 3) // 4 + 1, (W - 3) // 4 + 1
        for i in range(len(self.stages)):
            if i > 0:
                h, w = -(-h // 2), -(-w // 2)
            sizes.append((h, w))
        return sizes


# ------------------------------------------------------------------------- checkpoints

_BLOCK_KEYS = [  # official name inside a block -> ours
    (r"attn\.mlp_([hw])1_norm\.", r"hire.\1_branch.norm."),
    (r"attn\.mlp_([hw])1\.", r"hire.\1_branch.fc1."),
    (r"attn\.mlp_([hw])2\.", r"hire.\1_branch.fc2."),
    (r"attn\.mlp_c\.", "hire.c_branch."),
    (r"attn\.reweight\.", "hire.reweight.mlp."),
    (r"attn\.proj\.", "hire.proj."),
]


def convert_state_dict(state_dict: Dict[str, torch.Tensor]) -> Dict[str, torch.Tensor]:
    """Map the official checkpoints' keys (``ggjy/Hire-Wave-MLP.pytorch``) onto ours.

    Official: ``patch_embed.proj / norm`` (our ``stem``); stage i's blocks at
    ``network.{2i}.k``
    (``norm1``, ``attn.mlp_h1 / mlp_h1_norm / mlp_h2``, the same for w, ``attn.mlp_c``,
    ``attn.reweight.fc1 / fc2``, ``attn.proj``, ``norm2``, ``mlp.fc1 / fc2``); the
    downsampling before stage i at ``network.{2i-1}.proj / norm``; ``norm`` and
    ``head``.  Shapes are unchanged: the fold is c-major (channel c*p + o) and the
    fusion weights interleaved, in both.  Keys already in our layout pass unchanged.

    >>> import torch
    >>> sd = {"network.4.1.attn.mlp_w1_norm.running_var": torch.ones(2),
    ...       "network.3.proj.weight": torch.ones(1), "head.bias": torch.ones(1)}
    >>> sorted(convert_state_dict(sd))  # doctest: +NORMALIZE_WHITESPACE
    ['head.fc.bias', 'stages.2.blocks.1.hire.w_branch.norm.running_var',
     'stages.2.downsample.conv.weight']
    """
    out = {}
    for k, v in state_dict.items():
        k = re.sub(r"^patch_embed\.proj\.", "stem.conv.", k)
        k = re.sub(r"^patch_embed\.norm\.", "stem.norm.", k)
        m = re.match(r"^network\.(\d+)\.(.*)$", k)
        if m:
            idx, rest = int(m.group(1)), m.group(2)
            if idx % 2 == 0:                                   # a stage's blocks
                blk, rest = rest.split(".", 1)
                for pattern, repl in _BLOCK_KEYS:
                    rest = re.sub("^" + pattern, repl, rest)
                k = f"stages.{idx // 2}.blocks.{blk}.{rest}"
            else:                                      # the downsampling before it
                rest = re.sub(r"^proj\.", "conv.", rest)
                k = f"stages.{(idx + 1) // 2}.downsample.{rest}"
        k = re.sub(r"^norm\.", "head.norm.", k)
        k = re.sub(r"^head\.(weight|bias)$", r"head.fc.\1", k)
        out[k] = v
    return out


# ---------------------------------------------------------------------------- variants

#: The official factories (Table A.1): region sizes, shift steps and MLP ratios are the
#: same in every variant; only depths and widths change.
_COMMON = dict(mlp_ratios=(4, 4, 4, 4), regions=(4, 3, 3, 2), step_strides=(2, 2, 3, 2),
               step_dilations=(2, 2, 1, 1))
VARIANTS: Dict[str, Dict[str, tuple]] = {
    "hire_mlp_tiny": dict(depths=(2, 2, 4, 2), embed_dims=(64, 128, 320, 512),
                          **_COMMON),
    "hire_mlp_small": dict(depths=(3, 4, 10, 3), embed_dims=(64, 128, 320, 512),
                           **_COMMON),
    "hire_mlp_base": dict(depths=(4, 6, 24, 3), embed_dims=(64, 128, 320, 512),
                          **_COMMON),
    "hire_mlp_large": dict(depths=(4, 6, 24, 3), embed_dims=(96, 192, 384, 768),
                           **_COMMON),
}


def _create(name: str, **kwargs) -> HireMLP:
    return HireMLP(**{**VARIANTS[name], **kwargs})


# The official weights are GitHub release files, not on the Hugging Face Hub: load a
# downloaded one with create_model(name, checkpoint="hire_mlp_tiny.pth").


@register_model(converter=convert_state_dict)
def hire_mlp_tiny(num_classes: int = 1000, in_chans: int = 3,
                  drop_path_rate: float = 0.0, **kwargs) -> HireMLP:
    """Hire-MLP-Tiny: depths (2, 2, 4, 2), dims (64, 128, 320, 512). README: 18 M,
    2.1 GFLOPs, 79.7% ImageNet-1K (trained with drop path 0.0)."""
    return _create("hire_mlp_tiny", num_classes=num_classes, in_chans=in_chans,
                   drop_path_rate=drop_path_rate, **kwargs)


@register_model(converter=convert_state_dict)
def hire_mlp_small(num_classes: int = 1000, in_chans: int = 3,
                   drop_path_rate: float = 0.0, **kwargs) -> HireMLP:
    """Hire-MLP-Small: depths (3, 4, 10, 3), dims (64, 128, 320, 512). README: 33 M,
    4.2 GFLOPs, 82.1%."""
    return _create("hire_mlp_small", num_classes=num_classes, in_chans=in_chans,
                   drop_path_rate=drop_path_rate, **kwargs)


@register_model(converter=convert_state_dict)
def hire_mlp_base(num_classes: int = 1000, in_chans: int = 3,
                  drop_path_rate: float = 0.0, **kwargs) -> HireMLP:
    """Hire-MLP-Base: depths (4, 6, 24, 3), dims (64, 128, 320, 512). README: 58 M,
    8.1 GFLOPs, 83.2% (drop path 0.2)."""
    return _create("hire_mlp_base", num_classes=num_classes, in_chans=in_chans,
                   drop_path_rate=drop_path_rate, **kwargs)


@register_model(converter=convert_state_dict)
def hire_mlp_large(num_classes: int = 1000, in_chans: int = 3,
                   drop_path_rate: float = 0.0, **kwargs) -> HireMLP:
    """Hire-MLP-Large: depths (4, 6, 24, 3), dims (96, 192, 384, 768). README: 96 M,
    13.4 GFLOPs, 83.8% (no released weights)."""
    return _create("hire_mlp_large", num_classes=num_classes, in_chans=in_chans,
                   drop_path_rate=drop_path_rate, **kwargs)
