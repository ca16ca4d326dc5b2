"""An ImageNet subset for short training runs: decode once, augment on the device.

Three pieces, each small enough to read in one sitting:

* **Sources.**  ``--data imagenette`` reads Imagenette from the Hugging Face Hub's
  parquet export of ``frgfm/imagenette`` (revision ``refs/convert/parquet``, config
  ``160px`` or ``320px``: ``datasets`` >= 4 runs no loading scripts, so the export
  is what there is to read); ``--data PATH`` reads local Parquet files in the same
  schema (an ``image`` column of encoded images and an integer ``label`` column,
  ``PATH/train/*.parquet`` and ``PATH/validation/*.parquet``).  Offline without a
  local copy, one :class:`DataUnavailable` error says so at once and how to point
  at local files.
* **A cache.**  Every image is decoded and resized once, to ``size`` x ``size``
  (shorter side to ``size``, centre crop), into one ``uint8`` tensor per split and
  written to disk atomically, keyed by the source and the size; the next run
  memory-maps it and starts in seconds.  Imagenette at 128 px is 0.66 GB, small
  enough to live on the GPU for the whole run (:meth:`ImageData.to`).
* **Augmentation on the device, in batches** (:class:`BatchAugment`): random-
  resized crop with per-sample parameters and horizontal flip as one
  ``affine_grid``/``grid_sample`` call, Mixup or CutMix (returning the mixing mask
  and lambda, which EMA distillation needs), label smoothing and normalisation.
  A 2-CPU Colab machine only indexes tensors, so it cannot starve its GPU.

Every random draw comes from a generator seeded by (seed, epoch, step), on the CPU,
so a batch is a pure function of where the run is: the same on a CPU and a GPU, the
same after a resume, and the same whichever rank of a multi-GPU run draws it.
"""

from __future__ import annotations

import glob
import hashlib
import io
import math
import os
import time
import warnings
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F

from hirilib.atomic import atomic_torch_save

#: The Hub copy: repository, the parquet export's revision, and its configs.
HUB_REPO = "frgfm/imagenette"
HUB_REVISION = "refs/convert/parquet"
HUB_CONFIGS = ("160px", "320px")
SPLITS = ("train", "validation")

#: ImageNet's channel statistics (0-255 scale), used by every model in the book.
MEAN = (0.485 * 255, 0.456 * 255, 0.406 * 255)
STD = (0.229 * 255, 0.224 * 255, 0.225 * 255)

#: Bump when the cache's content changes meaning.
CACHE_FORMAT = 1


class DataError(ValueError):
    """A data argument that cannot work (a missing folder, no Parquet files, a bad
    subset): said in one line before any work."""


class DataUnavailable(OSError):
    """The Hub cannot be reached (or the download failed) and no local copy is named."""


# ----------------------------------------------------------------------------- sources


@dataclass(frozen=True)
class Source:
    """Where the images come from: ``kind`` 'hub' or 'local', a readable ``name``,
    the files of each split (hf:// URLs or local paths) and ``identity``, the text the
    cache key is made of (the Hub's revision, or each local file's path, size and
    modification time)."""

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
    parts = []
    for s in SPLITS:
        for f in files[s]:
            st = os.stat(f)
            parts.append(f"{os.path.abspath(f)}:{st.st_size}:{st.st_mtime_ns}")
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


# ----------------------------------------------------------------------------- decoding


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


def _read_split(source: Source, split: str, limit: Optional[int]):
    """(list of encoded images, labels, class names) of one split."""
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
        names = getattr(ds.features.get("label"), "names", None)
        ds = ds.cast_column("image", datasets.Image(decode=False))
        idx = subset_indices(len(ds), limit)
        if len(idx) < len(ds):
            ds = ds.select(idx)
        images = [r["bytes"] for r in ds["image"]]
        labels = list(ds["label"])
        return images, labels, names
    import json

    import pyarrow.parquet as pq  # datasets' own dependency: reads the same files

    tables = [pq.read_table(f, columns=["image", "label"]) for f in files]
    meta = tables[0].schema.metadata or {}
    names = None
    if b"huggingface" in meta:
        feats = json.loads(meta[b"huggingface"]).get("info", {}).get("features", {})
        names = feats.get("label", {}).get("names")
    images = [r["bytes"] for t in tables for r in t.column("image").to_pylist()]
    labels = [v for t in tables for v in t.column("label").to_pylist()]
    idx = subset_indices(len(images), limit)
    return [images[i] for i in idx], [labels[i] for i in idx], names


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
    blobs, labels, names = _read_split(source, split, limit)
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
        out[i] = decode_resize(blobs[i], size)

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


# ---------------------------------------------------------------------------- the cache


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
            doc = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
            return _from_doc(doc, str(path), time.perf_counter() - t0)
        except Exception:  # a damaged cache is rebuilt, never trusted
            if not build:
                raise
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


