"""The recipe: every setting of a training run in one dataclass, :class:`TrainConfig`,
each field with its help text, its range and whether it is part of the recipe (what is
trained) or of the run (where, how often, how verbose); the named recipes
(:data:`RECIPES`), chapter 8's ablation, and :func:`validate`, the one check that the
command line and Python both go through before any work."""

from __future__ import annotations

import copy
import dataclasses
import math
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, Optional

import torch

#: The learning-rate schedules (:func:`hirilib.train.objectives.lr_for`).
SCHEDULES = ("cosine", "onecycle")
CHECKPOINT_NAME = "checkpoint.pt"
LOG_NAME = "log.jsonl"


class ConfigError(ValueError):
    """A training argument that cannot work: one line, before any work."""


def _f(default, help: str, kind: str = "recipe", **meta):
    """A config field: its default, its help text, whether it belongs to the recipe
    (changes what is trained) or to the run (where, how often, how verbose), and its
    range (``lo``, ``hi``; ``lo_open``/``hi_open`` exclude the bound) or ``choices``."""
    if isinstance(default, (dict, list)):
        return field(
            default_factory=lambda: copy.deepcopy(default),
            metadata=dict(help=help, kind=kind, **meta),
        )
    return field(default=default, metadata=dict(help=help, kind=kind, **meta))


def field_kind(f: dataclasses.Field) -> type:
    """The Python type of a field's values (``Optional[int]`` -> int)."""
    t = str(f.type).replace("Optional[", "").rstrip("]")
    return {"int": int, "float": float, "bool": bool, "str": str}.get(t, dict)


def range_problem(meta: Dict[str, Any], value) -> Optional[str]:
    """What is wrong with ``value`` for a field of this metadata ("must be >= 1"), or
    None when it is in range."""
    lo, hi = meta.get("lo"), meta.get("hi")
    lo_open, hi_open = meta.get("lo_open", False), meta.get("hi_open", False)
    if isinstance(value, float) and not math.isfinite(value):
        return "must be finite"
    bad = (lo is not None and (value <= lo if lo_open else value < lo)) or (
        hi is not None and (value >= hi if hi_open else value > hi)
    )
    if not bad:
        return None
    lo_s = "" if lo is None else f"{'>' if lo_open else '>='} {lo}"
    hi_s = "" if hi is None else f"{'<' if hi_open else '<='} {hi}"
    return f"must be {' and '.join(s for s in (lo_s, hi_s) if s)}"


def flag(name: str) -> str:
    """The command-line flag of a field: ``batch_size`` -> ``--batch-size``."""
    return "--" + name.replace("_", "-")


