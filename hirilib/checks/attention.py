"""Chapter 1's exercises: attention, multi-head attention, spatial reduction, its cost, CFFN.

Every check compares the student's answer with an independent formulation (PyTorch's
fused attention, ``nn.MultiheadAttention`` with the same weights, functional ops written
from the equation, ``count_flops`` on hirilib's module) and, when the answer is wrong in
a known way, says which: the wrong variants are computed from the student's own weights
on the same input, so a match is not a coincidence.
"""

from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F
from einops import rearrange

from hirilib import analytic
from hirilib.checks import CheckFailed, Exercise, assert_close, assert_equal_count, register
from hirilib.measure import count_flops

# ----------------------------------------------------------------------------- 1. attention


def check_scaled_dot_product_attention(fn) -> None:
    """``fn(q, k, v)`` = softmax(q k^T / sqrt(d)) v, for q (..., N, d) and k, v (..., M, d),
    equal to ``F.scaled_dot_product_attention`` (no mask, no dropout)."""
    g = torch.Generator().manual_seed(0)
    for n, m, d in [(5, 5, 8), (7, 3, 16)]:  # self-attention, and fewer keys than queries
        q, k, v = (torch.randn(2, 3, s, d, generator=g) for s in (n, m, m))
        logits = q @ k.transpose(-2, -1)
        mistakes = {
            "no 1/sqrt(d) scaling of the logits": logits.softmax(-1) @ v,
            "the logits divided by d instead of sqrt(d)": (logits / d).softmax(-1) @ v,
            "the softmax over the queries (dim=-2) instead of the keys": (
                (logits / math.sqrt(d)).softmax(-2) @ v),
        }
        want = F.scaled_dot_product_attention(q, k, v)
        assert_close(fn(q, k, v), want, f"attention with N={n} queries, M={m} keys, d={d}",
                     mistakes=mistakes)


def _no_scale_sdpa(q, k, v):
    return (q @ k.transpose(-2, -1)).softmax(-1) @ v


def _softmax_over_queries(q, k, v):
    return ((q @ k.transpose(-2, -1)) / math.sqrt(q.shape[-1])).softmax(-2) @ v


# ----------------------------------------------------------------------------- 2. MHA


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


def _mha_variants(m: nn.Module, x: torch.Tensor) -> dict:
    """The outputs of typical wrong multi-head attentions, with ``m``'s weights."""
    h, C = m.num_heads, x.shape[-1]
    q, kv = m.q(x), m.kv(x)
    k, v = kv.chunk(2, dim=-1)

    def attend(q, k, v, scale=True, axis=-1):
        a = q @ k.transpose(-2, -1) / (math.sqrt(q.shape[-1]) if scale else 1.0)
        return a.softmax(axis) @ v

    split = lambda t, p="b n (h d) -> b h n d": rearrange(t, p, h=h)  # noqa: E731
    merge = lambda t, p="b h n d -> b n (h d)": rearrange(t, p)  # noqa: E731
    out = {
        "no 1/sqrt(d) scaling": m.proj(merge(attend(split(q), split(k), split(v), scale=False))),
        "the softmax over the queries instead of the keys": m.proj(
            merge(attend(split(q), split(k), split(v), axis=-2))),
        "one head of width C (the input not split into heads)": m.proj(attend(q, k, v)),
        "no output projection W^O": merge(attend(split(q), split(k), split(v))),
        "a scale of 1/sqrt(C) instead of 1/sqrt(d) per head": m.proj(merge(
            (split(q) @ split(k).transpose(-2, -1) / math.sqrt(C)).softmax(-1) @ split(v))),
    }
    if h > 1:
        p = "b n (d h) -> b h n d"
        out["channels split into heads in the wrong order ('(d h)' instead of '(h d)')"] = m.proj(
            rearrange(attend(split(q, p), split(k, p), split(v, p)), "b h n d -> b n (d h)"))
    return out


def check_mha(cls) -> None:
    """``cls(dim, num_heads)`` is multi-head self-attention with ``q`` (C->C), ``kv``
    (C->2C: keys, then values) and ``proj`` (C->C) linear layers, called as ``m(x, H, W)``
    on tokens ``(B, N, C)``: it must equal ``nn.MultiheadAttention`` loaded with the same
    weights, for one head and several."""
    torch.manual_seed(0)
    for heads in (1, 4):
        m = cls(32, num_heads=heads).eval()
        for attr in ("q", "kv", "proj"):
            if not isinstance(getattr(m, attr, None), nn.Linear):
                raise CheckFailed(f"the module needs a linear layer named {attr!r}")
        if not hasattr(m, "num_heads"):
            raise CheckFailed("the module needs self.num_heads")
        x = torch.randn(2, 6 * 5, 32)
        with torch.no_grad():
            ref, _ = mha_to_torch(m)(x, x, x, need_weights=False)
            assert_close(m(x, 6, 5), ref, f"MHA with {heads} head(s)",
                         mistakes=_mha_variants(m, x))


