"""What a reader's machine does with the book: the chapters in a fresh Colab-like
environment, installed by their own first cell, and a chapter built with warnings as
errors under the torch a newcomer gets.

Both take minutes (a fresh virtual environment; a Sphinx build), so they run only when
asked: ``pytest -m install`` (CI runs them after the README's two commands).
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
#: what a fresh Colab runtime has that the chapters use (plus a kernel to run them in);
#: everything else must come from the chapters' own first cell
COLAB_PACKAGES = ["torch", "numpy", "matplotlib", "pandas", "tqdm", "ipykernel", "nbclient"]
#: the chapters run there: the first one, and the one that reads the most committed files
COLAB_CHAPTERS = ["01_attention_and_cffn.ipynb", "08_training.ipynb"]

#: ipykernel >= 7 logs this on its own stderr (the terminal, never a page) whenever a kernel
#: talks to its local client over TCP, which is how every notebook runner starts it
KERNEL_NOTICE = re.compile(r"\[IPKernelApp\] WARNING \| Kernel is running over TCP without "
                           r"encryption")

_RUN_NOTEBOOK = textwrap.dedent("""
    import sys
    import nbformat
    from nbclient import NotebookClient

    path, out = sys.argv[1], sys.argv[2]
    nb = nbformat.read(path, as_version=4)
    client = NotebookClient(nb, timeout=900, kernel_name="python3",
                            resources={"metadata": {"path": "."}})
    try:
        client.execute()
    finally:
        nbformat.write(nb, out)
""")


def _clean_env() -> dict:
    """The environment a Colab user has: no PYTHONPATH to this checkout, no venv."""
    env = {k: v for k, v in os.environ.items()
           if k not in ("PYTHONPATH", "VIRTUAL_ENV", "PYTHONHOME")}
    env.update(HIRILIB_QUICK="1", PYTHONUNBUFFERED="1", PIP_DISABLE_PIP_VERSION_CHECK="1",
               HF_HUB_OFFLINE="1", MPLBACKEND="module://matplotlib_inline.backend_inline")
    env.pop("HIRILIB_SMALL", None)
    return env


def _first_cell_url() -> str:
    first = (ROOT / "tests" / "first_cell.ipy").read_text()
    return first.split("git+", 1)[1].split('"', 1)[0]


@pytest.mark.install
def test_chapters_run_top_to_bottom_in_a_colab_like_environment(tmp_path):
    """A fresh environment with only what Colab ships; each chapter's first cell installs
    hirilib (here from this checkout instead of the repository's URL, the only edit) with
    its ``[book]`` extra, and the chapter then runs to the end in quick mode, reading the
    committed results and logs from the installed package.  torch is never reinstalled."""
    venv = tmp_path / "colab"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    py = str(venv / "bin" / "python")
    env = _clean_env()
    subprocess.run([py, "-m", "pip", "install", "-q", *COLAB_PACKAGES], check=True, env=env)

    def torch_version() -> str:
        return subprocess.run([py, "-c", "import torch; print(torch.__version__)"],
                              check=True, capture_output=True, text=True,
                              env=env).stdout.strip()

    before = torch_version()
    runner = tmp_path / "run_notebook.py"
    runner.write_text(_RUN_NOTEBOOK)
    work = tmp_path / "content"  # Colab's working folder: not the checkout
    work.mkdir()
    url = _first_cell_url()
    for name in COLAB_CHAPTERS:
        nb = json.loads((ROOT / "chapters" / name).read_text())
        first = next(c for c in nb["cells"] if c["cell_type"] == "code")
        src = "".join(first["source"])
        assert f"git+{url}" in src
        first["source"] = src.replace(f"git+{url}", ROOT.as_uri())
        (work / name).write_text(json.dumps(nb))
        done = subprocess.run([py, str(runner), name, f"executed_{name}"], cwd=work,
                              env=env, capture_output=True, text=True)
        tail = (done.stdout + done.stderr)[-3000:]
        assert done.returncode == 0, f"{name} stopped in the Colab-like environment:\n{tail}"
    assert torch_version() == before, "installing hirilib[book] replaced torch"


@pytest.mark.install
def test_a_chapter_builds_with_warnings_as_errors(tmp_path):
    """Chapter 1 (with the pages it links to and the bibliography) built with ``-W``: no warning of the newest
    torch, of fvcore or of the build itself reaches the page."""
    toc = tmp_path / "_toc.yml"
    toc.write_text("format: jb-book\nroot: chapters/01_attention_and_cffn\nchapters:\n"
                   "  - file: book/notation\n  - file: book/instructors\n  - file: book/references\n")
    env = {k: v for k, v in os.environ.items() if k != "HIRILIB_SMALL"}
    env["HIRILIB_QUICK"] = "1"
    jb = Path(sys.executable).with_name("jupyter-book")
    done = subprocess.run([str(jb), "build", ".", "--toc", str(toc), "--path-output",
                           str(tmp_path / "out"), "-W", "-n"], cwd=ROOT, env=env,
                          capture_output=True, text=True)
    printed = "\n".join(line for line in (done.stdout + done.stderr).splitlines()
                        if not KERNEL_NOTICE.search(line))
    assert done.returncode == 0 and "WARNING" not in printed, printed[-3000:]
