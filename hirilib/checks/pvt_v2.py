"""Checks for chapter 2: PVTv2's overlapping patch embedding, ConvFFN, the
cost of linear SRA, and the parameters and FLOPs of a whole PVTv2.

Each check takes the implementation to grade and compares it with something
independent of it: the pixels a patch embedding must see (worked out from
kernel, stride and padding), the ConvFFN equation written with functional
ops, fvcore's count of ``hirilib``'s attention module and of the whole
model, and the parameters of the model actually built.
"""

from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F

from hirilib.measure import count_flops, count_params
from hirilib.checks import CheckFailed, Exercise, assert_close, assert_equal_count, register




def covering_patches(pixel: int, size: int, kernel: int, stride: int) -> set:
    """Indices of the patches (along one axis) whose window contains ``pixel``,
    for a convolution zero-padded by ``kernel // 2``: patch i covers pixels
    ``stride * i - kernel // 2`` to ``stride * i - kernel // 2 + kernel - 1``.

    >>> sorted(covering_patches(5, 16, kernel=7, stride=4))  # overlapping: two patches
    [1, 2]
    >>> sorted(covering_patches(5, 16, kernel=4, stride=4))  # PVTv1-style (no padding): one
    [1]
    """
    pad = kernel // 2 if kernel > stride else 0
    n = (size + 2 * pad - kernel) // stride + 1
    return {i for i in range(n) if stride * i - pad <= pixel <= stride * i - pad + kernel - 1}


