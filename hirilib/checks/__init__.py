"""Coursework: checks a student can run on their own implementation.

Each chapter's exercises ask for a named function or class (``MyAttention``,
``attention_macs`` ...) and give a stub that raises ``NotImplementedError``, then a
check cell::

    from hirilib.checks import grade
    grade("MyAttention", MyAttention)

The checks are the ones that verify ``hirilib``: every exercise is registered here
(``Exercise``) with its check, hirilib's own implementation of the same spec, and the
typical wrong answers, whose failure messages must name the mistake (the tests make
sure they do).  From the command line, against a student's file::

    HIRILIB_STUDENT=my_answers.py pytest hirilib

grades every exercise name the file defines (the names the exercises ask for) and
takes the others from hirilib; the run's header says which came from where, and the
run fails at once if the file defines none of them.  ``grade_module(path)`` grades a
file from a script (an instructor's loop over submissions).
"""

from __future__ import annotations

import importlib
import importlib.util
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, List, Mapping, Optional

import torch

#: Tolerance of the equivalence checks: fp32, the same maths summed in another order.
ATOL = 1e-5


@dataclass(frozen=True)
class Exercise:
    """One exercise: the name the notebook asks for, its chapter and number, the check,
    hirilib's implementation of the same spec (``reference()``), known wrong answers
    (``mistakes``: the words the failure message must contain -> ``() -> wrong answer``),
    and a one-line ``summary`` of what it asks (the instructors' page lists it; the
    check's docstring otherwise)."""

    name: str
    chapter: int
    number: int
    check: Callable[[Any], None]
    reference: Callable[[], Any]
    mistakes: Mapping[str, Callable[[], Any]] = field(default_factory=dict)
    summary: str = ""

    def signature(self) -> str:
        """How the answer is called, as the exercise asks: ``MyHRBlock(dim, mlp_ratio)``
        (read from the first ``fn(...)``/``cls(...)`` of the check's docstring)."""
        import re

        doc = " ".join((self.check.__doc__ or "").split())
        m = re.match(r"``(?:fn|cls)(\(.*?\))``", doc)
        if m is None:
            raise ValueError(f"the check of {self.name} does not start its docstring "
                             f"with ``fn(...)`` or ``cls(...)``")
        return self.name + m.group(1)

    def describe(self) -> str:
        """What the exercise asks, in one line."""
        if self.summary:
            return self.summary
        doc = " ".join((self.check.__doc__ or "").replace("``", "").split())
        return doc.split(". ")[0].rstrip(".") + "."


EXERCISES: Dict[str, Exercise] = {}


def register(*exercises: Exercise) -> None:
    """Register exercises (each chapter's checks module does, at import)."""
    for ex in exercises:
        if ex.name in EXERCISES and EXERCISES[ex.name] is not ex:
            raise ValueError(f"an exercise named {ex.name!r} is already registered")
        EXERCISES[ex.name] = ex


def all_exercises() -> List[Exercise]:
    """Every registered exercise, in chapter order."""
    # importing a module registers its exercises
    from . import (attention, cas_vit, convnext, cost, hire_mlp, hiri_vit,  # noqa: F401
                   pvt_v2, train)

    return sorted(EXERCISES.values(), key=lambda e: (e.chapter, e.number, e.name))


class CheckFailed(AssertionError):
    """A check found a difference; the message says what differs and, where a known
    mistake explains it, which mistake."""


class StudentFileError(ValueError):
    """A student's file cannot be graded: missing, a folder, not Python, or it fails
    (or exits) while it is imported; the message says which, in one line."""


