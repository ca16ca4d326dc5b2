"""The maths of a training step: the learning-rate schedules, AdamW's parameter groups,
the soft cross-entropy, the EMA of the weights, and HIRI-ViT's EMA-distillation target
(Sec. 4.5), each a small function checked against its equation in the tests."""

from __future__ import annotations

import math
from typing import Any, Dict, List

import torch
import torch.nn as nn
import torch.nn.functional as F

from .config import SCHEDULES, ConfigError, TrainConfig


def lr_at(
    step: int, total_steps: int, warmup_steps: int, base_lr: float, min_lr: float = 0.0
) -> float:
    """The learning rate of (0-based) ``step``: linear warm-up to ``base_lr`` over
    ``warmup_steps`` steps, then a half cosine from ``base_lr`` down to ``min_lr`` at
    the last step.

        step < W:  lr = base * (step + 1) / W
        else:      lr = min + (base - min) * (1 + cos(pi * (step - W) / (T - W))) / 2

    >>> [round(lr_at(s, 10, 2, 1.0), 3) for s in range(10)]
    [0.5, 1.0, 1.0, 0.962, 0.854, 0.691, 0.5, 0.309, 0.146, 0.038]
    """
    if step < warmup_steps:
        return base_lr * (step + 1) / warmup_steps
    span = max(1, total_steps - warmup_steps)
    t = min(1.0, (step - warmup_steps) / span)
    return min_lr + (base_lr - min_lr) * 0.5 * (1.0 + math.cos(math.pi * t))


def onecycle_lr(
    step: int,
    total_steps: int,
    warmup_steps: int,
    base_lr: float,
    min_lr: float = 0.0,
    div: float = 25.0,
) -> float:
    """fastai's one-cycle schedule (Smith 2018, as ``fit_one_cycle`` runs it): a half
    cosine *up* from ``base_lr / div`` to ``base_lr`` over ``warmup_steps``, then the
    same half cosine down to ``min_lr`` as :func:`lr_at`.

        step < W: lr = a + (base - a) * (1 - cos(pi * (step + 1) / W)) / 2, a = base/div

    Unlike the linear warm-up it starts from a useful rate and lingers near the peak.
    (fastai also cycles Adam's beta1 from 0.95 to 0.85 and back; we keep 0.9.)

    >>> [round(onecycle_lr(s, 10, 4, 1.0), 3) for s in range(10)]
    [0.181, 0.52, 0.859, 1.0, 1.0, 0.933, 0.75, 0.5, 0.25, 0.067]
    """
    if step < warmup_steps:
        a, t = base_lr / div, (step + 1) / warmup_steps
        return a + (base_lr - a) * 0.5 * (1 - math.cos(math.pi * t))
    return lr_at(step, total_steps, warmup_steps, base_lr, min_lr)


def lr_for(
    schedule: str,
    step: int,
    total_steps: int,
    warmup_steps: int,
    base_lr: float,
    min_lr: float = 0.0,
) -> float:
    """The learning rate of ``step`` under a named schedule (:data:`SCHEDULES`)."""
    if schedule == "cosine":
        return lr_at(step, total_steps, warmup_steps, base_lr, min_lr)
    if schedule == "onecycle":
        return onecycle_lr(step, total_steps, warmup_steps, base_lr, min_lr)
    raise ConfigError(
        f"unknown schedule {schedule!r}; the schedules are {', '.join(SCHEDULES)}"
    )


def res_at(epoch: int, cfg: TrainConfig) -> int:
    """The training resolution of (0-based) ``epoch``: ``res``, or ``final_res`` in the
    last ``final_epochs`` epochs (progressive resizing, ours: no fastai record uses it;
    most epochs cheap and small, the last ones at the size the model is tested at).

    >>> cfg = TrainConfig(res=96, final_res=128, final_epochs=1, epochs=5)
    >>> [res_at(e, cfg) for e in range(5)]
    [96, 96, 96, 96, 128]
    """
    if cfg.final_res and epoch >= cfg.epochs - cfg.final_epochs:
        return cfg.final_res
    return cfg.res