def check_overlap_patch_embed(cls) -> None:
    """``cls(in_chans, embed_dim, patch_size, stride)`` maps an image ``(B, C_in, H, W)``
    to ``(tokens (B, N, C), H', W')`` with a zero-padded ``patch_size`` convolution of
    stride ``stride`` (padding ``patch_size // 2``), then LayerNorm over the channels.

    Checked: output sizes (rounded up), parameter count, normalised tokens, and, by
    changing one pixel at a time, that each token sees exactly the pixels of its window.
    """
    torch.manual_seed(0)
    for k, s, cin, c in [(7, 4, 3, 16), (3, 2, 8, 12)]:
        m = cls(in_chans=cin, embed_dim=c, patch_size=k, stride=s).eval()
        want = k * k * cin * c + c + 2 * c
        got = count_params(m)
        assert got == want, (f"kernel {k}: {got:,} parameters, expected {want:,} "
                             f"(conv {k}x{k}x{cin}x{c} + bias {c}, LayerNorm 2x{c})")
        for H, W in [(32, 32), (30, 21)]:
            x = torch.randn(2, cin, H, W)
            with torch.no_grad():
                out = m(x)
            assert isinstance(out, (tuple, list)) and len(out) == 3, (
                "forward must return (tokens, H', W')")
            tokens, h, w = out
            eh, ew = math.ceil(H / s), math.ceil(W / s)
            assert (int(h), int(w)) == (eh, ew), (
                f"kernel {k}, stride {s} on {H}x{W}: got a {h}x{w} grid, expected {eh}x{ew} "
                f"(padding kernel // 2 = {k // 2} rounds the size up)")
            assert tokens.shape == (2, eh * ew, c), (
                f"tokens have shape {tuple(tokens.shape)}, expected {(2, eh * ew, c)}")
            mu = tokens.mean(-1).abs().max().item()
            assert mu < 1e-4, f"tokens are not LayerNorm-ed over channels (mean up to {mu:.2e})"
        H, W = 24, 20
        x = torch.randn(1, cin, H, W)
        with torch.no_grad():
            base = m(x)[0].reshape(1, math.ceil(H / s), math.ceil(W / s), c)
            for r, col in [(0, 0), (5, 9), (s * 2 + 1, s), (H - 1, W - 1), (s, 2 * s + k // 2)]:
                x2 = x.clone()
                x2[0, :, r, col] += 1.0
                diff = (m(x2)[0].reshape(base.shape) - base).abs().amax(-1)[0] > 1e-6
                rows = {int(i) for i in diff.any(1).nonzero()}
                cols = {int(j) for j in diff.any(0).nonzero()}
                er = covering_patches(r, H, k, s)
                ec = covering_patches(col, W, k, s)
                assert rows == er and cols == ec, (
                    f"kernel {k}, stride {s}: changing pixel ({r}, {col}) changed tokens in rows "
                    f"{sorted(rows)} and columns {sorted(cols)}; windows of size {k}, stride {s}, "
                    f"padding {k // 2} give rows {sorted(er)} and columns {sorted(ec)}")


def _depthwise(m: nn.Module) -> nn.Conv2d:
    convs = [c for c in m.modules() if isinstance(c, nn.Conv2d)]
    assert len(convs) == 1, f"expected exactly one nn.Conv2d in the ConvFFN, found {len(convs)}"
    conv = convs[0]
    assert conv.groups == conv.in_channels == conv.out_channels, (
        f"the convolution must be depthwise (groups = channels), got groups={conv.groups}, "
        f"channels {conv.in_channels}->{conv.out_channels}")
    assert conv.kernel_size == (3, 3) and conv.padding == (1, 1) and conv.stride == (1, 1), (
        f"PVTv2 uses a 3x3 depthwise conv, stride 1, padding 1; got kernel {conv.kernel_size}, "
        f"stride {conv.stride}, padding {conv.padding}")
    return conv


def conv_ffn_reference(m: nn.Module, x: torch.Tensor, H: int, W: int,
                       extra_relu: bool) -> torch.Tensor:
    """ConvFFN(X) = FC(GELU(DWConv([ReLU](FC(X))))) with functional ops and ``m``'s weights."""
    z = F.linear(x, m.fc1.weight, m.fc1.bias)                     # (B, N, E)
    if extra_relu:
        z = F.relu(z)
    B, N, E = z.shape
    conv = _depthwise(m)
    z = F.conv2d(z.transpose(1, 2).reshape(B, E, H, W), conv.weight, conv.bias,
                 padding=1, groups=E)                             # (B, E, H, W)
    z = F.gelu(z.reshape(B, E, N).transpose(1, 2))                # (B, N, E)
    return F.linear(z, m.fc2.weight, m.fc2.bias)                  # (B, N, C)


def check_conv_ffn(cls) -> None:
    """``cls(dim, hidden_dim, extra_relu=False)`` with layers ``fc1``, one depthwise 3x3
    ``nn.Conv2d`` and ``fc2``, called as ``m(x, H, W)``, computes PVTv2's ConvFFN,
    FC(GELU(DWConv(FC(X)))), with a ReLU after ``fc1`` when ``extra_relu`` (PVTv2-Li);
    it has the parameters and MACs the equation needs."""
    from hirilib import analytic

    torch.manual_seed(0)
    C, E, H, W = 16, 64, 7, 5
    x = torch.randn(2, H * W, C)
    for extra_relu in (False, True):
        m = cls(C, E, extra_relu=extra_relu).eval()
        with torch.no_grad():
            assert_close(m(x, H, W), conv_ffn_reference(m, x, H, W, extra_relu),
                   f"ConvFFN output (extra_relu={extra_relu})")
        assert count_params(m) == analytic.ffn_params(C, E, "convffn"), (
            f"{count_params(m):,} parameters, expected {analytic.ffn_params(C, E, 'convffn'):,} "
            f"(fc1 {C}x{E} + {E}, depthwise 3x3 {E}x9 + {E}, fc2 {E}x{C} + {C})")
        got = count_flops(m, (x[:1], H, W))
        want = analytic.ffn_macs(H, W, C, E, "convffn")
        assert got == want, f"ConvFFN costs {got:,} MACs, the equation needs {want:,}"
    # the ReLU must sit between fc1 and the DWConv: compare the two modes on equal weights
    a, b = cls(C, E, extra_relu=False).eval(), cls(C, E, extra_relu=True).eval()
    b.load_state_dict(a.state_dict())
    with torch.no_grad():
        gap = (a(x, H, W) - b(x, H, W)).abs().max().item()
    assert gap > 1e-4, "extra_relu=True gives the same output as False: is the ReLU applied?"


def check_linear_sra_macs(fn) -> None:
    """``fn(H, W, C, P)`` gives the MACs of linear SRA (PVTv2's ``MultiHeadAttention(C,
    linear=True, pool_size=P)``) on an H x W map of C channels, counted as fvcore counts
    them: average pooling 1 per input element, LayerNorm 5 per element, no biases."""
    from hirilib.layers import MultiHeadAttention

    for H, W, C, P in [(56, 56, 64, 7), (28, 28, 128, 7), (14, 14, 320, 7), (7, 7, 512, 7),
                       (64, 48, 64, 5)]:
        got = fn(H, W, C, P)
        m = MultiHeadAttention(C, max(1, C // 64), linear=True, pool_size=P)
        want = count_flops(m, (torch.zeros(1, H * W, C), H, W))
        assert got == want, (f"H={H}, W={W}, C={C}, P={P}: your formula gives {got:,}, "
                             f"counted {want:,} (difference {got - want:+,})")


def check_pvt_v2_params(fn) -> None:
    """``fn(embed_dims, depths, mlp_ratios, sr_ratios, linear, num_classes)`` gives the
    parameter count of that PVTv2 configuration: every released variant, plus a
    headless one and a full-attention one, against the model actually built."""
    import hirilib
    from hirilib.models.pvt_v2 import PVT_V2_CONFIGS

    cases = [(name, {}) for name in PVT_V2_CONFIGS]
    cases += [("pvt_v2_b0", {"num_classes": 0}), ("pvt_v2_b1", {"sr_ratios": (1, 1, 1, 1)}),
              ("pvt_v2_b0", {"num_classes": 10, "depths": (1, 1, 3, 1)})]
    for name, over in cases:
        cfg = {**PVT_V2_CONFIGS[name], "num_classes": 1000, **over}
        got = fn(cfg["embed_dims"], cfg["depths"], cfg["mlp_ratios"], cfg["sr_ratios"],
                 cfg["linear"], cfg["num_classes"])
        with torch.device("meta"):  # parameters without memory or initialisation
            want = count_params(hirilib.create_model(name, **over))
        what = f"{name} {over}" if over else name
        assert got == want, (f"{what}: your count is {got:,}, the model has "
                             f"{want:,} (difference {got - want:+,})")


def check_pvt_v2_macs(fn) -> None:
    """``fn(embed_dims, depths, mlp_ratios, sr_ratios, linear, num_classes, H, W)`` gives the
    multiply-accumulates of one forward pass of that PVTv2 configuration on an H x W image,
    counted as ``count_flops`` counts them, for SRA, linear SRA and full attention."""
    import hirilib
    from hirilib.models.pvt_v2 import PVT_V2_CONFIGS

    cases = [("pvt_v2_b0", {}, 224, 224), ("pvt_v2_b0", {"num_classes": 0}, 96, 160),
             ("pvt_v2_b2_li", {"depths": (1, 1, 2, 1)}, 160, 224),
             ("pvt_v2_b1", {"depths": (1, 1, 1, 1), "sr_ratios": (1, 1, 1, 1)}, 64, 64),
             ("pvt_v2_b5", {"depths": (1, 1, 1, 1), "num_classes": 10}, 128, 128)]
    for name, over, H, W in cases:
        cfg = {**PVT_V2_CONFIGS[name], "num_classes": 1000, **over}
        got = fn(cfg["embed_dims"], cfg["depths"], cfg["mlp_ratios"], cfg["sr_ratios"],
                 cfg["linear"], cfg["num_classes"], H, W)
        want = count_flops(hirilib.create_model(name, **over), (1, 3, H, W))
        what = f"{name} {over}" if over else name
        assert got == want, (f"{what} at {H}x{W}: your count is {got:,}, "
                             f"count_flops gives {want:,} (difference {got - want:+,})")


def _reference_patch_embed():
    from hirilib.layers import OverlapPatchEmbed
    return OverlapPatchEmbed


def _reference_conv_ffn():
    from hirilib.layers import ConvFFN
    return ConvFFN


def _pvt_v2_params_reference(embed_dims, depths, mlp_ratios, sr_ratios, linear, num_classes):
    from hirilib.analytic import pvt_v2_params
    return pvt_v2_params(embed_dims, depths, mlp_ratios, sr_ratios, linear, num_classes)


def _pvt_v2_macs_reference(embed_dims, depths, mlp_ratios, sr_ratios, linear, num_classes, H, W):
    from hirilib.analytic import pvt_v2_macs
    return pvt_v2_macs(embed_dims, depths, mlp_ratios, sr_ratios, linear, num_classes, H=H, W=W)


register(
    Exercise("MyOverlapPatchEmbed", 2, 1, check_overlap_patch_embed, reference=_reference_patch_embed),
    Exercise("MyConvFFN", 2, 2, check_conv_ffn, reference=_reference_conv_ffn),
    Exercise("pvt_v2_params", 2, 3, check_pvt_v2_params,
             reference=lambda: _pvt_v2_params_reference),
    Exercise("pvt_v2_macs", 2, 4, check_pvt_v2_macs, reference=lambda: _pvt_v2_macs_reference),
)
