"""ConvNeXt (Liu et al., "A ConvNet for the 2020s", CVPR 2022).  Chapter 3 builds it.

The final design (Sec. 3, Table 1): a 4x4/4 "patchify" stem, four stages of
``Block`` s (7x7 depthwise conv, one LayerNorm, an MLP that widens 4x with one
GELU, layer scale), and a LayerNorm + 2x2/2 conv between stages; the head pools,
normalises and classifies.  ``convnext_tiny`` ... ``convnext_xlarge`` are its
variants.  The ResNet-50 -> ConvNeXt-T roadmap of Sec. 2 is ``convnext_roadmap``.

Module names follow the official code inside timm's stage layout
(``stages.i.downsample``, ``stages.i.blocks.j.dwconv / norm / pwconv1 / pwconv2 /
gamma``, ``head.norm``, ``head.fc``); ``convert_state_dict`` maps timm's and the
official checkpoints onto them.  Published numbers: ``hirilib.reference.CONVNEXT``.

>>> import torch, hirilib
>>> m = hirilib.create_model("convnext_tiny", dims=(8, 16, 32, 64), num_classes=3).eval()
>>> [tuple(f.shape) for f in m.forward_pyramid(torch.zeros(1, 3, 64, 64))]
[(1, 8, 16, 16), (1, 16, 8, 8), (1, 32, 4, 4), (1, 64, 2, 2)]
"""

from __future__ import annotations

import re
from typing import Dict, Optional, Sequence

import torch
import torch.nn as nn

from hirilib.layers import (ClassifierHead, ConvDownsample, DropPath, HierarchicalBackbone,
                            PatchEmbed, Stage, check_int, check_model_args, check_positive_ints,
                            drop_path_schedule, trunc_normal_init)
from hirilib.registry import register_model

__all__ = ["Block", "ConvNeXt", "VARIANTS", "convert_state_dict"]


class Block(nn.Module):
    """The ConvNeXt block (Sec. 2.6, Fig. 4): like a Transformer's MLP sub-block,
    with a 7x7 depthwise conv in place of attention.

    x + DropPath(gamma * Linear_{4C->C}(GELU(Linear_{C->4C}(LN(DWConv7x7(x))))))

    The two 1x1 convs are ``nn.Linear`` on channels-last tokens, as in the
    official code (same numbers, faster on GPU).  gamma is layer scale,
    initialised to 1e-6 so every block starts close to the identity.
    """

    def __init__(self, dim: int, drop_path: float = 0.0,
                 ls_init_value: Optional[float] = 1e-6, kernel_size: int = 7):
        super().__init__()
        self.dwconv = nn.Conv2d(dim, dim, kernel_size, padding=kernel_size // 2,
                                groups=dim)
        self.norm = nn.LayerNorm(dim, eps=1e-6)
        self.pwconv1 = nn.Linear(dim, 4 * dim)
        self.act = nn.GELU()
        self.pwconv2 = nn.Linear(4 * dim, dim)
        self.gamma = (nn.Parameter(torch.full((dim,), float(ls_init_value)))
                      if ls_init_value else None)
        self.drop_path = DropPath.make(drop_path)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, C, H, W)
        shortcut = x
        x = self.dwconv(x)                              # (B, C, H, W): per channel
        x = x.permute(0, 2, 3, 1)                       # (B, H, W, C)
        x = self.act(self.pwconv1(self.norm(x)))        # (B, H, W, 4C)
        x = self.pwconv2(x)                             # (B, H, W, C)
        if self.gamma is not None:
            x = self.gamma * x
        return shortcut + self.drop_path(x.permute(0, 3, 1, 2))  # (B, C, H, W)


class ConvNeXt(HierarchicalBackbone):
    """ConvNeXt (Sec. 3): stem, four stages at strides 4/8/16/32, head.

    Args:
        depths, dims: blocks and channels per stage.
        num_classes, in_chans: classes (0: no classifier) and input channels.
        drop_path_rate: stochastic depth, linear from 0 to this over all blocks.
        ls_init_value: initial layer scale (None: no layer scale).
        head_init_scale: the classifier's initial weights are multiplied by this
            (0.001 for fine-tuning, Table 6).
        kernel_size: of the depthwise convs (7; Sec. 2.5 sweeps 3-11).
    """

    def __init__(self, depths: Sequence[int] = (3, 3, 9, 3),
                 dims: Sequence[int] = (96, 192, 384, 768), num_classes: int = 1000,
                 in_chans: int = 3, drop_path_rate: float = 0.0,
                 ls_init_value: Optional[float] = 1e-6, head_init_scale: float = 1.0,
                 kernel_size: int = 7):
        super().__init__()
        check_model_args(num_classes, in_chans, drop_path_rate)
        depths = check_positive_ints("depths", depths, 4)
        dims = check_positive_ints("dims", dims, 4)
        if check_int("kernel_size", kernel_size, 1) % 2 == 0:
            raise ValueError(f"kernel_size must be odd (padding k // 2 keeps the "
                             f"size), got {kernel_size}")
        self.in_chans, self.dims, self.num_classes = in_chans, list(dims), num_classes
        self.num_features = dims[-1]
        # the patchify stem: (B, C_in, H, W) -> (B, C1, H/4, W/4)
        self.stem = PatchEmbed(in_chans, dims[0], patch_size=4, norm="ln")
        dpr = drop_path_schedule(drop_path_rate, sum(depths))
        stages, j = [], 0
        for i, (depth, dim) in enumerate(zip(depths, dims)):
            down = ConvDownsample(dims[i - 1], dim, "ln") if i > 0 else nn.Identity()
            blocks = [Block(dim, dpr[j + k], ls_init_value, kernel_size)
                      for k in range(depth)]
            stages.append(Stage(down, blocks))                # (B, C_i, H_i, W_i)
            j += depth
        self.stages = nn.ModuleList(stages)
        self.head = ClassifierHead(dims[-1], num_classes, norm="ln",
                                   init_scale=head_init_scale)
        self.apply(trunc_normal_init)  # std .02 (Table 5's "0.2" is a typo)
        self.head.scale_init()


