"""Setting up a run: the checked config, the processes, the lock on ``--out``, the
data, the model with its EMA teacher, fused AdamW and the gradient scaler (restored on
``--resume``), ``torch.compile`` and DDP, and the log's first record."""

from __future__ import annotations

import copy
import os
import shlex
import sys
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, Optional

import torch
import torch.nn as nn

from .config import (
    CHECKPOINT_NAME,
    LOG_NAME,
    ConfigError,
    TrainConfig,
    _check_out,
    amp_dtype,
    resolve_config,
    validate,
)
from .dist import Dist, init_distributed, sync_batchnorm, world_from_env
from .objectives import location_logits, param_groups
from .state import (
    RunLock,
    RunLog,
    check_resumable,
    load_checkpoint,
    load_model_state,
    set_rng_state,
)


class Interrupted(KeyboardInterrupt):
    """Training stopped by Ctrl-C or SIGTERM; the message says what was kept and the
    command that continues the run."""

    def __init__(self, message: str, code: int = 130):
        super().__init__(message)
        self.code = code


@dataclass
class RunResult:
    """What ``train`` returns: the final weights (student and EMA), the last epoch's
    metrics and where the log and checkpoint are."""

    model: nn.Module
    ema: Optional[nn.Module]
    metrics: Dict[str, Any]
    out: Path
    log: Path
    checkpoint: Path
    finished_before: bool = False


class Teacher(nn.Module):
    """The EMA teacher's per-location logits as a module, so that it compiles as the
    student does (:func:`~hirilib.train.objectives.location_logits`)."""

    def __init__(self, ema: nn.Module):
        super().__init__()
        self.ema = ema

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return location_logits(self.ema, x)  # (B, K, h, w)


@dataclass
class Run:
    """Everything a running training holds (one process's view)."""

    cfg: TrainConfig
    dist: Dist
    command: str
    data: Any = None
    model: Optional[nn.Module] = None  # the module whose state is saved
    net: Optional[nn.Module] = None  # what the step calls (compiled, DDP)
    ema: Optional[nn.Module] = None
    teacher: Optional[Callable] = None
    optimizer: Any = None
    scaler: Any = None
    aug: Any = None
    autocast: Optional[torch.dtype] = None
    channels_last: bool = False
    on_device: bool = False
    steps_per_epoch: int = 0
    total_steps: int = 0
    warmup_steps: int = 0
    start_step: int = 0
    elapsed_before: float = 0.0
    last_saved: int = -1
    order: Optional[torch.Tensor] = None
    order_epoch: int = -1
    stop: Optional[str] = None
    lock: Optional[RunLock] = None
    log: Optional[RunLog] = None
    t0: float = field(default_factory=time.perf_counter)

    @property
    def out(self) -> Path:
        return Path(self.cfg.out)

    @property
    def ckpt_path(self) -> Path:
        return self.out / CHECKPOINT_NAME

    @property
    def device(self) -> torch.device:
        return self.dist.device

    def elapsed(self) -> float:
        return self.elapsed_before + time.perf_counter() - self.t0


# ============================================================================ setup


def _load_data(cfg: TrainConfig, dist: Dist):
    """Rank 0 decodes into the cache, the others read it; on the GPU when it fits."""
    from hirilib.data import fits_on_device, load_data

    kw = dict(
        size=cfg.cache_res,
        train_subset=cfg.train_subset,
        val_subset=cfg.val_subset,
        cache_dir=cfg.cache_dir,
        workers=cfg.workers,
        progress=cfg.progress and dist.main,
    )
    data = load_data(cfg.data, **kw) if dist.main else None
    dist.barrier()
    if not dist.main:
        data = load_data(cfg.data, **kw)
    on_device = cfg.data_on_device == "yes" or (
        cfg.data_on_device == "auto" and fits_on_device(data.nbytes(), dist.device)
    )
    if on_device:
        return data.to(dist.device), True
    return data.to("cpu", pin=dist.device.type == "cuda"), False


