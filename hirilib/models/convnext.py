"""ConvNeXt (Liu et al., "A ConvNet for the 2020s", CVPR 2022).

Two networks live in this file.

``ConvNeXt`` is the final design (Sec. 3, Table 1): a 4x4/4 "patchify" stem,
four stages of ``Block`` s (7x7 depthwise conv, one LayerNorm, an MLP that
widens 4x with one GELU, layer scale), and a LayerNorm + 2x2/2 conv between
stages.  ``convnext_tiny`` ... ``convnext_xlarge`` are its variants.

``RoadmapNet`` is the paper's Sec. 2 experiment: one ResNet-50, written from
scratch, whose ``RoadmapConfig`` has one switch per step of the "modernizing a
ResNet" roadmap (Fig. 2, Table 10).  Flipping the switches one at a time,
in order, walks from ResNet-50 to ConvNeXt-T; each step is registered as
``convnext_roadmap_NN_*`` and listed, with the paper's numbers, in ``ROADMAP``.
The last step computes exactly what ``convnext_tiny`` computes (see
``roadmap_state_dict``).

FLOPs are multiply-accumulates, as in the paper (``hirilib.profile``).
"""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass
from typing import Any, Dict, List, NamedTuple, Optional, Sequence, Tuple

import torch
import torch.nn as nn

from hirilib.hub import download_weights, load_weights, read_checkpoint
from hirilib.layers import DropPath, LayerNorm2d
from hirilib.registry import register_model

__all__ = [
    "Block", "block_macs", "Stem", "Downsample", "Stage", "Head", "ConvNeXt", "VARIANTS", "blank_model",
    "RoadmapConfig", "Bottleneck", "InvertedBottleneck", "RoadmapNet", "RoadmapStep",
    "ROADMAP", "KERNEL_SWEEP", "roadmap_config", "roadmap_state_dict",
    "convert_state_dict", "load_pretrained", "conv_cost", "make_conv", "time_model", "time_convs",
    "bench_convnext", "SWIN_T",
]

# ============================================================================= shared parts


def norm2d(kind: str, dim: int) -> nn.Module:
    """The norm of a ``(B, C, H, W)`` map: BatchNorm or channels-first LayerNorm (eps 1e-6)."""
    if kind == "bn":
        return nn.BatchNorm2d(dim)
    if kind == "ln":
        return LayerNorm2d(dim, eps=1e-6)
    raise ValueError(f"norm must be 'bn' or 'ln', got {kind!r}")


def activation(kind: str) -> nn.Module:
    if kind == "relu":
        return nn.ReLU(inplace=True)
    if kind == "gelu":
        return nn.GELU()
    raise ValueError(f"act must be 'relu' or 'gelu', got {kind!r}")


