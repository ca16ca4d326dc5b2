"""Checks for chapter 6: the HR-block, IRDS-b and the cost of the HR-stem.

Every check compares the student's answer with an independent formulation: hirilib's
module loaded with the same (random) weights and BatchNorm statistics, or fvcore's
count of the traced module.  Known wrong answers are named: upsampling by
interpolation of the wrong mode, IRDS-b without its downsampling shortcut, a norm and
activation after every conv of IRDS-b, LayerNorm where BatchNorm belongs, a depthwise
conv counted as a dense one.
"""

from __future__ import annotations

from collections import OrderedDict
from functools import partial

import torch
import torch.nn as nn
import torch.nn.functional as F

from hirilib.checks import (CheckFailed, Exercise, assert_close, assert_equal_count,
                            register)
from hirilib.layers import ConvNormAct, LayerNorm2d


def randomize_(module: nn.Module, seed: int = 0) -> nn.Module:
    """Random weights, and BatchNorm statistics and affine parameters far from their
    initial values, so that every parameter and buffer shows in the output."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in module.named_parameters():
            p.copy_(0.2 * torch.randn(p.shape, generator=g))
        for m in module.modules():
            if isinstance(m, (nn.BatchNorm1d, nn.BatchNorm2d)):
                m.running_mean.copy_(0.5 * torch.randn(m.num_features, generator=g))
                m.running_var.copy_(torch.rand(m.num_features, generator=g) + 0.5)
                m.weight.copy_(1 + 0.2 * torch.randn(m.num_features, generator=g))
    return module.eval()


def _no_layer_norm(module: nn.Module, what: str) -> None:
    for name, m in module.named_modules():
        if isinstance(m, (nn.LayerNorm, nn.GroupNorm)):
            raise CheckFailed(
                f"{what}: {name} is a {type(m).__name__}: that is LayerNorm where "
                f"BatchNorm belongs (HIRI-ViT normalises its convolutional parts with "
                f"BN, Sec. 4.4, which folds into the conv next to it at inference)")


def load_reference_weights(mine: nn.Module, ref: nn.Module, what: str) -> None:
    """Copy ``ref``'s parameters and buffers into ``mine``: by name where the two use
    the same names, otherwise in the order the layers are registered (so that
    ``ConvNormAct`` and ``nn.Sequential(nn.Conv2d(...), nn.BatchNorm2d(...))`` both
    work); a ``CheckFailed`` that lists the first difference when the tensors differ
    in number or shape."""
    want, got = ref.state_dict(), mine.state_dict()
    if list(got) == list(want) and all(got[k].shape == want[k].shape for k in want):
        mine.load_state_dict(want)
        return
    shapes = lambda sd: [tuple(v.shape) for v in sd.values()]
    if shapes(got) != shapes(want):
        for i, (k, v) in enumerate(want.items()):
            mk = list(got)[i] if i < len(got) else None
            if mk is None or tuple(got[mk].shape) != tuple(v.shape):
                yours = (f"your tensor {i} is {mk} {tuple(got[mk].shape)}" if mk
                         else f"you have only {len(got)} tensors")
                raise CheckFailed(
                    f"{what}: the layers differ from the specification: tensor {i} "
                    f"should be {k} {tuple(v.shape)}, {yours} (the check copies the "
                    f"reference's weights into yours in the order they are registered)")
        raise CheckFailed(f"{what}: {len(got)} tensors (parameters and buffers), the "
                          f"specification has {len(want)}: unexpected "
                          f"{list(got)[len(want):][:4]}")
    mine.load_state_dict(dict(zip(got, want.values())))


# ------------------------------------------------------------------------- the HR-block


def check_hr_block(cls) -> None:
    """``cls(dim, mlp_ratio)`` is the HR-block: ``high`` (depthwise 3x3 conv without
    bias + BN), then ``low`` (depthwise 3x3 stride-2 conv without bias + BN, a 1x1 conv
    to ``int(dim * mlp_ratio)``, GELU, a 1x1 conv back to dim), and ``forward(x) = x +
    high(x) + nearest_upsample(low(x))``.  Graded on the output: the reference's
    weights are copied into the layers in the order they are registered, whatever
    the modules are called (``ConvNormAct`` or ``nn.Sequential(Conv2d, BatchNorm2d)``).
    """
    from hirilib.models.hiri_vit import HRBlock

    for dim, ratio, (H, W) in ((8, 4, (12, 10)), (16, 2, (8, 8))):
        what = f"MyHRBlock({dim}, {ratio}) on a (2, {dim}, {H}, {W}) map"
        mine = cls(dim, ratio)
        _no_layer_norm(mine, what)
        ref = randomize_(HRBlock(dim, ratio), seed=dim)
        load_reference_weights(mine, ref, what)
        mine.eval()
        x = torch.randn(2, dim, H, W, generator=torch.Generator().manual_seed(1))
        with torch.no_grad():
            high, low = ref.high(x), ref.low(x)
            mistakes = {
                "bilinear interpolation instead of repetition (mode='nearest')":
                    x + high + F.interpolate(low, size=(H, W), mode="bilinear"),
                "bilinear interpolation with align_corners=True instead of repetition":
                    x + high + F.interpolate(low, size=(H, W), mode="bilinear",
                                             align_corners=True),
                "no residual (the block must return x + ...)":
                    high + F.interpolate(low, size=(H, W), mode="nearest"),
            }
            assert_close(mine(x), ref(x), what, mistakes=mistakes)


class _HRBlockBilinear(nn.Module):
    """A typical mistake: the low-resolution output upsampled bilinearly."""

    def __init__(self, dim, mlp_ratio=16.0):
        super().__init__()
        hidden = int(dim * mlp_ratio)
        self.high = ConvNormAct(dim, dim, 3, groups=dim, bias=False)
        self.low = nn.Sequential(OrderedDict(
            down=ConvNormAct(dim, dim, 3, 2, groups=dim, bias=False),
            fc1=nn.Conv2d(dim, hidden, 1), act=nn.GELU(),
            fc2=nn.Conv2d(hidden, dim, 1)))

    def forward(self, x):
        low = F.interpolate(self.low(x), size=x.shape[-2:], mode="bilinear")
        return x + self.high(x) + low


class _HRBlockLayerNorm(_HRBlockBilinear):
    """A typical mistake: LayerNorm (over channels) after the depthwise convs."""

    def __init__(self, dim, mlp_ratio=16.0):
        super().__init__(dim, mlp_ratio)
        self.high.norm = LayerNorm2d(dim)
        self.low.down.norm = LayerNorm2d(dim)

    def forward(self, x):
        low = F.interpolate(self.low(x), size=x.shape[-2:], mode="nearest")
        return x + self.high(x) + low


class _HRBlockNoResidual(_HRBlockBilinear):
    """A typical mistake: the two branches without the input added back."""

    def forward(self, x):
        return self.high(x) + F.interpolate(self.low(x), size=x.shape[-2:],
                                            mode="nearest")


class _HRBlockLowFirst(nn.Module):
    """A typical slip the check cannot grade: ``low`` registered before ``high`` (and a
    missing BN), so the reference's weights cannot be copied in order."""

    def __init__(self, dim, mlp_ratio=16.0):
        super().__init__()
        self.low = nn.Sequential(nn.Conv2d(dim, dim, 3, 2, 1, groups=dim, bias=False),
                                 nn.Conv2d(dim, int(dim * mlp_ratio), 1), nn.GELU(),
                                 nn.Conv2d(int(dim * mlp_ratio), dim, 1))
        self.high = nn.Sequential(nn.Conv2d(dim, dim, 3, 1, 1, groups=dim, bias=False),
                                  nn.BatchNorm2d(dim))

    def forward(self, x):
        return x + self.high(x) + F.interpolate(self.low(x), size=x.shape[-2:])


