"""Where the images come from: Imagenette on the Hugging Face Hub (its parquet
export), a folder of local Parquet files in the Hub's schema, or synthetic pixels; and
the one-line errors when none can be read."""

from __future__ import annotations

import glob
import hashlib
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Optional, Tuple

#: The Hub copy: repository, the parquet export's revision, and its configs.
HUB_REPO = "frgfm/imagenette"
HUB_REVISION = "refs/convert/parquet"
HUB_CONFIGS = ("160px", "320px")
SPLITS = ("train", "validation")
#: The columns a Parquet file must have (the Hub's schema).
COLUMNS = ("image", "label")


class DataError(ValueError):
    """A data argument that cannot work (a missing folder, no Parquet files, a bad
    subset, a damaged image): said in one line before any work."""


class DataUnavailable(OSError):
    """The Hub cannot be reached (or the download failed) and no local copy is named."""


@dataclass(frozen=True)
class Source:
    """Where the images come from: ``kind`` 'hub' or 'local', a readable ``name``,
    the files of each split (hf:// URLs or local paths) and ``identity``, the text the
    cache key is made of (the Hub's revision, or each local file's name, size and a
    hash of its content: :func:`file_fingerprint`)."""

    kind: str
    name: str
    files: Dict[str, Tuple[str, ...]]
    identity: str


def hub_source(config: str = "160px") -> Source:
    """Imagenette on the Hub, read from its parquet export.

    >>> hub_source("160px").files["train"]
    ('hf://datasets/frgfm/imagenette@refs%2Fconvert%2Fparquet/160px/train/*.parquet',)
    """
    if config not in HUB_CONFIGS:
        raise DataError(
            f"Imagenette on the Hub comes as {' or '.join(HUB_CONFIGS)}, not {config!r}"
        )
    rev = HUB_REVISION.replace("/", "%2F")  # a revision with slashes is URL-encoded
    base = f"hf://datasets/{HUB_REPO}@{rev}/{config}"
    files = {s: (f"{base}/{s}/*.parquet",) for s in SPLITS}
    return Source(
        "hub",
        f"{HUB_REPO} ({config}, parquet export)",
        files,
        f"hub:{HUB_REPO}@{HUB_REVISION}/{config}",
    )


def file_fingerprint(path: str | os.PathLike, sample: int = 1 << 20) -> str:
    """A file's size and the SHA-256 of its first, middle and last ``sample`` bytes:
    what the cache is keyed on, so that a changed file (even with its size and time
    kept) is decoded again, while a 1 GB folder is fingerprinted in milliseconds."""
    size = os.path.getsize(path)
    h = hashlib.sha256(str(size).encode())
    with open(path, "rb") as f:
        middle, end = max(0, size // 2 - sample // 2), max(0, size - sample)
        for start in sorted({0, middle, end}):
            f.seek(start)
            h.update(f.read(sample))
    return f"{size}:{h.hexdigest()[:16]}"


def _split_files(folder: Path, split: str) -> List[str]:
    for pattern in (f"{split}/*.parquet", f"{split}-*.parquet", f"*{split}*.parquet"):
        files = sorted(glob.glob(str(folder / pattern)))
        if files:
            return files
    return []


def local_source(path: str | os.PathLike) -> Source:
    """Parquet files in the Hub's layout under ``path``: ``train/*.parquet`` and
    ``validation/*.parquet`` (or ``train-*.parquet`` ... beside each other)."""
    folder = Path(path).expanduser()
    if not folder.exists():
        raise DataError(
            f"--data {path}: no such folder; give a folder with "
            "train/*.parquet and validation/*.parquet, or 'imagenette' for "
            "the Hub's copy"
        )
    if not folder.is_dir():
        raise DataError(
            f"--data {path} is a file; give the folder that holds "
            "train/*.parquet and validation/*.parquet"
        )
    files = {s: tuple(_split_files(folder, s)) for s in SPLITS}
    missing = [s for s in SPLITS if not files[s]]
    if missing:
        raise DataError(
            f"--data {path} has no Parquet files for {' and '.join(missing)} "
            f"(expected {folder / missing[0]}/*.parquet, in the Hub's schema: "
            "an 'image' and a 'label' column)"
        )
    parts = [
        f"{s}/{Path(f).name}:{file_fingerprint(f)}" for s in SPLITS for f in files[s]
    ]
    return Source("local", str(folder), files, "local:" + "|".join(parts))


#: Imagenette's split sizes, which ``'synthetic'`` data copy
SYNTHETIC_SIZES = {"train": 9469, "validation": 3925}


def resolve_source(data: str) -> Source:
    """``'imagenette'`` (the Hub, 160 px), ``'imagenette:320px'``, ``'synthetic'``
    (random pixels in Imagenette's numbers, for benchmarks), or a local folder."""
    if data == "imagenette" or data.startswith("imagenette:"):
        return hub_source(data.partition(":")[2] or "160px")
    if data == "synthetic":
        return Source("synthetic", "synthetic (random pixels)", {}, "synthetic")
    return local_source(data)


def find_imagenette() -> Optional[Path]:
    """A local copy of Imagenette in the Hub's schema, if this machine has one:
    ``$HIRILIB_IMAGENETTE``, else ``data/imagenette-128`` or ``../shared/data/
    imagenette-128`` beside the repository (the book's own checkout), else None."""
    root = Path(__file__).resolve().parents[1]
    candidates = [
        os.environ.get("HIRILIB_IMAGENETTE"),
        root / "data" / "imagenette-128",
        root.parent / "shared" / "data" / "imagenette-128",
    ]
    for c in candidates:
        if c and (Path(c) / "train").is_dir() and (Path(c) / "validation").is_dir():
            return Path(c)
    return None


def hub_unreachable_message(source: Source, why: str, reachable: bool = False) -> str:
    """What to do when the Hub cannot be reached (or the download failed): one
    paragraph, one line."""
    config = source.identity.rsplit("/", 1)[-1]
    what = ("the download from the Hugging Face Hub failed" if reachable else
            "the Hugging Face Hub is unreachable from this machine")
    return (
        f"cannot load {source.name}: {what} ({why}) and no cached copy exists. "
        "Point --data at a folder of "
        "Parquet files in the Hub's schema instead (train/*.parquet and "
        "validation/*.parquet with 'image' and 'label' columns), for example the "
        f"{config}/ folder of https://huggingface.co/datasets/{HUB_REPO}/tree/"
        "refs%2Fconvert%2Fparquet downloaded on a machine with internet access"
    )
