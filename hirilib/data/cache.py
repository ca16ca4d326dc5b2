"""The decoded-image cache: both splits decoded once into uint8 tensors, written
atomically, keyed on the source files' content and the size, and verified (checksums,
counts, label range, class names) whenever it is read: a damaged cache is rebuilt,
never trusted."""

from __future__ import annotations

import hashlib
import os
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Optional, Sequence

import torch

from hirilib.atomic import atomic_torch_save

from .decode import decode_split
from .source import (
    SYNTHETIC_SIZES,
    DataError,
    DataUnavailable,
    Source,
    hub_unreachable_message,
    resolve_source,
)

#: Bump when the cache's content changes meaning (2: keyed on the files' content).
CACHE_FORMAT = 2


@dataclass
class ImageData:
    """Both splits as uint8 tensors ``(N, 3, S, S)`` with int64 labels, the class names,
    and where they came from."""

    train_images: torch.Tensor
    train_labels: torch.Tensor
    val_images: torch.Tensor
    val_labels: torch.Tensor
    classes: List[str]
    source: str
    size: int
    cache_path: Optional[str] = None
    load_seconds: float = 0.0
    extra: Dict[str, object] = field(default_factory=dict)

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    @property
    def device(self) -> torch.device:
        return self.train_images.device

    def nbytes(self) -> int:
        return sum(
            t.numel() * t.element_size()
            for t in (
                self.train_images,
                self.train_labels,
                self.val_images,
                self.val_labels,
            )
        )

    def to(self, device: torch.device | str, pin: bool = False) -> "ImageData":
        """The same data on ``device`` (``pin``: page-locked host memory, for fast
        copies to a GPU when the data stay on the CPU)."""

        def move(t):
            t = t.to(device)
            return t.pin_memory() if pin and t.device.type == "cpu" else t

        return ImageData(
            move(self.train_images),
            move(self.train_labels),
            move(self.val_images),
            move(self.val_labels),
            self.classes,
            self.source,
            self.size,
            self.cache_path,
            self.load_seconds,
            dict(self.extra),
        )


def default_cache_dir() -> Path:
    """``$HIRILIB_CACHE``, else ``$XDG_CACHE_HOME/hirilib``, else ~/.cache/hirilib."""
    if os.environ.get("HIRILIB_CACHE"):
        return Path(os.environ["HIRILIB_CACHE"]).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "hirilib"


def cache_path(
    source: Source,
    size: int,
    train_subset: Optional[int] = None,
    val_subset: Optional[int] = None,
    cache_dir=None,
) -> Path:
    """The cache file of ``source`` decoded at ``size``: a readable name plus a hash of
    the source's identity, the size, the subsets and the cache format."""
    key = f"{CACHE_FORMAT}|{source.identity}|{size}|{train_subset}|{val_subset}"
    digest = hashlib.sha256(key.encode()).hexdigest()[:16]
    stem = "imagenette" if source.kind == "hub" else Path(source.name).name or "data"
    stem = "".join(c if c.isalnum() or c in "-_" else "_" for c in stem)
    sub = (
        ""
        if train_subset is None and val_subset is None
        else f"-sub{train_subset or 'all'}x{val_subset or 'all'}"
    )
    return Path(cache_dir or default_cache_dir()) / f"{stem}-{size}px{sub}-{digest}.pt"


def load_data(
    data: str,
    size: int,
    train_subset: Optional[int] = None,
    val_subset: Optional[int] = None,
    cache_dir=None,
    workers: Optional[int] = None,
    progress: bool = True,
    build: bool = True,
) -> ImageData:
    """Imagenette (``data='imagenette'``) or local Parquet files (``data=PATH``) as
    :class:`ImageData` at ``size`` px, from the cache when it is there.

    ``train_subset``/``val_subset`` keep that many images per split, spread evenly
    (for demos and tests).  ``build=False`` raises ``FileNotFoundError`` instead of
    decoding when the cache is missing (the other ranks of a multi-GPU run wait for
    rank 0 to build it).
    """
    for name, v in (
        ("size", size),
        ("train_subset", train_subset),
        ("val_subset", val_subset),
    ):
        if v is not None and (not isinstance(v, int) or isinstance(v, bool) or v < 1):
            raise DataError(f"{name} must be a positive integer, got {v!r}")
    t0 = time.perf_counter()
    source = resolve_source(data)
    if source.kind == "synthetic":
        return synthetic_data(size, train_subset, val_subset)
    path = cache_path(source, size, train_subset, val_subset, cache_dir)
    if path.is_file():
        try:
            return read_cache(path, source, size, time.perf_counter() - t0)
        except Exception as e:  # a damaged cache is rebuilt, never trusted
            if not build:
                raise
            warnings.warn(f"rebuilding the damaged data cache {path} ({e})")
    if not build:
        raise FileNotFoundError(f"no cache at {path}")
    if source.kind == "hub":
        from hirilib.hub import hub_offline, hub_reachable

        if hub_offline():
            raise DataUnavailable(
                hub_unreachable_message(source, "HF_HUB_OFFLINE is set")
            )
        if not hub_reachable(timeout=5.0):
            raise DataUnavailable(
                hub_unreachable_message(source, "no connection to huggingface.co")
            )
    splits = {}
    try:
        for split, limit in (("train", train_subset), ("validation", val_subset)):
            splits[split] = decode_split(source, split, size, limit, workers, progress)
    except (DataError, DataUnavailable):
        raise
    except Exception as e:
        if source.kind == "hub":
            raise DataUnavailable(
                hub_unreachable_message(
                    source,
                    f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}",
                    reachable=True,
                )
            ) from None
        raise DataError(
            f"--data {source.name}: could not read the Parquet files "
            f"({type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}); "
            "they must hold an 'image' column of encoded images and an "
            "integer 'label' column"
        ) from None
    (tx, ty, names), (vx, vy, vnames) = splits["train"], splits["validation"]
    k = int(max(ty.max(), vy.max())) + 1
    names = list(names or vnames or [str(i) for i in range(k)])
    if len(names) < k:
        raise DataError(
            f"{source.name}: labels go up to {k - 1} but only {len(names)} "
            "class names are given"
        )
    doc = {
        "format": CACHE_FORMAT,
        "source": source.name,
        "identity": source.identity,
        "size": size,
        "classes": names,
        "train_images": tx,
        "train_labels": ty,
        "val_images": vx,
        "val_labels": vy,
    }
    try:
        atomic_torch_save(doc, path)
        where = str(path)
    except OSError:  # a read-only cache folder: run without a cache
        where = None
    return _from_doc(doc, where, time.perf_counter() - t0)


