"""The loop: the step, the evaluation, the end of a logging window and of an epoch,
the checkpoint policy, and :func:`train`, which reads as the method does.

The step makes no host synchronisation: the batch is drawn and augmented on the
device, the optimizer is AdamW's fused kernel (its step counters on the device, the
fp16 gradient scaler's inf check inside the kernel), and the loss and accuracy stay
tensors until a logging step reads them.  Evaluation, logging, checkpoints and the
first step at each resolution (where ``torch.compile`` compiles) are timed apart.
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import time
from typing import Any, Dict, Optional

import torch
import torch.nn as nn
import torch.nn.functional as F

from .config import LOG_NAME, TrainConfig
from .dist import Dist
from .objectives import (
    distillation_target,
    ema_momentum_at,
    ema_update_,
    lr_for,
    res_at,
    soft_cross_entropy,
)
from .setup import Interrupted, Run, RunResult, close_run, setup_run, start_record
from .state import (
    CHECKPOINT_FORMAT,
    previous_epochs,
    rng_state,
    save_checkpoint,
    unwrap,
)


# ============================================================================ the step


def next_batch(run: Run, step: int):
    """The augmented batch of ``step``: its slice of the epoch's order (made on the
    data's device once an epoch), at the epoch's resolution."""
    from hirilib.data import epoch_order

    cfg = run.cfg
    epoch, i = divmod(step, run.steps_per_epoch)
    if run.order_epoch != epoch:
        n = run.data.train_labels.numel()
        run.order = epoch_order(cfg.seed, epoch, n, device=run.data.device)
        run.order_epoch = epoch
    run.aug.res = res_at(epoch, cfg)  # progressive resizing (a function of the epoch)
    B = cfg.batch_size
    idx = run.order[i * B : (i + 1) * B]
    return run.aug(idx, epoch, step, run.dist.rank, run.dist.world)


def _teacher_target(run: Run, batch) -> torch.Tensor:
    """HIRI-ViT's distillation target from the EMA teacher's per-location
    probabilities on the two CutMix sources."""
    p_a = run.teacher(batch.x_a).float().softmax(1)  # (B, K, h, w)
    if batch.partner_is_flip:
        p_b = p_a.flip(0)
    else:  # the partners live on other ranks: gather, reverse, slice
        b, r = p_a.shape[0], run.dist.rank
        p_b = run.dist.all_gather_cat(p_a).flip(0)[r * b : (r + 1) * b]
    alpha = run.cfg.distill_alpha
    return distillation_target(p_a, p_b, batch.mask, batch.target, alpha)


def train_step(run: Run, batch, step: int):
    """One optimizer step on ``batch``: the loss (with the teacher's target under EMA
    distillation), backward, clipping, AdamW, the EMA update.  Returns the loss and the
    batch accuracy as device tensors (nothing is read back to the host)."""
    cfg, opt, scaler = run.cfg, run.optimizer, run.scaler
    lr = lr_for(
        cfg.schedule, step, run.total_steps, run.warmup_steps, cfg.lr, cfg.min_lr
    )
    for g in opt.param_groups:
        g["lr"] = lr
    dt = run.autocast
    with torch.autocast(run.device.type, dtype=dt, enabled=dt is not None):
        target = batch.target
        if cfg.distill:
            with torch.no_grad():
                target = _teacher_target(run, batch)
        logits = run.net(batch.x)
        loss = soft_cross_entropy(logits, target)
    scaler.scale(loss).backward()
    if cfg.clip_grad > 0:
        scaler.unscale_(opt)
        torch.nn.utils.clip_grad_norm_(run.model.parameters(), cfg.clip_grad)
    scaler.step(opt)
    scaler.update()
    opt.zero_grad(set_to_none=True)
    if run.ema is not None:
        m_t = ema_momentum_at(step, cfg.ema_momentum, cfg.ema_warmup)
        ema_update_(run.ema, unwrap(run.model), m_t)
    with torch.no_grad():
        acc = (logits.argmax(1) == batch.target.argmax(1)).float().mean()
    return loss.detach().float(), acc


# ====================================================================== evaluation


@torch.no_grad()
def evaluate(
    model: nn.Module,
    images: torch.Tensor,
    labels: torch.Tensor,
    res: int,
    dist: Dist,
    batch_size: int = 256,
    autocast: Optional[torch.dtype] = None,
    channels_last: bool = False,
) -> Dict[str, float]:
    """Top-1, top-5 (%) and cross-entropy on the validation split: the whole image
    resized to ``res``, one view; each rank takes every world-th image and the counts
    are all-reduced.  Every batch has one shape (the last is padded, its padding
    masked out), so a compiled model compiles once."""
    from hirilib.data import eval_images

    was_training = model.training
    model.eval()
    idx = torch.arange(dist.rank, labels.numel(), dist.world, device=labels.device)
    bs = max(1, min(batch_size, idx.numel()))
    sums = torch.zeros(4, dtype=torch.float64, device=dist.device)  # loss, top-1/5, n
    for i in range(0, idx.numel(), bs):
        j = idx[i : i + bs]
        valid = torch.ones(bs, device=dist.device, dtype=torch.float64)
        if j.numel() < bs:  # pad with the first image, masked out
            valid[j.numel() :].zero_()
            j = torch.cat([j, j[:1].expand(bs - j.numel())])
        x = eval_images(images[j.to(images.device)], res, dist.device, channels_last)
        y = labels[j].to(dist.device, non_blocking=True)
        with torch.autocast(
            dist.device.type, dtype=autocast, enabled=autocast is not None
        ):
            logits = model(x).float()
        hit = logits.topk(min(5, logits.shape[1]), dim=1).indices == y[:, None]
        per = torch.stack(
            [
                F.cross_entropy(logits, y, reduction="none").double(),
                hit[:, 0].double(),
                hit.any(1).double(),
                torch.ones_like(valid),
            ]
        )  # (4, bs)
        sums += (per * valid).sum(1)
    dist.all_reduce_sum(sums)
    model.train(was_training)
    loss, top1, top5, n = (sums / sums[3].clamp(min=1)).tolist()
    return {"loss": loss, "top1": 100 * top1, "top5": 100 * top5}


# ============================================================ windows, epochs, saving


class _Timer:
    """Step-phase times: CUDA events on a GPU (read later, without stalling the
    pipeline), the wall clock on a CPU."""

    def __init__(self, device: torch.device):
        self.cuda = device.type == "cuda"
        self.pending: list = []
        self.data = self.total = 0.0

    def mark(self):
        if self.cuda:
            e = torch.cuda.Event(enable_timing=True)
            e.record()
            return e
        return time.perf_counter()

    def add(self, t0, t1, t2) -> None:
        if self.cuda:
            self.pending.append((t0, t1, t2))
        else:
            self.data += t1 - t0
            self.total += t2 - t0

    def take(self) -> float:
        """The data fraction of the step time since the last call."""
        for t0, t1, t2 in self.pending:
            t2.synchronize()
            self.data += t0.elapsed_time(t1) / 1e3
            self.total += t0.elapsed_time(t2) / 1e3
        self.pending = []
        frac = self.data / self.total if self.total > 0 else 0.0
        self.data = self.total = 0.0
        return frac


class Meter:
    """The running sums of a logging window and of an epoch (device tensors until a
    logging step reads them), and their clocks, which pauses do not advance."""

    def __init__(self, run: Run):
        self.run, self.timer = run, _Timer(run.device)
        self.win = self._fresh()
        self.ep = dict(self._fresh(), data=0.0, compile=0.0)

    @staticmethod
    def _fresh() -> Dict[str, Any]:
        return {"loss": 0.0, "acc": 0.0, "n": 0, "timed": 0, "t": time.perf_counter()}

    def add(self, loss, acc, timed: bool = True) -> None:
        self.win["loss"] = self.win["loss"] + loss
        self.win["acc"] = self.win["acc"] + acc
        self.win["n"] += 1
        self.win["timed"] += int(timed)

    def pause(self, seconds: float, compile: bool = False) -> None:
        self.win["t"] += seconds
        self.ep["t"] += seconds
        if compile:
            self.ep["compile"] += seconds

    def read_window(self) -> Dict[str, float]:
        """The window's all-reduced loss and accuracy, images/s and data wait."""
        run, w = self.run, self.win
        stats = run.dist.all_reduce_sum(
            torch.stack([torch.as_tensor(w["loss"]), torch.as_tensor(w["acc"])])
            .float()
            .to(run.device)
        ) / (run.dist.world * w["n"])
        loss, acc = stats.tolist()
        seconds = max(1e-9, time.perf_counter() - w["t"])
        img_s = w["timed"] * run.cfg.batch_size / seconds
        frac = self.timer.take()
        for k, v in (("loss", loss * w["n"]), ("acc", acc * w["n"]), ("n", w["n"])):
            self.ep[k] += v
        self.ep["timed"] += w["timed"]
        self.ep["data"] += frac * w["n"]
        self.win = self._fresh()
        return {"loss": loss, "acc": acc, "img_s": img_s, "data_wait": frac}

    def close_epoch(self, t_end: float) -> Dict[str, float]:
        ep, B = self.ep, self.run.cfg.batch_size
        train_s = max(1e-9, t_end - ep["t"])
        out = {
            "train_loss": ep["loss"] / max(1, ep["n"]),
            "train_acc": 100 * ep["acc"] / max(1, ep["n"]),
            "img_s": ep["timed"] * B / train_s,
            "data_wait": ep["data"] / max(1, ep["n"]),
            "train_seconds": train_s,
            "compile_seconds": ep["compile"],
        }
        self.ep = dict(self._fresh(), data=0.0, compile=0.0)
        return out


