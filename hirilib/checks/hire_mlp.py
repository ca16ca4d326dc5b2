"""Checks for chapter 4: Hire-MLP's inner-region rearrangement, a whole region branch
(cross-region shift, padding, fold, MLP, restore), the split-attention fusion of the
three branches, and the MACs of a Hire module.

Each check compares the implementation with something written independently of
``hirilib.models.hire_mlp``: index arithmetic (which row of the input lands in which
channel, which rows share a region after a shift), the fusion written with explicit
loops, and fvcore's count of the traced module.  The typical mistakes are computed
the same way, so a failure names the one that matches.
"""

from __future__ import annotations

import torch
import torch.nn as nn

from hirilib.checks import Exercise, assert_close, assert_equal_count, register
from hirilib.measure import count_flops

# ----------------------------------------------------------------------------- 1. fold


def fold_by_indices(x: torch.Tensor, p: int, strided: bool = False,
                    channel_major: bool = True) -> torch.Tensor:
    """``(B, C, H, W) -> (B, C*p, H/p, W)`` by index arithmetic: output channel
    ``c*p + o`` at group g holds row ``g*p + o`` (consecutive rows, c-major).
    ``strided`` (rows ``o*(H/p) + g``) and ``channel_major=False`` (channel ``o*C + c``)
    give the two typical mistakes."""
    B, C, H, W = x.shape
    G = H // p
    out = x.new_empty(B, C * p, G, W)
    for c in range(C):
        for o in range(p):
            for g in range(G):
                row = o * G + g if strided else g * p + o
                out[:, c * p + o if channel_major else o * C + c, g] = x[:, c, row]
    return out


def check_inner_region_rearrange(fn) -> None:
    """``fn(x, p)`` folds every region of p consecutive rows of ``x (B, C, H, W)`` into
    the channels: ``(B, C*p, H/p, W)``, output channel ``c*p + o`` of group g holding
    row ``g*p + o`` of channel c."""
    g = torch.Generator().manual_seed(0)
    for shape, p in [((2, 3, 8, 5), 4), ((1, 5, 9, 4), 3), ((2, 2, 6, 7), 2)]:
        x = torch.randn(*shape, generator=g)
        want = fold_by_indices(x, p)
        got = fn(x, p)
        mistakes = {
            "rows g, g + H/p, ... taken strided ('(p g)' instead of '(g p)'), not p "
            "consecutive rows": fold_by_indices(x, p, strided=True),
            "channel o*C + c ('(p c)' instead of '(c p)'): the official weights expect "
            "c*p + o": fold_by_indices(x, p, channel_major=False),
        }
        what = f"fold of a {tuple(shape)} map into regions of {p} rows"
        assert_close(got, want, what, atol=1e-6, mistakes=mistakes)


# -------------------------------------------------------------------- 2. region branch