# ----------------------------------------------------------------------------- checkpoints


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


# ----------------------------------------------------------------------------- variants

#: Table 1 / the official code: depths and dims of each variant.
VARIANTS: Dict[str, Dict[str, tuple]] = {
    "convnext_tiny": dict(depths=(3, 3, 9, 3), dims=(96, 192, 384, 768)),
    "convnext_small": dict(depths=(3, 3, 27, 3), dims=(96, 192, 384, 768)),
    "convnext_base": dict(depths=(3, 3, 27, 3), dims=(128, 256, 512, 1024)),
    "convnext_large": dict(depths=(3, 3, 27, 3), dims=(192, 384, 768, 1536)),
    "convnext_xlarge": dict(depths=(3, 3, 27, 3), dims=(256, 512, 1024, 2048)),
}


def _create(name: str, **kwargs) -> ConvNeXt:
    return ConvNeXt(**{**VARIANTS[name], **kwargs})


@register_model(pretrained="timm/convnext_tiny.fb_in1k", converter=convert_state_dict)
def convnext_tiny(num_classes: int = 1000, in_chans: int = 3, drop_path_rate: float = 0.0,
                  **kwargs) -> ConvNeXt:
    """ConvNeXt-T: dims (96, 192, 384, 768), depths (3, 3, 9, 3). Paper: 28.6 M, 4.5 GFLOPs,
    82.1% ImageNet-1K (Table 1; trained with drop path 0.1)."""
    return _create("convnext_tiny", num_classes=num_classes, in_chans=in_chans,
                   drop_path_rate=drop_path_rate, **kwargs)


@register_model(pretrained="timm/convnext_small.fb_in1k", converter=convert_state_dict)
def convnext_small(num_classes: int = 1000, in_chans: int = 3, drop_path_rate: float = 0.0,
                   **kwargs) -> ConvNeXt:
    """ConvNeXt-S: dims (96, 192, 384, 768), depths (3, 3, 27, 3). Paper: 50 M, 8.7 GFLOPs,
    83.1% (drop path 0.4)."""
    return _create("convnext_small", num_classes=num_classes, in_chans=in_chans,
                   drop_path_rate=drop_path_rate, **kwargs)


@register_model(pretrained="timm/convnext_base.fb_in1k", converter=convert_state_dict)
def convnext_base(num_classes: int = 1000, in_chans: int = 3, drop_path_rate: float = 0.0,
                  **kwargs) -> ConvNeXt:
    """ConvNeXt-B: dims (128, 256, 512, 1024), depths (3, 3, 27, 3). Paper: 89 M, 15.4 GFLOPs,
    83.8% (drop path 0.5)."""
    return _create("convnext_base", num_classes=num_classes, in_chans=in_chans,
                   drop_path_rate=drop_path_rate, **kwargs)


@register_model(pretrained="timm/convnext_large.fb_in1k", converter=convert_state_dict)
def convnext_large(num_classes: int = 1000, in_chans: int = 3, drop_path_rate: float = 0.0,
                   **kwargs) -> ConvNeXt:
    """ConvNeXt-L: dims (192, 384, 768, 1536), depths (3, 3, 27, 3). Paper: 198 M, 34.4 GFLOPs,
    84.3% (drop path 0.5)."""
    return _create("convnext_large", num_classes=num_classes, in_chans=in_chans,
                   drop_path_rate=drop_path_rate, **kwargs)


@register_model(pretrained="timm/convnext_xlarge.fb_in22k_ft_in1k", converter=convert_state_dict)
def convnext_xlarge(num_classes: int = 1000, in_chans: int = 3, drop_path_rate: float = 0.0,
                    **kwargs) -> ConvNeXt:
    """ConvNeXt-XL: dims (256, 512, 1024, 2048), depths (3, 3, 27, 3). Paper: 350 M,
    60.9 GFLOPs, 87.0% after ImageNet-22K pre-training (no ImageNet-1K-only weights)."""
    return _create("convnext_xlarge", num_classes=num_classes, in_chans=in_chans,
                   drop_path_rate=drop_path_rate, **kwargs)
