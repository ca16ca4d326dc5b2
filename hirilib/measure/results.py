"""The results-file format: measured records, with where, when and how they were measured.

A results file (``hirilib/results/<suite>.json``, package data, so that a pip-installed
hirilib, on Colab say, has the files the chapters plot) holds the records of one benchmark
suite plus the device, the driver, versions, date, settings and the command that
wrote it; chapters plot from it and say which device and day it comes from
(``describe``).  Files are written atomically (a unique temporary file, flushed and
synced, then renamed; removed if anything fails), and a CPU run never replaces a
file measured on a GPU unless asked to.
"""

from __future__ import annotations

import datetime as _dt
import json
import os
import platform
import subprocess
import sys
from pathlib import Path
from typing import Any, Dict, List, Optional

import torch

from hirilib.atomic import atomic_write_text

from .timing import device_name

RESULTS_FORMAT = 1
REQUIRED_FIELDS = ("format", "device", "device_type", "torch", "date", "command", "records")


class ResultsError(ValueError):
    """A results file that is not one, or a write that would lose a GPU measurement."""


def _driver_version() -> Optional[str]:
    """The NVIDIA driver's version (``nvidia-smi``), or None."""
    try:
        out = subprocess.run(["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
                             capture_output=True, text=True, timeout=10)
        return out.stdout.strip().splitlines()[0] if out.returncode == 0 and out.stdout else None
    except (OSError, subprocess.SubprocessError, IndexError):
        return None


def environment(device: str | torch.device | None = None) -> Dict[str, Any]:
    """Device, driver, versions and date, stored beside every measured figure."""
    import hirilib

    device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    cuda = device.type == "cuda"
    return {
        "device": device_name(device),
        "device_type": device.type,
        "driver": _driver_version() if cuda else None,
        "torch": torch.__version__,
        "cuda": torch.version.cuda if cuda else None,
        "python": platform.python_version(),
        "hirilib": hirilib.__version__,
        "platform": platform.platform(),
        "date": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
    }


def check_overwrite(path: str | os.PathLike, device_type: str, force: bool = False) -> None:
    """Raise ``ResultsError`` if writing a ``device_type`` run to ``path`` would replace
    a file measured on a GPU with one measured on a CPU (unless ``force``)."""
    path = Path(path)
    if force or device_type == "cuda" or not path.is_file():
        return
    try:
        old = json.loads(path.read_text())
    except (OSError, ValueError):
        return
    if isinstance(old, dict) and old.get("device_type") == "cuda":
        raise ResultsError(f"{path} holds a GPU measurement ({old.get('device')}, "
                           f"{str(old.get('date', ''))[:10]}); a {device_type.upper()} run will "
                           f"not replace it. Write elsewhere with --out, or pass --force")


def save_results(path: str | os.PathLike, records: List[Dict[str, Any]],
                 settings: Optional[Dict[str, Any]] = None, command: Optional[str] = None,
                 device: str | torch.device | None = None, force: bool = False) -> Path:
    """Write a results file: the records plus device, driver, versions, date and command.

    ``device`` is where the records were measured (default: the GPU if there is one).
    A CPU run does not replace a GPU file unless ``force`` (``ResultsError``).
    """
    env = environment(device)
    check_overwrite(path, env["device_type"], force)
    doc = {"format": RESULTS_FORMAT, **env,
           "command": command if command is not None else " ".join(sys.argv),
           "settings": settings or {}, "records": records}
    return atomic_write_text(path, json.dumps(doc, indent=1, default=float) + "\n")


def load_results(path: str | os.PathLike) -> Dict[str, Any]:
    """Read a results file written by ``save_results`` (checks its fields)."""
    try:
        doc = json.loads(Path(path).read_text())
    except (OSError, ValueError) as e:
        raise ResultsError(f"{path} is not a readable results file ({e})") from None
    missing = [f for f in REQUIRED_FIELDS if not isinstance(doc, dict) or f not in doc]
    if missing:
        raise ResultsError(f"{path} is not a hirilib results file (missing {missing})")
    return doc


def describe(doc: Dict[str, Any]) -> str:
    """One line naming where and when a results file was measured."""
    return (f"measured on {doc['device']}, torch {doc['torch']}, {doc['date'][:10]} "
            f"(`{doc['command']}`)")


#: Where the committed results and run logs live: inside the package (package data), so
#: that they travel with ``pip install hirilib`` and every chapter finds them.
RESULTS_DIR = Path(__file__).resolve().parents[1] / "results"


def default_results_path(suite: str, device_type: str) -> Path:
    """Where the book keeps a suite's results: ``hirilib/results/<suite>.json`` for a GPU
    run, ``hirilib/results/cpu/<suite>.json`` for a CPU run (so neither hides the other)."""
    return RESULTS_DIR / ("cpu" if device_type == "cpu" else "") / f"{suite}.json"


def find_results(name: str, device_type: str = "cuda") -> Optional[Path]:
    """The committed results file of suite ``name`` measured on a GPU
    (``hirilib/results/<name>.json``) or, with ``device_type="cpu"``, on a CPU
    (``hirilib/results/cpu/<name>.json``); None if it has not been measured yet."""
    p = default_results_path(name, device_type)
    return p if p.is_file() else None
