"""What the chapters use besides the models: ``glue`` (numbers from code into prose),
``show_source`` (the package's code on the page), ``show_error`` (an expected error in
one line), ``table`` (a real table), ``import_timm`` (timm's model code, for
comparisons) and ``plot`` (one figure style).

``glue(name, value)`` stores a number computed in a chapter so that the prose
can quote it with ``{glue:text}`name``` (myst-nb), and a phrase (a string) so that
the prose can quote it with ``{glue:md}`name```: the text then cannot drift from the
code.  Outside a book build (Colab, Jupyter) myst-nb may be absent, and the call
does nothing.

Progress bars are tqdm's (``from tqdm.auto import tqdm``): a widget where ipywidgets
is installed, otherwise a text bar on standard error, which a chapter's cell keeps off
the page with the tag ``remove-stderr`` (``CONTRIBUTING.md``).
"""

from __future__ import annotations

from typing import Any


def glue(name: str, value: Any, display: bool = False) -> None:
    """Store ``value`` under ``name`` for the book's prose (shown nowhere else).

    A number is quoted with ``{glue:text}`name:.2f```.  A string is glued as a phrase
    (Markdown): prose whose wording depends on a measurement is chosen by the code, and
    quoted with ``{glue:md}`name``` so that it reads as prose (``glue:text`` would show it
    in bold, as it shows numbers).
    """
    try:
        from myst_nb import glue as _glue
    except ImportError:
        return
    if isinstance(value, str):
        from IPython.display import Markdown

        value = Markdown(value)
    _glue(name, value, display=display)


#: The width of the book's code column: longer lines are cut off on the page.
PAGE_COLUMNS = 88


def fit(text: str, width: int = PAGE_COLUMNS) -> str:
    """``text`` with every line longer than ``width`` wrapped, continuation lines indented
    by four spaces more than the line they continue: printed output that fits the page.

    >>> print(fit("ValueError: " + "a long message " * 7, width=40))
    ValueError: a long message a long
        message a long message a long
        message a long message a long
        message a long message
    """
    import textwrap

    out = []
    for line in text.splitlines():
        if len(line) <= width:
            out.append(line)
            continue
        indent = line[:len(line) - len(line.lstrip())]
        out.extend(textwrap.wrap(line, width, initial_indent="", subsequent_indent=indent + "    ",
                                 break_long_words=True, break_on_hyphens=False,
                                 drop_whitespace=True) or [line])
    return "\n".join(out)


def show_source(obj: Any) -> Any:
    """Display the source of a ``hirilib`` function or class in a notebook.

    The chapters teach the code a reader can ``import``; this shows exactly
    that code, so the page and the package cannot disagree.  A line wider than
    the page (``PAGE_COLUMNS``) would be cut off there, so it is refused: a
    ``ValueError`` naming the file and line, which fails the book's build.
    """
    import inspect
    import textwrap

    src = inspect.getsource(obj)
    wide = [(i, line) for i, line in enumerate(src.splitlines()) if len(line) > PAGE_COLUMNS]
    if wide:
        import os

        _, start = inspect.getsourcelines(obj)
        where = inspect.getsourcefile(obj)
        package = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
        if os.path.abspath(where).startswith(package):  # hirilib/..., not a full path
            where = os.path.relpath(where, os.path.dirname(package))
        i, line = wide[0]
        raise ValueError(f"{where}:{start + i}: {len(line)} columns, wider than the page's "
                         f"{PAGE_COLUMNS} ({len(wide)} such line(s) in "
                         f"{getattr(obj, '__qualname__', obj)}): {line.strip()[:60]}")
    src = textwrap.dedent(src)  # a method is shown from its "def", at the left margin
    try:
        from IPython.display import Markdown
    except ImportError:  # pragma: no cover
        print(src)
        return None
    return Markdown(f"```python\n{src}```")


def show_error(fn, *args, **kwargs) -> None:
    """Call ``fn(*args, **kwargs)``, which is expected to raise, and print the error as a
    reader should see it: its type and message, one line, no traceback through library
    internals, wrapped to the page's width.  If nothing is raised, that is a bug in the
    page: ``AssertionError``.

    >>> show_error(int, "twelve")
    ValueError: invalid literal for int() with base 10: 'twelve'
    """
    try:
        fn(*args, **kwargs)
    except Exception as e:  # the lesson: what the user sees
        print(fit(f"{type(e).__name__}: {e}"))
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

    def cell(tag, v, a):   # padded, so that columns never run into each other
        style = f"text-align:{css[a]}; padding:0.2em 0.5em"
        return f'<{tag} style="{style}">{html.escape(str(v))}</{tag}>'

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


# ----------------------------------------------------------------------------- timm


def import_timm():
    """Import timm, for comparing our models with its implementations.

    timm's model code does not use torchvision, but ``import timm`` imports
    torchvision's transforms (for its data pipeline).  Where torchvision is
    missing or cannot be imported (a CPU build of torch with no matching
    torchvision, say), an inert stand-in for ``torchvision`` is put in front of
    the import system for the duration of the import, so the models can still
    be built.  Raises ``ImportError`` (saying how to install it) when timm is
    not installed.  Nothing else in ``hirilib`` depends on timm or torchvision.
    """
    import importlib
    import importlib.util
    import sys

    if "timm" in sys.modules:
        return sys.modules["timm"]
    if importlib.util.find_spec("timm") is None:
        raise ImportError("timm is not installed: pip install timm")
    try:
        import torchvision  # noqa: F401
        return importlib.import_module("timm")
    except Exception:
        for name in [m for m in sys.modules if m.split(".")[0] in ("timm", "torchvision")]:
            del sys.modules[name]
    finder = _inert_torchvision_finder()
    sys.meta_path.insert(0, finder)
    try:
        return importlib.import_module("timm")
    finally:
        sys.meta_path.remove(finder)


def _inert_torchvision_finder():
    import importlib.abc
    import importlib.machinery
    from unittest import mock

    class Finder(importlib.abc.MetaPathFinder, importlib.abc.Loader):
        """Answers every ``torchvision`` import with an inert module."""

        def find_spec(self, name, path, target=None):
            if name == "torchvision" or name.startswith("torchvision."):
                return importlib.machinery.ModuleSpec(name, self, is_package=True)
            return None

        def create_module(self, spec):
            module = mock.MagicMock(name=spec.name)
            module.__path__, module.__spec__, module.__name__ = [], spec, spec.name
            return module

        def exec_module(self, module):
            pass

    return Finder()

