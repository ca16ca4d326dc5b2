"""A stage of a hierarchical backbone: an optional downsampling layer, then blocks that
keep the resolution."""

from __future__ import annotations

from typing import Sequence

import torch
import torch.nn as nn


class Stage(nn.Module):
    """``downsample`` (``nn.Identity()`` for none), then ``blocks`` in sequence, on maps
    ``(B, C, H, W)``.  Keys ``downsample.*`` and ``blocks.j.*`` (timm's layout)."""

    def __init__(self, downsample: nn.Module, blocks: Sequence[nn.Module]):
        super().__init__()
        self.downsample = downsample
        self.blocks = nn.Sequential(*blocks)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.blocks(self.downsample(x))