def log_window(run: Run, meter: Meter, done: int, bar) -> None:
    """A logging step: the only step whose numbers are read back to the host."""
    w = meter.read_window()
    rec = {
        "type": "step",
        "step": done,
        "epoch": round(done / run.steps_per_epoch, 4),
        "loss": w["loss"],
        "acc": 100 * w["acc"],
        "lr": run.optimizer.param_groups[0]["lr"],
        "res": run.aug.res,
        "img_s": w["img_s"],
        "data_wait": w["data_wait"],
        "ema_momentum": (
            ema_momentum_at(done - 1, run.cfg.ema_momentum, run.cfg.ema_warmup)
            if run.ema is not None
            else None
        ),
        "time": run.elapsed(),
    }
    if run.scaler.is_enabled():
        rec["grad_scale"] = run.scaler.get_scale()
    run.log.write(rec)
    bar.set_postfix(
        loss=f"{rec['loss']:.3f}",
        acc=f"{rec['acc']:.1f}",
        img_s=f"{w['img_s']:.0f}",
        refresh=False,
    )


def end_of_epoch(run: Run, meter: Meter, epoch: int, done: int, bar) -> Dict:
    """The epoch's record: training metrics, the student's (and the EMA's) validation
    metrics, throughput and the times spent training, compiling, evaluating."""
    cfg, data = run.cfg, run.data
    metrics = {"type": "epoch", "epoch": epoch + 1, "step": done}
    metrics.update(meter.close_epoch(time.perf_counter()))
    t_eval = time.perf_counter()
    ev_args = (data.val_images, data.val_labels, cfg.val_res, run.dist)
    ev_kw = dict(
        batch_size=cfg.eval_batch_size,
        autocast=run.autocast,
        channels_last=run.channels_last,
    )
    ev = evaluate(run.model, *ev_args, **ev_kw)
    metrics.update(val_loss=ev["loss"], val_top1=ev["top1"], val_top5=ev["top5"])
    if run.ema is not None and (cfg.eval_ema == "every" or done == run.total_steps):
        ev = evaluate(run.ema, *ev_args, **ev_kw)
        metrics.update(
            ema_val_loss=ev["loss"], ema_val_top1=ev["top1"], ema_val_top5=ev["top5"]
        )
    metrics.update(eval_seconds=time.perf_counter() - t_eval, time=run.elapsed())
    run.log.write(metrics)
    if run.dist.main and cfg.progress:
        ema = metrics.get("ema_val_top1")
        ema_s = f", EMA {ema:.2f}%" if ema is not None else ""
        bar.write(
            f"epoch {epoch + 1}/{cfg.epochs}: val top-1 {metrics['val_top1']:.2f}%"
            f"{ema_s} ({metrics['img_s']:.0f} img/s)",
            file=getattr(bar, "fp", sys.stderr),
        )
    return metrics