# ----------------------------------------------------------------------------- IRDS-b



def check_irds_b(cls) -> None:
    """``cls(in_dim, out_dim, ratio=4)`` is IRDS-b: ``conv``, an ``nn.Sequential`` of a
    1x1 conv (no bias) + BN + GELU to ``ratio * in_dim`` channels (``ConvNormAct(in_dim,
    hidden, 1, bias=False, act="gelu")``), a depthwise 3x3 stride-2 conv with bias, and
    a 1x1 conv with bias to ``out_dim``; and ``shortcut``, an ``nn.Sequential`` of
    ``pool`` (2x2 average pooling) and ``conv`` (1x1 with bias); ``forward(x) =
    conv(x) + shortcut(x)``.  Graded on the output, the reference's weights copied in
    the order the layers are registered (``conv`` first, then ``shortcut``)."""
    from hirilib.models.hiri_vit import IRDSb

    for cin, cout, ratio in ((8, 16, 4), (6, 10, 2)):
        what = f"MyIRDSb({cin}, {cout}, {ratio}) on a (2, {cin}, 8, 6) map"
        mine = cls(cin, cout, ratio)
        _no_layer_norm(mine, what)
        norms = sum(isinstance(m, nn.BatchNorm2d) for m in mine.modules())
        if norms > 1:
            raise CheckFailed(f"{what}: {norms} BatchNorms: a norm and activation "
                              f"after every conv, as in MobileNetV2; IRDS-b has them "
                              f"only after the first conv (Sec. 4.3)")
        if not any(k.startswith("shortcut.") for k in mine.state_dict()):
            raise CheckFailed(f"{what}: no parameters named shortcut.*: IRDS-b without "
                              f"the downsampling shortcut that stabilises training "
                              f"(Sec. 4.3)")
        ref = randomize_(IRDSb(cin, cout, ratio), seed=cin)
        load_reference_weights(mine, ref, what)
        mine.eval()
        x = torch.randn(2, cin, 8, 6, generator=torch.Generator().manual_seed(2))
        with torch.no_grad():
            assert_close(mine(x), ref(x), what, mistakes={
                "IRDS-b without the downsampling shortcut (the output is conv(x))":
                    ref.conv(x)})


