"""The "modernizing a ResNet" roadmap of ConvNeXt (Liu et al., CVPR 2022, Sec. 2, Fig. 2,
Table 10): one ResNet-50, written from scratch, whose ``RoadmapConfig`` has one switch
per step.  Flipping the switches one at a time, in order, walks from ResNet-50 to
ConvNeXt-T; each step is a registered model, ``convnext_roadmap_NN_<what changes>``
(listed in order in ``ROADMAP``, with the kernel sweep of Sec. 2.5 in
``KERNEL_SWEEP``).  The last step computes exactly what ``convnext_tiny`` computes
(``roadmap_state_dict`` maps ConvNeXt's weights onto it).  Chapter 3 walks it.

>>> import hirilib
>>> m = hirilib.create_model("convnext_roadmap_08_kernel7", kernel_size=9)
>>> m.config.kernel_size, m.config.move_up_dw
(9, True)
"""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass
from typing import Any, Dict, List, NamedTuple, Optional, Tuple

import torch
import torch.nn as nn

from hirilib.layers import (ClassifierHead, ConvDownsample, DropPath, HierarchicalBackbone,
                            PatchEmbed, Stage, check_model_args, drop_path_schedule, make_act,
                            norm2d, trunc_normal_init)
from hirilib.registry import register_model

__all__ = ["RoadmapConfig", "Bottleneck", "InvertedBottleneck", "RoadmapNet", "RoadmapStep",
           "ROADMAP", "KERNEL_SWEEP", "roadmap_config", "roadmap_state_dict"]


@dataclass(frozen=True)
class RoadmapConfig:
    """One switch per step of the paper's roadmap (Sec. 2, Table 10); the defaults
    are ResNet-50.  The comments give each field's section in the paper.

    ``layer_scale`` is not a roadmap step: the paper's roadmap runs train without
    it (and without EMA).  The last registered step sets it to ConvNeXt-T's 1e-6,
    so that ``convnext_roadmap_13_convnext_tiny`` is exactly ``convnext_tiny``;
    ``layer_scale=None`` gives the network of the roadmap's run.
    """

    # 2.2 stage compute ratio: (3, 3, 9, 3), Swin's 1:1:3:1
    depths: Tuple[int, ...] = (3, 4, 6, 3)
    # 2.2 the stem: 7x7/2 conv, BN, ReLU, 3x3/2 max-pool -> one 4x4/4 conv
    patchify_stem: bool = False
    # 2.3 ResNeXt-ify: the spatial conv gets groups = channels ...
    depthwise: bool = False
    # ... and the stage-1 width goes from 64 to 96 (Swin-T's C)
    width: int = 64
    # 2.4 C -> 4C -> C, the shape of a Transformer's MLP
    inverted_bottleneck: bool = False
    # 2.5 the depthwise conv first, as attention comes before the MLP ...
    move_up_dw: bool = False
    # ... so it can grow from 3x3 to 7x7 (Swin's window is 7x7)
    kernel_size: int = 3
    # 2.6 micro design: ReLU -> GELU
    act: str = "relu"
    # 2.6 one activation per block, between the two 1x1 convs
    fewer_activations: bool = False
    # 2.6 one norm per block, after the depthwise conv
    fewer_norms: bool = False
    # 2.6 BN -> LN
    norm: str = "bn"
    # 2.6 LN + 2x2/2 conv between stages (and LNs after the stem and the pool)
    separate_downsampling: bool = False
    # not a roadmap step (a training setting; ConvNeXt uses 1e-6)
    layer_scale: Optional[float] = None

    def __post_init__(self):
        if len(self.depths) != 4 or min(self.depths) < 1 or self.width < 1:
            raise ValueError(f"depths must be 4 positive block counts and width "
                             f"positive, got depths={self.depths}, width={self.width}")
        if self.kernel_size < 1 or self.kernel_size % 2 == 0:
            raise ValueError(f"kernel_size must be odd (padding k // 2 keeps the "
                             f"size), got {self.kernel_size}")
        if self.act not in ("relu", "gelu") or self.norm not in ("bn", "ln"):
            raise ValueError(f"act must be relu/gelu and norm bn/ln, got {self.act!r}, "
                             f"{self.norm!r}")
        needs = {"move_up_dw": "inverted_bottleneck",
                 "separate_downsampling": "inverted_bottleneck",
                 "fewer_activations": "move_up_dw", "fewer_norms": "move_up_dw"}
        for flag, prerequisite in needs.items():
            if getattr(self, flag) and not getattr(self, prerequisite):
                raise ValueError(f"{flag}=True needs {prerequisite}=True "
                                 "(the roadmap's order)")

    def diff(self, other: "RoadmapConfig") -> Dict[str, Tuple[Any, Any]]:
        """The fields that differ: ``{name: (self's value, other's value)}``."""
        return {f.name: (getattr(self, f.name), getattr(other, f.name))
                for f in dataclasses.fields(self)
                if getattr(self, f.name) != getattr(other, f.name)}