def _build(run: Run) -> None:
    """Model (BatchNorm synchronised across processes), EMA teacher, fused AdamW and
    the gradient scaler; the same initial weights on every rank."""
    import hirilib

    cfg, device = run.cfg, run.device
    hirilib.seed_everything(cfg.seed)
    model = hirilib.create_model(
        cfg.model,
        num_classes=run.data.num_classes,
        drop_path_rate=cfg.drop_path_rate,
        **cfg.model_kwargs,
    )
    run.channels_last = (
        cfg.channels_last if cfg.channels_last is not None else device.type == "cuda"
    )
    fmt = torch.channels_last if run.channels_last else torch.contiguous_format
    model = model.to(device, memory_format=fmt)
    if run.dist.world > 1:
        model = sync_batchnorm(model, device)
    run.model = model
    run.ema = copy.deepcopy(model).eval().requires_grad_(False) if cfg.ema else None
    run.autocast = amp_dtype(cfg.amp, device)
    run.optimizer = torch.optim.AdamW(
        param_groups(model, cfg.weight_decay), lr=cfg.lr, betas=(0.9, 0.999), fused=True
    )
    run.scaler = torch.amp.GradScaler(
        device.type, enabled=run.autocast == torch.float16
    )
    torch.manual_seed(cfg.seed * 1000 + run.dist.rank + 1)  # drop-path: per rank
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True


def _resume(run: Run) -> None:
    """Restore model, EMA, optimizer, scaler, random states and the step."""
    cfg, dist = run.cfg, run.dist
    ck = load_checkpoint(run.ckpt_path)
    check_resumable(ck, cfg, run.ckpt_path)
    load_model_state(run.model, ck["model"], run.ckpt_path)
    if run.ema is not None:
        if ck.get("ema") is None:
            raise ConfigError(f"--resume: {run.ckpt_path} has no EMA; pass --no-ema")
        load_model_state(run.ema, ck["ema"], run.ckpt_path)
    run.optimizer.load_state_dict(ck["optimizer"])
    run.scaler.load_state_dict(ck["scaler"])
    states = ck["rng"]
    if len(states) == dist.world:
        set_rng_state(states[dist.rank])
    else:
        warnings.warn(
            f"the checkpoint was written by {len(states)} processes and this run has "
            f"{dist.world}: the random states of drop-path cannot be restored, so the "
            "continuation is not bit-exact"
        )
    run.start_step, run.elapsed_before = int(ck["step"]), float(ck["elapsed"])
    run.last_saved = run.start_step


def _wrap(run: Run) -> None:
    """``torch.compile`` (static shapes: one graph per resolution and mode, never a
    dynamic recompile) of the student and the teacher alike; DDP across processes."""
    cfg, device = run.cfg, run.device
    run.teacher = Teacher(run.ema) if cfg.distill else None
    if cfg.compile:  # in place (Module.compile): the state_dict keys do not change
        _room_for_static_graphs()
        run.model.compile(dynamic=False)
        if run.ema is not None:
            run.ema.compile(dynamic=False)
        if run.teacher is not None:
            run.teacher.compile(dynamic=False)
    run.net = run.model
    if run.dist.world > 1:
        from torch.nn.parallel import DistributedDataParallel as DDP

        # depthwise kernels' gradients come back in another memory layout on a CPU: a
        # performance note from DDP, not a problem
        warnings.filterwarnings("ignore", message="Grad strides do not match")
        ids = [device.index] if device.type == "cuda" else None
        run.net = DDP(run.model, device_ids=ids)


def _room_for_static_graphs(n: int = 64) -> None:
    """Static shapes give one graph per (resolution, train/eval, student/teacher) and
    per stage shape of a frame a graph break starts: more than dynamo's default limit
    of 8 per frame, past which it would run that frame eagerly."""
    import torch._dynamo

    for name in ("recompile_limit", "cache_size_limit", "accumulated_recompile_limit"):
        if hasattr(torch._dynamo.config, name):
            current = getattr(torch._dynamo.config, name)
            setattr(torch._dynamo.config, name, max(current, n))


def _augment(run: Run):
    from hirilib.data import BatchAugment

    cfg = run.cfg
    return BatchAugment(
        run.data,
        cfg.res,
        run.data.num_classes,
        seed=cfg.seed,
        min_scale=cfg.min_scale,
        hflip=cfg.hflip,
        mixup_alpha=cfg.mixup_alpha,
        cutmix_alpha=cfg.cutmix_alpha,
        mix_prob=cfg.mix_prob,
        switch_prob=cfg.switch_prob,
        label_smoothing=cfg.label_smoothing,
        device=run.device,
        channels_last=run.channels_last,
    )


def _own_out(run: Run, resume_asked: bool) -> None:
    """Rank 0 takes the folder's lock (a second live run stops here), checks the folder
    again under the lock, and starts afresh where a resume found no checkpoint."""
    if not run.dist.main:
        return
    run.out.mkdir(parents=True, exist_ok=True)
    run.lock = RunLock(run.out).acquire()
    _check_out(run.out, resume_asked)  # again, now that no one else can write
    if resume_asked and not run.cfg.resume:
        # a run stopped before its first checkpoint: its log goes, the run restarts
        (run.out / LOG_NAME).unlink(missing_ok=True)