def region_mixing_by_indices(x: torch.Tensor, p: int, step: int, mlp,
                             pad_first: bool = False, restore: bool = True,
                             sign: int = 1, strided: bool = False) -> torch.Tensor:
    """The h-branch by gathering rows: shifted-and-padded index i holds original row
    ``(i mod H - step) mod H``; after the MLP and the fold back, output row r is the
    result at shifted index ``(r + step) mod H``.  The keyword switches build the
    typical mistakes: padding before the shift, the shift not restored, the roll the
    wrong way, the fold strided."""
    B, C, H, W = x.shape
    Hp = -(-H // p) * p
    s = sign * step
    if pad_first:       # pad (repeat rows 0..), then roll the padded map, index in H'
        src = [((i - s) % Hp) % H for i in range(Hp)]
    else:
        src = [((i % H) - s) % H for i in range(Hp)]
    t = x[:, :, src]                                               # (B, C, H', W)
    G = Hp // p
    order = ([o * G + g for g in range(G) for o in range(p)] if strided
             else list(range(Hp)))
    t = t[:, :, order]                                  # regions as consecutive rows
    u = mlp(t.reshape(B, C, G, p, W).permute(0, 1, 3, 2, 4).reshape(B, C * p, G, W))
    u = u.reshape(B, C, p, G, W).permute(0, 1, 3, 2, 4).reshape(B, C, Hp, W)
    inv = [0] * Hp
    for k, i in enumerate(order):
        inv[i] = k
    u = u[:, :, inv]                                    # back to shifted indices
    if pad_first:
        back = [(r + s) % Hp for r in range(H)] if restore else list(range(H))
    else:
        back = [(r + s) % H for r in range(H)] if restore else list(range(H))
    return u[:, :, back]


def check_region_mixing(fn) -> None:
    """``fn(x, p, step, mlp)`` is the h-branch of a Hire module on ``x (B, C, H, W)``:
    roll down by ``step`` (circular), pad the bottom circularly to a multiple of p,
    fold regions of p consecutive rows into channels (c-major), apply ``mlp`` to the
    folded map, unfold, crop to H rows, roll back by ``-step``."""
    g = torch.Generator().manual_seed(0)
    for (H, W, C, p, step) in [(8, 3, 2, 4, 2), (7, 4, 3, 3, 2), (5, 2, 2, 3, 1),
                               (14, 3, 2, 3, 1), (6, 5, 2, 2, 1)]:
        x = torch.randn(2, C, H, W, generator=g)
        conv = nn.Conv2d(C * p, C * p, 1)
        with torch.no_grad():
            conv.weight.copy_(torch.randn(conv.weight.shape, generator=g))
            conv.bias.copy_(torch.randn(conv.bias.shape, generator=g))

        def mlp(t, conv=conv):
            return torch.tanh(conv(t))

        with torch.no_grad():
            want = region_mixing_by_indices(x, p, step, mlp)
            got = fn(x, p, step, mlp)
            mistakes = {
                "the shift not restored (no roll back by -step at the end)":
                    region_mixing_by_indices(x, p, step, mlp, restore=False),
                "padding before the shift (pad to a multiple of p first, then roll)":
                    region_mixing_by_indices(x, p, step, mlp, pad_first=True),
                "the roll the wrong way (roll by -step first, then by +step)":
                    region_mixing_by_indices(x, p, step, mlp, sign=-1),
                "the fold order mixed up ('(p g)': rows g, g + H/p, ... instead of p "
                "consecutive rows '(g p)')": region_mixing_by_indices(x, p, step, mlp,
                                                                     strided=True),
            }
        assert_close(got, want, f"H={H}, p={p}, step={step}", atol=1e-5,
                     mistakes=mistakes)


# --------------------------------------------------------------------------- 3. fusion


def fuse_by_loops(h, w, c, logits, layout: str = "interleaved", over: str = "branches"):
    """``sum_k a_k * x_k`` with ``a`` a softmax over the 3 branches of the interleaved
    logits (channel j = channel j // 3 of branch j % 3), written with explicit loops;
    ``layout="branch-major"`` and ``over="channels"`` give the typical mistakes."""
    B, C = h.shape[:2]
    z = logits.reshape(B, 3 * C)
    a = torch.empty(3, B, C, dtype=h.dtype)
    for k in range(3):
        for ch in range(C):
            j = ch * 3 + k if layout == "interleaved" else k * C + ch
            a[k, :, ch] = z[:, j]
    a = a.softmax(dim=0) if over == "branches" else a.softmax(dim=2)
    a = a[..., None, None]
    return a[0] * h + a[1] * w + a[2] * c


def check_fuse_branches(fn) -> None:
    """``fn(h, w, c, logits)`` fuses three branch maps ``(B, C, H, W)`` with the fusion
    MLP's output ``logits (B, 3C, 1, 1)`` (channel j = channel j // 3 of branch j % 3):
    ``a = softmax over the 3 branches``, ``out = a_h * h + a_w * w + a_c * c``."""
    g = torch.Generator().manual_seed(0)
    for B, C, H, W in [(2, 4, 3, 5), (1, 7, 2, 2)]:
        h, w, c = (torch.randn(B, C, H, W, generator=g) for _ in range(3))
        logits = 2 * torch.randn(B, 3 * C, 1, 1, generator=g)
        got = fn(h, w, c, logits)
        mistakes = {
            "a softmax over the channels instead of over the 3 branches":
                fuse_by_loops(h, w, c, logits, over="channels"),
            "the logits read branch-major (channel k*C + c) instead of interleaved "
            "(channel c*3 + k)": fuse_by_loops(h, w, c, logits, layout="branch-major"),
            "the plain sum h + w + c (the logits ignored)": h + w + c,
        }
        assert_close(got, fuse_by_loops(h, w, c, logits),
                     f"fusion of (B, C) = ({B}, {C})", mistakes=mistakes)


# ----------------------------------------------------------------------------- 4. MACs


def _module_macs(C, H, W, p, pad=True, bottleneck=None, mean=True):
    b, q = (C // 2 if bottleneck is None else bottleneck), C // 4

    def up(n):
        return -(-n // p) * p if pad else n

    positions = (up(H) * W + H * up(W)) // p
    macs = positions * (2 * C * p * b + 2 * b) + 2 * H * W * C * C + C * q + q * 3 * C
    return macs + (H * W * C if mean else 0)


def check_hire_module_macs(fn) -> None:
    """``fn(C, H, W, p)`` gives the multiply-accumulates of one Hire module (split
    attention) on an H x W map of C channels with regions of p tokens, as
    ``count_flops`` counts them: convolutions without their biases, BatchNorm 2 per
    element, the mean over the map 1 per element, element-wise operations free."""
    from hirilib.models.hire_mlp import HireModule

    for C, H, W, p in [(16, 8, 8, 4), (64, 28, 28, 3), (42, 5, 6, 3), (20, 7, 7, 2)]:
        want = count_flops(HireModule(C, p, 1), (1, C, H, W))
        assert_equal_count(fn(C, H, W, p), want, f"C={C}, {H}x{W}, p={p}", mistakes={
            "no padding (the regions cover H*W/p positions; they cover ceil(H/p)*W)":
                _module_macs(C, H, W, p, pad=False),
            "a bottleneck of C*p/2 channels (it is C//2, whatever p)":
                _module_macs(C, H, W, p, bottleneck=C * p // 2),
            "the mean of the split attention left out (H*W*C)":
                _module_macs(C, H, W, p, mean=False),
        })


# ---------------------------------------------------------------------------- mistakes


def _fold_strided(x, p):
    from einops import rearrange
    return rearrange(x, "b c (p g) w -> b (c p) g w", p=p)


def _fold_position_major(x, p):
    from einops import rearrange
    return rearrange(x, "b c (g p) w -> b (p c) g w", p=p)


def _roll_the_wrong_way(x, p, step, mlp):
    from hirilib.models import hire_mlp as hm
    return hm.region_mixing(x, p, -step, mlp)          # rolled up first, then down


def _shift_not_restored(x, p, step, mlp):
    from hirilib.models import hire_mlp as hm
    H = x.shape[2]
    t = hm.inner_region_restore(mlp(hm.inner_region_rearrange(
        hm.cross_region_shift(x, step, p), p)), p)
    return t[:, :, :H]                                  # cropped, never rolled back


def _pad_before_shift(x, p, step, mlp):
    from hirilib.models import hire_mlp as hm
    H = x.shape[2]
    t = hm.cross_region_shift(x, 0, p)                             # pad first ...
    t = torch.roll(t, step, 2)                                     # ... then roll
    t = hm.inner_region_restore(mlp(hm.inner_region_rearrange(t, p)), p)
    return torch.roll(t, -step, 2)[:, :, :H]


def _strided_region_mixing(x, p, step, mlp):
    from einops import rearrange
    H = x.shape[2]
    t = torch.roll(x, step, 2)
    pad = -H % p
    t = torch.cat([t, t[:, :, :pad]], 2)
    t = mlp(rearrange(t, "b c (p g) w -> b (c p) g w", p=p))
    t = rearrange(t, "b (c p) g w -> b c (p g) w", p=p)[:, :, :H]
    return torch.roll(t, -step, 2)


def _softmax_over_channels(h, w, c, logits):
    B, C = h.shape[:2]
    a = logits.reshape(B, C, 3).softmax(dim=1).permute(2, 0, 1)[..., None, None]
    return a[0] * h + a[1] * w + a[2] * c


def _branch_major(h, w, c, logits):
    B, C = h.shape[:2]
    a = logits.reshape(B, 3, C).softmax(dim=1).permute(1, 0, 2)[..., None, None]
    return a[0] * h + a[1] * w + a[2] * c


def _macs_no_padding(C, H, W, p):
    return _module_macs(C, H, W, p, pad=False)


def _macs_wide_bottleneck(C, H, W, p):
    return _module_macs(C, H, W, p, bottleneck=C * p // 2)


def _reference_fuse_branches():
    from hirilib.models.hire_mlp import fuse_branches
    return lambda h, w, c, logits: fuse_branches([h, w, c], logits)


def _reference(name):
    def get():
        from hirilib.models import hire_mlp
        return getattr(hire_mlp, name)
    return get


def _reference_macs():
    from hirilib.analytic import hire_module_macs
    return hire_module_macs


register(
    Exercise("inner_region_rearrange", 4, 1, check_inner_region_rearrange,
             summary="Hire-MLP's fold: regions of p rows into the channels, against "
                     "index arithmetic",
             reference=_reference("inner_region_rearrange"),
             mistakes={"'(p g)' instead of '(g p)'": lambda: _fold_strided,
                       "'(p c)' instead of '(c p)'": lambda: _fold_position_major}),
    Exercise("region_mixing", 4, 2, check_region_mixing,
             summary="one region branch: shift, circular padding, fold, MLP, unfold, "
                     "crop, shift back",
             reference=_reference("region_mixing"),
             mistakes={"shift not restored": lambda: _shift_not_restored,
                       "padding before the shift": lambda: _pad_before_shift,
                       "the roll the wrong way": lambda: _roll_the_wrong_way,
                       "fold order mixed up": lambda: _strided_region_mixing}),
    Exercise("fuse_branches", 4, 3, check_fuse_branches,
             summary="split attention: a softmax over the three branches from "
                     "interleaved logits",
             reference=_reference_fuse_branches,
             mistakes={"softmax over the channels": lambda: _softmax_over_channels,
                       "read branch-major": lambda: _branch_major,
                       "plain sum": lambda: (lambda h, w, c, logits: h + w + c)}),
    Exercise("hire_module_macs", 4, 4, check_hire_module_macs,
             summary="the MACs of a Hire module, its padding included, against "
                     "count_flops",
             reference=_reference_macs,
             mistakes={"no padding": lambda: _macs_no_padding,
                       "bottleneck of C*p/2": lambda: _macs_wide_bottleneck}),
)
