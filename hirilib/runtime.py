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


def small_sizes() -> bool:
    """True when ``HIRILIB_SMALL=1``: full mode's code paths with quick mode's sizes.

    The test suite runs every chapter this way on a CPU (``HIRILIB_QUICK=0
    HIRILIB_SMALL=1``), so that the full-mode branches a Colab reader runs on a GPU
    have run somewhere before.
    """
    return os.environ.get("HIRILIB_SMALL", "").strip().lower() in ("1", "true", "yes", "on")


def choose(quick, full):
    """``quick`` in quick mode (or with ``HIRILIB_SMALL=1``), else ``full``: how chapters
    pick sizes, step counts and lists of variants, so that what runs never depends on
    anything but the mode.

    >>> choose(quick=[224], full=[224, 448, 768]) in ([224], [224, 448, 768])
    True
    """
    return quick if (quick_mode() or small_sizes()) else full


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
    _inline_figures()
    _quiet_progress_bars()
    info = {"device": get_device(), "quick": quick_mode(), "seed": seed}
    if verbose:
        gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no GPU"
        mode = "quick" if info["quick"] else ("full (small sizes)" if small_sizes() else "full")
        print(f"hirilib {hirilib.__version__} | torch {torch.__version__} | {gpu} | "
              f"{mode} mode | seed {seed}")
    return info


def _quiet_progress_bars() -> None:
    """Import ``tqdm.auto`` once with its warning about a missing ``ipywidgets`` silenced:
    without ipywidgets (a plain kernel, the book's build) it falls back to a text progress
    bar, which is all a chapter needs, and the warning would only clutter the page."""
    import warnings

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            import tqdm.auto  # noqa: F401
    except ImportError:  # pragma: no cover - tqdm is a dependency
        pass


def _inline_figures() -> None:
    """In a notebook kernel, draw figures into the notebook even where the environment
    selects a non-interactive backend (``MPLBACKEND=Agg`` would leave the page blank)."""
    import sys

    if "ipykernel" not in sys.modules:
        return
    try:
        import matplotlib

        if matplotlib.get_backend().lower() == "agg":
            matplotlib.use("module://matplotlib_inline.backend_inline")
    except Exception:  # pragma: no cover - no matplotlib_inline: nothing to do
        pass