class _ScalelessMHA(nn.Module):
    """A typical mistake: no 1/sqrt(d)."""

    def __init__(self, dim, num_heads=1):
        super().__init__()
        self.num_heads = num_heads
        self.q, self.kv, self.proj = nn.Linear(dim, dim), nn.Linear(dim, 2 * dim), nn.Linear(dim, dim)

    def forward(self, x, H, W):
        h = self.num_heads
        q = rearrange(self.q(x), "b n (h d) -> b h n d", h=h)
        k, v = rearrange(self.kv(x), "b n (two h d) -> two b h n d", two=2, h=h)
        return self.proj(rearrange(_no_scale_sdpa(q, k, v), "b h n d -> b n (h d)"))


class _UnsplitMHA(_ScalelessMHA):
    """A typical mistake: the heads never split (one attention over all C channels)."""

    def forward(self, x, H, W):
        k, v = self.kv(x).chunk(2, dim=-1)
        q = self.q(x)
        return self.proj((q @ k.transpose(-2, -1) / math.sqrt(q.shape[-1])).softmax(-1) @ v)


def _reference_mha():
    from hirilib.layers import MultiHeadAttention
    return MultiHeadAttention


# ----------------------------------------------------------------------------- 3. reduce


def check_sra_reduce(fn) -> None:
    """``fn(x, H, W, sr, norm)`` computes SRA's keys-and-values input: tokens ``(B, N, C)``
    laid out on an H x W grid -> the map ``(B, C, H, W)`` -> ``sr`` (a stride-R conv) ->
    tokens ``(B, M, C)`` -> ``norm`` (a LayerNorm over C); M = (H/R)(W/R)."""
    from hirilib.layers import MultiHeadAttention

    torch.manual_seed(0)
    for H, W, R in [(8, 8, 2), (12, 8, 4)]:
        C = 6
        ref = MultiHeadAttention(C, 2, sr_ratio=R).eval()
        with torch.no_grad():
            ref.norm.weight.normal_()
            ref.norm.bias.normal_()
        x = torch.randn(2, H * W, C)
        to_map = rearrange(x, "b (h w) c -> b c h w", h=H, w=W)
        raw = x.transpose(1, 2).reshape(2, C, H, W)  # same as to_map
        wrong_layout = x.reshape(2, C, H, W)         # channels read as positions
        flat = lambda t: rearrange(t, "b c h w -> b (h w) c")  # noqa: E731
        with torch.no_grad():
            want = ref.reduce(x, H, W)
            mistakes = {
                "the tokens reshaped to (B, C, H, W) without moving C first "
                "(use x.transpose(1, 2) or rearrange 'b (h w) c -> b c h w')":
                    ref.norm(flat(ref.sr(wrong_layout))),
                "no LayerNorm after the reduction": flat(ref.sr(to_map)),
                "the map flattened column by column ('(w h)' instead of '(h w)')": ref.norm(
                    rearrange(ref.sr(raw), "b c h w -> b (w h) c")),
            }
            got = fn(x, H, W, ref.sr, ref.norm)
        assert_close(got, want, f"reduce on a {H}x{W} grid with R={R}", mistakes=mistakes)


