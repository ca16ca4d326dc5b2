"""Checks a student can run on their own implementation.

Each chapter's exercises give a stub that raises ``NotImplementedError`` and a
check cell.  The checks are the same ones that verify ``hirilib``: they take
the implementation to test as an argument, so they grade ours (``pytest
hirilib``) or a student's alike.

In a notebook::

    from hirilib.checks import grade, attention
    grade("MHA from scratch", attention.check_mha, MyAttention)

From the command line, against a student's module (a ``.py`` file or an
importable name) that defines some of the graded names::

    HIRILIB_STUDENT=my_attention.py pytest hirilib

Names the student module does not define are taken from ``hirilib``.
"""

from __future__ import annotations

import importlib
import importlib.util
import os
from pathlib import Path
from typing import Any, Callable, Optional

import torch

#: Tolerance of the equivalence checks: fp32, the same maths summed in another order.
ATOL = 1e-5


def assert_close(a: torch.Tensor, b: torch.Tensor, what: str, atol: float = ATOL) -> None:
    """Assert equal shapes and a max abs difference below ``atol``, saying what differs."""
    assert a.shape == b.shape, f"{what}: shape {tuple(a.shape)}, expected {tuple(b.shape)}"
    err = (a - b).abs().max().item()
    assert err < atol, f"{what}: max abs difference {err:.2e} exceeds {atol:.0e}"


def grade(name: str, check: Callable[..., Any], *args, **kwargs) -> Optional[bool]:
    """Run ``check(*args, **kwargs)`` and print a verdict a student can act on.

    Returns True (passed), False (an assertion failed: the message says what
    differs) or None (the stub still raises ``NotImplementedError``).
    """
    try:
        check(*args, **kwargs)
    except NotImplementedError:
        print(f"[ ] {name}: not attempted yet (the stub raises NotImplementedError)")
        return None
    except AssertionError as e:
        print(f"[x] {name}: FAILED: {e}")
        return False
    print(f"[v] {name}: passed")
    return True


def student_module():
    """The module named by ``HIRILIB_STUDENT`` (a file path or module name), or None."""
    target = os.environ.get("HIRILIB_STUDENT", "").strip()
    if not target:
        return None
    if target.endswith(".py") or os.sep in target:
        path = Path(target).expanduser().resolve()
        if not path.is_file():
            raise FileNotFoundError(f"HIRILIB_STUDENT points to {path}, which does not exist")
        spec = importlib.util.spec_from_file_location(path.stem, path)
        mod = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(mod)
        return mod
    return importlib.import_module(target)


def implementation(name: str, reference: Any) -> Any:
    """The student's ``name`` if their module defines it, else ``reference``."""
    mod = student_module()
    if mod is not None and hasattr(mod, name):
        return getattr(mod, name)
    return reference