def should_save(run: Run, done: int) -> bool:
    """The checkpoint policy: at the end, every ``--save-every-epochs`` epochs, every
    ``--save-every`` steps (and on SIGTERM, see :func:`train`)."""
    cfg, spe = run.cfg, run.steps_per_epoch
    every_epochs = cfg.save_every_epochs and done % (spe * cfg.save_every_epochs) == 0
    return (
        done == run.total_steps
        or bool(every_epochs)
        or bool(cfg.save_every and done % cfg.save_every == 0)
    )


def save(run: Run, done: int) -> None:
    """The checkpoint of step ``done``: everything an exact resume needs."""
    import hirilib

    states = run.dist.gather_objects(rng_state())
    if run.dist.main:
        save_checkpoint(
            run.ckpt_path,
            {
                "format": CHECKPOINT_FORMAT,
                "step": done,
                "epoch": done / run.steps_per_epoch,
                "config": run.cfg.recipe_fields(),
                "model": unwrap(run.model).state_dict(),
                "ema": unwrap(run.ema).state_dict() if run.ema is not None else None,
                "optimizer": run.optimizer.state_dict(),
                "scaler": run.scaler.state_dict(),
                "rng": states,
                "world_size": run.dist.world,
                "elapsed": run.elapsed(),
                "hirilib": hirilib.__version__,
                "torch": str(torch.__version__),
            },
        )
    run.last_saved = done


def resume_command(run: Run) -> str:
    words = run.command.split()
    return run.command if "--resume" in words else run.command + " --resume"