@dataclass
class TrainConfig:
    """Every setting of a training run.  Fields marked 'recipe' define what is trained
    (a resumed run must keep them); 'run' fields only say where and how it runs."""

    # -- what, on what
    model: Optional[str] = _f(None, "a registered model (python -m hirilib list)")
    model_kwargs: Dict[str, Any] = _f(
        {}, "constructor overrides as JSON, e.g. '{\"depths\": [1, 1, 2, 1]}'"
    )
    data: str = _f(
        "imagenette",
        "'imagenette' (the Hub's parquet export, 160 px), "
        "'imagenette:320px', or a folder of Parquet files in the Hub's schema",
    )
    res: int = _f(
        128, "training resolution (px); also validation's unless --val-res", lo=1
    )
    val_res: Optional[int] = _f(
        None, "validation resolution (px), the whole image resized (default: res)", lo=1
    )
    final_res: Optional[int] = _f(
        None,
        "progressive resizing: the last --final-epochs epochs train at this "
        "resolution (default: res throughout)", lo=1
    )
    final_epochs: int = _f(0, "how many of the last epochs train at --final-res", lo=0)
    cache_res: Optional[int] = _f(
        None,
        "size the images are decoded to once (default: the larger of the two)",
        lo=1,
    )
    train_subset: Optional[int] = _f(
        None,
        "use only this many training images (spread evenly; for demos and tests)",
        lo=1,
    )
    val_subset: Optional[int] = _f(None, "use only this many validation images", lo=1)
    # -- optimisation
    epochs: int = _f(5, "passes over the training set", lo=1)
    batch_size: int = _f(
        128, "global batch (split across processes under torchrun)", lo=1
    )
    lr: float = _f(1e-3, "peak learning rate of AdamW", lo=0, lo_open=True)
    min_lr: float = _f(1e-5, "learning rate at the end of the cosine", lo=0)
    schedule: str = _f(
        "cosine",
        "cosine (linear warm-up, then cosine) or onecycle (cosine warm-up from "
        "lr/25, then cosine: fastai's one-cycle)",
        choices=SCHEDULES,
    )
    warmup_epochs: float = _f(1.0, "warm-up, in epochs (fractions allowed)", lo=0)
    weight_decay: float = _f(
        0.05, "AdamW's decoupled weight decay (not on norms, biases)", lo=0
    )
    clip_grad: float = _f(1.0, "clip the gradient's global norm to this (0: off)", lo=0)
    label_smoothing: float = _f(
        0.1, "label smoothing epsilon", lo=0, hi=1, hi_open=True
    )
    drop_path_rate: float = _f(
        0.0, "stochastic depth of the model's last block", lo=0, hi=1, hi_open=True
    )
    # -- augmentation
    min_scale: float = _f(
        0.35,
        "smallest area of a random-resized crop (fraction)",
        lo=0,
        hi=1,
        lo_open=True,
    )
    hflip: float = _f(0.5, "probability of a horizontal flip", lo=0, hi=1)
    mixup_alpha: float = _f(0.8, "Mixup's Beta(alpha, alpha) (0: off)", lo=0)
    cutmix_alpha: float = _f(1.0, "CutMix's Beta(alpha, alpha) (0: off)", lo=0)
    mix_prob: float = _f(1.0, "probability that a batch is mixed at all", lo=0, hi=1)
    switch_prob: float = _f(
        0.5, "probability of CutMix rather than Mixup when both are on", lo=0, hi=1
    )
    # -- EMA and EMA distillation (HIRI-ViT Sec. 4.5)
    ema: bool = _f(True, "keep an exponential moving average of the weights")
    ema_momentum: float = _f(
        0.9998,
        "EMA momentum m (time constant 1/(1-m) steps)",
        lo=0,
        hi=1,
        hi_open=True,
    )
    ema_warmup: bool = _f(
        True, "m_t = min(m, (1+t)/(10+t)): the early EMA follows the student"
    )
    distill: bool = _f(
        False,
        "EMA distillation: the EMA teacher's per-location "
        "predictions, CutMix-mixed, join the target",
    )
    distill_alpha: float = _f(
        0.5,
        "weight of the mixed labels in the target (1 - alpha: the teacher's)",
        lo=0,
        hi=1,
    )
    # -- speed
    amp: str = _f(
        "auto",
        "mixed precision: auto (bf16 where native, else fp16 with a "
        "gradient scaler, off on a CPU), off, fp16, bf16",
        choices=("auto", "off", "fp16", "bf16"),
    )
    channels_last: Optional[bool] = _f(
        None, "channels-last memory format (default: on a GPU)"
    )
    compile: Optional[bool] = _f(
        False, "torch.compile the model (unset in a recipe: on a GPU only)"
    )
    seed: int = _f(
        0, "seed of the initial weights, the data order and the augmentation", lo=0
    )
    # -- the run (not part of the recipe)
    out: Optional[str] = _f(
        None,
        "output folder: log.jsonl and checkpoint.pt (default runs/MODEL)",
        kind="run",
    )
    resume: bool = _f(
        False, "continue the run in --out from its checkpoint", kind="run"
    )
    device: Optional[str] = _f(
        None,
        "cpu, cuda or cuda:N (default: the GPU if any; "
        "under torchrun, cuda:LOCAL_RANK)",
        kind="run",
    )
    data_on_device: str = _f(
        "auto",
        "hold the decoded images on the GPU: auto (when they "
        "take under half of its free memory), yes, no",
        kind="run",
        choices=("auto", "yes", "no"),
    )
    cache_dir: Optional[str] = _f(
        None,
        "where decoded images are cached (default $HIRILIB_CACHE or ~/.cache/hirilib)",
        kind="run",
    )
    save_every: int = _f(
        0, "also checkpoint every N steps (0: off)", kind="run", lo=0
    )
    save_every_epochs: int = _f(
        1,
        "checkpoint every N epochs (0: only at the end; a SIGTERM also saves one)",
        kind="run",
        lo=0,
    )
    log_every: int = _f(10, "write a step record every N steps", kind="run", lo=1)
    eval_batch_size: int = _f(256, "batch for validation", kind="run", lo=1)
    eval_ema: str = _f(
        "every",
        "evaluate the EMA after every epoch, or only after the last (half the "
        "validation time on a CPU)",
        kind="run",
        choices=("every", "last"),
    )
    workers: Optional[int] = _f(
        None, "threads decoding images (once, into the cache)", kind="run", lo=1
    )
    progress: bool = _f(
        True, "progress bar (loss, accuracy, images/s, ETA)", kind="run"
    )
    stop_after_steps: int = _f(
        0,
        "debug: kill this process (SIGKILL, no clean-up) after "
        "N steps, as a crash would",
        kind="run", lo=0
    )
    recipe: Optional[str] = _f(
        None, "start from a named recipe (listed below)", kind="run"
    )

    def recipe_fields(self) -> Dict[str, Any]:
        """The fields that define what is trained (what a resume must keep)."""
        return {
            f.name: getattr(self, f.name)
            for f in dataclasses.fields(self)
            if f.metadata.get("kind") == "recipe"
        }

    def as_dict(self) -> Dict[str, Any]:
        return dataclasses.asdict(self)