def param_groups(model: nn.Module, weight_decay: float) -> List[Dict[str, Any]]:
    """AdamW's two groups: weight decay on weight matrices and conv kernels, none on
    one-dimensional parameters (norm scales and shifts, biases, layer scale), whose
    decay would only fight the normalisation."""
    decay, no_decay = [], []
    for _, p in model.named_parameters():
        if p.requires_grad:
            (no_decay if p.ndim <= 1 else decay).append(p)
    return [
        {"params": decay, "weight_decay": weight_decay},
        {"params": no_decay, "weight_decay": 0.0},
    ]


def soft_cross_entropy(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Cross-entropy with a distribution as the target: mean over the batch of
    -sum_k target_k log softmax(logits)_k (computed in fp32)."""
    return -(target * F.log_softmax(logits.float(), dim=-1)).sum(-1).mean()


def ema_momentum_at(step: int, momentum: float, warmup: bool = True) -> float:
    """The momentum of the EMA update after optimizer step ``step`` (0-based):
    ``min(m, (1 + t) / (10 + t))`` with warm-up (the Mean Teacher's ramp: the early
    average follows the student closely), else ``m``."""
    return min(momentum, (1.0 + step) / (10.0 + step)) if warmup else momentum


@torch.no_grad()
def ema_update_(teacher: nn.Module, student: nn.Module, momentum: float) -> None:
    """theta_t <- m * theta_t + (1 - m) * theta_s, in place, over the parameters and the
    floating-point buffers (BatchNorm's running mean and variance); integer buffers
    (BatchNorm's step counter) are copied."""
    t_params = [p for p in teacher.parameters()]
    s_params = [p.detach() for p in student.parameters()]
    t_float = [b for b in teacher.buffers() if b.is_floating_point()]
    s_float = [b for b in student.buffers() if b.is_floating_point()]
    if t_params:
        torch._foreach_lerp_(t_params, s_params, 1.0 - momentum)
    if t_float:
        torch._foreach_lerp_(t_float, s_float, 1.0 - momentum)
    for bt, bs in zip(teacher.buffers(), student.buffers()):
        if not bt.is_floating_point():
            bt.copy_(bs)


def location_logits(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """The model's class scores at every position of its last map, its final pooling
    removed: ``(B, K, h, w)``.

    Any model of the book works: each position's feature vector becomes a 1x1 map,
    ``(B, C, h, w) -> (B*h*w, C, 1, 1)``, and goes through the model's own
    ``forward_head``.  For a head that pools first (mean over a 1x1 map is the vector
    itself) and then applies a norm and a linear layer, that is exactly the head at
    each position; a BatchNorm or LayerNorm head in eval mode normalises each position
    as it would the pooled vector.
    """
    f = model.forward_features(x)  # (B, C, h, w)
    B, C, h, w = f.shape
    per_loc = f.permute(0, 2, 3, 1).reshape(B * h * w, C, 1, 1)  # (B*h*w, C, 1, 1)
    logits = model.forward_head(per_loc)  # (B*h*w, K)
    return logits.reshape(B, h, w, -1).permute(0, 3, 1, 2)  # (B, K, h, w)


def distillation_target(
    p_a: torch.Tensor,
    p_b: torch.Tensor,
    mask: torch.Tensor,
    target: torch.Tensor,
    alpha: float,
) -> torch.Tensor:
    """HIRI-ViT's EMA-distillation target (Sec. 4.5).

    ``p_a``, ``p_b`` (B, K, h, w): the teacher's per-location class probabilities on the
    two CutMix sources x_a and x_b; ``mask`` (1 or B, 1, H, W): the mixing mask, 1 where
    the mixed image shows x_a; ``target`` (B, K): the mixed (smoothed) labels.

        M_hw = area-average of M onto h x w     (a cell keeps its covered fraction)
        P~   = M_hw * P_a + (1 - M_hw) * P_b    (per location)
        y^   = mean over h, w of P~              (the pooling, after the mixing)
        y_   = alpha * target + (1 - alpha) * y^
    """
    m = F.adaptive_avg_pool2d(mask.to(p_a.dtype), p_a.shape[-2:])  # (., 1, h, w)
    mixed = m * p_a + (1 - m) * p_b  # (B, K, h, w)
    y_hat = mixed.mean(dim=(2, 3))  # (B, K)
    return alpha * target + (1 - alpha) * y_hat