def _interrupted(run: Run, done: int, how: str) -> Interrupted:
    if run.last_saved > 0:
        kept = f"the checkpoint of step {run.last_saved} in {run.out} is intact"
    else:
        kept = "no checkpoint was written yet (--resume starts from scratch)"
    return Interrupted(
        f"{how} at step {done}/{run.total_steps}: {kept}; continue with: "
        f"{resume_command(run)}",
        code=143 if how.startswith("stopped") else 130,
    )


@contextlib.contextmanager
def _sigterm_stops(run: Run):
    """SIGTERM (a preempted job) asks the loop to save and stop after this step."""
    import threading

    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def ask(signum, frame):
        run.stop = "SIGTERM"

    previous = signal.signal(signal.SIGTERM, ask)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def _stop_agreed(run: Run, logging_step: bool) -> bool:
    """Whether to save and stop now: at once in one process; with several, at a
    logging step, when any of them was asked (so that all save the same step)."""
    if run.dist.world == 1:
        return run.stop is not None
    if not logging_step:
        return False
    flag = torch.tensor([float(run.stop is not None)], device=run.device)
    if run.dist.all_reduce_sum(flag).item() > 0:
        run.stop = run.stop or "SIGTERM"
        return True
    return False


def finished(run: Run) -> RunResult:
    """A resumed run whose checkpoint is its last step: nothing to train."""
    epochs = previous_epochs(run.out / LOG_NAME)
    return RunResult(
        unwrap(run.model),
        run.ema,
        epochs[-1] if epochs else {},
        run.out,
        run.out / LOG_NAME,
        run.ckpt_path,
        finished_before=True,
    )


def timed_step(run: Run, meter: "Meter", step: int, seen_res: set) -> None:
    """A batch and a step, the data wait timed by events; the first step at each
    resolution (where torch.compile compiles) is timed apart, synchronised."""
    from hirilib.measure.timing import sync

    res = res_at(step // run.steps_per_epoch, run.cfg)
    first = res not in seen_res
    if first:
        sync(run.device)
        seen_res.add(res)
    t0 = time.perf_counter() if first else meter.timer.mark()
    batch = next_batch(run, step)
    t1 = meter.timer.mark()
    loss, acc = train_step(run, batch, step)
    if first:
        sync(run.device)
        meter.pause(time.perf_counter() - t0, compile=True)
    else:
        meter.timer.add(t0, t1, meter.timer.mark())
    meter.add(loss, acc, timed=not first)


# ============================================================================ training


def train(
    cfg: TrainConfig | Dict[str, Any], command: Optional[str] = None
) -> RunResult:
    """Run (or resume) the training ``cfg`` describes: for every step a batch and an
    optimizer step; at the end of a logging window the log, at the end of an epoch the
    evaluation, and the checkpoints of the policy; all but the steps timed apart."""
    from hirilib.data import progress_bar

    run = setup_run(cfg, command)
    cfg, metrics, done = run.cfg, {}, run.start_step
    try:
        if run.start_step >= run.total_steps:
            return finished(run)
        if run.cfg.resume:
            run.log.truncate_after(run.start_step)
        run.log.write(start_record(run))
        meter, seen_res = Meter(run), set()
        bar = progress_bar(
            total=run.total_steps,
            initial=run.start_step,
            disable=not (cfg.progress and run.dist.main),
            unit="step",
            dynamic_ncols=True,
        )
        run.t0 = time.perf_counter()
        run.net.train()
        with _sigterm_stops(run), bar:
            for step in range(run.start_step, run.total_steps):
                epoch = step // run.steps_per_epoch
                bar.set_description(f"epoch {epoch + 1}/{cfg.epochs}", refresh=False)
                timed_step(run, meter, step, seen_res)
                done = step + 1
                bar.update(1)
                t_pause = time.perf_counter()  # logging, evaluation, checkpoints
                logs = done % cfg.log_every == 0 or done % run.steps_per_epoch == 0
                if logs:
                    log_window(run, meter, done, bar)
                if done % run.steps_per_epoch == 0:
                    metrics = end_of_epoch(run, meter, epoch, done, bar)
                stop = _stop_agreed(run, logs)
                if should_save(run, done) or stop:
                    save(run, done)
                meter.pause(time.perf_counter() - t_pause)
                if stop:
                    raise _interrupted(run, done, f"stopped by {run.stop}")
                if cfg.stop_after_steps and done == cfg.stop_after_steps:
                    run.dist.barrier()
                    os.kill(os.getpid(), signal.SIGKILL)  # as a crash: no clean-up
        run.log.write({"type": "end", "step": run.total_steps, "time": run.elapsed()})
        return RunResult(
            unwrap(run.model), run.ema, metrics, run.out, run.log.path, run.ckpt_path
        )
    except Interrupted:
        raise
    except KeyboardInterrupt:
        raise _interrupted(run, done, "interrupted (Ctrl-C)") from None
    finally:
        close_run(run)
