"""Checks for chapter 8: the learning-rate schedules (warm-up + cosine, one-cycle),
CutMix's mask and lambda, the EMA update and HIRI-ViT's EMA-distillation target.

Each check compares the answer with the equation written out independently (explicit
loops, the schedule's two branches), on cases chosen so that the typical mistakes give
different numbers; when an answer matches one of them, the message names it.
"""

from __future__ import annotations

import copy
import math
from typing import Callable, Dict, List

import torch
import torch.nn as nn

from hirilib.checks import CheckFailed, Exercise, assert_close, register

# ----------------------------------------------------------------------------- schedule

#: (total steps, warm-up steps, base lr, min lr): with and without warm-up and floor
_SCHEDULES = [(50, 5, 1e-3, 1e-5), (20, 0, 0.1, 0.0), (9, 3, 2.0, 0.5)]


def _schedule(step, total, warm, base, low):
    """The spec, branch by branch: (step + 1) / W of base while warming up, then a half
    cosine from base (the first step after warm-up) towards low (reached at step T)."""
    if step < warm:
        return base * (step + 1) / warm
    progress = (step - warm) / (total - warm)
    return low + 0.5 * (base - low) * (1 + math.cos(math.pi * progress))


def _cosine_over_all_steps(step, total, warm, base, low):
    if step < warm:
        return base * (step + 1) / warm
    return low + 0.5 * (base - low) * (1 + math.cos(math.pi * step / total))


def _warmup_from_zero(step, total, warm, base, low):
    if step < warm:
        return base * step / warm
    return _schedule(step, total, warm, base, low)


def _cosine_one_step_short(step, total, warm, base, low):
    if step < warm:
        return base * (step + 1) / warm
    progress = (step - warm) / (total - warm - 1)
    return low + 0.5 * (base - low) * (1 + math.cos(math.pi * progress))


def _to_zero(step, total, warm, base, low):
    return _schedule(step, total, warm, base, 0.0)


def check_warmup_cosine_lr(fn: Callable) -> None:
    """``fn(step, total_steps, warmup_steps, base_lr, min_lr)`` is the learning rate of
    0-based ``step``: ``base * (step + 1) / W`` during the W warm-up steps, then
    ``min + (base - min) * (1 + cos(pi * (step - W) / (T - W))) / 2``."""
    wrong = {
        "the cosine spanning all the steps, warm-up included": _cosine_over_all_steps,
        "a warm-up starting from 0 (step / W instead of (step + 1) / W)": (
            _warmup_from_zero
        ),
        "a cosine that decays to 0 instead of min_lr": _to_zero,
        "a cosine that reaches min_lr one step early (T - W - 1 instead of T - W)": (
            _cosine_one_step_short
        ),
    }
    for total, warm, base, low in _SCHEDULES:
        got = torch.tensor(
            [float(fn(s, total, warm, base, low)) for s in range(total)],
            dtype=torch.float64,
        )
        want = torch.tensor(
            [_schedule(s, total, warm, base, low) for s in range(total)],
            dtype=torch.float64,
        )
        mistakes = {
            k: torch.tensor(
                [f(s, total, warm, base, low) for s in range(total)],
                dtype=torch.float64,
            )
            for k, f in wrong.items()
        }
        assert_close(
            got,
            want,
            f"the schedule for T={total}, W={warm}, base={base}, min={low}",
            atol=base * 1e-6,
            mistakes=mistakes,
        )


def _onecycle(step, total, warm, base, low, div=25.0):
    """The spec of one-cycle: a half cosine from base / div up to base over the W
    warm-up steps (at (step + 1) / W of the way), then the cosine schedule above."""
    if step < warm:
        a = base / div
        return a + (base - a) * 0.5 * (1 - math.cos(math.pi * (step + 1) / warm))
    return _schedule(step, total, warm, base, low)


def _onecycle_linear(step, total, warm, base, low):
    if step < warm:
        a = base / 25
        return a + (base - a) * (step + 1) / warm
    return _schedule(step, total, warm, base, low)


def _onecycle_from_zero(step, total, warm, base, low):
    return _onecycle(step, total, warm, base, low, div=math.inf)


def _onecycle_down(step, total, warm, base, low):
    if step < warm:
        a = base / 25
        return a + (base - a) * 0.5 * (1 + math.cos(math.pi * (step + 1) / warm))
    return _schedule(step, total, warm, base, low)


#: (total, warm-up, base, min): warm-ups long enough to tell a cosine from a line
_ONECYCLE = [(40, 10, 2e-3, 1e-5), (12, 4, 1.0, 0.0), (30, 0, 0.5, 0.1)]


