"""The helpers the chapters use to put code, errors, tables and comparisons on the page
(``hirilib.book``), and the plot style's page-width rule."""

from __future__ import annotations

import importlib.util
import re
import sys

import pytest

from hirilib.book import PAGE_COLUMNS, fit, import_timm, show_error, show_source, table


def _module_with(tmp_path, name, source):
    path = tmp_path / f"{name}.py"
    path.write_text(source)
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def test_show_source_refuses_code_wider_than_the_page(tmp_path):
    long_line = "    return " + " + ".join(["value"] * 14)
    assert len(long_line) > PAGE_COLUMNS
    mod = _module_with(tmp_path, "wide_code", f"def f(value):\n{long_line}\n")
    with pytest.raises(ValueError, match=r"wide_code\.py:2: \d+ columns, wider than"):
        show_source(mod.f)


def test_show_source_shows_a_method_from_the_left_margin(tmp_path):
    mod = _module_with(tmp_path, "narrow_code",
                       "class A:\n    def f(self):\n        return 1\n")
    shown = show_source(mod.A.f)
    text = getattr(shown, "data", shown)
    assert "```python\ndef f(self):\n    return 1\n```" in text


def test_show_error_prints_one_wrapped_line_and_insists_on_an_error(capsys):
    def fails():
        raise ValueError("a long explanation of what went wrong " * 4)

    show_error(fails)
    out = capsys.readouterr().out
    assert out.startswith("ValueError: a long explanation")
    assert "Traceback" not in out
    assert all(len(line) <= PAGE_COLUMNS for line in out.splitlines())
    with pytest.raises(AssertionError, match="expected to raise"):
        show_error(lambda: None)


def test_fit_wraps_long_lines_with_a_hanging_indent():
    text = "short\n  " + "word " * 30
    lines = fit(text, width=40).splitlines()
    assert lines[0] == "short"
    assert all(len(line) <= 40 for line in lines)
    assert lines[1].startswith("  word") and lines[2].startswith("      word")


def test_table_is_html_for_the_page_and_text_elsewhere():
    t = table([("B0", 3.67), ("B1", 14.01)], ["model", "params (M)"])
    html = t.data
    assert html.startswith('<table class="hirilib-table">') and "<th" in html
    assert re.search(r'text-align:right;[^"]*">3\.67<', html)  # numbers right-aligned
    assert re.search(r'<td style="[^"]*padding', html)  # columns never run together
    assert "|" not in html                             # no Markdown table syntax
    assert repr(t).splitlines()[0] == "model  params (M)"


def test_import_timm_without_torchvision():
    if importlib.util.find_spec("timm") is None:
        with pytest.raises(ImportError, match="pip install --no-deps timm"):
            import_timm()
        return
    timm = import_timm()
    assert hasattr(timm, "create_model")


def test_figures_never_exceed_the_page_width():
    import matplotlib

    matplotlib.use("Agg")
    from hirilib.book import plot as hplot

    fig, axes = hplot.subplots(1, 5, width=3.0, height=2.0)
    w, h = fig.get_size_inches()
    assert w == pytest.approx(hplot.MAX_WIDTH) and h == pytest.approx(2.0 * 7.5 / 15.0)
    fig, ax = hplot.subplots(width=5.0, height=3.0)
    assert tuple(fig.get_size_inches()) == pytest.approx((5.0, 3.0))


def test_lines_past_the_palette_do_not_repeat_a_style():
    """Chapter 7 draws ten models on one axis: the ninth and tenth must not look like the
    first and second (same colour and marker), and an ``ls=`` given by a chapter wins."""
    import matplotlib

    matplotlib.use("Agg")
    from hirilib.book import plot as hplot

    styles = [tuple(hplot.line_style(i).values()) for i in range(16)]
    assert len(set(styles)) == 16
    fig, ax = hplot.subplots()
    hplot.line(ax, [1, 2], [1, 2], "dashed on request", 0, ls=":")
    assert ax.lines[0].get_linestyle() == ":"