def assert_close(got: torch.Tensor, want: torch.Tensor, what: str, atol: float = ATOL,
                 mistakes: Optional[Mapping[str, torch.Tensor]] = None) -> None:
    """Assert equal shapes and a max abs difference below ``atol``.

    ``mistakes`` maps a description of a typical mistake ("no 1/sqrt(d) scaling") to the
    output that mistake gives on the same input; when ``got`` matches one of them, the
    message names it.
    """
    if not isinstance(got, torch.Tensor):
        raise CheckFailed(f"{what}: expected a tensor, got {type(got).__name__}")
    if got.shape != want.shape:
        raise CheckFailed(f"{what}: shape {tuple(got.shape)}, expected {tuple(want.shape)}")
    err = (got.detach().float() - want.float()).abs().max().item()
    if err < atol:
        return
    matches = [m for m, wrong in (mistakes or {}).items()
               if wrong.shape == got.shape
               and (got.detach().float() - wrong.float()).abs().max() < atol]
    if matches:
        raise CheckFailed(f"{what} differs (max abs difference {err:.2e}), and matches "
                          f"what you get with {' or with '.join(matches)}")
    raise CheckFailed(f"{what}: max abs difference {err:.2e} exceeds {atol:.0e}")


def assert_equal_count(got: int, want: int, what: str,
                       mistakes: Optional[Mapping[str, int]] = None) -> None:
    """Assert an exact count (parameters, MACs); name a known mistake whose count ``got`` is."""
    if not isinstance(got, int) or isinstance(got, bool):
        raise CheckFailed(f"{what}: expected an integer, got {type(got).__name__} {got!r}")
    if got == want:
        return
    matches = [m for m, wrong in (mistakes or {}).items() if got == wrong]
    if matches:
        raise CheckFailed(f"{what}: you give {got:,}, the count is {want:,} (difference "
                          f"{got - want:+,}): that is the count with "
                          f"{' or with '.join(matches)}")
    raise CheckFailed(f"{what}: you give {got:,}, the count is {want:,} "
                      f"(difference {got - want:+,})")