def check_cache_doc(doc, identity: Optional[str], size: int) -> None:
    """A cache's content is what its key promises: the format, the source's identity,
    the size, uint8 images ``(N, 3, size, size)`` with as many int64 labels, labels in
    ``[0, len(classes))`` and class names as strings; a ``ValueError`` saying what is
    wrong otherwise."""
    if not isinstance(doc, dict) or doc.get("format") != CACHE_FORMAT:
        raise ValueError("not a cache of this format")
    if identity is not None and doc.get("identity") != identity:
        raise ValueError("made from other source files")
    classes = doc.get("classes")
    if not (isinstance(classes, list) and classes and
            all(isinstance(c, str) for c in classes)):
        raise ValueError("no list of class names")
    if doc.get("size") != size:
        raise ValueError(f"images of {doc.get('size')} px, not {size}")
    for split in ("train", "val"):
        x, y = doc.get(f"{split}_images"), doc.get(f"{split}_labels")
        if not (isinstance(x, torch.Tensor) and isinstance(y, torch.Tensor)):
            raise ValueError(f"no {split} tensors")
        if x.dtype != torch.uint8 or tuple(x.shape[1:]) != (3, size, size):
            raise ValueError(f"{split} images of {x.dtype} {tuple(x.shape)}")
        if y.dtype != torch.int64 or y.dim() != 1 or y.numel() != x.shape[0]:
            raise ValueError(f"{y.numel()} {split} labels for {x.shape[0]} images")
        if y.numel() and not (0 <= int(y.min()) and int(y.max()) < len(classes)):
            raise ValueError(
                f"{split} labels {int(y.min())}..{int(y.max())} for {len(classes)} "
                "classes"
            )


def read_cache(path: Path, source: Optional[Source], size: int, seconds=0.0):
    """The :class:`ImageData` of a cache file, its checksums and content verified
    (:func:`hirilib.hub.verify_torch_zip`, :func:`check_cache_doc`)."""
    from hirilib.hub import verify_torch_zip

    verify_torch_zip(path)
    doc = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    check_cache_doc(doc, source.identity if source is not None else None, size)
    return _from_doc(doc, str(path), seconds)


def _from_doc(doc, path, seconds) -> ImageData:
    return ImageData(
        doc["train_images"],
        doc["train_labels"],
        doc["val_images"],
        doc["val_labels"],
        list(doc["classes"]),
        doc["source"],
        int(doc["size"]),
        path,
        seconds,
    )


def fits_on_device(nbytes: int, device: torch.device, fraction: float = 0.5) -> bool:
    """Whether ``nbytes`` of data may live on ``device``: a CPU always, a GPU when they
    take at most ``fraction`` of its free memory (the rest is the model's)."""
    if device.type != "cuda":
        return True
    free, _ = torch.cuda.mem_get_info(device)
    return nbytes <= fraction * free




def synthetic_data(
    size: int,
    train_subset: Optional[int] = None,
    val_subset: Optional[int] = None,
    num_classes: int = 10,
) -> "ImageData":
    """Random uint8 images as many as Imagenette has (or the subsets): what the input
    pipeline and the training step cost does not depend on the pixels."""
    g = torch.Generator().manual_seed(0)
    n_t = min(train_subset or SYNTHETIC_SIZES["train"], SYNTHETIC_SIZES["train"])
    n_v = min(
        val_subset or SYNTHETIC_SIZES["validation"], SYNTHETIC_SIZES["validation"]
    )

    def images(n):
        return torch.randint(0, 256, (n, 3, size, size), generator=g, dtype=torch.uint8)

    return ImageData(
        images(n_t),
        torch.arange(n_t) % num_classes,
        images(n_v),
        torch.arange(n_v) % num_classes,
        [f"class {i}" for i in range(num_classes)],
        "synthetic",
        size,
    )


def describe_counts(labels: Sequence[int], classes: Sequence[str]) -> str:
    """'tench 963, English springer 955, ...': how many images each class has."""
    counts = torch.bincount(torch.as_tensor(labels), minlength=len(classes)).tolist()
    return ", ".join(f"{c} {n}" for c, n in zip(classes, counts))