def check_spatial_reduction(cls) -> None:
    """``cls(dim, num_heads, sr_ratio=R)`` reduces keys/values to N / R^2 tokens (its
    ``reduce(x, H, W)``), and its output keeps the queries' shape (B, N, C)."""
    torch.manual_seed(0)
    for H, W, R in [(8, 8, 2), (16, 8, 4), (12, 12, 1)]:
        m = cls(16, num_heads=2, sr_ratio=R).eval()
        x = torch.randn(2, H * W, 16)
        with torch.no_grad():
            kv, out = m.reduce(x, H, W), m(x, H, W)
        want = (2, (H // R) * (W // R), 16)
        if tuple(kv.shape) != want:
            raise CheckFailed(f"R={R} on {H}x{W}: keys/values have shape {tuple(kv.shape)}, "
                              f"expected {want}")
        if out.shape != x.shape:
            raise CheckFailed("the output must keep the shape (B, N, C)")


def _reduce_reference(x, H, W, sr, norm):
    m = rearrange(x, "b (h w) c -> b c h w", h=H, w=W)
    return norm(rearrange(sr(m), "b c h w -> b (h w) c"))


def _reduce_without_norm(x, H, W, sr, norm):
    return rearrange(sr(rearrange(x, "b (h w) c -> b c h w", h=H, w=W)), "b c h w -> b (h w) c")


def _reduce_plain_reshape(x, H, W, sr, norm):
    B, N, C = x.shape
    return norm(rearrange(sr(x.reshape(B, C, H, W)), "b c h w -> b (h w) c"))


# ----------------------------------------------------------------------------- 4. cost


def check_attention_macs(fn) -> None:
    """``fn(H, W, C, R)`` gives the MACs of ``MultiHeadAttention(C, sr_ratio=R)`` on an
    H x W map, counted as ``count_flops`` counts them (no bias; LayerNorm 5 per element)."""
    from hirilib.layers import MultiHeadAttention

    for H, W, C, R in [(14, 14, 64, 1), (28, 28, 64, 4), (56, 56, 32, 8), (16, 12, 48, 2)]:
        N, M = H * W, (H // R) * (W // R)
        want = count_flops(MultiHeadAttention(C, 2, sr_ratio=R), (torch.zeros(1, N, C), H, W))
        ln = 5 * M * C if R > 1 else 0
        mistakes = {"the reduction's LayerNorm (5 M C) left out": want - ln} if R > 1 else {}
        if R > 1:
            mistakes["the reduction convolution (M C^2 R^2 = N C^2) left out"] = want - N * C * C
            mistakes["the attention products over all N tokens instead of M (N^2 in place of N M)"] = (
                want + 2 * N * (N - M) * C)
            mistakes["the keys and values computed from all N tokens (2 N C^2 in place of 2 M C^2)"] = (
                want + 2 * (N - M) * C * C)
        mistakes["only one of the two attention products (Q K^T and A V) counted"] = want - N * M * C
        mistakes["the bias additions counted as MACs"] = want + 2 * N * C + 2 * M * C
        assert_equal_count(fn(H, W, C, R), want, f"H={H}, W={W}, C={C}, R={R}", mistakes)


def _attention_macs_reference(H, W, C, R):
    return analytic.mha_macs(H, W, C, R)


def _attention_macs_without_ln(H, W, C, R):
    M = (H // R) * (W // R)
    return analytic.mha_macs(H, W, C, R) - (5 * M * C if R > 1 else 0)


# ----------------------------------------------------------------------------- 5. CFFN


def _depthwise_conv(m: nn.Module) -> nn.Conv2d:
    convs = [c for c in m.modules() if isinstance(c, nn.Conv2d)]
    if not (len(convs) == 1 and convs[0].groups == convs[0].in_channels == convs[0].out_channels):
        raise CheckFailed("expected exactly one depthwise nn.Conv2d (groups = channels) in the "
                          f"module, found {len(convs)} Conv2d layer(s)")
    return convs[0]


def _dw(conv: nn.Conv2d, z: torch.Tensor, H: int, W: int) -> torch.Tensor:
    """The depthwise conv applied to tokens (B, N, E) on an H x W grid."""
    B, N, E = z.shape
    zm = z.transpose(1, 2).reshape(B, E, H, W)                  # (B, E, H, W)
    d = F.conv2d(zm, conv.weight, conv.bias, padding=conv.padding, groups=E)
    return d.reshape(B, E, N).transpose(1, 2)                   # (B, N, E)


def cffn_reference(m: nn.Module, x: torch.Tensor, H: int, W: int) -> torch.Tensor:
    """CFFN(X) = FC(DWConv(z) + z), z = GELU(FC(X)), written with functional ops
    from ``m``'s weights (``fc1``, its one depthwise ``nn.Conv2d``, ``fc2``)."""
    z = F.gelu(F.linear(x, m.fc1.weight, m.fc1.bias))          # (B, N, E)
    z = _dw(_depthwise_conv(m), z, H, W) + z                    # residual around DWConv
    return F.linear(z, m.fc2.weight, m.fc2.bias)


def _cffn_variants(m: nn.Module, x: torch.Tensor, H: int, W: int) -> dict:
    conv = _depthwise_conv(m)
    fc2 = lambda t: F.linear(t, m.fc2.weight, m.fc2.bias)  # noqa: E731
    y = F.linear(x, m.fc1.weight, m.fc1.bias)
    z = F.gelu(y)
    return {
        "no residual around the depthwise conv (FC(DWConv(z)) instead of FC(DWConv(z) + z))":
            fc2(_dw(conv, z, H, W)),
        "the depthwise conv before the activation (PVTv2's ConvFFN order)":
            fc2(F.gelu(_dw(conv, y, H, W))),
        "the depthwise conv before the activation, with the residual":
            fc2(F.gelu(_dw(conv, y, H, W) + y)),
        "the residual taken around the whole FFN instead of the depthwise conv":
            fc2(_dw(conv, z, H, W)) + x,
    }


def check_cffn(cls) -> None:
    """``cls(dim, hidden_dim)`` with ``fc1``, one depthwise 3x3 ``nn.Conv2d`` and ``fc2``,
    called as ``m(x, H, W)``, computes HIRI-ViT's CFFN(X) = FC(DWConv(z) + z),
    z = GELU(FC(X)), and costs what ``hirilib.analytic.ffn_macs(..., kind='cffn')`` says."""
    torch.manual_seed(0)
    m = cls(16, 48).eval()
    for attr in ("fc1", "fc2"):
        if not isinstance(getattr(m, attr, None), nn.Linear):
            raise CheckFailed(f"the module needs a linear layer named {attr!r}")
    H, W = 7, 5
    x = torch.randn(2, H * W, 16)
    with torch.no_grad():
        assert_close(m(x, H, W), cffn_reference(m, x, H, W), "CFFN output",
                     mistakes=_cffn_variants(m, x, H, W))
    assert_equal_count(count_flops(m, (x[:1], H, W)), analytic.ffn_macs(H, W, 16, 48, "cffn"),
                       "CFFN's MACs (count_flops of your module against the equation)")


class _CFFNWithoutResidual(nn.Module):
    def __init__(self, dim, hidden_dim):
        super().__init__()
        self.fc1, self.fc2 = nn.Linear(dim, hidden_dim), nn.Linear(hidden_dim, dim)
        self.dwconv = nn.Conv2d(hidden_dim, hidden_dim, 3, padding=1, groups=hidden_dim)

    def forward(self, x, H, W):
        return self.fc2(_dw(self.dwconv, F.gelu(self.fc1(x)), H, W))


class _CFFNConvFirst(_CFFNWithoutResidual):
    def forward(self, x, H, W):
        y = self.fc1(x)
        return self.fc2(F.gelu(_dw(self.dwconv, y, H, W) + y))


def _reference_cffn():
    from hirilib.layers import CFFN
    return CFFN


register(
    Exercise("scaled_dot_product_attention", 1, 1, check_scaled_dot_product_attention,
             summary="softmax(q k^T / sqrt(d)) v, checked against PyTorch's fused kernel",
             reference=lambda: __import__("hirilib.layers", fromlist=["x"]).scaled_dot_product_attention,
             mistakes={"no 1/sqrt(d) scaling": lambda: _no_scale_sdpa,
                       "the softmax over the queries": lambda: _softmax_over_queries}),
    Exercise("MyAttention", 1, 2, check_mha, reference=_reference_mha,
             summary="multi-head attention (q, kv, proj), checked against "
                     "nn.MultiheadAttention with the same weights",
             mistakes={"no 1/sqrt(d) scaling": lambda: _ScalelessMHA,
                       "one head of width C": lambda: _UnsplitMHA}),
    Exercise("sra_reduce", 1, 3, check_sra_reduce, reference=lambda: _reduce_reference,
             summary="SRA's keys-and-values input: tokens -> map -> stride-R conv -> "
                     "tokens -> LayerNorm",
             mistakes={"no LayerNorm after the reduction": lambda: _reduce_without_norm,
                       "without moving C first": lambda: _reduce_plain_reshape}),
    Exercise("attention_macs", 1, 4, check_attention_macs,
             summary="the MACs of (spatial-reduction) attention, against count_flops",
             reference=lambda: _attention_macs_reference,
             mistakes={"the reduction's LayerNorm (5 M C) left out":
                       lambda: _attention_macs_without_ln}),
    Exercise("MyCFFN", 1, 5, check_cffn, reference=_reference_cffn,
             summary="HIRI-ViT's CFFN, FC(DWConv(z) + z), and its MACs",
             mistakes={"no residual around the depthwise conv": lambda: _CFFNWithoutResidual,
                       "the depthwise conv before the activation, with the residual":
                           lambda: _CFFNConvFirst}),
)
