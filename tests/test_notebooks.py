"""Every chapter runs top to bottom in quick mode, and is saved the way the book needs it."""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
CHAPTERS = sorted((ROOT / "chapters").glob("*.ipynb"))
FIRST_CELL = (ROOT / "tests" / "first_cell.ipy").read_text().strip()


def _cells(path: Path):
    return json.loads(path.read_text())["cells"]


def test_there_are_chapters():
    assert CHAPTERS, "no notebooks in chapters/"


@pytest.mark.parametrize("nb", CHAPTERS, ids=lambda p: p.name)
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


@pytest.mark.notebook
@pytest.mark.parametrize("nb", CHAPTERS, ids=lambda p: p.name)
def test_chapter_runs_in_quick_mode(nb, monkeypatch):
    """Execute the notebook as the book build does (kernel in chapters/, quick mode)."""
    import nbformat
    from nbclient import NotebookClient

    monkeypatch.setenv("HIRILIB_QUICK", "1")
    monkeypatch.setenv("MPLBACKEND", "Agg")
    notebook = nbformat.read(nb, as_version=4)
    client = NotebookClient(notebook, timeout=600, kernel_name="python3",
                            resources={"metadata": {"path": str(nb.parent)}})
    client.execute()  # raises CellExecutionError, with the cell and traceback, on failure