class _IRDSbNoShortcut(nn.Module):
    """A typical mistake: MobileNetV2's stride-2 block, which has no shortcut."""

    def __init__(self, in_dim, out_dim, ratio=4.0):
        super().__init__()
        hidden = int(in_dim * ratio)
        self.conv = nn.Sequential(
            ConvNormAct(in_dim, hidden, 1, bias=False, act="gelu"),
            nn.Conv2d(hidden, hidden, 3, 2, 1, groups=hidden),
            nn.Conv2d(hidden, out_dim, 1))

    def forward(self, x):
        return self.conv(x)


class _IRDSbShortcutUnused(_IRDSbNoShortcut):
    """A typical mistake: the shortcut is built but not added."""

    def __init__(self, in_dim, out_dim, ratio=4.0):
        super().__init__(in_dim, out_dim, ratio)
        self.shortcut = nn.Sequential(OrderedDict(pool=nn.AvgPool2d(2),
                                                  conv=nn.Conv2d(in_dim, out_dim, 1)))


class _IRDSbEveryNorm(_IRDSbShortcutUnused):
    """A typical mistake: BN and GELU after every conv (MobileNetV2's habit)."""

    def __init__(self, in_dim, out_dim, ratio=4.0):
        super().__init__(in_dim, out_dim, ratio)
        hidden = int(in_dim * ratio)
        self.conv = nn.Sequential(
            ConvNormAct(in_dim, hidden, 1, bias=False, act="gelu"),
            ConvNormAct(hidden, hidden, 3, 2, groups=hidden, bias=False, act="gelu"),
            ConvNormAct(hidden, out_dim, 1, bias=False))

    def forward(self, x):
        return self.conv(x) + self.shortcut(x)


# ------------------------------------------------------------------- the HR-stem's cost