def _from_doc(doc, path, seconds) -> ImageData:
    if doc.get("format") != CACHE_FORMAT:
        raise ValueError("old cache format")
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


# ------------------------------------------------------------------------- augmentation


def seeded_generator(*keys: int) -> torch.Generator:
    """A CPU generator seeded by a tuple of integers (seed, epoch, step, ...)."""
    h = hashlib.sha256(",".join(str(int(k)) for k in keys).encode()).digest()
    return torch.Generator().manual_seed(int.from_bytes(h[:8], "little") >> 1)


def epoch_order(seed: int, epoch: int, n: int) -> torch.Tensor:
    """The training set's order in ``epoch``: a permutation of ``range(n)`` that depends
    only on ``seed`` and ``epoch`` (so a resumed run sees the same order)."""
    return torch.randperm(n, generator=seeded_generator(seed, epoch, -1))


def rrc_params(
    n: int,
    generator: torch.Generator,
    scale=(0.35, 1.0),
    ratio=(3 / 4, 4 / 3),
    hflip: float = 0.5,
) -> torch.Tensor:
    """Per-sample random-resized-crop boxes, ``(n, 5)``: width and height as fractions
    of the image side, the centre ``(cx, cy)`` in [0, 1], and a flip sign (+1 or -1).

    The area fraction is uniform in ``scale``, the aspect ratio log-uniform in
    ``ratio``; a box that would not fit is shrunk to fit (keeping its centre inside),
    rather than re-drawn, so every sample costs the same.
    """
    u = torch.rand(n, 5, generator=generator)
    area = scale[0] + (scale[1] - scale[0]) * u[:, 0]
    log_r = math.log(ratio[0]) + (math.log(ratio[1]) - math.log(ratio[0])) * u[:, 1]
    r = torch.exp(log_r)
    w = torch.sqrt(area * r).clamp(max=1.0)
    h = torch.sqrt(area / r).clamp(max=1.0)
    cx = w / 2 + (1 - w) * u[:, 2]
    cy = h / 2 + (1 - h) * u[:, 3]
    flip = torch.where(u[:, 4] < hflip, -1.0, 1.0)
    return torch.stack([w, h, cx, cy, flip], 1)


def crop_resize(images: torch.Tensor, params: torch.Tensor, size: int) -> torch.Tensor:
    """Crop each image to its box, flip it if asked and resize it to ``size``: one
    ``grid_sample`` for the batch.  ``images`` (B, C, S, S) float; ``params`` (B, 5) as
    :func:`rrc_params` gives; returns (B, C, size, size).

    ``affine_grid`` maps output coordinates in [-1, 1] to input ones: x_in = sx * x_out
    + tx, with sx = w * flip (the box's half-width in [-1, 1] units is w) and
    tx = 2 cx - 1 (its centre); likewise for y.
    """
    p = params.to(images.device, images.dtype)
    B = images.shape[0]
    theta = torch.zeros(B, 2, 3, device=images.device, dtype=images.dtype)
    theta[:, 0, 0] = p[:, 0] * p[:, 4]
    theta[:, 0, 2] = 2 * p[:, 2] - 1
    theta[:, 1, 1] = p[:, 1]
    theta[:, 1, 2] = 2 * p[:, 3] - 1
    grid = F.affine_grid(theta, [B, images.shape[1], size, size], align_corners=False)
    return F.grid_sample(
        images, grid, mode="bilinear", padding_mode="reflection", align_corners=False
    )


def normalize(x: torch.Tensor) -> torch.Tensor:
    """0-255 pixels -> ImageNet-normalised values, per channel."""
    mean = torch.tensor(MEAN, device=x.device, dtype=x.dtype).view(1, -1, 1, 1)
    std = torch.tensor(STD, device=x.device, dtype=x.dtype).view(1, -1, 1, 1)
    return (x - mean) / std


def smooth_one_hot(y: torch.Tensor, num_classes: int, smoothing: float) -> torch.Tensor:
    """``(B,)`` labels -> ``(B, K)``: 1 - eps + eps/K on the label, eps/K elsewhere."""
    off = smoothing / num_classes
    out = torch.full((y.shape[0], num_classes), off, device=y.device)
    return out.scatter_(1, y.view(-1, 1), 1.0 - smoothing + off)