def setup_run(cfg: TrainConfig | Dict[str, Any], command: Optional[str] = None) -> Run:
    """Everything before the first step: the checked config, the processes, the lock,
    the data, the model and optimizer (restored on resume), compilation and DDP."""
    if isinstance(cfg, dict):
        cfg = resolve_config(**cfg)
    resume_asked = cfg.resume
    cfg = validate(cfg, world_from_env())
    if resume_asked and not cfg.resume and int(os.environ.get("RANK", "0")) == 0:
        print(
            f"--resume: {cfg.out} has no checkpoint yet; starting from scratch",
            file=sys.stderr,
        )
    command = command or "python -m hirilib train " + " ".join(
        shlex.quote(a) for a in sys.argv[1:]
    )
    run = Run(cfg, init_distributed(cfg.device), command)
    try:
        _own_out(run, resume_asked)
        run.log = RunLog(run.out / LOG_NAME, run.dist.main)
        run.data, run.on_device = _load_data(cfg, run.dist)
        n_train = run.data.train_labels.numel()
        if n_train < cfg.batch_size:
            raise ConfigError(
                f"--batch-size {cfg.batch_size} is larger than the training set "
                f"({n_train} images)"
            )
        run.steps_per_epoch = n_train // cfg.batch_size
        run.total_steps = run.steps_per_epoch * cfg.epochs
        run.warmup_steps = round(cfg.warmup_epochs * run.steps_per_epoch)
        _build(run)
        if cfg.resume:
            _resume(run)
        _wrap(run)
        run.aug = _augment(run)
    except BaseException:
        close_run(run)
        raise
    return run


def close_run(run: Run) -> None:
    if run.lock is not None:
        run.lock.release()


# ================================================================= the first record


_DTYPE_NAMES = {None: "fp32", torch.float16: "fp16", torch.bfloat16: "bf16"}


def matmul_peak(device: torch.device, dtype: Optional[torch.dtype]) -> float:
    """Multiply-accumulates per second of a large matrix product on ``device`` at the
    training precision: :func:`hirilib.measure.roofline.measure_peaks`, the one
    measurement the roofline uses too (its TFLOP/s count a multiply-accumulate as 2)."""
    from hirilib.measure.roofline import measure_peaks

    return measure_peaks(device, _DTYPE_NAMES.get(dtype, "fp32"))["tflops"] * 1e12 / 2


def start_record(run: Run) -> Dict[str, Any]:
    """The log's first record: the resolved recipe, the command, the device and
    versions, the data, the model's size and cost at each resolution, the schedule, and
    the device's measured matmul rate (the roofline of the step's throughput)."""
    from hirilib.measure import count_flops, count_params
    from hirilib.measure.flops import blank_model
    from hirilib.measure.results import environment

    cfg, data, device = run.cfg, run.data, run.device

    def gmacs_at(res: int) -> Optional[float]:
        try:
            blank = blank_model(
                cfg.model, num_classes=data.num_classes, **cfg.model_kwargs
            )
            return count_flops(blank, (1, 3, res, res)) / 1e9
        except Exception:  # an op the counter does not know
            return None

    sizes = sorted({cfg.res, cfg.val_res or cfg.res, cfg.final_res or cfg.res})
    at = {r: gmacs_at(r) for r in sizes}
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        peak = matmul_peak(device, run.autocast)  # measuring must not move the RNG
    return {
        "type": "resume" if cfg.resume else "start",
        "step": run.start_step,
        "command": run.command,
        "config": cfg.as_dict(),
        "world_size": run.dist.world,
        **environment(device),
        "amp": str(run.autocast).replace("torch.", "") if run.autocast else "off",
        "channels_last": run.channels_last,
        "data": {
            "source": data.source,
            "train": data.train_labels.numel(),
            "validation": data.val_labels.numel(),
            "classes": data.classes,
            "cache_res": data.size,
            "on_device": run.on_device,
            "cache": Path(data.cache_path).name if data.cache_path else None,
            "load_seconds": round(data.load_seconds, 2),
        },
        "model": {
            "params": count_params(run.model),
            "gmacs_per_image": at[cfg.res],  # at the training resolution
            "gmacs_per_image_val": at[cfg.val_res or cfg.res],
            "gmacs_by_res": {str(r): g for r, g in at.items()},
        },
        "steps_per_epoch": run.steps_per_epoch,
        "total_steps": run.total_steps,
        "warmup_steps": run.warmup_steps,
        "peak_macs_per_s": peak,
    }
