"""Where a chapter runs: quick or full mode, device, seeds."""

from __future__ import annotations

import os
import random

import torch


def quick_mode() -> bool:
    """True when sizes and steps should shrink so a CPU can run a chapter.

    ``HIRILIB_QUICK=1`` forces quick mode and ``HIRILIB_QUICK=0`` forces full
    mode; otherwise quick mode is on exactly when no GPU is present.  Quick mode
    changes how much runs, never what the code is.
    """
    flag = os.environ.get("HIRILIB_QUICK", "").strip().lower()
    if flag in ("1", "true", "yes", "on"):
        return True
    if flag in ("0", "false", "no", "off"):
        return False
    return not torch.cuda.is_available()


def get_device() -> torch.device:
    """The GPU when there is one, else the CPU."""
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def resolve_device(spec: str | torch.device | None = None) -> torch.device:
    """``spec`` ('cpu', 'cuda', 'cuda:1', 'mps' or None for the best present) as a
    ``torch.device``, or a ``ValueError`` saying which devices this machine has.

    >>> resolve_device("cpu")
    device(type='cpu')
    """
    if spec is None or spec == "":
        return get_device()
    try:
        device = torch.device(spec)
    except (RuntimeError, TypeError):
        raise ValueError(f"unknown device {spec!r}; use 'cpu' or 'cuda' (or 'cuda:N')") from None
    have = ["cpu"] + [f"cuda:{i}" for i in range(torch.cuda.device_count())]
    if device.type == "cuda":
        n = torch.cuda.device_count()
        if n == 0:
            raise ValueError(f"device {spec!r} asked for, but this machine has no CUDA GPU "
                             f"(available: cpu)")
        if device.index is not None and device.index >= n:
            raise ValueError(f"device {spec!r} asked for, but this machine has {n} GPU(s) "
                             f"(available: {', '.join(have)})")
    elif device.type == "mps":
        if not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
            raise ValueError(f"device {spec!r} is not available here (available: "
                             f"{', '.join(have)})")
    elif device.type != "cpu":
        raise ValueError(f"device {spec!r} is not supported; use one of {', '.join(have)}")
    return device


def seed_everything(seed: int = 0) -> None:
    """Seed Python, and torch on every device."""
    random.seed(seed)
    torch.manual_seed(seed)
    try:
        import numpy as np
        np.random.seed(seed)
    except ImportError:  # pragma: no cover
        pass


def setup(seed: int = 0, verbose: bool = True) -> dict:
    """Seed, pick the device and the mode, and print them once (first cell of a chapter)."""
    import hirilib

    seed_everything(seed)
    info = {"device": get_device(), "quick": quick_mode(), "seed": seed}
    if verbose:
        gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no GPU"
        print(f"hirilib {hirilib.__version__} | torch {torch.__version__} | {gpu} | "
              f"{'quick' if info['quick'] else 'full'} mode | seed {seed}")
    return info