#: Named recipes: every field they set, in one place.  ``--recipe NAME`` starts from
#: one; flags given after it override single fields.  The CPU runs the book commits.
RECIPES: Dict[str, Dict[str, Any]] = {
    # PVTv2-B0 at 64 px for a few epochs: the smallest run that shows learning on a
    # 2-core CPU in well under an hour (hirilib/results/train_cpu_*.jsonl).
    "imagenette_cpu": dict(
        model="pvt_v2_b0",
        res=64,
        epochs=5,
        batch_size=64,
        lr=1e-3,
        warmup_epochs=1.0,
        weight_decay=0.05,
        label_smoothing=0.1,
        min_scale=0.35,
        mixup_alpha=0.8,
        cutmix_alpha=1.0,
        mix_prob=1.0,
        switch_prob=0.5,
        ema=True,
        ema_momentum=0.9998,
        ema_warmup=True,
        distill_alpha=0.5,
        clip_grad=1.0,
        seed=0,
    ),
}

# The Imagenette records (chapter 8, "Chasing the leaderboard"): the fastai leaderboard
# at 128 px (hirilib.reference.IMAGENETTE_128), random initial weights, the train split
# only, the whole validation split at 128 px in one centre view.  One model for CPU and
# GPU: HIRI-ViT-Nano (hirilib.models.hiri_vit.HIRI_VIT_NANO says why it suits 128 px).
_IMAGENETTE: Dict[str, Any] = dict(
    model="hiri_vit_nano",
    model_kwargs={},
    data="imagenette",  # the Hub; a local copy with --data PATH
    # progressive resizing: 96 px for the first 80% of the epochs (a step costs 0.56 of
    # one at 128), 128 px for the last 20%: a model trained at 96 px only and measured
    # at 128 is chapter 8's comparison (the committed *_96px run; FixRes, not a loss)
    res=96,
    final_res=128,
    val_res=128,
    cache_res=128,
    batch_size=64,  # many small steps: 147 per epoch (5 epochs: 735)
    lr=2e-3,
    min_lr=1e-5,
    schedule="onecycle",
    weight_decay=0.05,
    clip_grad=1.0,
    label_smoothing=0.1,
    drop_path_rate=0.0,  # too few epochs to need it
    min_scale=0.35,  # the crop scale of fastai's 20-epoch record (its 5-epoch: none)
    hflip=0.5,
    # no Mixup/CutMix: in 5 epochs their mixed targets slow learning more than they
    # regularise (the ablation turns them on: mix_prob=1 with these alphas)
    mixup_alpha=0.8,
    cutmix_alpha=1.0,
    mix_prob=0.0,
    switch_prob=0.5,
    ema=True,
    ema_momentum=0.9998,
    ema_warmup=True,
    # HIRI-ViT's EMA distillation (Sec. 4.5); without CutMix the teacher's per-location
    # probabilities on the unmixed batch, pooled, are half of the target
    distill=True,
    distill_alpha=0.5,
    # speed: bf16 autocast where native (A100, H100), fp16 with a gradient scaler on a
    # T4, fp32 on a CPU; channels-last and torch.compile on a GPU (unset: by device);
    # the decoded images live on the GPU (--data-on-device auto) and are augmented there
    amp="auto",
    channels_last=None,
    compile=None,
    seed=0,
    eval_ema="last",  # the student's curve every epoch, the EMA's top-1 at the end
)
RECIPES["imagenette_5ep"] = dict(
    _IMAGENETTE, epochs=5, warmup_epochs=1.25, final_epochs=1
)
RECIPES["imagenette_20ep"] = dict(
    _IMAGENETTE, epochs=20, warmup_epochs=5.0, final_epochs=4
)

