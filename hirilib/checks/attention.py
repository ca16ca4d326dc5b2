"""Checks for chapter 1: attention, spatial reduction and the convolutional FFNs.

Every check takes the implementation to grade and compares it with an
independent formulation: PyTorch's fused attention, ``nn.MultiheadAttention``
with the same weights, the closed-form counts of ``hirilib.analytic``, or the
CFFN equation written out with functional ops.
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from hirilib import analytic
from hirilib.measure import count_flops
from hirilib.checks import assert_close




def check_scaled_dot_product_attention(fn) -> None:
    """``fn(q, k, v)`` equals ``F.scaled_dot_product_attention`` (no mask, no dropout)."""
    g = torch.Generator().manual_seed(0)
    for n, m, d in [(5, 5, 8), (7, 3, 16)]:  # self-attention, and fewer keys than queries
        q, k, v = (torch.randn(2, 3, s, d, generator=g) for s in (n, m, m))
        assert_close(fn(q, k, v), F.scaled_dot_product_attention(q, k, v), f"attention N={n}, M={m}")


def mha_to_torch(mha: nn.Module) -> nn.MultiheadAttention:
    """An ``nn.MultiheadAttention`` with the same weights as our ``q``/``kv``/``proj`` layout."""
    C, h = mha.q.in_features, mha.num_heads
    ref = nn.MultiheadAttention(C, h, batch_first=True, bias=True)
    with torch.no_grad():
        ref.in_proj_weight.copy_(torch.cat([mha.q.weight, mha.kv.weight]))  # [W^Q; W^K; W^V]
        ref.in_proj_bias.copy_(torch.cat([mha.q.bias, mha.kv.bias]))
        ref.out_proj.weight.copy_(mha.proj.weight)
        ref.out_proj.bias.copy_(mha.proj.bias)
    return ref.eval()


def check_mha(cls) -> None:
    """``cls(dim, num_heads)`` is multi-head self-attention with ``q``, ``kv``, ``proj``
    linear layers (kv's rows: keys, then values), called as ``m(x, H, W)``: it must
    equal ``nn.MultiheadAttention`` loaded with the same weights, for one head and several."""
    torch.manual_seed(0)
    for heads in (1, 4):
        m = cls(32, num_heads=heads).eval()
        x = torch.randn(2, 6 * 5, 32)
        with torch.no_grad():
            ref, _ = mha_to_torch(m)(x, x, x, need_weights=False)
            assert_close(m(x, 6, 5), ref, f"MHA with {heads} head(s)")


def check_spatial_reduction(cls) -> None:
    """``cls(dim, num_heads, sr_ratio=R)`` reduces keys/values to N / R^2 tokens,
    and its output keeps the queries' shape."""
    torch.manual_seed(0)
    for H, W, R in [(8, 8, 2), (16, 8, 4), (12, 12, 1)]:
        m = cls(16, num_heads=2, sr_ratio=R).eval()
        x = torch.randn(2, H * W, 16)
        kv = m.reduce(x, H, W)
        assert kv.shape == (2, (H // R) * (W // R), 16), (
            f"R={R} on {H}x{W}: keys/values have shape {tuple(kv.shape)}, "
            f"expected {(2, (H // R) * (W // R), 16)}")
        with torch.no_grad():
            assert m(x, H, W).shape == x.shape, "the output must keep the shape (B, N, C)"


def check_attention_macs(fn) -> None:
    """``fn(H, W, C, sr_ratio)`` gives the MACs of attention with spatial reduction,
    counted as fvcore counts them (see ``hirilib.analytic``)."""
    from hirilib.layers import MultiHeadAttention

    for H, W, C, R in [(14, 14, 64, 1), (28, 28, 64, 4), (56, 56, 32, 8)]:
        expected = count_flops(MultiHeadAttention(C, 2, sr_ratio=R), (torch.zeros(1, H * W, C), H, W))
        got = fn(H, W, C, R)
        assert got == expected, f"H=W={H}, C={C}, R={R}: your formula gives {got:,}, counted {expected:,}"


def _depthwise_conv(m: nn.Module) -> nn.Conv2d:
    convs = [c for c in m.modules() if isinstance(c, nn.Conv2d)]
    assert len(convs) == 1 and convs[0].groups == convs[0].in_channels == convs[0].out_channels, (
        "expected exactly one depthwise nn.Conv2d (groups = channels) in the module")
    return convs[0]


def cffn_reference(m: nn.Module, x: torch.Tensor, H: int, W: int) -> torch.Tensor:
    """CFFN(X) = FC(DWConv(z) + z), z = GELU(FC(X)), written with functional ops
    from ``m``'s weights (``fc1``, its one depthwise ``nn.Conv2d``, ``fc2``)."""
    z = F.gelu(F.linear(x, m.fc1.weight, m.fc1.bias))          # (B, N, E)
    B, N, E = z.shape
    zm = z.transpose(1, 2).reshape(B, E, H, W)                  # (B, E, H, W)
    conv = _depthwise_conv(m)
    d = F.conv2d(zm, conv.weight, conv.bias, padding=conv.padding, groups=E)
    z = d.reshape(B, E, N).transpose(1, 2) + z                  # residual around DWConv
    return F.linear(z, m.fc2.weight, m.fc2.bias)


def check_cffn(cls) -> None:
    """``cls(dim, hidden_dim)`` with ``fc1``, one depthwise 3x3 ``nn.Conv2d`` and ``fc2`` computes
    HIRI-ViT's CFFN(X) = FC(DWConv(z) + z), z = GELU(FC(X)), and costs what
    ``hirilib.analytic.ffn_macs(..., kind='cffn')`` says."""
    torch.manual_seed(0)
    m = cls(16, 48).eval()
    H, W = 7, 5
    x = torch.randn(2, H * W, 16)
    with torch.no_grad():
        assert_close(m(x, H, W), cffn_reference(m, x, H, W), "CFFN output")
    got = count_flops(m, (x[:1], H, W))
    want = analytic.ffn_macs(H, W, 16, 48, "cffn")
    assert got == want, f"CFFN costs {got:,} MACs, the equation needs {want:,}"
