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


def show_error(fn, *args, **kwargs) -> None:
    """Call ``fn(*args, **kwargs)``, which is expected to raise, and print the error as a
    reader should see it: its type and message, one line, no traceback through library
    internals.  If nothing is raised, that is a bug in the page: ``AssertionError``.

    >>> show_error(int, "twelve")
    ValueError: invalid literal for int() with base 10: 'twelve'
    """
    try:
        fn(*args, **kwargs)
    except Exception as e:  # the lesson: what the user sees
        print(f"{type(e).__name__}: {e}")
        return
    raise AssertionError(f"{getattr(fn, '__name__', fn)} was expected to raise, and did not")


def table(rows, header, align=None, caption=None):
    """A table for a notebook page: ``rows`` (sequences of cells, already formatted as
    strings or numbers) under ``header``.  Returns an HTML object that renders as a real
    table in Jupyter, on Colab and in the book (Markdown shown from code is parsed as
    CommonMark there, which has no tables), and prints as aligned text elsewhere.

    ``align`` is a string of 'l' / 'r' / 'c' per column (default: numbers right).
    """
    import html

    rows = [list(r) for r in rows]
    if align is None:
        align = "".join("r" if rows and isinstance(rows[0][i], (int, float)) else "l"
                        for i in range(len(header)))
    css = {"l": "left", "r": "right", "c": "center"}

    def cell(tag, v, a):
        return (f'<{tag} style="text-align:{css[a]}; padding:0.2em 0.6em">'
                f'{html.escape(str(v))}</{tag}>')

    parts = ['<table class="hirilib-table">']
    if caption:
        parts.append(f"<caption>{html.escape(caption)}</caption>")
    parts.append("<thead><tr>" + "".join(cell("th", h, a) for h, a in zip(header, align))
                 + "</tr></thead><tbody>")
    for r in rows:
        parts.append("<tr>" + "".join(cell("td", v, a) for v, a in zip(r, align)) + "</tr>")
    parts.append("</tbody></table>")
    markup = "".join(parts)
    text = "\n".join("  ".join(str(v) for v in r) for r in [header] + rows)
    try:
        from IPython.display import HTML
    except ImportError:  # pragma: no cover
        return text

    class _Table(HTML):
        def __repr__(self):
            return text

    return _Table(markup)