#: The ablation of the 5-epoch recipe: one lever at a time, the same seeds.  Each entry
#: is (what changes, the overrides); chapter 8 reads the runs' logs and names each row
#: by the fields its recipe changed.
IMAGENETTE_ABLATION: Dict[str, Dict[str, Any]] = {
    "no EMA distillation": dict(distill=False),
    "patch embedding (7x7/4 conv) for the Conv-stem": dict(
        model_kwargs={"stem": "vit"}
    ),
    "LN for BN in the early stages": dict(model_kwargs={"norm": "ln"}),
    "Mixup/CutMix on every batch": dict(mix_prob=1.0),
    "no label smoothing": dict(label_smoothing=0.0),
    "cosine with linear warm-up for one-cycle": dict(schedule="cosine"),
    "warm-up 0.25 epochs for 1.25": dict(warmup_epochs=0.25),
    "96 px throughout (no progressive resizing)": dict(final_epochs=0),
}




#: Fields that say where, how fast or on which copy of the data a run ran, not what
#: it trained: a resume may change them (``--resume --no-compile``).
SPEED_AND_PLACE = ("data", "compile", "channels_last", "amp", "cache_res")
#: ... and the seed: ignored when a run is compared with its recipe (a seed is another
#: repetition of the same recipe).
_NOT_THE_RECIPE = ("seed",) + SPEED_AND_PLACE

#: What each recipe is, in words (``train --help`` lists them).
RECIPE_NOTES: Dict[str, str] = {
    "imagenette_cpu": "PVTv2-B0 at 64 px, 5 epochs, batch 64, Mixup/CutMix and an EMA:"
    " the smallest run that shows learning on a 2-core CPU",
    "imagenette_5ep": "HIRI-ViT-Nano, 5 epochs at 96 px then 128 px, one-cycle, EMA"
    " distillation, no Mixup/CutMix: chapter 8's record attempt at 5 epochs",
    "imagenette_20ep": "the same recipe over 20 epochs (the last 4 at 128 px)",
}