class Shortcut(nn.Sequential):
    """The projection shortcut of a block that changes width or resolution: 1x1 conv (stride s) + norm."""

    def __init__(self, in_dim: int, out_dim: int, stride: int, norm: str):
        super().__init__(nn.Conv2d(in_dim, out_dim, 1, stride=stride, bias=False), norm2d(norm, out_dim))


class Bottleneck(nn.Module):
    """ResNet's bottleneck (He et al. 2016; torchvision's layout: the stride sits on
    the kxk conv).

    1x1 C_in->w, BN, ReLU; kxk w->w (stride s; groups w when depthwise), BN, ReLU;
    1x1 w->4w, BN; add the shortcut; ReLU.  Steps 0-5 of the roadmap.
    """

    expansion = 4

    def __init__(self, in_dim: int, width: int, stride: int = 1,
                 cfg: RoadmapConfig = RoadmapConfig(), drop_path: float = 0.0):
        super().__init__()
        out_dim, k = self.expansion * width, cfg.kernel_size
        self.conv1 = nn.Conv2d(in_dim, width, 1, bias=False)
        self.bn1 = norm2d(cfg.norm, width)
        self.conv2 = nn.Conv2d(width, width, k, stride, k // 2, bias=False,
                               groups=width if cfg.depthwise else 1)
        self.bn2 = norm2d(cfg.norm, width)
        self.conv3 = nn.Conv2d(width, out_dim, 1, bias=False)
        self.bn3 = norm2d(cfg.norm, out_dim)
        self.act = make_act(cfg.act)
        self.gamma = (nn.Parameter(torch.full((out_dim,), cfg.layer_scale))
                      if cfg.layer_scale else None)
        self.drop_path = DropPath.make(drop_path)
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
                   "act_dw": nn.Identity() if cfg.fewer_activations else make_act(cfg.act)}
        expand = {"pw1": nn.Conv2d(in_dim, hidden, 1, bias=bias),
                  "norm1": nn.Identity() if cfg.fewer_norms else norm2d(cfg.norm, hidden),
                  "act": make_act(cfg.act)}
        layers = {**spatial, **expand} if cfg.move_up_dw else {**expand, **spatial}
        for name, layer in layers.items():            # registered in forward order, so print() reads in order
            setattr(self, name, layer)
        self.pw2 = nn.Conv2d(hidden, dim, 1, bias=bias)
        self.norm2 = nn.Identity() if cfg.fewer_norms else norm2d(cfg.norm, dim)
        self.gamma = nn.Parameter(torch.full((dim,), cfg.layer_scale)) if cfg.layer_scale else None
        self.drop_path = DropPath.make(drop_path)
        self.shortcut = (Shortcut(in_dim, dim, stride, cfg.norm)
                         if stride != 1 or in_dim != dim else nn.Identity())
        self.act_out = nn.Identity() if cfg.fewer_activations else make_act(cfg.act)

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