def cutmix_box(
    lam: float, H: int, W: int, cy: int, cx: int
) -> Tuple[int, int, int, int]:
    """The CutMix box for a drawn ``lam``: sides ``sqrt(1 - lam)`` of the image's,
    centred at ``(cy, cx)``, clipped to the image; ``(y0, y1, x0, x1)``."""
    cut = math.sqrt(1.0 - lam)
    ch, cw = int(H * cut), int(W * cut)
    y0, y1 = min(max(cy - ch // 2, 0), H), min(max(cy + ch // 2, 0), H)
    x0, x1 = min(max(cx - cw // 2, 0), W), min(max(cx + cw // 2, 0), W)
    return y0, y1, x0, x1


def cutmix_mask(
    lam: float, H: int, W: int, cy: int, cx: int
) -> Tuple[torch.Tensor, float]:
    """CutMix's mixing mask ``M`` (1, 1, H, W) and its lambda.

    ``M`` is 1 where the image keeps its own pixels and 0 inside the box, where the
    partner's are pasted: x~ = M * x_a + (1 - M) * x_b.  Clipping at the border makes
    the box smaller than drawn, so lambda is recomputed as the fraction of the image
    that is still the sample's own, lambda = mean(M): the label weights then match the
    pixels exactly.
    """
    y0, y1, x0, x1 = cutmix_box(lam, H, W, cy, cx)
    mask = torch.ones(1, 1, H, W)
    mask[..., y0:y1, x0:x1] = 0.0
    return mask, 1.0 - (y1 - y0) * (x1 - x0) / (H * W)


@dataclass
class MixDraw:
    """One batch's mixing decision: ``mode`` 'none', 'mixup' or 'cutmix', the drawn
    lambda, and the CutMix box centre."""

    mode: str
    lam: float
    cy: int = 0
    cx: int = 0


def draw_mix(
    generator: torch.Generator,
    H: int,
    W: int,
    mixup_alpha: float = 0.8,
    cutmix_alpha: float = 1.0,
    prob: float = 1.0,
    switch_prob: float = 0.5,
) -> MixDraw:
    """Whether and how to mix one batch (timm's batch mode): with probability ``prob``
    mix at all; then CutMix with probability ``switch_prob`` when both are on; lambda
    ~ Beta(alpha, alpha) of the chosen one."""
    u = torch.rand(5, generator=generator, dtype=torch.float64).tolist()
    on = [m for m, a in (("mixup", mixup_alpha), ("cutmix", cutmix_alpha)) if a > 0]
    if not on or u[0] >= prob:
        return MixDraw("none", 1.0)
    mode = on[0] if len(on) == 1 else ("cutmix" if u[1] < switch_prob else "mixup")
    alpha = cutmix_alpha if mode == "cutmix" else mixup_alpha
    # numpy's Beta sampler, seeded from the generator: reproducible, no global RNG
    import numpy as np

    lam = float(np.random.default_rng(int(u[4] * 2**53)).beta(alpha, alpha))
    return MixDraw(mode, lam, min(int(u[2] * H), H - 1), min(int(u[3] * W), W - 1))


def mix_mask(draw: MixDraw, H: int, W: int) -> Tuple[torch.Tensor, float]:
    """The mask ``M`` (1, 1, H, W) and lambda of a draw: CutMix's box mask; for Mixup a
    constant lambda everywhere; no mixing: ones and 1."""
    if draw.mode == "cutmix":
        return cutmix_mask(draw.lam, H, W, draw.cy, draw.cx)
    lam = draw.lam if draw.mode == "mixup" else 1.0
    return torch.full((1, 1, H, W), lam), lam


@dataclass
class Batch:
    """One augmented training batch on the device.

    ``x_a`` (B, 3, R, R): the samples after crop, flip and normalisation, unmixed (the
    EMA teacher sees these); ``x_b``: their partners (the batch reversed), the other
    CutMix source; ``x``: the mixed input M * x_a + (1 - M) * x_b that the student
    sees; ``mask`` (1, 1, R, R) and ``lam`` (= mean of ``mask``); ``target`` (B, K): the
    mixed, smoothed labels; ``labels`` (B,): the samples' own labels.
    ``partner_is_flip``: x_b is x_a reversed along the batch (one process), so a
    teacher's output on x_b is its output on x_a reversed.
    """

    x: torch.Tensor
    x_a: torch.Tensor
    x_b: torch.Tensor
    mask: torch.Tensor
    lam: float
    mode: str
    target: torch.Tensor
    labels: torch.Tensor
    partner_is_flip: bool


class BatchAugment:
    """Turns indices into an augmented, mixed batch on the data's device.

    One generator per (seed, epoch, step) draws the crop boxes and flips of the
    *global* batch and one mixing decision; a rank of a multi-GPU run takes its slice
    of each, and the partner of global sample i is sample G - 1 - i (the global batch
    reversed), so N processes see exactly the samples, crops and pairs one process
    would see with the same global batch.
    """

    def __init__(
        self,
        data: ImageData,
        res: int,
        num_classes: int,
        seed: int = 0,
        min_scale: float = 0.35,
        hflip: float = 0.5,
        mixup_alpha: float = 0.8,
        cutmix_alpha: float = 1.0,
        mix_prob: float = 1.0,
        switch_prob: float = 0.5,
        label_smoothing: float = 0.1,
        device: Optional[torch.device] = None,
        channels_last: bool = False,
    ):
        self.data, self.res, self.num_classes, self.seed = data, res, num_classes, seed
        self.min_scale, self.hflip = min_scale, hflip
        self.mix = dict(
            mixup_alpha=mixup_alpha,
            cutmix_alpha=cutmix_alpha,
            prob=mix_prob,
            switch_prob=switch_prob,
        )
        self.label_smoothing = label_smoothing
        self.device = device or data.device
        self.channels_last = channels_last

    def _images(self, idx: torch.Tensor, params: torch.Tensor) -> torch.Tensor:
        src = self.data.train_images
        raw = src[idx.to(src.device)].to(self.device, non_blocking=True)  # (B, 3, S, S)
        x = normalize(crop_resize(raw.float(), params, self.res))  # (B, 3, R, R)
        return (
            x.contiguous(memory_format=torch.channels_last) if self.channels_last else x
        )

    def __call__(
        self,
        global_idx: torch.Tensor,
        epoch: int,
        step: int,
        rank: int = 0,
        world: int = 1,
    ) -> Batch:
        G = global_idx.numel()
        B = G // world
        g = seeded_generator(self.seed, epoch, step)
        params = rrc_params(G, g, (self.min_scale, 1.0), hflip=self.hflip)  # (G, 5)
        draw = draw_mix(g, self.res, self.res, **self.mix)
        sl = slice(rank * B, (rank + 1) * B)
        partner = torch.arange(G - 1, -1, -1)[sl]  # reversed batch
        x_a = self._images(global_idx[sl], params[sl])
        if world == 1:
            x_b = x_a.flip(0)
        else:
            x_b = self._images(global_idx[partner], params[partner])
        mask, lam = mix_mask(draw, self.res, self.res)
        mask = mask.to(self.device)
        x = x_a if draw.mode == "none" else mask * x_a + (1 - mask) * x_b
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        labels_all = self.data.train_labels[
            global_idx.to(self.data.train_labels.device)
        ]
        labels_all = labels_all.to(self.device)
        y_a = smooth_one_hot(labels_all[sl], self.num_classes, self.label_smoothing)
        y_b = smooth_one_hot(
            labels_all[partner.to(labels_all.device)],
            self.num_classes,
            self.label_smoothing,
        )
        target = lam * y_a + (1 - lam) * y_b
        return Batch(
            x, x_a, x_b, mask, lam, draw.mode, target, labels_all[sl], world == 1
        )


def eval_images(
    images: torch.Tensor, res: int, device: torch.device, channels_last: bool = False
) -> torch.Tensor:
    """Validation view: the whole cached image resized to ``res`` (antialiased when it
    shrinks), normalised.  No crop, no flip, no test-time augmentation."""
    x = images.to(device, non_blocking=True).float()
    if x.shape[-1] != res:
        x = F.interpolate(
            x, size=(res, res), mode="bilinear", antialias=True, align_corners=False
        )
    x = normalize(x)
    return x.contiguous(memory_format=torch.channels_last) if channels_last else x


# ---------------------------------------------------------------------------- benchmark


def benchmark(
    data: ImageData,
    res: int,
    batch_size: int = 128,
    steps: int = 20,
    device: Optional[torch.device] = None,
    threads: Optional[int] = None,
) -> Dict:
    """Images per second of the data side alone (indexing, crop, flip, Mixup/CutMix,
    normalisation) on ``device``, with the data held there: what the input pipeline
    could feed a model that took no time at all."""
    device = torch.device(device or data.device)
    if threads:
        torch.set_num_threads(threads)
    d = data.to(device) if data.device != device else data
    aug = BatchAugment(d, res, d.num_classes, device=device)
    n = d.train_labels.numel()
    order = epoch_order(0, 0, n)
    batches = [
        order[(i * batch_size) % max(1, n - batch_size) :][:batch_size]
        for i in range(steps + 2)
    ]

    def sync():
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    for i in range(2):
        aug(batches[i], 0, i)
    sync()
    t = time.perf_counter()
    for i in range(2, steps + 2):
        aug(batches[i], 0, i)
    sync()
    dt = time.perf_counter() - t
    from hirilib.measure import device_name

    return {
        "images_per_s": steps * batch_size / dt,
        "batch_size": batch_size,
        "res": res,
        "cache_size": d.size,
        "steps": steps,
        "device": device_name(device),
        "threads": torch.get_num_threads() if device.type == "cpu" else None,
    }


def describe_counts(labels: Sequence[int], classes: Sequence[str]) -> str:
    """'tench 963, English springer 955, ...': how many images each class has."""
    counts = torch.bincount(torch.as_tensor(labels), minlength=len(classes)).tolist()
    return ", ".join(f"{c} {n}" for c, n in zip(classes, counts))