def resolve_config(recipe: Optional[str] = None, **overrides) -> TrainConfig:
    """A :class:`TrainConfig` from a named recipe (or the defaults) and overrides; an
    unknown recipe or field is a ``ConfigError`` listing what exists."""
    names = {f.name for f in dataclasses.fields(TrainConfig)}
    unknown = [k for k in overrides if k not in names]
    if unknown:
        raise ConfigError(
            f"unknown training setting {unknown[0]!r}; the settings are "
            f"{', '.join(sorted(names))}"
        )
    values: Dict[str, Any] = {}
    if recipe is not None:
        if recipe not in RECIPES:
            raise ConfigError(
                f"unknown recipe {recipe!r}; the recipes are "
                f"{', '.join(sorted(RECIPES))}"
            )
        values.update(copy.deepcopy(RECIPES[recipe]))
    values.update(overrides)
    cfg = TrainConfig(
        **values, **({"recipe": recipe} if "recipe" not in values else {})
    )
    return cfg


def check_fields(cfg: "TrainConfig") -> None:
    """Every field's type, range and choices, from the field metadata (the same table
    the command line's flags are made from); a ``ConfigError`` naming the flag."""
    for f in dataclasses.fields(cfg):
        v, meta, kind = getattr(cfg, f.name), f.metadata, field_kind(f)
        if v is None:
            if "Optional" in str(f.type):
                continue
            raise ConfigError(f"{flag(f.name)} must be set (got None)")
        ok = isinstance(v, kind) and not (kind is int and isinstance(v, bool))
        if kind is float and isinstance(v, int) and not isinstance(v, bool):
            ok = True
        if not ok:
            raise ConfigError(
                f"{flag(f.name)} {v!r}: must be {kind.__name__}, not "
                f"{type(v).__name__}"
            )
        choices = meta.get("choices")
        if choices and v not in choices:
            raise ConfigError(
                f"{flag(f.name)} {v!r}: must be one of {', '.join(choices)}"
            )
        problem = range_problem(meta, v) if kind in (int, float) else None
        if problem:
            raise ConfigError(f"{flag(f.name)} {v!r}: {problem}")


def _check_out(out: Path, resume: bool) -> bool:
    """``out`` must be a folder we can write; a finished or running run there is only
    continued with --resume, never overwritten.  Returns whether there is a checkpoint
    to resume from: --resume on a run stopped before its first checkpoint (or on a
    folder not made yet) starts from scratch, so that a preemptible job can always
    pass --resume."""
    if out.exists() and not out.is_dir():
        raise ConfigError(
            f"--out {out} is a file; give a folder for the run's log and checkpoint"
        )
    ckpt = out / CHECKPOINT_NAME
    if not resume and (ckpt.is_file() or (out / LOG_NAME).is_file()):
        raise ConfigError(
            f"--out {out} already holds a run; pass --resume to continue it, "
            "or choose another --out"
        )
    parent = out
    while not parent.exists():
        parent = parent.parent
    if not parent.is_dir():
        raise ConfigError(f"cannot write {out}: {parent} is a file, not a folder")
    try:
        with tempfile.TemporaryFile(dir=parent):
            pass
    except OSError as e:
        raise ConfigError(
            f"cannot write {out}: {parent} is not writable ({e.strerror})"
        ) from None
    return resume and ckpt.is_file()


