"""The model interface, written once for the common shape of a hierarchical backbone:
a ``stem``, a list of ``stages`` and a ``head`` (``ClassifierHead``).

A model that has this shape subclasses ``HierarchicalBackbone``, sets ``in_chans``,
``num_classes``, ``num_features``, ``size_multiple``, ``min_input_size`` (and ``why`` the
size must be a multiple), and gets the rest of the interface every model in the book
has: ``check_input``, ``forward_pyramid``, ``forward_features``, ``forward_head``,
``forward`` and ``reset_classifier`` (timm's names).
"""

from __future__ import annotations

from typing import List

import torch
import torch.nn as nn

from .checks import check_image, check_int


class HierarchicalBackbone(nn.Module):
    """``stem`` -> ``stages`` (each a module on maps) -> ``head``; see the module docstring."""

    in_chans: int
    num_classes: int
    num_features: int
    size_multiple: int = 32
    min_input_size: int = 32
    #: why input sides must be multiples of ``size_multiple`` (shown in the error)
    size_reason: str = "a /4 stem, then three /2 downsamplings"
    #: the model's name in error messages (the paper's spelling; default: the class name)
    display_name: str = ""

    def check_input(self, x: torch.Tensor) -> None:
        """Raise a ``TypeError``/``ValueError`` that says what works, unless ``x`` is a
        float batch ``(B, in_chans, H, W)`` of a size the model takes."""
        check_image(x, self.in_chans, multiple=self.size_multiple, min_size=self.min_input_size,
                    name=self.display_name or type(self).__name__, why=self.size_reason)

    def forward_pyramid(self, x: torch.Tensor) -> List[torch.Tensor]:
        """Every stage's output map ``(B, C_i, H_i, W_i)``, for dense-prediction heads."""
        self.check_input(x)
        x = self.stem(x)
        maps = []
        for stage in self.stages:
            x = stage(x)
            maps.append(x)
        return maps

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """The last stage's map ``(B, num_features, h, w)``."""
        return self.forward_pyramid(x)[-1]

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        """Pool (and normalise) the last map, then classify: ``(B, num_classes)``, or the
        pooled features ``(B, num_features)`` with ``pre_logits``."""
        return self.head(x, pre_logits=pre_logits)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))

    def reset_classifier(self, num_classes: int) -> None:
        """A fresh classifier for ``num_classes`` classes (0: none)."""
        self.head.reset(check_int("num_classes", num_classes, 0))
        self.num_classes = num_classes
