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
