"""Stochastic depth (Huang et al., 2016), as used by every model in this book, and the
linear schedule of drop rates over a network's blocks."""

from __future__ import annotations

from typing import List

import torch
import torch.nn as nn

from .checks import check_rate


def drop_path_schedule(rate: float, n: int) -> List[float]:
    """Drop-path rates rising linearly from 0 (first block) to ``rate`` (last block),
    as ``torch.linspace(0, rate, n)`` in every official code base here.

    >>> drop_path_schedule(0.1, 3)
    [0.0, 0.05, 0.1]
    """
    check_rate("drop_path_rate", rate)
    return [rate * i / (n - 1) if n > 1 else 0.0 for i in range(n)]


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
    """``drop_path`` as a module; ``p`` is the probability of dropping.

    ``DropPath.make(p)`` gives ``nn.Identity()`` for p = 0, as the models build it.
    """

    @staticmethod
    def make(p: float) -> nn.Module:
        return DropPath(p) if p > 0 else nn.Identity()


    def __init__(self, p: float = 0.0):
        super().__init__()
        self.p = check_rate("drop-path probability p", p)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return drop_path(x, self.p, self.training)

    def extra_repr(self) -> str:
        return f"p={self.p}"