def _hr_stem_macs(H, W, dim, hidden, dense_dw=False, low_at_half=False, bn=2,
                  floor=False):
    """The HR-stem's MACs, optionally with a known mistake (for the messages); ``bn``
    is what a BatchNorm costs per element; ``floor`` takes H // 2 and H // 4 for the
    maps, where a stride-2 3x3 conv with padding 1 gives ceil(H / 2)."""
    half = (lambda n: n // 2) if floor else (lambda n: -(-n // 2))
    H2, W2 = half(H), half(W)
    H4, W4 = half(H2), half(W2)
    n2, n4 = H2 * W2, H4 * W4
    first = n2 * 27 * hidden + bn * n2 * hidden
    dw = n2 * 9 * hidden * (hidden if dense_dw else 1)
    high = dw + bn * n2 * hidden + n4 * 9 * hidden * dim
    nl = n2 if low_at_half else n4
    low = nl * 9 * hidden * dim + bn * nl * dim + nl * 9 * dim * dim + bn * nl * dim
    low += nl * dim * dim
    return first + high + low + bn * n4 * dim


def check_hr_stem_macs(fn) -> None:
    """``fn(H, W, dim, hidden)`` gives the multiply-accumulates of
    ``HRStem(3, dim, hidden)`` on an H x W image as ``count_flops`` counts them (convs
    1 per weight use, BN 2 per element), for any H and W: each stride-2 3x3 conv
    (padding 1) gives a map of ceil(H / 2) x ceil(W / 2), so a 30 x 30 image has
    15 x 15, then 8 x 8 maps."""
    from hirilib.measure import count_flops
    from hirilib.models.hiri_vit import HRStem

    for H, W, dim, hidden in ((64, 64, 32, 32), (96, 64, 48, 24), (32, 48, 16, 8),
                              (30, 30, 32, 32), (42, 26, 16, 8)):
        want = count_flops(HRStem(3, dim, hidden), (1, 3, H, W))
        got = fn(H, W, dim, hidden)
        what = f"HR-stem({dim}, hidden {hidden}) at {H} x {W}"
        mistakes = {
            "the depthwise conv counted as a dense conv (k*k*C per output, not k*k)":
                _hr_stem_macs(H, W, dim, hidden, dense_dw=True),
            "the low-resolution branch counted at H/2 (its first conv has stride 2)":
                _hr_stem_macs(H, W, dim, hidden, low_at_half=True),
            "the BatchNorms left out (2 per element each)":
                _hr_stem_macs(H, W, dim, hidden, bn=0),
            "the maps' sides rounded down (H // 2, H // 4); a stride-2 conv with "
            "padding 1 gives ceil(H / 2)": _hr_stem_macs(H, W, dim, hidden, floor=True),
        }
        assert_equal_count(got, want, what, mistakes={
            k: v for k, v in mistakes.items() if v != want})


def _reference_hr_block():
    from hirilib.models.hiri_vit import HRBlock
    return HRBlock


def _reference_irds_b():
    from hirilib.models.hiri_vit import IRDSb
    return IRDSb


def _reference_hr_stem_macs():
    from hirilib.analytic.hiri_vit import hr_stem_cost
    return lambda H, W, dim, hidden: hr_stem_cost(3, dim, H, W, hidden).macs


register(
    Exercise("MyHRBlock", 6, 1, check_hr_block, reference=_reference_hr_block,
             summary="HIRI-ViT's HR-block x + high(x) + repeat(low(x)), graded on "
                     "its output with the reference's weights",
             mistakes={
                 "bilinear interpolation instead of repetition":
                     lambda: _HRBlockBilinear,
                 "LayerNorm where BatchNorm belongs": lambda: _HRBlockLayerNorm,
                 "no residual": lambda: _HRBlockNoResidual,
                 "the layers differ from the specification": lambda: _HRBlockLowFirst}),
    Exercise("MyIRDSb", 6, 2, check_irds_b, reference=_reference_irds_b,
             summary="IRDS-b, inverted residual and average-pool shortcut, loaded with "
                     "the reference's weights", mistakes={
        "without the downsampling shortcut": lambda: _IRDSbNoShortcut,
        "the output is conv(x)": lambda: _IRDSbShortcutUnused,
        "a norm and activation after every conv": lambda: _IRDSbEveryNorm}),
    Exercise("hr_stem_macs", 6, 3, check_hr_stem_macs,
             summary="the MACs of the HR-stem at any input size, against count_flops",
             reference=_reference_hr_stem_macs, mistakes={
                 "the depthwise conv counted as a dense conv":
                     lambda: partial(_hr_stem_macs, dense_dw=True),
                 "the low-resolution branch counted at H/2":
                     lambda: partial(_hr_stem_macs, low_at_half=True),
                 "the BatchNorms left out": lambda: partial(_hr_stem_macs, bn=0),
                 "the maps' sides rounded down":
                     lambda: partial(_hr_stem_macs, floor=True)}),
)