def randomize_(module: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
    """Random weights, with norm scales and layer scales near 1, so that every parameter
    matters in a comparison; returns the module in eval mode."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in module.named_parameters():
            noise = torch.randn(p.shape, generator=g)
            near_one = name.endswith("gamma") or (
                p.ndim == 1 and "norm" in name and name.endswith("weight"))
            p.copy_(1 + 0.1 * noise if near_one else 0.1 * noise)
    return module.eval()


def _one_line(e: BaseException) -> str:
    text = str(e).strip().splitlines()
    return f"{type(e).__name__}: {text[0]}" if text else type(e).__name__


def _verdict(ex: Exercise, implementation: Any):
    """(True / False / None, the one-line message) for ``implementation`` of ``ex``."""
    name = ex.name
    try:
        ex.check(implementation)
    except NotImplementedError:
        return None, f"[ ] {name}: not attempted yet (the stub raises NotImplementedError)"
    except AssertionError as e:  # CheckFailed, or an assert of the check
        return False, f"[x] {name}: FAILED: {e}"
    except SystemExit as e:      # the student's code called sys.exit()
        code = "" if e.code is None else repr(e.code)
        return False, (f"[x] {name}: FAILED: your code called sys.exit({code}); "
                       f"return a value instead")
    except Exception as e:  # the student's code raised: report it, do not crash the cell
        return False, f"[x] {name}: FAILED: your code raised {_one_line(e)}"
    return True, f"[v] {name}: passed"


def grade_module(module: Any) -> List[tuple]:
    """Grade every exercise name that ``module`` defines (a module, or the path of a
    ``.py`` file): a list of ``(exercise, verdict, message)``, verdict True (passed),
    False (failed) or None (not attempted), in chapter order.  For grading many
    submissions in a script; nothing is printed."""
    if isinstance(module, (str, os.PathLike)):
        module = _load_file(Path(module))
    return [(ex, *_verdict(ex, getattr(module, ex.name)))
            for ex in all_exercises() if hasattr(module, ex.name)]


def grade(name: str, implementation: Any, quiet: bool = False) -> Optional[bool]:
    """Check ``implementation`` against exercise ``name`` and print a verdict a student
    can act on.

    Returns True (passed), False (failed: the message says what differs, or the
    exception your code raised, in one line) or None (the stub still raises
    ``NotImplementedError``).
    """
    exercises = {e.name: e for e in all_exercises()}
    if name not in exercises:
        raise ValueError(f"no exercise named {name!r}; the exercises are "
                         f"{', '.join(sorted(exercises))}")
    verdict, message = _verdict(exercises[name], implementation)
    if not quiet:
        from hirilib.book import fit

        print(fit(message))  # wrapped to the page's width
    return verdict


# ----------------------------------------------------------------------------- student modules


def student_module():
    """The module named by ``HIRILIB_STUDENT`` (a file path or module name), or None."""
    target = os.environ.get("HIRILIB_STUDENT", "").strip()
    if not target:
        return None
    if target.endswith(".py") or os.sep in target or Path(target).expanduser().exists():
        return _load_file(Path(target), "HIRILIB_STUDENT")
    try:
        return importlib.import_module(target)
    except ImportError as e:
        raise StudentFileError(f"HIRILIB_STUDENT={target}: no such file or module "
                               f"({_one_line(e)}); give the path of your .py file") from None


def _load_file(path: Path, what: str = "grade_module"):
    """The module in the file ``path``, imported once; a ``StudentFileError`` in one
    line when it cannot be (missing, a folder, a syntax error, an exception or
    ``sys.exit()`` while it is imported)."""
    path = Path(path).expanduser().resolve()
    if path.is_dir():
        py = sorted(p.name for p in path.glob("*.py"))[:5]
        hint = f" (it holds {', '.join(py)})" if py else ""
        raise StudentFileError(f"{what}: {path} is a folder{hint}; give the path of one "
                               f".py file")
    if not path.is_file():
        raise StudentFileError(f"{what}: {path} does not exist; give the path of your "
                               f".py file")
    if path.suffix != ".py":
        raise StudentFileError(f"{what}: {path} is not a .py file")
    name = f"hirilib_student_{path.stem}"
    if name in sys.modules and getattr(sys.modules[name], "__file__", None) == str(path):
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, path)
    mod = importlib.util.module_from_spec(spec)
    sys.modules[name] = mod
    try:
        spec.loader.exec_module(mod)
    except SyntaxError as e:
        del sys.modules[name]
        raise StudentFileError(f"{what}: {path.name} line {e.lineno}: {e.msg} (a syntax "
                               f"error: the file does not run)") from None
    except SystemExit as e:
        del sys.modules[name]
        code = "" if e.code is None else repr(e.code)
        raise StudentFileError(f"{what}: {path.name} calls sys.exit({code}) when it "
                               f"is imported; put that call under "
                               f"`if __name__ == \"__main__\":`") from None
    except BaseException as e:   # KeyboardInterrupt goes on; anything else is theirs
        del sys.modules[name]
        if isinstance(e, KeyboardInterrupt):
            raise
        raise StudentFileError(f"{what}: {path.name} raised {_one_line(e)} when it is "
                               f"imported{_where(e, path)}") from None
    return mod


def _where(e: BaseException, path: Path) -> str:
    """`` (line N)``: the last line of ``path`` in the traceback of ``e``."""
    import traceback

    lines = [f.lineno for f in traceback.extract_tb(e.__traceback__)
             if Path(f.filename).resolve() == path]
    return f" (line {lines[-1]})" if lines else ""


def implementation(name: str) -> Any:
    """The student's ``name`` if ``HIRILIB_STUDENT``'s module defines it, else hirilib's."""
    mod = student_module()
    if mod is not None and hasattr(mod, name):
        return getattr(mod, name)
    return {e.name: e for e in all_exercises()}[name].reference()


def sources() -> Dict[str, List[str]]:
    """Which exercise names come from the student's module and which from hirilib."""
    mod = student_module()
    names = [e.name for e in all_exercises()]
    mine = [n for n in names if mod is not None and hasattr(mod, n)]
    return {"student": mine, "hirilib": [n for n in names if n not in mine]}