def validate(cfg: TrainConfig, world: int = 1) -> TrainConfig:
    """Check every setting before any work; returns ``cfg`` with defaults filled in
    (``out``, ``cache_res``).  Raises ``ConfigError`` (one line) on anything that
    cannot work: an unknown model, a resolution the model cannot take, a data folder
    that is missing, a batch that does not split across the processes ..."""
    from hirilib.data import resolve_source
    from hirilib.registry import get_entry
    from hirilib.runtime import resolve_device

    check_fields(cfg)
    if cfg.model is None and cfg.resume:
        raise ConfigError(
            f"--resume: no run to continue in --out {cfg.out or '.'} (it has no "
            f"{LOG_NAME}); give --out the folder of the run"
        )
    if cfg.model is None:
        raise ConfigError(
            "--model is required (python -m hirilib list names them), or "
            f"--recipe one of {', '.join(sorted(RECIPES))}"
        )
    get_entry(cfg.model)  # unknown model: did you mean
    with torch.device("meta"):
        from hirilib import create_model

        try:
            meta = create_model(
                cfg.model,
                num_classes=10,
                drop_path_rate=cfg.drop_path_rate,
                **cfg.model_kwargs,
            )
        except TypeError as e:
            raise ConfigError(f"--model-kwargs: {e}") from None
        sizes = (("--res", cfg.res), ("--val-res", cfg.val_res))
        for flag, r in sizes + (("--final-res", cfg.final_res),):
            if r is None:
                continue
            try:
                meta.check_input(torch.empty(1, meta.in_chans, r, r, device="meta"))
            except ValueError as e:
                raise ConfigError(f"{flag} {r}: {e}") from None
    for name in ("forward_features", "forward_head"):
        if not callable(getattr(meta, name, None)):
            raise ConfigError(
                f"{cfg.model} has no {name}(); every registered model needs it"
            )
    if meta.in_chans != 3:
        raise ConfigError(
            f"{cfg.model} takes {meta.in_chans} input channels; the data are "
            "RGB images (3)"
        )
    resolve_source(cfg.data)  # missing folder, no files
    if cfg.batch_size % world:
        raise ConfigError(
            f"--batch-size {cfg.batch_size} (the global batch) does not split "
            f"evenly across {world} processes; use a multiple of {world}"
        )
    if cfg.distill and not cfg.ema:
        raise ConfigError("--distill needs the EMA teacher: drop --no-ema")
    if cfg.min_lr > cfg.lr:
        raise ConfigError(f"--min-lr {cfg.min_lr} is above --lr {cfg.lr}")
    if cfg.train_subset is not None and cfg.train_subset < cfg.batch_size:
        raise ConfigError(
            f"--train-subset {cfg.train_subset} is smaller than one batch "
            f"({cfg.batch_size})"
        )
    if cfg.recipe is not None and cfg.recipe not in RECIPES:
        raise ConfigError(
            f"unknown recipe {cfg.recipe!r}; the recipes are "
            f"{', '.join(sorted(RECIPES))}"
        )
    device = resolve_device(cfg.device)  # 'tpu', cuda on a CPU machine
    if cfg.amp in ("fp16",) and device.type != "cuda":
        raise ConfigError(
            f"--amp fp16 needs a CUDA GPU (this run is on {device.type}); "
            "use --amp off or bf16"
        )
    if cfg.amp == "bf16" and device.type == "cuda" and not _native_bf16(device):
        raise ConfigError(
            f"--amp bf16: {torch.cuda.get_device_name(device)} has no native "
            "bf16; use --amp fp16 (with a gradient scaler) or auto"
        )
    out = Path(cfg.out or f"runs/{cfg.model}")
    resume = _check_out(out, cfg.resume)
    if cfg.final_epochs > cfg.epochs:
        raise ConfigError(
            f"--final-epochs {cfg.final_epochs} is more than --epochs {cfg.epochs}"
        )
    if cfg.final_epochs and cfg.final_res is None:
        raise ConfigError(f"--final-epochs {cfg.final_epochs} needs --final-res")
    val_res = cfg.val_res or cfg.res
    return dataclasses.replace(
        cfg,
        out=str(out),
        resume=resume,
        val_res=val_res,
        cache_res=cfg.cache_res or max(cfg.res, val_res, cfg.final_res or 0),
        compile=device.type == "cuda" if cfg.compile is None else cfg.compile,
    )


def _native_bf16(device: torch.device) -> bool:
    try:
        return torch.cuda.is_bf16_supported(including_emulation=False)
    except TypeError:  # older torch: compute capability 8.0 (Ampere) and later
        return torch.cuda.get_device_capability(device)[0] >= 8


def amp_dtype(setting: str, device: torch.device) -> Optional[torch.dtype]:
    """The autocast dtype: None (fp32), torch.float16 or torch.bfloat16."""
    if setting == "off" or (setting == "auto" and device.type != "cuda"):
        return None
    if setting == "fp16":
        return torch.float16
    if setting == "bf16":
        return torch.bfloat16
    return torch.bfloat16 if _native_bf16(device) else torch.float16
