"""Every chapter runs top to bottom in quick mode and in full mode at small sizes, and is
saved the way the book needs it."""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
CHAPTERS = sorted((ROOT / "chapters").glob("*.ipynb"))
#: every notebook the book executes: the chapters and the book's own notebook pages
NOTEBOOKS = CHAPTERS + sorted((ROOT / "book").glob("*.ipynb"))
#: the width of the book's code column; longer lines are cut off on the page
PAGE_COLUMNS = 88
FIRST_CELL = (ROOT / "tests" / "first_cell.ipy").read_text().strip()


def _cells(path: Path):
    return json.loads(path.read_text())["cells"]


def test_there_are_chapters():
    assert CHAPTERS, "no notebooks in chapters/"


@pytest.mark.parametrize("nb", NOTEBOOKS, ids=lambda p: p.name)
def test_saved_without_outputs(nb):
    for i, c in enumerate(_cells(nb)):
        if c["cell_type"] == "code":
            assert not c.get("outputs") and c.get("execution_count") is None, (
                f"{nb.name} cell {i} has stored outputs: clear them before committing")


@pytest.mark.parametrize("nb", CHAPTERS, ids=lambda p: p.name)
def test_first_code_cell_is_the_standard_install_cell(nb):
    code = [c for c in _cells(nb) if c["cell_type"] == "code"]
    assert "".join(code[0]["source"]).strip() == FIRST_CELL, (
        f"{nb.name}: the first code cell must be tests/first_cell.ipy")
    assert "hirilib.setup(" in "".join(code[1]["source"])


def test_install_cell_points_at_the_configured_repository():
    config = (ROOT / "_config.yml").read_text()
    url = re.search(r"repository:\s*\n\s*url:\s*(\S+)", config).group(1)
    assert f"git+{url}" in FIRST_CELL, "the install cell and _config.yml name different repositories"


@pytest.mark.parametrize("nb", CHAPTERS, ids=lambda p: p.name)
def test_no_cell_reinstalls_torch_or_pins(nb):
    for c in _cells(nb):
        src = "".join(c["source"])
        for line in src.splitlines():
            if re.search(r"(pip|conda)\s+install", line):
                assert not re.search(r"\btorch\b|numpy==|==", line), f"{nb.name}: {line.strip()}"


@pytest.mark.parametrize("nb", CHAPTERS, ids=lambda p: p.name)
def test_chapter_is_in_the_table_of_contents(nb):
    toc = (ROOT / "book" / "_toc.yml").read_text()
    assert f"chapters/{nb.stem}" in toc, f"{nb.name} is not listed in book/_toc.yml"


@pytest.mark.parametrize("nb", NOTEBOOKS, ids=lambda p: p.name)
def test_code_fits_the_page(nb):
    """Every line of every code cell fits the book's column: longer ones are cut off."""
    wide = [(i, line) for i, c in enumerate(_cells(nb)) if c["cell_type"] == "code"
            for line in "".join(c["source"]).splitlines() if len(line) > PAGE_COLUMNS]
    assert not wide, "\n".join(f"{nb.name} cell {i}: {len(line)} columns: {line}"
                               for i, line in wide)


@pytest.mark.parametrize("nb", NOTEBOOKS, ids=lambda p: p.name)
def test_progress_bars_stay_off_the_page(nb):
    """A cell that shows a progress bar is tagged ``remove-stderr``: the bar is for
    whoever runs the notebook, and the book would otherwise print every state it went
    through (or fail the build on stderr).  Every bar of the book is tqdm's, on standard
    error (``from tqdm.auto import tqdm``, or a ``hirilib`` function's ``progress=True``);
    a bar on standard output would be printed on the page, whatever the tag."""
    for i, c in enumerate(_cells(nb)):
        src = "".join(c["source"])
        if c["cell_type"] != "code":
            continue
        if re.search(r"\b(tqdm|trange)\(|progress=True", src):
            assert "remove-stderr" in c.get("metadata", {}).get("tags", []), (
                f"{nb.name} cell {i} shows a progress bar: tag it remove-stderr")
        assert not re.search(r"file\s*=\s*sys\.stdout", src), (
            f"{nb.name} cell {i} draws a progress bar on stdout: it would be on the page")


@pytest.mark.parametrize("nb", NOTEBOOKS, ids=lambda p: p.name)
def test_every_table_is_shown(nb):
    """``hirilib.book.table`` returns the table; Jupyter shows only a cell's last value,
    so a table built anywhere else in a cell (and not passed to ``display``) is lost."""
    import ast

    for i, c in enumerate(_cells(nb)):
        if c["cell_type"] != "code":
            continue
        src = "".join(c["source"])
        body = "\n".join(line for line in src.splitlines()
                         if not line.lstrip().startswith(("%", "!")))
        try:
            tree = ast.parse(body)
        except SyntaxError:
            continue
        lost = [s for s in tree.body[:-1] if isinstance(s, ast.Expr)
                and isinstance(s.value, ast.Call)
                and getattr(s.value.func, "id", "") == "table"]
        assert not lost, (f"{nb.name} cell {i}: table(...) on line {lost[0].lineno} is not "
                          "the cell's last expression; it is never shown (use display())")


@pytest.mark.parametrize("nb", CHAPTERS, ids=lambda p: p.name)
def test_exercises_are_the_registered_ones(nb):
    """Each chapter grades exactly the exercises registered for it, in their order, each
    after its stub: the instructors' page lists the registry, the students read this."""
    from hirilib.checks import all_exercises

    chapter = int(nb.name[:2])
    registered = [ex.name for ex in all_exercises() if ex.chapter == chapter]
    graded = [m.group(1) for c in _cells(nb) if c["cell_type"] == "code"
              for m in re.finditer(r'^grade\("(\w+)", (\w+)\)', "".join(c["source"]), re.M)
              if m.group(1) == m.group(2)]
    assert graded == registered, f"{nb.name} grades {graded}; registered: {registered}"


def _execute(nb: Path) -> None:
    """Execute the notebook as the book build does (kernel in the notebook's folder)."""
    import nbformat
    from nbclient import NotebookClient

    notebook = nbformat.read(nb, as_version=4)
    client = NotebookClient(notebook, timeout=600, kernel_name="python3",
                            resources={"metadata": {"path": str(nb.parent)}})
    client.execute()  # raises CellExecutionError, with the cell and traceback, on failure


@pytest.mark.notebook
@pytest.mark.parametrize("nb", NOTEBOOKS, ids=lambda p: p.name)
def test_chapter_runs_in_quick_mode(nb, monkeypatch):
    """Quick mode, as the book build runs every page on a CPU."""
    monkeypatch.setenv("HIRILIB_QUICK", "1")
    monkeypatch.delenv("HIRILIB_SMALL", raising=False)
    _execute(nb)


@pytest.mark.notebook
@pytest.mark.fullmode
@pytest.mark.parametrize("nb", CHAPTERS, ids=lambda p: p.name)
def test_chapter_runs_in_full_mode_at_small_sizes(nb, monkeypatch):
    """Full mode's code paths (what a Colab reader with a GPU runs), at quick mode's sizes
    (``hirilib.choose``), on this machine's CPU: so that a reader is never the first to run
    them.  Minutes on 2 cores, so only run when asked: ``pytest -m fullmode``."""
    monkeypatch.setenv("HIRILIB_QUICK", "0")
    monkeypatch.setenv("HIRILIB_SMALL", "1")
    _execute(nb)
