"""Stochastic depth (Huang et al., 2016), as used by every model in this book."""

from __future__ import annotations

import torch
import torch.nn as nn


def drop_path(x: torch.Tensor, p: float = 0.0, training: bool = False) -> torch.Tensor:
    """Drop whole residual branches per sample with probability ``p``.

    Survivors are scaled by ``1 / (1 - p)`` so the expectation is unchanged.

    >>> import torch
    >>> x = torch.ones(4, 3)
    >>> bool((drop_path(x, 0.5, training=False) == x).all())  # identity at eval
    True
    """
    if p == 0.0 or not training:
        return x
    keep = 1.0 - p
    shape = (x.shape[0],) + (1,) * (x.ndim - 1)  # one coin per sample
    mask = x.new_empty(shape).bernoulli_(keep)
    return x * mask / keep


class DropPath(nn.Module):
    """``drop_path`` as a module; ``p`` is the probability of dropping."""

    def __init__(self, p: float = 0.0):
        super().__init__()
        if not 0.0 <= p < 1.0:
            raise ValueError(f"drop-path probability must be in [0, 1), got {p}")
        self.p = p

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return drop_path(x, self.p, self.training)

    def extra_repr(self) -> str:
        return f"p={self.p}"
