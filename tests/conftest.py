"""Test-suite settings and fixtures shared by the files in tests/.

Fixtures shared by the data and training tests: a small image-classification set the
tests make themselves, written as Parquet in the Hugging Face Hub's schema (an ``Image``
column and a ``ClassLabel`` column), and a model small enough to train in seconds."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]

#: four colours a network tells apart in a few steps
COLOURS = [(200, 40, 40), (40, 180, 60), (50, 70, 210), (220, 200, 40)]
CLASSES = ["red", "green", "blue", "yellow"]

#: a PVTv2 small enough to train on a CPU in seconds; no BatchNorm (LayerNorm only)
TINY_MODEL = [
    "--model",
    "pvt_v2_b0",
    "--model-kwargs",
    (
        '{"depths": [1, 1, 1, 1], "embed_dims": [16, 32, 48, 64], '
        '"num_heads": [1, 1, 2, 2], "mlp_ratios": [2, 2, 2, 2]}'
    ),
]
TINY_KWARGS = {
    "depths": [1, 1, 1, 1],
    "embed_dims": [16, 32, 48, 64],
    "num_heads": [1, 1, 2, 2],
    "mlp_ratios": [2, 2, 2, 2],
}


def make_parquet_set(
    folder: Path, n_train: int = 64, n_val: int = 32, size: int = 40, seed: int = 0
) -> Path:
    """``folder/train/*.parquet`` and ``folder/validation/*.parquet``: noisy squares of
    four colours, PNG-encoded, with the Hub's features (written by ``datasets``)."""
    import datasets
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(seed)
    features = datasets.Features(
        {"image": datasets.Image(), "label": datasets.ClassLabel(names=CLASSES)}
    )
    for split, n in (("train", n_train), ("validation", n_val)):
        images, labels = [], []
        for i in range(n):
            c = i % len(COLOURS)
            h, w = size + int(rng.integers(0, 9)), size  # not all square, as on the Hub
            pix = np.array(COLOURS[c], dtype=np.float32) + rng.normal(0, 30, (h, w, 3))
            images.append(Image.fromarray(pix.clip(0, 255).astype(np.uint8)))
            labels.append(c)
        ds = datasets.Dataset.from_dict(
            {"image": images, "label": labels}, features=features
        )
        (folder / split).mkdir(parents=True, exist_ok=True)
        ds.to_parquet(str(folder / split / f"{split}-00000-of-00001.parquet"))
    return folder


@pytest.fixture(scope="session")
def parquet_set(tmp_path_factory) -> Path:
    return make_parquet_set(tmp_path_factory.mktemp("colours"))


@pytest.fixture()
def cache_dir(tmp_path_factory) -> Path:
    """One decoded-image cache for the session (decoding is what the cache saves)."""
    return tmp_path_factory.getbasetemp() / "hirilib-cache"


def subprocess_env() -> dict:
    """The environment for ``python -m hirilib`` in a subprocess: this checkout first,
    one thread (results comparable across processes), no progress bars."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(
        [str(ROOT)] + [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p]
    )
    env.update(
        OMP_NUM_THREADS="1",
        MKL_NUM_THREADS="1",
        PYTHONUNBUFFERED="1",
        HF_HUB_OFFLINE="1",
    )
    return env


PYTHON = sys.executable

def pytest_collection_modifyitems(config, items):
    """Tests that execute the chapters run only when the marker expression names them:
    ``pytest -m notebook`` (every chapter in quick mode, as the book build executes them)
    and ``pytest -m fullmode`` (every chapter's full-mode code paths at small sizes,
    minutes on 2 cores), and ``pytest -m install`` (the chapters in a fresh Colab-like
    environment, a chapter built with warnings as errors).  A plain ``pytest`` stays fast; the book build executes every
    chapter anyway and fails on any error.  The full-mode tests carry both markers: they
    run with ``-m fullmode`` (and not with ``-m notebook``, which is quick mode only)."""
    selected = config.getoption("-m") or ""
    reasons = {"notebook": "the book build executes the chapters; pytest -m notebook",
               "fullmode": "full mode at small sizes takes minutes: pytest -m fullmode",
               "install": "a fresh environment or a -W build takes minutes: pytest -m install"}
    for item in items:
        gate = ("fullmode" if "fullmode" in item.keywords
                else "notebook" if "notebook" in item.keywords
                else "install" if "install" in item.keywords else None)
        if gate is not None and gate not in selected:
            item.add_marker(pytest.mark.skip(reason=reasons[gate]))