class RoadmapNet(HierarchicalBackbone):
    """ResNet-50 with the roadmap's switches (``RoadmapConfig``); its defaults are ResNet-50.

    Stem: 7x7/2 conv + norm + act + 3x3/2 max-pool, or the 4x4/4 patchify conv.
    Until ``separate_downsampling``, each of stages 2-4 halves the resolution in its
    first block (stride-2 kxk conv, and a stride-2 1x1 conv + norm on the shortcut).
    With it, an LN + 2x2/2 conv sits between stages, and LNs follow the stem and the
    global pool (Sec. 2.6: without them training diverged).
    """

    #: ``create_model`` overrides accepted besides the constructor's: the config's fields
    override_fields = tuple(f.name for f in dataclasses.fields(RoadmapConfig))

    def __init__(self, config: RoadmapConfig = RoadmapConfig(), num_classes: int = 1000,
                 in_chans: int = 3, drop_path_rate: float = 0.0, head_init_scale: float = 1.0):
        super().__init__()
        check_model_args(num_classes, in_chans, drop_path_rate)
        cfg = self.config = config
        self.in_chans, self.num_classes = in_chans, num_classes
        widths = [cfg.width * 2 ** i for i in range(4)]      # 64..512 or 96..768
        if cfg.patchify_stem:
            self.stem = PatchEmbed(in_chans, cfg.width, 4, norm=cfg.norm if cfg.separate_downsampling else None)
        else:
            self.stem = nn.Sequential(nn.Conv2d(in_chans, cfg.width, 7, 2, 3, bias=False),  # (B, w, H/2, W/2)
                                      norm2d(cfg.norm, cfg.width), make_act(cfg.act),
                                      nn.MaxPool2d(3, 2, 1))                                # (B, w, H/4, W/4)
        block = InvertedBottleneck if cfg.inverted_bottleneck else Bottleneck
        out_dims = widths if cfg.inverted_bottleneck else [Bottleneck.expansion * w for w in widths]
        dpr = drop_path_schedule(drop_path_rate, sum(cfg.depths))
        stages, in_dim, j = [], cfg.width, 0
        for i, (depth, w) in enumerate(zip(cfg.depths, widths)):
            down, stride = nn.Identity(), 2 if i > 0 else 1
            if cfg.separate_downsampling and i > 0:
                down, stride, in_dim = ConvDownsample(in_dim, out_dims[i], cfg.norm), 1, out_dims[i]
            blocks = []
            for k in range(depth):
                blocks.append(block(in_dim, w, stride if k == 0 else 1, cfg, dpr[j + k]))
                in_dim = out_dims[i]
            stages.append(Stage(down, blocks))
            j += depth
        self.stages = nn.ModuleList(stages)
        self.dims = out_dims
        self.num_features = out_dims[-1]
        self.head = ClassifierHead(out_dims[-1], num_classes,
                                   norm=cfg.norm if cfg.separate_downsampling else None,
                                   init_scale=head_init_scale)
        self.apply(trunc_normal_init)
        self.head.scale_init()


class RoadmapStep(NamedTuple):
    """One step of Table 10: registered name, what changes, and the ``RoadmapConfig``
    fields it sets (the paper's numbers: ``hirilib.reference.CONVNEXT_ROADMAP``)."""

    name: str
    description: str
    diff: Dict[str, Any]


#: The paper's Table 10 (ResNet-50 / Swin-T regime), cumulative, in order.
ROADMAP: List[RoadmapStep] = [
    RoadmapStep("convnext_roadmap_00_resnet50", "ResNet-50, torchvision's 90-epoch recipe", {}),
    RoadmapStep("convnext_roadmap_01_enhanced_recipe", "same network, DeiT/Swin-style recipe: "
                "300 epochs, AdamW, Mixup, CutMix, RandAugment, Random Erasing, stochastic depth, "
                "label smoothing", {}),
    RoadmapStep("convnext_roadmap_02_stage_ratio", "blocks per stage (3, 4, 6, 3) -> (3, 3, 9, 3)",
                {"depths": (3, 3, 9, 3)}),
    RoadmapStep("convnext_roadmap_03_patchify_stem", "stem: 7x7/2 conv + max-pool -> 4x4/4 conv",
                {"patchify_stem": True}),
    RoadmapStep("convnext_roadmap_04_depthwise", "3x3 conv -> depthwise 3x3 conv",
                {"depthwise": True}),
    RoadmapStep("convnext_roadmap_05_width", "width 64 -> 96", {"width": 96}),
    RoadmapStep("convnext_roadmap_06_inverted_bottleneck", "inverted bottleneck C -> 4C -> C",
                {"inverted_bottleneck": True}),
    RoadmapStep("convnext_roadmap_07_move_up_dw", "depthwise conv moved to the top of the block",
                {"move_up_dw": True}),
    RoadmapStep("convnext_roadmap_08_kernel7", "depthwise kernel 3 -> 7", {"kernel_size": 7}),
    RoadmapStep("convnext_roadmap_09_gelu", "ReLU -> GELU", {"act": "gelu"}),
    RoadmapStep("convnext_roadmap_10_fewer_activations", "one GELU per block",
                {"fewer_activations": True}),
    RoadmapStep("convnext_roadmap_11_fewer_norms", "one norm per block", {"fewer_norms": True}),
    RoadmapStep("convnext_roadmap_12_layer_norm", "BN -> LN", {"norm": "ln"}),
    RoadmapStep("convnext_roadmap_13_convnext_tiny", "separate downsampling layers, and "
                "ConvNeXt-T's layer scale 1e-6 (= convnext_tiny)",
                {"separate_downsampling": True, "layer_scale": 1e-6}),
]

