"""What the chapters use besides the models: ``glue`` (numbers from code into prose),
``show_source`` (the package's code on the page) and ``plot`` (one figure style).

``glue(name, value)`` stores a number computed in a chapter so that the prose
can quote it with ``{glue:text}`name``` (myst-nb): the text then cannot drift
from the code.  Outside a book build (Colab, Jupyter) myst-nb may be absent,
and the call does nothing.
"""

from __future__ import annotations

from typing import Any


def glue(name: str, value: Any, display: bool = False) -> None:
    """Store ``value`` under ``name`` for the book's prose (shown nowhere else)."""
    try:
        from myst_nb import glue as _glue
    except ImportError:
        return
    _glue(name, value, display=display)


def show_source(obj: Any) -> Any:
    """Display the source of a ``hirilib`` function or class in a notebook.

    The chapters teach the code a reader can ``import``; this shows exactly
    that code, so the page and the package cannot disagree.
    """
    import inspect

    src = inspect.getsource(obj)
    try:
        from IPython.display import Markdown
    except ImportError:  # pragma: no cover
        print(src)
        return None
    return Markdown(f"```python\n{src}```")
