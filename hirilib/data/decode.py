"""Decoding: each encoded image read from the Parquet files once, resized (shorter
side, then the centre square) into one uint8 tensor per split, on every core."""

from __future__ import annotations

import io
import os
import warnings
from concurrent.futures import ThreadPoolExecutor
from typing import List, Optional

import torch

from .source import COLUMNS, DataError, DataUnavailable, Source


def progress_bar(iterable=None, **kwargs):
    """A tqdm progress bar that suits where the code runs (``tqdm.auto``): the widget
    bar in a notebook with ipywidgets (Colab, Jupyter), otherwise tqdm's text bar on
    standard error, which a book chapter keeps off its page with the cell tag
    ``remove-stderr``.  tqdm's warning about a missing ipywidgets is silenced."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from tqdm.auto import tqdm

        return tqdm(iterable, **kwargs)


def decode_resize(data: bytes, size: int) -> torch.Tensor:
    """One encoded image -> ``(3, size, size)`` uint8: shorter side resized to ``size``
    (antialiased, bicubic), then the centre square."""
    from PIL import Image

    im = Image.open(io.BytesIO(data))
    im.draft("RGB", (size, size))  # JPEG: decode at reduced scale where it can
    im = im.convert("RGB")
    w, h = im.size
    s = size / min(w, h)
    nw, nh = max(size, round(w * s)), max(size, round(h * s))
    if (nw, nh) != (w, h):
        im = im.resize((nw, nh), Image.Resampling.BICUBIC)
    left, top = (nw - size) // 2, (nh - size) // 2
    im = im.crop((left, top, left + size, top + size))
    t = torch.frombuffer(bytearray(im.tobytes()), dtype=torch.uint8)
    return t.view(size, size, 3).permute(2, 0, 1).contiguous()  # (3, size, size)


def subset_indices(n: int, k: Optional[int]) -> List[int]:
    """``k`` indices spread evenly over ``range(n)`` (all of them if ``k`` is None):
    Parquet exports are often sorted by class, so the first ``k`` rows would hold only
    a few classes.

    >>> subset_indices(10, 4)
    [0, 2, 5, 7]
    """
    if k is None or k >= n:
        return list(range(n))
    return [(i * n) // k for i in range(k)]


def _schema_error(source: Source, split: str, columns) -> DataError:
    return DataError(
        f"{source.name}: the {split} files have columns {sorted(columns)}; expected "
        "an 'image' column of encoded images (the Hub's Image feature: a struct with "
        "'bytes') and an integer 'label' column"
    )


def _image_bytes(source: Source, split: str, values, rows) -> List[bytes]:
    """The encoded bytes of each image value (``{'bytes': ..., 'path': ...}`` in the
    Hub's schema, or raw bytes), with a one-line error naming a row that has none."""
    out = []
    for v, row in zip(values, rows):
        b = v.get("bytes") if isinstance(v, dict) else v
        if not isinstance(b, (bytes, bytearray)):
            raise DataError(
                f"{source.name}: the {split} split's row {row} has no encoded image "
                f"(found {type(b).__name__}); the 'image' column must hold image bytes"
            )
        out.append(bytes(b))
    return out


def _read_split(source: Source, split: str, limit: Optional[int]):
    """(encoded images, labels, class names, row numbers) of one split."""
    files = list(source.files[split])
    try:
        with warnings.catch_warnings():  # tqdm's "IProgress not found" in a notebook
            warnings.simplefilter("ignore")
            import datasets
    except ImportError:
        datasets = None
    if datasets is None and source.kind == "hub":
        raise DataUnavailable(
            "the 'datasets' package is needed to read from the Hub "
            "(pip install datasets), or point --data at local Parquet files"
        )
    if datasets is not None:
        datasets.disable_progress_bars()
        datasets.logging.set_verbosity_error()
        ds = datasets.load_dataset("parquet", data_files={split: files}, split=split)
        if not set(COLUMNS) <= set(ds.column_names):
            raise _schema_error(source, split, ds.column_names)
        names = getattr(ds.features.get("label"), "names", None)
        if isinstance(ds.features["image"], datasets.Image):
            ds = ds.cast_column("image", datasets.Image(decode=False))
        rows = subset_indices(len(ds), limit)
        if len(rows) < len(ds):
            ds = ds.select(rows)
        images = _image_bytes(source, split, ds["image"], rows)
        return images, list(ds["label"]), names, rows
    import json

    import pyarrow.parquet as pq  # datasets' own dependency: reads the same files

    tables = []
    for f in files:
        have = pq.read_schema(f).names
        if not set(COLUMNS) <= set(have):
            raise _schema_error(source, split, have)
        tables.append(pq.read_table(f, columns=list(COLUMNS)))
    meta = tables[0].schema.metadata or {}
    names = None
    if b"huggingface" in meta:
        feats = json.loads(meta[b"huggingface"]).get("info", {}).get("features", {})
        names = feats.get("label", {}).get("names")
    values = [r for t in tables for r in t.column("image").to_pylist()]
    labels = [v for t in tables for v in t.column("label").to_pylist()]
    rows = subset_indices(len(values), limit)
    images = _image_bytes(source, split, [values[i] for i in rows], rows)
    return images, [labels[i] for i in rows], names, rows


def decode_split(
    source: Source,
    split: str,
    size: int,
    limit: Optional[int] = None,
    workers: Optional[int] = None,
    progress: bool = True,
):
    """One split as ``(images (N, 3, size, size) uint8, labels (N,) int64, names)``.

    PIL releases the GIL while it decodes, so a thread pool uses every core.
    """
    blobs, labels, names, rows = _read_split(source, split, limit)
    if not blobs:
        raise DataError(f"{source.name}: the {split} split is empty")
    bad = [v for v in labels if not isinstance(v, int) or v < 0]
    if bad:
        raise DataError(
            f"{source.name}: labels must be integers >= 0 (found {bad[0]!r})"
        )
    out = torch.empty(len(blobs), 3, size, size, dtype=torch.uint8)
    workers = workers or min(8, os.cpu_count() or 1)

    def work(i):
        try:
            out[i] = decode_resize(blobs[i], size)
        except Exception as e:  # PIL's UnidentifiedImageError, a truncated file ...
            why = str(e).splitlines()[0] if str(e) else type(e).__name__
            raise DataError(
                f"{source.name}: the {split} split's image at row {rows[i]} cannot be "
                f"decoded ({why}); replace or drop that row"
            ) from None

    with ThreadPoolExecutor(workers) as pool:
        list(
            progress_bar(
                pool.map(work, range(len(blobs))),
                total=len(blobs),
                disable=not progress,
                desc=f"decoding {split} at {size} px",
                unit="img",
                leave=False,
            )
        )
    return out, torch.tensor(labels, dtype=torch.int64), names
