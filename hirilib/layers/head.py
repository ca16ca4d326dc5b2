"""The classifier at the top of a backbone: global average pooling, a norm, a linear layer.

Models differ only in where the norm sits: ConvNeXt normalises the pooled vector
(pool, LN, Linear; ConvNeXt Sec. 2.6), Hire-MLP and CAS-ViT normalise the map
before pooling (BN, pool, Linear).  ``ClassifierHead`` covers both, so every
model exposes the same ``forward_head(x, pre_logits=False)`` and
``reset_classifier(num_classes)``.  ``distillation=True`` adds DeiT's second
classifier (Touvron et al. 2021, Sec. 4), which CAS-ViT's released models carry.
"""

from __future__ import annotations

from typing import Optional

import torch
import torch.nn as nn

from .checks import check_int
from .norm import norm2d


class ClassifierHead(nn.Module):
    """``(B, C, H, W) -> (B, num_classes)``: [norm], mean over H and W, [norm], Linear.

    Args:
        dim: channels C of the last map.
        num_classes: classes (0: no classifier; ``forward`` returns the features).
        norm: ``'ln'``, ``'bn'`` or None.
        norm_first: normalise the map before pooling (BN heads) instead of the pooled
            vector (ConvNeXt's LN head).
        init_scale: the classifier's initial weight and bias are multiplied by this
            (ConvNeXt's ``head_init_scale``: 0.001 for fine-tuning, Table 6).
        distillation: a second classifier ``fc_dist`` on the same pooled vector, for
            DeiT-style distillation; the logits are then the mean of the two heads'
            (how DeiT and CAS-ViT evaluate), and ``forward(x, return_dist=True)``
            gives both, ``(cls, dist)``, for a distillation loss.
    """

    #: a BN (before or after the mean, both linear) folds into the classifier(s) at
    #: inference (``hirilib.deploy.fuse_bn``; a missing ``fc_dist`` is skipped)
    bn_fusion = (("norm", ("fc", "fc_dist"), "before"),)

    def __init__(self, dim: int, num_classes: int, norm: Optional[str] = None,
                 norm_first: bool = False, init_scale: float = 1.0,
                 distillation: bool = False):
        super().__init__()
        check_int("num_classes", num_classes, 0)
        self.dim, self.num_classes, self.norm_first = dim, num_classes, norm_first
        self.distillation = bool(distillation)
        self.norm = norm2d(norm, dim) if norm else nn.Identity()
        self.init_scale = init_scale
        self.fc = nn.Linear(dim, num_classes) if num_classes > 0 else nn.Identity()
        self.fc_dist = None
        if self.distillation:
            self.fc_dist = (nn.Linear(dim, num_classes) if num_classes > 0
                            else nn.Identity())

    def reset(self, num_classes: int) -> None:
        """A fresh classifier (and distillation classifier) for ``num_classes`` classes
        (truncated normal, std .02)."""
        check_int("num_classes", num_classes, 0)
        self.num_classes = num_classes
        names = ("fc", "fc_dist") if self.distillation else ("fc",)
        for name in names:
            fc = nn.Linear(self.dim, num_classes) if num_classes > 0 else nn.Identity()
            if num_classes > 0:
                nn.init.trunc_normal_(fc.weight, std=0.02)
                nn.init.zeros_(fc.bias)
            setattr(self, name, fc)

    def scale_init(self) -> None:
        """Multiply the classifier's weight and bias by ``init_scale`` (after init)."""
        if isinstance(self.fc, nn.Linear) and self.init_scale != 1.0:
            with torch.no_grad():
                self.fc.weight.mul_(self.init_scale)
                self.fc.bias.mul_(self.init_scale)

    def forward(self, x: torch.Tensor, pre_logits: bool = False,
                return_dist: bool = False):
        if self.norm_first:
            x = self.norm(x)                     # (B, C, H, W)
        x = x.mean((2, 3), keepdim=True)         # (B, C, 1, 1)
        if not self.norm_first:
            x = self.norm(x)
        x = x.flatten(1)                         # (B, C)
        if pre_logits:
            return x
        if return_dist and not self.distillation:
            raise ValueError("return_dist=True needs a distillation head: build the "
                             "model with distillation=True")
        if not self.distillation or self.num_classes == 0:
            return self.fc(x)                    # (B, num_classes)
        cls, dist = self.fc(x), self.fc_dist(x)  # (B, num_classes) each
        return (cls, dist) if return_dist else (cls + dist) / 2