def check_onecycle_lr(fn: Callable) -> None:
    """``fn(step, total_steps, warmup_steps, base_lr, min_lr)``: during the W warm-up
    steps ``a + (base - a) * (1 - cos(pi * (step + 1) / W)) / 2`` with ``a = base /
    25``, then the warm-up-cosine schedule's decay from base to min."""
    wrong = {
        "a linear warm-up instead of a half cosine": _onecycle_linear,
        "a warm-up from 0 instead of base / 25": _onecycle_from_zero,
        "a cosine that falls during the warm-up (1 + cos instead of 1 - cos)": (
            _onecycle_down
        ),
        "the linear warm-up of warmup_cosine_lr (from 0, not a half cosine)": (
            _schedule
        ),
    }
    for total, warm, base, low in _ONECYCLE:
        steps = range(total)

        def curve(f):
            return torch.tensor(
                [float(f(s, total, warm, base, low)) for s in steps],
                dtype=torch.float64,
            )

        assert_close(
            curve(fn),
            curve(_onecycle),
            f"the one-cycle schedule for T={total}, W={warm}, base={base}, min={low}",
            atol=base * 1e-6,
            mistakes={k: curve(f) for k, f in wrong.items()},
        )


# ----------------------------------------------------------------------------- CutMix


def _box_spec(lam, H, W, cy, cx, side=lambda lam: math.sqrt(1 - lam)):
    ch, cw = int(H * side(lam)), int(W * side(lam))
    rows = [r for r in range(H) if cy - ch // 2 <= r < cy + ch // 2]
    cols = [c for c in range(W) if cx - cw // 2 <= c < cx + cw // 2]
    return rows, cols


def _mask_spec(lam, H, W, cy, cx, side=lambda lam: math.sqrt(1 - lam)):
    rows, cols = _box_spec(lam, H, W, cy, cx, side)
    mask = torch.ones(1, 1, H, W)
    for r in rows:
        for c in cols:
            mask[0, 0, r, c] = 0.0
    return mask


_CUTMIX_CASES = [
    (0.4, 32, 32, 16, 16),
    (0.7, 32, 24, 2, 22),
    (0.25, 20, 20, 19, 0),
    (0.9, 16, 16, 8, 8),
]


def check_cutmix_mask(fn: Callable) -> None:
    """``fn(lam, H, W, cy, cx)`` returns CutMix's mask ``M`` (1, 1, H, W) and its
    lambda: a box of ``int(H * sqrt(1 - lam))`` by ``int(W * sqrt(1 - lam))`` pixels
    centred at (cy, cx) (rows ``cy - h // 2`` to ``cy + h // 2``, excluded, clipped to
    the image) is 0, the rest 1, and the returned lambda is the fraction of ones,
    mean(M)."""
    for lam, H, W, cy, cx in _CUTMIX_CASES:
        out = fn(lam, H, W, cy, cx)
        if not (isinstance(out, (tuple, list)) and len(out) == 2):
            raise CheckFailed(
                "return (mask, lam): the mask and the lambda that matches it"
            )
        mask, got_lam = out
        want = _mask_spec(lam, H, W, cy, cx)
        where = f"lam={lam}, {H}x{W}, centre ({cy}, {cx})"
        assert_close(
            mask,
            want,
            f"the mask for {where}",
            mistakes={
                "the mask inverted (1 inside the box, where the partner's pixels go)": (
                    1 - want
                ),
                "a box of side (1 - lam) instead of sqrt(1 - lam)": _mask_spec(
                    lam, H, W, cy, cx, side=lambda v: 1 - v
                ),
            },
        )
        true_lam = want.mean().item()
        if abs(float(got_lam) - true_lam) > 1e-6:
            if abs(float(got_lam) - lam) < 1e-9:
                raise CheckFailed(
                    f"{where}: lambda is {float(got_lam):.4f}, the fraction of "
                    f"the image that is the sample's own is {true_lam:.4f}: "
                    "lambda not recomputed after clipping the box"
                )
            raise CheckFailed(
                f"{where}: lambda is {float(got_lam):.4f}, mean(M) is {true_lam:.4f}"
            )


def _cutmix_reference():
    from hirilib.data import cutmix_mask

    return cutmix_mask


def _cutmix_unclipped_lambda(lam, H, W, cy, cx):
    from hirilib.data import cutmix_mask

    return cutmix_mask(lam, H, W, cy, cx)[0], lam


def _cutmix_inverted(lam, H, W, cy, cx):
    from hirilib.data import cutmix_mask

    m, v = cutmix_mask(lam, H, W, cy, cx)
    return 1 - m, v


def _cutmix_linear_side(lam, H, W, cy, cx):
    m = _mask_spec(lam, H, W, cy, cx, side=lambda v: 1 - v)
    return m, m.mean().item()


# ----------------------------------------------------------------------------- EMA


def _ema_pair():
    torch.manual_seed(0)
    student = nn.Sequential(
        nn.Conv2d(3, 4, 3, bias=False),
        nn.BatchNorm2d(4),
        nn.ReLU(),
        nn.Flatten(),
        nn.Linear(4 * 6 * 6, 3),
    )
    teacher = copy.deepcopy(student)
    student.train()
    opt = torch.optim.SGD(student.parameters(), lr=0.5)
    for _ in range(2):  # the student moves, its BN statistics too
        opt.zero_grad()
        student(torch.randn(5, 3, 8, 8)).square().mean().backward()
        opt.step()
    return teacher, student


def _ema_spec(teacher, student, m) -> Dict[str, torch.Tensor]:
    out = {}
    s = student.state_dict()
    for k, v in teacher.state_dict().items():
        out[k] = m * v + (1 - m) * s[k] if v.is_floating_point() else s[k].clone()
    return out


def check_ema_update(fn: Callable) -> None:
    """``fn(teacher, student, momentum)`` updates ``teacher`` in place:
    theta_t <- m theta_t + (1 - m) theta_s for every parameter and every floating-point
    buffer (BatchNorm's running mean and variance); integer buffers are copied."""
    for m in (0.9, 0.5):
        teacher, student = _ema_pair()
        want = _ema_spec(teacher, student, m)
        swapped = _ema_spec(teacher, student, 1 - m)
        stale = {
            k: want[k] if k in dict(teacher.named_parameters()) else v.clone()
            for k, v in teacher.state_dict().items()
        }
        before = {k: v.clone() for k, v in student.state_dict().items()}
        out = fn(teacher, student, m)
        if isinstance(out, nn.Module) and out is not teacher:
            teacher = out  # accept a returned module too
        got = teacher.state_dict()
        for k, v in before.items():
            if not torch.equal(student.state_dict()[k], v):
                raise CheckFailed(
                    f"the student's {k} changed: only the teacher is updated"
                )
        for k in want:
            mistakes = {
                "the momentum on the student's side (m and 1 - m swapped)": swapped[k]
            }
            if k not in dict(teacher.named_parameters()):
                mistakes["BatchNorm statistics (buffers) not averaged"] = stale[k]
            assert_close(
                got[k],
                want[k],
                f"teacher {k} after one update with m={m}",
                atol=1e-6,
                mistakes=mistakes,
            )


def _ema_reference():
    from hirilib.train import ema_update_

    return ema_update_


@torch.no_grad()
def _ema_swapped(teacher, student, m):
    for pt, ps in zip(teacher.state_dict().values(), student.state_dict().values()):
        if pt.is_floating_point():
            pt.copy_((1 - m) * pt + m * ps)
        else:
            pt.copy_(ps)


@torch.no_grad()
def _ema_params_only(teacher, student, m):
    for pt, ps in zip(teacher.parameters(), student.parameters()):
        pt.copy_(m * pt + (1 - m) * ps)


# ------------------------------------------------------------------------- distillation


def _area_fractions(mask: torch.Tensor, h: int, w: int) -> torch.Tensor:
    """Each cell of an h x w grid over the H x W mask: the mean of the pixels it covers
    (H and W multiples of h and w here), by explicit loops."""
    H, W = mask.shape[-2:]
    sy, sx = H // h, W // w
    out = torch.zeros(mask.shape[0], 1, h, w)
    for i in range(h):
        for j in range(w):
            out[:, 0, i, j] = mask[
                :, 0, i * sy : (i + 1) * sy, j * sx : (j + 1) * sx
            ].mean((-2, -1))
    return out


def _distill_spec(
    p_a,
    p_b,
    mask,
    target,
    alpha,
    nearest=False,
    pool_first=False,
    swap=False,
    alpha_on_teacher=False,
):
    h, w = p_a.shape[-2:]
    if nearest:
        H, W = mask.shape[-2:]
        m = mask[..., :: H // h, :: W // w]
    else:
        m = _area_fractions(mask, h, w)
    if swap:
        m = 1 - m
    if pool_first:
        lam = mask.mean((-3, -2, -1)).view(-1, 1)
        y_hat = lam * p_a.mean((2, 3)) + (1 - lam) * p_b.mean((2, 3))
    else:
        y_hat = (m * p_a + (1 - m) * p_b).mean((2, 3))
    a = 1 - alpha if alpha_on_teacher else alpha
    return a * target + (1 - a) * y_hat


def check_distillation_target(fn: Callable) -> None:
    """``fn(p_a, p_b, mask, target, alpha)``: the teacher's per-location probabilities
    ``p_a``, ``p_b`` (B, K, h, w) on the two CutMix sources are mixed with the mask
    ``M`` (1, 1, H, W) averaged onto the h x w grid (each cell keeps the fraction of it
    that shows x_a), then averaged over the grid; the result is
    ``alpha * target + (1 - alpha) * that``."""
    g = torch.Generator().manual_seed(0)
    from hirilib.data import cutmix_mask

    for (lam, cy, cx), alpha, hw in [
        ((0.55, 11, 21), 0.3, 4),
        ((0.35, 5, 8), 0.5, 2),
        ((0.8, 30, 2), 0.0, 8),
    ]:
        B, K = 3, 6
        p_a = torch.randn(B, K, hw, hw, generator=g).softmax(1)
        p_b = p_a.flip(0)
        mask, lam_ = cutmix_mask(lam, 32, 32, cy, cx)
        y = torch.eye(K)[torch.tensor([0, 2, 5])] * 0.9 + 0.1 / K
        target = lam_ * y + (1 - lam_) * y.flip(0)
        got = fn(p_a, p_b, mask, target, alpha)
        args = (p_a, p_b, mask, target, alpha)
        mistakes = {
            "the mask resized by nearest neighbour instead of area averaging": (
                _distill_spec(*args, nearest=True)
            ),
            "pooling before mixing (one lambda per image, not the mask per location)": (
                _distill_spec(*args, pool_first=True)
            ),
            "the mask applied to the wrong source (M on x_b)": _distill_spec(
                *args, swap=True
            ),
        }
        if alpha != 0.5:
            mistakes["alpha weighting the teacher instead of the labels"] = (
                _distill_spec(*args, alpha_on_teacher=True)
            )
        assert_close(
            got,
            _distill_spec(*args),
            f"the target for lam={lam_:.3f}, alpha={alpha}, a {hw}x{hw} teacher map",
            mistakes=mistakes,
        )
        if not torch.allclose(got.sum(1), torch.ones(B), atol=1e-5):
            raise CheckFailed("each target must sum to 1 (a distribution)")


def _distill_reference():
    from hirilib.train import distillation_target

    return distillation_target


def _distill_pool_first(p_a, p_b, mask, target, alpha):
    return _distill_spec(p_a, p_b, mask, target, alpha, pool_first=True)


def _distill_nearest(p_a, p_b, mask, target, alpha):
    return _distill_spec(p_a, p_b, mask, target, alpha, nearest=True)


def _distill_alpha_swapped(p_a, p_b, mask, target, alpha):
    return _distill_spec(p_a, p_b, mask, target, alpha, alpha_on_teacher=True)


def _onecycle_reference():
    from hirilib.train import onecycle_lr

    return onecycle_lr


def _lr_reference():
    from hirilib.train import lr_at

    return lr_at


register(
    Exercise(
        "warmup_cosine_lr",
        8,
        1,
        check_warmup_cosine_lr,
        summary="the learning rate per step: linear warm-up, then a cosine to min_lr",
        reference=_lr_reference,
        mistakes={
            "the cosine spanning all the steps": lambda: _cosine_over_all_steps,
            "a warm-up starting from 0": lambda: _warmup_from_zero,
            "decays to 0 instead of min_lr": lambda: _to_zero,
            "reaches min_lr one step early": lambda: _cosine_one_step_short,
        },
    ),
    Exercise(
        "cutmix_mask",
        8,
        2,
        check_cutmix_mask,
        summary="CutMix's box mask, and the lambda of the box as clipped to the image",
        reference=_cutmix_reference,
        mistakes={
            "lambda not recomputed after clipping": lambda: _cutmix_unclipped_lambda,
            "the mask inverted": lambda: _cutmix_inverted,
            "side (1 - lam) instead of sqrt(1 - lam)": lambda: _cutmix_linear_side,
        },
    ),
    Exercise(
        "ema_update_",
        8,
        3,
        check_ema_update,
        summary="the EMA of the weights and BatchNorm statistics, in place",
        reference=_ema_reference,
        mistakes={
            "m and 1 - m swapped": lambda: _ema_swapped,
            "BatchNorm statistics (buffers) not averaged": lambda: _ema_params_only,
        },
    ),
    Exercise(
        "distillation_target",
        8,
        4,
        check_distillation_target,
        summary="EMA distillation's target: the teacher's maps mixed by the mask, "
        "pooled, mixed with the labels",
        reference=_distill_reference,
        mistakes={
            "pooling before mixing": lambda: _distill_pool_first,
            "nearest neighbour instead of area averaging": lambda: _distill_nearest,
            "alpha weighting the teacher": lambda: _distill_alpha_swapped,
        },
    ),
    Exercise(
        "onecycle_lr",
        8,
        5,
        check_onecycle_lr,
        reference=_onecycle_reference,
        mistakes={
            "a linear warm-up instead of a half cosine": lambda: _onecycle_linear,
            "a warm-up from 0 instead of base / 25": lambda: _onecycle_from_zero,
            "1 + cos instead of 1 - cos": lambda: _onecycle_down,
        },
        summary="the one-cycle learning rate: a half-cosine warm-up from base/25, then cosine",
    ),
)