#: Sec. 2.5's kernel sweep on top of step 7 (kernel 3 is step 7 itself; 7 is step 8).
KERNEL_SWEEP: List[RoadmapStep] = [
    RoadmapStep("convnext_roadmap_08_kernel5", "depthwise kernel 3 -> 5", {"kernel_size": 5}),
    RoadmapStep("convnext_roadmap_08_kernel9", "depthwise kernel 3 -> 9", {"kernel_size": 9}),
    RoadmapStep("convnext_roadmap_08_kernel11", "depthwise kernel 3 -> 11", {"kernel_size": 11}),
]

_CONFIGS: Dict[str, RoadmapConfig] = {}
_cfg = RoadmapConfig()
for _step in ROADMAP:
    _cfg = _CONFIGS[_step.name] = dataclasses.replace(_cfg, **_step.diff)
for _step in KERNEL_SWEEP:
    _CONFIGS[_step.name] = dataclasses.replace(_CONFIGS["convnext_roadmap_07_move_up_dw"],
                                               **_step.diff)


def roadmap_config(name: str, **overrides) -> RoadmapConfig:
    """The ``RoadmapConfig`` of a registered step, with field overrides (e.g. ``kernel_size=5``).

    >>> roadmap_config("convnext_roadmap_02_stage_ratio").depths
    (3, 3, 9, 3)
    >>> roadmap_config("convnext_roadmap_08_kernel7", kernel_size=9).kernel_size
    9
    """
    if name not in _CONFIGS:
        raise ValueError(f"unknown roadmap step {name!r}; the steps are {sorted(_CONFIGS)}")
    fields = {f.name for f in dataclasses.fields(RoadmapConfig)}
    unknown = sorted(set(overrides) - fields)
    if unknown:
        raise ValueError(f"RoadmapConfig has no field {unknown[0]!r}; its fields are "
                         f"{', '.join(sorted(fields))}")
    return dataclasses.replace(_CONFIGS[name], **overrides)


def _step(name: str, num_classes: int, in_chans: int, drop_path_rate: float,
          **kwargs) -> RoadmapNet:
    """Build step ``name``; ``RoadmapConfig`` fields and ``RoadmapNet`` arguments may be
    overridden alike."""
    fields = {f.name for f in dataclasses.fields(RoadmapConfig)}
    cfg = roadmap_config(name, **{k: kwargs.pop(k) for k in list(kwargs) if k in fields})
    return RoadmapNet(cfg, num_classes=num_classes, in_chans=in_chans,
                      drop_path_rate=drop_path_rate, **kwargs)


# One registered model per step, in the order of Table 10; each takes the RoadmapConfig
# fields as overrides too (e.g. ``create_model("convnext_roadmap_08_kernel7", kernel_size=9)``).

@register_model
def convnext_roadmap_00_resnet50(num_classes=1000, in_chans=3, drop_path_rate=0.0, **kwargs):
    """Step 0: ResNet-50 (torchvision's layout; 25.56 M parameters)."""
    return _step("convnext_roadmap_00_resnet50", num_classes, in_chans, drop_path_rate, **kwargs)


@register_model
def convnext_roadmap_01_enhanced_recipe(num_classes=1000, in_chans=3, drop_path_rate=0.0,
                                        **kwargs):
    """Step 1: the same network as step 0, trained with the DeiT/Swin recipe."""
    return _step("convnext_roadmap_01_enhanced_recipe", num_classes, in_chans, drop_path_rate,
                 **kwargs)


@register_model
def convnext_roadmap_02_stage_ratio(num_classes=1000, in_chans=3, drop_path_rate=0.0, **kwargs):
    """Step 2: blocks per stage (3, 4, 6, 3) -> (3, 3, 9, 3), Swin-T's 1:1:3:1."""
    return _step("convnext_roadmap_02_stage_ratio", num_classes, in_chans, drop_path_rate,
                 **kwargs)


@register_model
def convnext_roadmap_03_patchify_stem(num_classes=1000, in_chans=3, drop_path_rate=0.0,
                                      **kwargs):
    """Step 3: the 7x7/2 conv + max-pool stem becomes a 4x4/4 "patchify" conv."""
    return _step("convnext_roadmap_03_patchify_stem", num_classes, in_chans, drop_path_rate,
                 **kwargs)


@register_model
def convnext_roadmap_04_depthwise(num_classes=1000, in_chans=3, drop_path_rate=0.0, **kwargs):
    """Step 4: the bottleneck's 3x3 conv becomes depthwise (ResNeXt-ify)."""
    return _step("convnext_roadmap_04_depthwise", num_classes, in_chans, drop_path_rate,
                 **kwargs)