def check_input(x: torch.Tensor, in_chans: int, stride: int = 32, name: str = "ConvNeXt") -> None:
    """Raise a ValueError that says what works when ``x`` is not ``(B, in_chans, H, W)``
    with H and W multiples of ``stride``."""
    if torch.jit.is_tracing():            # FLOP counting traces a valid input; shapes are constants there
        return
    if x.ndim != 4 or x.shape[1] != in_chans:
        raise ValueError(f"{name} expects images (B, {in_chans}, H, W), got {tuple(x.shape)}; "
                         f"build it with in_chans={x.shape[1] if x.ndim == 4 else '...'} "
                         f"for other channel counts")
    bad = [s for s in x.shape[-2:] if s % stride or s == 0]
    if bad:
        sizes = sorted({max(stride, s // stride * stride) for s in bad}
                       | {(s // stride + 1) * stride for s in bad})
        raise ValueError(f"{name} needs H and W divisible by {stride} (a /4 stem, then three /2 "
                         f"downsamplings), got {tuple(x.shape[-2:])}; the nearest sizes that "
                         f"work are {', '.join(map(str, sizes))}")


def drop_path_rates(rate: float, n: int) -> List[float]:
    """Stochastic depth rising linearly from 0 to ``rate`` over ``n`` blocks (``torch.linspace``).

    >>> drop_path_rates(0.1, 3)
    [0.0, 0.05, 0.1]
    """
    return [rate * i / (n - 1) if n > 1 else 0.0 for i in range(n)]


def init_weights(module: nn.Module) -> None:
    """Conv and Linear: truncated normal, std .02, bias 0 (official code; Table 5's "0.2" is a typo)."""
    if isinstance(module, (nn.Conv2d, nn.Linear)):
        nn.init.trunc_normal_(module.weight, std=.02)
        if module.bias is not None:
            nn.init.zeros_(module.bias)


class Downsample(nn.Sequential):
    """Between stages (Sec. 2.6 "separate downsampling layers"): LN, then a 2x2 stride-2 conv.

    The LN before it keeps training stable when the resolution changes.
    """

    def __init__(self, in_dim: int, out_dim: int, norm: str = "ln"):
        super().__init__(norm2d(norm, in_dim),                            # (B, C_in, H, W)
                         nn.Conv2d(in_dim, out_dim, kernel_size=2, stride=2))  # (B, C_out, H/2, W/2)


class Head(nn.Module):
    """Global average pool, then a norm (ConvNeXt: LN; absent in ResNet), then Linear.

    The classifier's weight and bias are scaled by ``init_scale`` after init
    (0.001 for fine-tuning, Table 6; 1.0 otherwise).
    """

    def __init__(self, dim: int, num_classes: int, norm: Optional[str] = "ln",
                 init_scale: float = 1.0):
        super().__init__()
        self.norm = norm2d(norm, dim) if norm else nn.Identity()
        self.fc = nn.Linear(dim, num_classes) if num_classes > 0 else nn.Identity()
        self.init_scale = init_scale

    def scale_init(self) -> None:
        if isinstance(self.fc, nn.Linear):
            with torch.no_grad():
                self.fc.weight.mul_(self.init_scale)
                self.fc.bias.mul_(self.init_scale)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, C, H, W)
        x = x.mean((2, 3), keepdim=True)                  # (B, C, 1, 1)
        x = self.norm(x).flatten(1)                       # (B, C)
        return self.fc(x)                                 # (B, num_classes)


# ============================================================================= ConvNeXt


class Block(nn.Module):
    """The ConvNeXt block (Sec. 2.6, Fig. 4): like a Transformer's MLP sub-block,
    with a 7x7 depthwise conv in place of attention.

    x + DropPath(gamma * Linear_{4C->C}(GELU(Linear_{C->4C}(LN(DWConv7x7(x))))))

    The two 1x1 convs are ``nn.Linear`` on channels-last tokens, as in the
    official code (same numbers, faster on GPU).  gamma is layer scale,
    initialised to 1e-6 so every block starts close to the identity.
    """

    def __init__(self, dim: int, drop_path: float = 0.0, ls_init_value: Optional[float] = 1e-6,
                 kernel_size: int = 7):
        super().__init__()
        self.dwconv = nn.Conv2d(dim, dim, kernel_size, padding=kernel_size // 2, groups=dim)
        self.norm = nn.LayerNorm(dim, eps=1e-6)
        self.pwconv1 = nn.Linear(dim, 4 * dim)
        self.act = nn.GELU()
        self.pwconv2 = nn.Linear(4 * dim, dim)
        self.gamma = (nn.Parameter(torch.full((dim,), float(ls_init_value)))
                      if ls_init_value else None)
        self.drop_path = DropPath(drop_path) if drop_path > 0 else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, C, H, W)
        shortcut = x
        x = self.dwconv(x)                                 # (B, C, H, W): spatial mixing per channel
        x = x.permute(0, 2, 3, 1)                          # (B, H, W, C)
        x = self.pwconv2(self.act(self.pwconv1(self.norm(x))))  # (B, H, W, 4C) -> (B, H, W, C)
        if self.gamma is not None:
            x = self.gamma * x
        return shortcut + self.drop_path(x.permute(0, 3, 1, 2))  # (B, C, H, W)


def block_macs(dim: int, height: int, width: int, kernel_size: int = 7) -> int:
    """Multiply-accumulates of one ``Block``'s convs and linears on a ``height x width`` map
    (the LayerNorm's few per element are left out).

    A depthwise k x k conv does k^2 MACs per output element, each 1x1 layer 4C^2 per
    position: ``H W C (k^2 + 8C)``.  At C = 96 the MLP costs 8C / k^2, about 16 times the conv.

    >>> block_macs(96, 56, 56) == 56 * 56 * 96 * (49 + 8 * 96)
    True
    """
    return height * width * dim * (kernel_size ** 2 + 8 * dim)


class Stem(nn.Sequential):
    """The "patchify" stem (Sec. 2.2): a 4x4 stride-4 conv (non-overlapping patches, like
    Swin's patch size 4), then LN."""

    def __init__(self, in_chans: int, dim: int, norm: Optional[str] = "ln"):
        layers = [nn.Conv2d(in_chans, dim, kernel_size=4, stride=4)]  # (B, C, H/4, W/4)
        if norm:
            layers.append(norm2d(norm, dim))
        super().__init__(*layers)


class Stage(nn.Module):
    """One resolution: an optional ``downsample`` (Identity in stage 1), then ``blocks``."""

    def __init__(self, downsample: nn.Module, blocks: Sequence[nn.Module]):
        super().__init__()
        self.downsample = downsample
        self.blocks = nn.Sequential(*blocks)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.blocks(self.downsample(x))


class ConvNeXt(nn.Module):
    """ConvNeXt (Sec. 3): stem, four stages at strides 4/8/16/32, head.

    Stochastic depth grows linearly from 0 to ``drop_path_rate`` over all blocks.
    """

    def __init__(self, depths: Sequence[int] = (3, 3, 9, 3),
                 dims: Sequence[int] = (96, 192, 384, 768), num_classes: int = 1000,
                 in_chans: int = 3, drop_path_rate: float = 0.0,
                 ls_init_value: Optional[float] = 1e-6, head_init_scale: float = 1.0,
                 kernel_size: int = 7):
        super().__init__()
        if len(depths) != 4 or len(dims) != 4:
            raise ValueError(f"ConvNeXt has 4 stages: give 4 depths and 4 dims, got {depths}, {dims}")
        self.in_chans, self.dims, self.num_classes = in_chans, list(dims), num_classes
        self.stem = Stem(in_chans, dims[0])                                  # (B, C1, H/4, W/4)
        dpr = drop_path_rates(drop_path_rate, sum(depths))
        stages, j = [], 0
        for i, (depth, dim) in enumerate(zip(depths, dims)):
            down = Downsample(dims[i - 1], dim) if i > 0 else nn.Identity()  # (B, C_i, H/2, W/2)
            stages.append(Stage(down, [Block(dim, dpr[j + k], ls_init_value, kernel_size)
                                       for k in range(depth)]))
            j += depth
        self.stages = nn.ModuleList(stages)
        self.head = Head(dims[-1], num_classes, norm="ln", init_scale=head_init_scale)
        self.apply(init_weights)
        self.head.scale_init()

    def forward_pyramid(self, x: torch.Tensor) -> List[torch.Tensor]:
        """The four stage outputs ``(B, C_i, H/2^(i+2), W/2^(i+2))``, for dense prediction."""
        check_input(x, self.in_chans)
        x = self.stem(x)
        maps = []
        for stage in self.stages:
            x = stage(x)
            maps.append(x)
        return maps

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:  # (B, 3, H, W)
        return self.forward_pyramid(x)[-1]                         # (B, C4, H/32, W/32)

    def forward_head(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(x)                                        # (B, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))


#: Table 1 / CNX code: (depths, dims) of each variant.
VARIANTS: Dict[str, Tuple[Tuple[int, ...], Tuple[int, ...]]] = {
    "convnext_tiny": ((3, 3, 9, 3), (96, 192, 384, 768)),
    "convnext_small": ((3, 3, 27, 3), (96, 192, 384, 768)),
    "convnext_base": ((3, 3, 27, 3), (128, 256, 512, 1024)),
    "convnext_large": ((3, 3, 27, 3), (192, 384, 768, 1536)),
    "convnext_xlarge": ((3, 3, 27, 3), (256, 512, 1024, 2048)),
}


def _convnext(name, num_classes, in_chans, drop_path_rate, **kwargs) -> ConvNeXt:
    depths, dims = VARIANTS[name]
    return ConvNeXt(depths, dims, num_classes=num_classes, in_chans=in_chans,
                    drop_path_rate=drop_path_rate, **kwargs)


@register_model
def convnext_tiny(num_classes: int = 1000, in_chans: int = 3, drop_path_rate: float = 0.0, **kwargs):
    """ConvNeXt-T: dims (96, 192, 384, 768), depths (3, 3, 9, 3). Paper: 28.6 M, 4.5 GFLOPs,
    82.1% ImageNet-1K (Table 1; trained with drop path 0.1)."""
    return _convnext("convnext_tiny", num_classes, in_chans, drop_path_rate, **kwargs)


@register_model
def convnext_small(num_classes: int = 1000, in_chans: int = 3, drop_path_rate: float = 0.0, **kwargs):
    """ConvNeXt-S: dims (96, 192, 384, 768), depths (3, 3, 27, 3). Paper: 50 M, 8.7 GFLOPs,
    83.1% (drop path 0.4)."""
    return _convnext("convnext_small", num_classes, in_chans, drop_path_rate, **kwargs)


@register_model
def convnext_base(num_classes: int = 1000, in_chans: int = 3, drop_path_rate: float = 0.0, **kwargs):
    """ConvNeXt-B: dims (128, 256, 512, 1024), depths (3, 3, 27, 3). Paper: 89 M, 15.4 GFLOPs,
    83.8% (drop path 0.5)."""
    return _convnext("convnext_base", num_classes, in_chans, drop_path_rate, **kwargs)


@register_model
def convnext_large(num_classes: int = 1000, in_chans: int = 3, drop_path_rate: float = 0.0, **kwargs):
    """ConvNeXt-L: dims (192, 384, 768, 1536), depths (3, 3, 27, 3). Paper: 198 M, 34.4 GFLOPs,
    84.3% (drop path 0.5)."""
    return _convnext("convnext_large", num_classes, in_chans, drop_path_rate, **kwargs)


@register_model
def convnext_xlarge(num_classes: int = 1000, in_chans: int = 3, drop_path_rate: float = 0.0, **kwargs):
    """ConvNeXt-XL: dims (256, 512, 1024, 2048), depths (3, 3, 27, 3). Paper: 350 M,
    60.9 GFLOPs, 87.0% after ImageNet-22K pre-training (no ImageNet-1K-only result)."""
    return _convnext("convnext_xlarge", num_classes, in_chans, drop_path_rate, **kwargs)


def blank_model(name: str, **kwargs) -> nn.Module:
    """A registered model whose weights are all zero, built in a fraction of a second.

    For counting parameters and FLOPs, which do not depend on the weights:
    initialising ConvNeXt-XL's 350 M weights takes seconds.  (Zeros rather than
    uninitialised memory, whose arbitrary bits may be NaNs or denormal numbers.)
    """
    from hirilib.registry import create_model

    with torch.device("meta"):
        model = create_model(name, **kwargs)
    model = model.to_empty(device="cpu").eval()
    with torch.no_grad():
        for t in list(model.parameters()) + list(model.buffers()):
            t.zero_()
    return model


# ============================================================================= the roadmap


@dataclass(frozen=True)
class RoadmapConfig:
    """One switch per step of the paper's roadmap (Sec. 2, Table 10); the defaults are ResNet-50.

    ``layer_scale`` is not a roadmap step: the paper's roadmap runs train without
    it (and without EMA).  The last registered step sets it to ConvNeXt-T's 1e-6,
    so that ``convnext_roadmap_13_convnext_tiny`` is exactly ``convnext_tiny``;
    ``layer_scale=None`` gives the network of the roadmap's run.
    """

    depths: Tuple[int, ...] = (3, 4, 6, 3)  # 2.2 stage compute ratio: (3, 3, 9, 3) as Swin's 1:1:3:1
    patchify_stem: bool = False             # 2.2 7x7/2 conv + BN + ReLU + 3x3/2 max-pool -> 4x4/4 conv
    depthwise: bool = False                 # 2.3 ResNeXt-ify: the spatial conv gets groups = channels
    width: int = 64                         # 2.3 stage-1 width: 64 -> 96 (Swin-T's C)
    inverted_bottleneck: bool = False       # 2.4 C -> 4C -> C, the shape of a Transformer MLP
    move_up_dw: bool = False                # 2.5 the depthwise conv first, like attention before the MLP
    kernel_size: int = 3                    # 2.5 3 -> 7 (Swin's window is 7x7)
    act: str = "relu"                       # 2.6 ReLU -> GELU
    fewer_activations: bool = False         # 2.6 one activation per block, between the 1x1 convs
    fewer_norms: bool = False               # 2.6 one norm per block, after the depthwise conv
    norm: str = "bn"                        # 2.6 BN -> LN
    separate_downsampling: bool = False     # 2.6 LN + 2x2/2 conv between stages (+ stem and head LNs)
    layer_scale: Optional[float] = None     # not a roadmap step (training setting; ConvNeXt uses 1e-6)

    def __post_init__(self):
        if len(self.depths) != 4 or min(self.depths) < 1:
            raise ValueError(f"depths must be 4 positive block counts, got {self.depths}")
        if self.kernel_size < 1 or self.kernel_size % 2 == 0:
            raise ValueError(f"kernel_size must be odd (padding k // 2 keeps the size), "
                             f"got {self.kernel_size}")
        if self.act not in ("relu", "gelu") or self.norm not in ("bn", "ln"):
            raise ValueError(f"act must be relu/gelu and norm bn/ln, got {self.act!r}, {self.norm!r}")
        needs = {"move_up_dw": "inverted_bottleneck", "separate_downsampling": "inverted_bottleneck",
                 "fewer_activations": "move_up_dw", "fewer_norms": "move_up_dw"}
        for flag, prerequisite in needs.items():
            if getattr(self, flag) and not getattr(self, prerequisite):
                raise ValueError(f"{flag}=True needs {prerequisite}=True (the roadmap's order)")

    def diff(self, other: "RoadmapConfig") -> Dict[str, Tuple[Any, Any]]:
        """The fields that differ: ``{name: (self's value, other's value)}``."""
        return {f.name: (getattr(self, f.name), getattr(other, f.name))
                for f in dataclasses.fields(self) if getattr(self, f.name) != getattr(other, f.name)}


class Shortcut(nn.Sequential):
    """The projection shortcut of a block that changes width or resolution: 1x1 conv (stride s) + norm."""

    def __init__(self, in_dim: int, out_dim: int, stride: int, norm: str):
        super().__init__(nn.Conv2d(in_dim, out_dim, 1, stride=stride, bias=False), norm2d(norm, out_dim))


class Bottleneck(nn.Module):
    """ResNet's bottleneck (He et al. 2016, torchvision layout: the stride sits on the kxk conv).

    1x1 C_in->w, BN, ReLU; kxk w->w (stride s; groups w when depthwise), BN, ReLU;
    1x1 w->4w, BN; add the shortcut; ReLU.  Steps 0-5 of the roadmap.
    """

    expansion = 4

    def __init__(self, in_dim: int, width: int, stride: int = 1, cfg: RoadmapConfig = RoadmapConfig(),
                 drop_path: float = 0.0):
        super().__init__()
        out_dim, k = self.expansion * width, cfg.kernel_size
        self.conv1 = nn.Conv2d(in_dim, width, 1, bias=False)
        self.bn1 = norm2d(cfg.norm, width)
        self.conv2 = nn.Conv2d(width, width, k, stride, k // 2, bias=False,
                               groups=width if cfg.depthwise else 1)
        self.bn2 = norm2d(cfg.norm, width)
        self.conv3 = nn.Conv2d(width, out_dim, 1, bias=False)
        self.bn3 = norm2d(cfg.norm, out_dim)
        self.act = activation(cfg.act)
        self.gamma = nn.Parameter(torch.full((out_dim,), cfg.layer_scale)) if cfg.layer_scale else None
        self.drop_path = DropPath(drop_path) if drop_path > 0 else nn.Identity()
        self.shortcut = (Shortcut(in_dim, out_dim, stride, cfg.norm)
                         if stride != 1 or in_dim != out_dim else nn.Identity())

    def forward(self, x: torch.Tensor) -> torch.Tensor:    # (B, C_in, H, W)
        out = self.act(self.bn1(self.conv1(x)))              # (B, w, H, W)
        out = self.act(self.bn2(self.conv2(out)))            # (B, w, H/s, W/s)
        out = self.bn3(self.conv3(out))                      # (B, 4w, H/s, W/s)
        if self.gamma is not None:
            out = self.gamma[:, None, None] * out
        return self.act(self.drop_path(out) + self.shortcut(x))


class InvertedBottleneck(nn.Module):
    """The inverted bottleneck C -> 4C -> C of steps 6-13 (Sec. 2.4-2.6).

    Step 6: 1x1 C_in->4C, norm, act; kxk DW on 4C (stride s), norm, act; 1x1 4C->C, norm.
    ``move_up_dw`` (step 7): the DW conv goes first and works on C_in, as attention
    comes before the MLP in a Transformer block: DW, 1x1 C_in->4C, 1x1 4C->C.
    ``fewer_activations`` keeps only the act between the two 1x1 convs (none
    after the add); ``fewer_norms`` keeps only the norm after the DW conv.  The
    convs have a bias whenever the norm is not BN (BN has its own shift).
    """

    def __init__(self, in_dim: int, dim: int, stride: int = 1, cfg: RoadmapConfig = RoadmapConfig(),
                 drop_path: float = 0.0):
        super().__init__()
        hidden, k, bias = 4 * dim, cfg.kernel_size, cfg.norm != "bn"
        dw_dim = in_dim if cfg.move_up_dw else hidden
        self.move_up_dw = cfg.move_up_dw

        spatial = {"conv_dw": nn.Conv2d(dw_dim, dw_dim, k, stride, k // 2, bias=bias,
                                        groups=dw_dim if cfg.depthwise else 1),
                   "norm_dw": norm2d(cfg.norm, dw_dim),
                   "act_dw": nn.Identity() if cfg.fewer_activations else activation(cfg.act)}
        expand = {"pw1": nn.Conv2d(in_dim, hidden, 1, bias=bias),
                  "norm1": nn.Identity() if cfg.fewer_norms else norm2d(cfg.norm, hidden),
                  "act": activation(cfg.act)}
        layers = {**spatial, **expand} if cfg.move_up_dw else {**expand, **spatial}
        for name, layer in layers.items():            # registered in forward order, so print() reads in order
            setattr(self, name, layer)
        self.pw2 = nn.Conv2d(hidden, dim, 1, bias=bias)
        self.norm2 = nn.Identity() if cfg.fewer_norms else norm2d(cfg.norm, dim)
        self.gamma = nn.Parameter(torch.full((dim,), cfg.layer_scale)) if cfg.layer_scale else None
        self.drop_path = DropPath(drop_path) if drop_path > 0 else nn.Identity()
        self.shortcut = (Shortcut(in_dim, dim, stride, cfg.norm)
                         if stride != 1 or in_dim != dim else nn.Identity())
        self.act_out = nn.Identity() if cfg.fewer_activations else activation(cfg.act)

    def forward(self, x: torch.Tensor) -> torch.Tensor:      # (B, C_in, H, W)
        out = x
        if self.move_up_dw:
            out = self.act_dw(self.norm_dw(self.conv_dw(out)))  # (B, C_in, H/s, W/s)
            out = self.act(self.norm1(self.pw1(out)))           # (B, 4C, H/s, W/s)
        else:
            out = self.act(self.norm1(self.pw1(out)))           # (B, 4C, H, W)
            out = self.act_dw(self.norm_dw(self.conv_dw(out)))  # (B, 4C, H/s, W/s)
        out = self.norm2(self.pw2(out))                         # (B, C, H/s, W/s)
        if self.gamma is not None:
            out = self.gamma[:, None, None] * out
        return self.act_out(self.drop_path(out) + self.shortcut(x))


class RoadmapNet(nn.Module):
    """ResNet-50 with the roadmap's switches (``RoadmapConfig``); its defaults are ResNet-50.

    Stem: 7x7/2 conv + norm + act + 3x3/2 max-pool, or the 4x4/4 patchify conv.
    Until ``separate_downsampling``, each of stages 2-4 halves the resolution in its
    first block (stride-2 kxk conv, and a stride-2 1x1 conv + norm on the shortcut).
    With it, an LN + 2x2/2 conv sits between stages, and LNs follow the stem and the
    global pool (Sec. 2.6: without them training diverged).
    """

    def __init__(self, config: RoadmapConfig = RoadmapConfig(), num_classes: int = 1000,
                 in_chans: int = 3, drop_path_rate: float = 0.0, head_init_scale: float = 1.0):
        super().__init__()
        cfg = self.config = config
        self.in_chans, self.num_classes = in_chans, num_classes
        widths = [cfg.width * 2 ** i for i in range(4)]      # 64..512 or 96..768
        if cfg.patchify_stem:
            self.stem = Stem(in_chans, cfg.width, norm=cfg.norm if cfg.separate_downsampling else None)
        else:
            self.stem = nn.Sequential(nn.Conv2d(in_chans, cfg.width, 7, 2, 3, bias=False),  # (B, w, H/2, W/2)
                                      norm2d(cfg.norm, cfg.width), activation(cfg.act),
                                      nn.MaxPool2d(3, 2, 1))                                # (B, w, H/4, W/4)
        block = InvertedBottleneck if cfg.inverted_bottleneck else Bottleneck
        out_dims = widths if cfg.inverted_bottleneck else [Bottleneck.expansion * w for w in widths]
        dpr = drop_path_rates(drop_path_rate, sum(cfg.depths))
        stages, in_dim, j = [], cfg.width, 0
        for i, (depth, w) in enumerate(zip(cfg.depths, widths)):
            down, stride = nn.Identity(), 2 if i > 0 else 1
            if cfg.separate_downsampling and i > 0:
                down, stride, in_dim = Downsample(in_dim, out_dims[i], cfg.norm), 1, out_dims[i]
            blocks = []
            for k in range(depth):
                blocks.append(block(in_dim, w, stride if k == 0 else 1, cfg, dpr[j + k]))
                in_dim = out_dims[i]
            stages.append(Stage(down, blocks))
            j += depth
        self.stages = nn.ModuleList(stages)
        self.dims = out_dims
        self.head = Head(out_dims[-1], num_classes, norm=cfg.norm if cfg.separate_downsampling else None,
                         init_scale=head_init_scale)
        self.apply(init_weights)
        self.head.scale_init()

    def forward_pyramid(self, x: torch.Tensor) -> List[torch.Tensor]:
        check_input(x, self.in_chans, name="RoadmapNet")
        x = self.stem(x)
        maps = []
        for stage in self.stages:
            x = stage(x)
            maps.append(x)
        return maps

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_pyramid(x)[-1]

    def forward_head(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))


class RoadmapStep(NamedTuple):
    """One step of Table 10: registered name, what changes, the paper's Top-1 (%) and
    GFLOPs, and the ``RoadmapConfig`` fields it sets."""

    name: str
    description: str
    top1: float
    gflops: float
    diff: Dict[str, Any]


#: The paper's Table 10 (ResNet-50 / Swin-T regime), cumulative, in order.  Top-1 is the
#: mean of 3 seeds (the paper's, ImageNet-1K, 300 epochs without EMA and without layer
#: scale, drop path 0.1); GFLOPs are the paper's.  Step 12's printed 4.46 GFLOPs is a
#: counting artifact: that step adds no multiply-accumulates (LN replaces BN).
ROADMAP: List[RoadmapStep] = [
    RoadmapStep("convnext_roadmap_00_resnet50", "ResNet-50, torchvision's 90-epoch recipe",
                76.13, 4.09, {}),
    RoadmapStep("convnext_roadmap_01_enhanced_recipe", "same network, DeiT/Swin-style recipe: "
                "300 epochs, AdamW, Mixup, CutMix, RandAugment, Random Erasing, stochastic depth, "
                "label smoothing", 78.82, 4.09, {}),
    RoadmapStep("convnext_roadmap_02_stage_ratio", "blocks per stage (3, 4, 6, 3) -> (3, 3, 9, 3)",
                79.36, 4.53, {"depths": (3, 3, 9, 3)}),
    RoadmapStep("convnext_roadmap_03_patchify_stem", "stem: 7x7/2 conv + max-pool -> 4x4/4 conv",
                79.51, 4.42, {"patchify_stem": True}),
    RoadmapStep("convnext_roadmap_04_depthwise", "3x3 conv -> depthwise 3x3 conv",
                78.28, 2.35, {"depthwise": True}),
    RoadmapStep("convnext_roadmap_05_width", "width 64 -> 96", 80.50, 5.27, {"width": 96}),
    RoadmapStep("convnext_roadmap_06_inverted_bottleneck", "inverted bottleneck C -> 4C -> C",
                80.64, 4.64, {"inverted_bottleneck": True}),
    RoadmapStep("convnext_roadmap_07_move_up_dw", "depthwise conv moved to the top of the block",
                79.92, 4.07, {"move_up_dw": True}),
    RoadmapStep("convnext_roadmap_08_kernel7", "depthwise kernel 3 -> 7", 80.57, 4.15, {"kernel_size": 7}),
    RoadmapStep("convnext_roadmap_09_gelu", "ReLU -> GELU", 80.62, 4.15, {"act": "gelu"}),
    RoadmapStep("convnext_roadmap_10_fewer_activations", "one GELU per block",
                81.27, 4.15, {"fewer_activations": True}),
    RoadmapStep("convnext_roadmap_11_fewer_norms", "one norm per block", 81.41, 4.15, {"fewer_norms": True}),
    RoadmapStep("convnext_roadmap_12_layer_norm", "BN -> LN", 81.47, 4.46, {"norm": "ln"}),
    RoadmapStep("convnext_roadmap_13_convnext_tiny", "separate downsampling layers, and "
                "ConvNeXt-T's layer scale 1e-6 (= convnext_tiny)",
                81.97, 4.49, {"separate_downsampling": True, "layer_scale": 1e-6}),
]

#: Sec. 2.5's kernel sweep on top of step 7 (kernel 3 is step 7 itself; 7 is step 8).
KERNEL_SWEEP: List[RoadmapStep] = [
    RoadmapStep("convnext_roadmap_08_kernel5", "depthwise kernel 3 -> 5", 80.35, 4.10, {"kernel_size": 5}),
    RoadmapStep("convnext_roadmap_08_kernel9", "depthwise kernel 3 -> 9", 80.57, 4.21, {"kernel_size": 9}),
    RoadmapStep("convnext_roadmap_08_kernel11", "depthwise kernel 3 -> 11", 80.47, 4.29, {"kernel_size": 11}),
]

#: The roadmap's target, Swin-T (Table 10): Top-1 (%) and GFLOPs.
SWIN_T = {"top1": 81.3, "gflops": 4.5}

_CONFIGS: Dict[str, RoadmapConfig] = {}
_cfg = RoadmapConfig()
for _step in ROADMAP:
    _cfg = _CONFIGS[_step.name] = dataclasses.replace(_cfg, **_step.diff)
for _step in KERNEL_SWEEP:
    _CONFIGS[_step.name] = dataclasses.replace(_CONFIGS["convnext_roadmap_07_move_up_dw"], **_step.diff)


def roadmap_config(name: str, **overrides) -> RoadmapConfig:
    """The ``RoadmapConfig`` of a registered step, with field overrides (e.g. ``kernel_size=5``).

    >>> roadmap_config("convnext_roadmap_02_stage_ratio").depths
    (3, 3, 9, 3)
    >>> roadmap_config("convnext_roadmap_08_kernel7", kernel_size=9).kernel_size
    9
    """
    if name not in _CONFIGS:
        raise ValueError(f"unknown roadmap step {name!r}; the steps are {sorted(_CONFIGS)}")
    return dataclasses.replace(_CONFIGS[name], **overrides)


def _register_step(step: RoadmapStep) -> None:
    cfg_fields = {f.name for f in dataclasses.fields(RoadmapConfig)}

    def build(num_classes: int = 1000, in_chans: int = 3, drop_path_rate: float = 0.0, **kwargs):
        cfg = roadmap_config(step.name, **{k: kwargs.pop(k) for k in list(kwargs) if k in cfg_fields})
        return RoadmapNet(cfg, num_classes=num_classes, in_chans=in_chans,
                          drop_path_rate=drop_path_rate, **kwargs)

    build.__name__ = build.__qualname__ = step.name
    build.__doc__ = (f"Roadmap step: {step.description}. Paper: {step.top1}% Top-1, {step.gflops} "
                     f"GFLOPs (Table 10). RoadmapConfig fields are accepted as overrides.")
    globals()[step.name] = register_model(build)


for _step in ROADMAP + KERNEL_SWEEP:
    _register_step(_step)


def roadmap_state_dict(convnext_state_dict: Dict[str, torch.Tensor]) -> Dict[str, torch.Tensor]:
    """Map a ``ConvNeXt`` state dict onto ``RoadmapNet`` at the last roadmap step.

    The two are written independently (Linear layers on channels-last tokens vs 1x1
    convs on channels-first maps); this renames the block's layers and reshapes
    the Linear weights ``(out, in)`` into 1x1 conv weights ``(out, in, 1, 1)``.
    """
    names = {"dwconv": "conv_dw", "norm": "norm_dw", "pwconv1": "pw1", "pwconv2": "pw2"}
    out = {}
    for k, v in convnext_state_dict.items():
        m = re.match(r"(stages\.\d+\.blocks\.\d+\.)(\w+)\.(weight|bias)$", k)
        if m and m.group(2) in names:
            k = m.group(1) + names[m.group(2)] + "." + m.group(3)
            if m.group(2).startswith("pwconv") and v.ndim == 2:
                v = v[:, :, None, None]
        out[k] = v
    return out


# ============================================================================= weights


def convert_state_dict(state_dict: Dict[str, torch.Tensor]) -> Dict[str, torch.Tensor]:
    """Map timm's (or the official repository's) ConvNeXt keys onto ours.

    timm: ``stages.i.blocks.j.conv_dw / norm / mlp.fc1 / mlp.fc2 / gamma``,
    ``stages.i.downsample.{0,1}``, ``stem.{0,1}``, ``head.norm``, ``head.fc``.
    Official: ``downsample_layers.0`` is the stem, ``downsample_layers.i`` the
    downsampling before stage i, ``stages.i.j.dwconv / norm / pwconv1 / pwconv2 /
    gamma``, ``norm`` and ``head``.  Ours: the official block names inside timm's
    stage layout.  A checkpoint already in our layout is returned unchanged.

    >>> import torch
    >>> sd = {"stages.1.blocks.0.mlp.fc1.weight": torch.zeros(8, 2), "head.fc.bias": torch.zeros(3)}
    >>> sorted(convert_state_dict(sd))
    ['head.fc.bias', 'stages.1.blocks.0.pwconv1.weight']
    """
    if "model" in state_dict and isinstance(state_dict["model"], dict):
        state_dict = state_dict["model"]                      # official checkpoints wrap the weights
    out = {}
    for k, v in state_dict.items():
        # official layout
        k = re.sub(r"^downsample_layers\.0\.", "stem.", k)
        k = re.sub(r"^downsample_layers\.(\d)\.", r"stages.\1.downsample.", k)
        k = re.sub(r"^stages\.(\d+)\.(\d+)\.", r"stages.\1.blocks.\2.", k)
        k = re.sub(r"^norm\.", "head.norm.", k)
        k = re.sub(r"^head\.(weight|bias)$", r"head.fc.\1", k)
        # timm layout
        k = k.replace(".conv_dw.", ".dwconv.").replace(".mlp.fc1.", ".pwconv1.")
        k = k.replace(".mlp.fc2.", ".pwconv2.")
        if k.endswith(".gamma") and v.ndim > 1:
            v = v.reshape(-1)
        if re.search(r"\.pwconv[12]\.weight$", k) and v.ndim == 4:  # 1x1 conv MLP (timm conv_mlp)
            v = v.flatten(1)
        out[k] = v
    return out


#: The ImageNet-1K weights timm publishes for each variant (XL only after 22K pre-training).
PRETRAINED_TAGS = {"convnext_tiny": "fb_in1k", "convnext_small": "fb_in1k", "convnext_base": "fb_in1k",
                   "convnext_large": "fb_in1k", "convnext_xlarge": "fb_in22k_ft_in1k"}


def load_pretrained(model: nn.Module, name: str = "convnext_tiny", path: Optional[str] = None) -> nn.Module:
    """Load timm's ImageNet weights into ``model`` (a ``ConvNeXt``) and return it.

    ``name`` is a variant (``convnext_tiny``, using ``PRETRAINED_TAGS``) or a full timm
    tag (``convnext_tiny.fb_in22k_ft_in1k``).  The file comes from the Hugging Face Hub
    (``timm/<name>``), or from ``path`` when given (a ``model.safetensors`` or
    ``pytorch_model.bin`` downloaded from there, or an official checkpoint).  A
    classifier whose size differs from the model's is skipped, not loaded.  Offline,
    ``hirilib.hub.PretrainedWeightsUnavailable`` (an ``OSError``) says how to pass a file.
    """
    repo = name if "." in name else f"{name}.{PRETRAINED_TAGS.get(name, 'fb_in1k')}"
    if path is None:
        path = download_weights(f"timm/{repo}")
    return load_weights(model, convert_state_dict(read_checkpoint(path)), head_prefix="head.fc.",
                        source=str(path))


# ============================================================================= the GPU suite


def conv_cost(kind: str, channels: int, size: int, batch: int = 1) -> Dict[str, float]:
    """MACs and the minimum memory traffic (fp32 bytes: read input and weights, write output)
    of a stride-1 'same' conv on a ``(batch, C, size, size)`` map.

    ``kind`` is ``"dw7x7"`` (depthwise 7x7, groups = C) or ``"dense3x3"``.

    >>> c = conv_cost("dw7x7", 96, 56)
    >>> c["macs"] == 49 * 96 * 56 * 56
    True
    """
    k, dense = {"dw7x7": (7, False), "dense3x3": (3, True)}[kind]
    hw = size * size
    weights = k * k * channels * (channels if dense else 1)
    macs = batch * hw * weights
    bytes_moved = 4 * (2 * batch * channels * hw + weights)
    return {"macs": macs, "bytes": bytes_moved, "intensity": macs / bytes_moved}


def make_conv(kind: str, channels: int) -> nn.Conv2d:
    """The conv that ``conv_cost`` describes."""
    if kind == "dw7x7":
        return nn.Conv2d(channels, channels, 7, padding=3, groups=channels)
    if kind == "dense3x3":
        return nn.Conv2d(channels, channels, 3, padding=1)
    raise ValueError(f"kind must be 'dw7x7' or 'dense3x3', got {kind!r}")


def time_model(name: str, device: str | torch.device = "cpu", batch: int = 1, warmup: int = 1,
               runs: int = 3, **kwargs) -> Dict[str, Any]:
    """Build a registered model, count its parameters and FLOPs (at 224, on the CPU) and
    time it on ``device``: one record of the chapter's timing suite."""
    from hirilib.profile import count_flops, count_params, measure_latency
    from hirilib.registry import create_model

    model = create_model(name, **kwargs)
    record = {"kind": "roadmap" if name.startswith("convnext_roadmap") else "variant", "name": name,
              "params": count_params(model), "gflops": count_flops(model) / 1e9}
    record.update(measure_latency(model, (batch, 3, 224, 224), device=device, warmup=warmup, runs=runs))
    model.to("cpu")
    return record


def time_convs(device: str | torch.device = "cpu", batch: int = 1, size: int = 56,
               channels: Sequence[int] = (64, 128, 256, 512), warmup: int = 1,
               runs: int = 3) -> List[Dict[str, Any]]:
    """Time a depthwise 7x7 and a dense 3x3 conv on ``(batch, C, size, size)`` maps,
    with their MACs and minimum memory traffic (``conv_cost``)."""
    from hirilib.profile import measure_latency

    records = []
    for kind in ("dw7x7", "dense3x3"):
        for c in channels:
            cost = conv_cost(kind, c, size, batch)
            res = measure_latency(make_conv(kind, c), (batch, c, size, size), device=device,
                                  warmup=warmup, runs=runs)
            records.append({"kind": "conv", "name": kind, "channels": c, "size": size,
                            "gflops": cost["macs"] / 1e9, "gbytes": cost["bytes"] / 1e9, **res})
    return records


def bench_convnext(device: str | torch.device = "cuda", quick: bool = False) -> List[Dict[str, Any]]:
    """The chapter's timing suite: every roadmap step (step 1 is step 0's network and is
    left out), the five variants, and a depthwise 7x7 vs a dense 3x3 conv over widths.

    Records carry ``kind`` ("roadmap" / "variant" / "conv"), the name, params, GFLOPs
    (MACs) and ``measure_latency``'s fields (fp32, NCHW).  ``quick`` shrinks batch,
    runs and sizes so that a CPU finishes in about a minute.
    """
    batch, warmup, runs = (1, 1, 3) if quick else (64, 10, 30)
    names = [s.name for s in ROADMAP + KERNEL_SWEEP if s.name != "convnext_roadmap_01_enhanced_recipe"]
    names += [] if quick else list(VARIANTS)
    records = [time_model(n, device, batch, warmup, runs) for n in names]
    channels = (64, 128, 256) if quick else (64, 96, 128, 192, 256, 384, 512, 768)
    return records + time_convs(device, batch, 28 if quick else 56, channels, warmup, runs)