@register_model
def convnext_roadmap_05_width(num_classes=1000, in_chans=3, drop_path_rate=0.0, **kwargs):
    """Step 5: base width 64 -> 96, Swin-T's C."""
    return _step("convnext_roadmap_05_width", num_classes, in_chans, drop_path_rate, **kwargs)


@register_model
def convnext_roadmap_06_inverted_bottleneck(num_classes=1000, in_chans=3, drop_path_rate=0.0,
                                            **kwargs):
    """Step 6: the inverted bottleneck C -> 4C -> C, a Transformer MLP's shape."""
    return _step("convnext_roadmap_06_inverted_bottleneck", num_classes, in_chans,
                 drop_path_rate, **kwargs)


@register_model
def convnext_roadmap_07_move_up_dw(num_classes=1000, in_chans=3, drop_path_rate=0.0, **kwargs):
    """Step 7: the depthwise conv moves to the top of the block, as attention precedes the MLP."""
    return _step("convnext_roadmap_07_move_up_dw", num_classes, in_chans, drop_path_rate,
                 **kwargs)


@register_model
def convnext_roadmap_08_kernel5(num_classes=1000, in_chans=3, drop_path_rate=0.0, **kwargs):
    """Sec. 2.5 kernel sweep: step 7 with a 5x5 depthwise kernel."""
    return _step("convnext_roadmap_08_kernel5", num_classes, in_chans, drop_path_rate, **kwargs)


@register_model
def convnext_roadmap_08_kernel7(num_classes=1000, in_chans=3, drop_path_rate=0.0, **kwargs):
    """Step 8: the depthwise kernel 3 -> 7 (the size of Swin's windows; the paper's choice)."""
    return _step("convnext_roadmap_08_kernel7", num_classes, in_chans, drop_path_rate, **kwargs)


@register_model
def convnext_roadmap_08_kernel9(num_classes=1000, in_chans=3, drop_path_rate=0.0, **kwargs):
    """Sec. 2.5 kernel sweep: step 7 with a 9x9 depthwise kernel."""
    return _step("convnext_roadmap_08_kernel9", num_classes, in_chans, drop_path_rate, **kwargs)


@register_model
def convnext_roadmap_08_kernel11(num_classes=1000, in_chans=3, drop_path_rate=0.0, **kwargs):
    """Sec. 2.5 kernel sweep: step 7 with an 11x11 depthwise kernel."""
    return _step("convnext_roadmap_08_kernel11", num_classes, in_chans, drop_path_rate, **kwargs)


@register_model
def convnext_roadmap_09_gelu(num_classes=1000, in_chans=3, drop_path_rate=0.0, **kwargs):
    """Step 9: every ReLU becomes a GELU."""
    return _step("convnext_roadmap_09_gelu", num_classes, in_chans, drop_path_rate, **kwargs)


@register_model
def convnext_roadmap_10_fewer_activations(num_classes=1000, in_chans=3, drop_path_rate=0.0,
                                          **kwargs):
    """Step 10: one GELU per block, between the two 1x1 convs."""
    return _step("convnext_roadmap_10_fewer_activations", num_classes, in_chans, drop_path_rate,
                 **kwargs)


@register_model
def convnext_roadmap_11_fewer_norms(num_classes=1000, in_chans=3, drop_path_rate=0.0, **kwargs):
    """Step 11: one norm per block, after the depthwise conv."""
    return _step("convnext_roadmap_11_fewer_norms", num_classes, in_chans, drop_path_rate,
                 **kwargs)


@register_model
def convnext_roadmap_12_layer_norm(num_classes=1000, in_chans=3, drop_path_rate=0.0, **kwargs):
    """Step 12: BatchNorm -> LayerNorm (channels first)."""
    return _step("convnext_roadmap_12_layer_norm", num_classes, in_chans, drop_path_rate,
                 **kwargs)


@register_model
def convnext_roadmap_13_convnext_tiny(num_classes=1000, in_chans=3, drop_path_rate=0.0,
                                      **kwargs):
    """Step 13: separate downsampling layers (+ stem, pre-downsampling and head LNs) and
    ConvNeXt-T's layer scale 1e-6: computes exactly what ``convnext_tiny`` computes."""
    return _step("convnext_roadmap_13_convnext_tiny", num_classes, in_chans, drop_path_rate,
                 **kwargs)


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
