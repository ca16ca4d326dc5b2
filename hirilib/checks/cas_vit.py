"""Chapter 5's exercises: CAS-ViT's spatial and channel operators, the convolutional
additive token mixer (CATM) and its cost.

Each check compares the student's answer with the equation written with functional ops
from the student's own layers (found by their shapes), or with ``count_flops`` of
hirilib's module; when the answer is wrong in a known way (a softmax where the paper
has a sigmoid, the operators in the wrong order, one context mapping shared by Q and
K ...) the wrong variant is computed from the same weights and the message names it.
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from hirilib import analytic
from hirilib.checks import (CheckFailed, Exercise, assert_close, assert_equal_count,
                            register)
from hirilib.measure import count_flops, count_params


def _randomise_(m: nn.Module, seed: int = 0) -> nn.Module:
    """Weights, biases and BN statistics off their initial values, so that every
    parameter shows in the output; eval mode."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for mod in m.modules():
            if isinstance(mod, nn.BatchNorm2d):
                n = mod.num_features
                mod.running_mean.copy_(torch.randn(n, generator=g) * 0.5)
                mod.running_var.copy_(torch.rand(n, generator=g) + 0.5)
            for name, p in mod.named_parameters(recurse=False):
                scale = 0.3 if name == "bias" else 0.5
                p.copy_(torch.randn(p.shape, generator=g) * scale)
    return m.eval()


def _convs(m: nn.Module):
    return [c for c in m.modules() if isinstance(c, nn.Conv2d)]


def _positions_softmax(logits: torch.Tensor) -> torch.Tensor:
    """Softmax over the H x W positions of a (B, C, H, W) tensor, per channel."""
    B, C, H, W = logits.shape
    return logits.flatten(2).softmax(-1).reshape(B, C, H, W)


# ------------------------------------------------------------------------- 1. spatial


def _spatial_layers(m: nn.Module, C: int):
    convs, bns = _convs(m), [b for b in m.modules() if isinstance(b, nn.BatchNorm2d)]
    dw = [c for c in convs if c.groups == C and c.in_channels == c.out_channels == C]
    to_one = [c for c in convs if c.out_channels == 1 and c.in_channels == C]
    if len(dw) != 1 or len(to_one) != 1 or len(bns) != 1 or len(convs) != 2:
        raise CheckFailed(f"the spatial operator needs exactly one depthwise 3x3 conv "
                          f"(groups={C}), one BatchNorm2d and one 1x1 conv from {C} "
                          f"channels to 1; found {len(convs)} convs ({len(dw)} "
                          f"depthwise, {len(to_one)} to one channel) and {len(bns)} "
                          f"BatchNorms")
    dw, to_one, bn = dw[0], to_one[0], bns[0]
    if dw.kernel_size != (3, 3) or dw.padding != (1, 1) or dw.stride != (1, 1):
        raise CheckFailed(f"the depthwise conv must be 3x3, stride 1, padding 1; got "
                          f"kernel {dw.kernel_size}, stride {dw.stride}, padding "
                          f"{dw.padding}")
    if to_one.kernel_size != (1, 1):
        raise CheckFailed(f"the conv to one channel must be 1x1, got "
                          f"{to_one.kernel_size}")
    return dw, bn, to_one


def check_spatial_operator(cls) -> None:
    """``cls(dim)`` maps ``(B, C, H, W)`` to ``(B, C, H, W)``:
    S(x) = x * sigmoid(W_{1x1, C->1}(ReLU(BN(DWConv3x3(x))))), one gate per position
    shared by all channels; the DW conv has a bias, the 1x1 conv none (13 C
    parameters)."""
    torch.manual_seed(0)
    C = 8
    m = _randomise_(cls(C))
    dw, bn, to_one = _spatial_layers(m, C)
    assert_equal_count(count_params(m), 13 * C, "the spatial operator's parameters "
                       "(DW 3x3 9C + C, BN 2C, 1x1 to one channel C)",
                       mistakes={"a bias in the 1x1 conv to one channel": 13 * C + 1,
                                 "no bias in the depthwise conv": 12 * C})
    x = torch.randn(2, C, 7, 5)
    with torch.no_grad():
        got = m(x)
        z = bn(dw(x))
        logits = F.conv2d(F.relu(z), to_one.weight, to_one.bias)          # (B, 1, H, W)
        if isinstance(got, torch.Tensor) and got.shape == logits.shape:
            raise CheckFailed("the output is (B, 1, H, W): that is the gate itself "
                              "instead of x times the gate")
        mistakes = {
            "a softmax over the positions in place of the sigmoid":
                x * _positions_softmax(logits),
            "no ReLU after the BatchNorm": x * torch.sigmoid(
                F.conv2d(z, to_one.weight, to_one.bias)),
            "the BatchNorm left out of forward (DW conv straight into the ReLU)":
                x * torch.sigmoid(F.conv2d(F.relu(dw(x)), to_one.weight, to_one.bias)),
        }
        assert_close(got, x * torch.sigmoid(logits), "S(x)", mistakes=mistakes)


class _SpatialSoftmax(nn.Module):
    def __init__(self, dim):
        super().__init__()
        from hirilib.models.cas_vit import SpatialOperator
        self.op = SpatialOperator(dim)

    def forward(self, x):
        g = self.op.gate
        return x * _positions_softmax(g[1](g[0](x)))


class _SpatialWithoutBN(nn.Module):
    def __init__(self, dim):
        super().__init__()
        from hirilib.models.cas_vit import SpatialOperator
        self.op = SpatialOperator(dim)

    def forward(self, x):
        conv_norm_act, to_one = self.op.gate[0], self.op.gate[1]
        return x * torch.sigmoid(to_one(conv_norm_act.act(conv_norm_act.conv(x))))


class _SpatialGateOnly(nn.Module):
    def __init__(self, dim):
        super().__init__()
        from hirilib.models.cas_vit import SpatialOperator
        self.op = SpatialOperator(dim)

    def forward(self, x):
        return self.op.gate(x)


# ------------------------------------------------------------------------- 2. channel


def check_channel_operator(cls) -> None:
    """``cls(dim)`` maps ``(B, C, H, W)`` to ``(B, C, H, W)``:
    Ch(x) = x * sigmoid(W_{1x1, C->C}(mean_{H,W}(x))), one gate per channel shared by
    all positions; the 1x1 conv has no bias (C^2 parameters)."""
    torch.manual_seed(0)
    C = 8
    m = _randomise_(cls(C))
    convs = [c for c in _convs(m)
             if c.in_channels == c.out_channels == C and c.groups == 1]
    if len(convs) != 1 or len(_convs(m)) != 1 or convs[0].kernel_size != (1, 1):
        raise CheckFailed(f"the channel operator needs exactly one 1x1 conv from {C} "
                          f"to {C} channels; found {len(_convs(m))} convs")
    w = convs[0]
    assert_equal_count(count_params(m), C * C,
                       "the channel operator's parameters (1x1 conv C x C, no bias)",
                       mistakes={"a bias in the 1x1 conv": C * C + C})
    x = torch.randn(2, C, 6, 9)
    with torch.no_grad():
        got = m(x)
        pooled = x.mean((2, 3), keepdim=True)                       # (B, C, 1, 1)
        logits = F.conv2d(pooled, w.weight, w.bias)                 # (B, C, 1, 1)
        mistakes = {
            "a softmax over the channels in place of the sigmoid":
                x * logits.softmax(1),
            "max pooling in place of the mean": x * torch.sigmoid(
                F.conv2d(x.amax((2, 3), keepdim=True), w.weight, w.bias)),
        }
        assert_close(got, x * torch.sigmoid(logits), "Ch(x)", mistakes=mistakes)


class _ChannelSoftmax(nn.Module):
    def __init__(self, dim):
        super().__init__()
        self.fc = nn.Conv2d(dim, dim, 1, bias=False)

    def forward(self, x):
        return x * self.fc(x.mean((2, 3), keepdim=True)).softmax(1)


class _ChannelMaxPool(nn.Module):
    def __init__(self, dim):
        super().__init__()
        self.fc = nn.Conv2d(dim, dim, 1, bias=False)

    def forward(self, x):
        return x * torch.sigmoid(self.fc(x.amax((2, 3), keepdim=True)))


# ---------------------------------------------------------------------------- 3. CATM


def _catm_parts(m: nn.Module):
    need = ("qkv", "phi_q", "phi_k", "dwc", "proj")
    missing = [n for n in need if not isinstance(getattr(m, n, None), nn.Module)]
    if missing:
        raise CheckFailed(f"MyCATM needs the submodules {', '.join(need)}; missing: "
                          f"{', '.join(missing)}")
    for n in ("phi_q", "phi_k"):
        phi = getattr(m, n)
        parts = [getattr(phi, p, None) for p in ("spatial", "channel")]
        if not all(isinstance(p, nn.Module) for p in parts):
            raise CheckFailed(f"MyCATM.{n} needs the submodules spatial and channel "
                              f"(the check applies them itself, in the paper's order)")
    return m.qkv, m.phi_q, m.phi_k, m.dwc, m.proj


def check_catm(cls) -> None:
    """``cls(dim)``, with submodules ``qkv`` (1x1 conv C -> 3C, no bias), ``phi_q`` and
    ``phi_k`` (each with ``spatial`` and ``channel`` operators, separate weights),
    ``dwc`` and ``proj`` (depthwise 3x3, with bias), maps ``(B, C, H, W)`` to ``(B, C, H, W)``:
    q, k, v = qkv(x).chunk(3, dim=1), out = proj(dwc(Ch_q(S_q(q)) + Ch_k(S_k(k))) * v).
    Its parameters are those of the equation and its MACs grow linearly with H W."""
    torch.manual_seed(0)
    C = 8
    m = _randomise_(cls(C))
    qkv, phi_q, phi_k, dwc, proj = _catm_parts(m)
    one_phi = C * C + 13 * C
    assert_equal_count(count_params(m), analytic.catm_params(C), "MyCATM's parameters",
                       mistakes={"the same weights for Q and K (one context mapping "
                                 "used for both)": analytic.catm_params(C) - one_phi,
                                 "a bias in the qkv conv":
                                     analytic.catm_params(C, True)})
    x = torch.randn(2, C, 6, 7)
    with torch.no_grad():
        got = m(x)
        q, k, v = qkv(x).chunk(3, dim=1)

        def phi(p, t, order="sc"):
            return p.channel(p.spatial(t)) if order == "sc" else p.spatial(p.channel(t))

        def out(sim):
            return proj(dwc(sim) * v)

        pq, pk = phi(phi_q, q), phi(phi_k, k)
        mistakes = {
            "the same weights for Q and K (phi_q applied to both)":
                out(pq + phi(phi_q, k)),
            "the channel operator before the spatial one": out(
                phi(phi_q, q, "cs") + phi(phi_k, k, "cs")),
            "a softmax left in (over the positions of the similarity)": out(
                _positions_softmax(pq + pk)),
            "Phi(Q) and Phi(K) multiplied instead of added": out(pq * pk),
        }
        assert_close(got, out(pq + pk), "CATM(x)", mistakes=mistakes)
    for s in (4, 8):
        assert_equal_count(count_flops(m, (1, C, s, s)), analytic.catm_macs(s, s, C),
                           f"MyCATM's MACs on a {s}x{s} map (count_flops against the "
                           f"closed form, linear in H W)")


def _catm_class(forward):
    from hirilib.models.cas_vit import ConvolutionalAdditiveTokenMixer

    return type("WrongCATM", (ConvolutionalAdditiveTokenMixer,), {"forward": forward})


def _catm_shared_forward(self, x):
    q, k, v = self.qkv(x).chunk(3, dim=1)
    return self.proj(self.dwc(self.phi_q(q) + self.phi_q(k)) * v)


def _catm_channel_first_forward(self, x):
    q, k, v = self.qkv(x).chunk(3, dim=1)
    sim = (self.phi_q.spatial(self.phi_q.channel(q))
           + self.phi_k.spatial(self.phi_k.channel(k)))
    return self.proj(self.dwc(sim) * v)


def _catm_softmax_forward(self, x):
    q, k, v = self.qkv(x).chunk(3, dim=1)
    return self.proj(self.dwc(_positions_softmax(self.phi_q(q) + self.phi_k(k))) * v)


def _catm_multiplied_forward(self, x):
    q, k, v = self.qkv(x).chunk(3, dim=1)
    return self.proj(self.dwc(self.phi_q(q) * self.phi_k(k)) * v)


class _CATMSharedPhi(nn.Module):
    """One context mapping for Q and K: the count is one Phi short."""

    def __init__(self, dim):
        super().__init__()
        from hirilib.models.cas_vit import ContextMapping

        self.qkv = nn.Conv2d(dim, 3 * dim, 1, bias=False)
        self.phi_q = self.phi_k = ContextMapping(dim)
        self.dwc = nn.Conv2d(dim, dim, 3, padding=1, groups=dim)
        self.proj = nn.Conv2d(dim, dim, 3, padding=1, groups=dim)

    def forward(self, x):
        q, k, v = self.qkv(x).chunk(3, dim=1)
        return self.proj(self.dwc(self.phi_q(q) + self.phi_k(k)) * v)


# ---------------------------------------------------------------------------- 4. cost


def check_catm_macs(fn) -> None:
    """``fn(H, W, C)`` gives the multiply-accumulates of hirilib's CATM on an H x W map
    of C channels, as ``count_flops`` counts them (BatchNorm 2 per element, the channel
    operator's mean 1 per element, element-wise products and sigmoids free)."""
    from hirilib.models.cas_vit import ConvolutionalAdditiveTokenMixer

    for H, W, C in [(56, 56, 48), (14, 14, 112), (7, 9, 64), (28, 20, 96)]:
        N = H * W
        want = count_flops(ConvolutionalAdditiveTokenMixer(C), (1, C, H, W))
        one_phi = 9 * N * C + 2 * N * C + N * C + N * C + C * C
        mistakes = {
            "BatchNorm counted at 4 per element (the older fvcore)": analytic.catm_macs(
                H, W, C, bn_per_element=4),
            "one context mapping instead of two": want - one_phi,
            "the channel operator's mean left out": want - 2 * N * C,
            "an N x N product counted, as in attention": want + 2 * N * N * C,
        }
        assert_equal_count(fn(H, W, C), want, f"CATM MACs at H={H}, W={W}, C={C}",
                           mistakes)


def _catm_macs_bn4(H, W, C):
    return analytic.catm_macs(H, W, C, bn_per_element=4)


def _catm_macs_one_phi(H, W, C):
    N = H * W
    return analytic.catm_macs(H, W, C) - (13 * N * C + C * C)


def _reference(name):
    def get():
        from hirilib.models import cas_vit
        return getattr(cas_vit, name)
    return get


register(
    Exercise("MySpatialOperator", 5, 1, check_spatial_operator,
             summary="CAS-ViT's spatial gate x * sigmoid(1x1(ReLU(BN(DW3x3(x))))), "
                     "computed from its weights",
             reference=_reference("SpatialOperator"),
             mistakes={"a softmax over the positions in place of the sigmoid":
                       lambda: _SpatialSoftmax,
                       "the gate itself instead of x times the gate":
                           lambda: _SpatialGateOnly,
                       "the BatchNorm left out of forward": lambda: _SpatialWithoutBN}),
    Exercise("MyChannelOperator", 5, 2, check_channel_operator,
             summary="CAS-ViT's channel gate x * sigmoid(1x1(mean over H, W)), "
                     "computed from its weights",
             reference=_reference("ChannelOperator"),
             mistakes={"a softmax over the channels in place of the sigmoid":
                       lambda: _ChannelSoftmax,
                       "max pooling in place of the mean": lambda: _ChannelMaxPool}),
    Exercise("MyCATM", 5, 3, check_catm,
             summary="the additive token mixer proj(dwc(Phi_q(q) + Phi_k(k)) * v), "
                     "computed from its weights",
             reference=_reference("ConvolutionalAdditiveTokenMixer"),
             mistakes={"the same weights for Q and K": lambda: _CATMSharedPhi,
                       "phi_q applied to both":
                           lambda: _catm_class(_catm_shared_forward),
                       "the channel operator before the spatial one":
                           lambda: _catm_class(_catm_channel_first_forward),
                       "a softmax left in":
                           lambda: _catm_class(_catm_softmax_forward),
                       "multiplied instead of added":
                           lambda: _catm_class(_catm_multiplied_forward)}),
    Exercise("catm_macs", 5, 4, check_catm_macs, reference=lambda: analytic.catm_macs,
             summary="the MACs of a CATM on an H x W map, against count_flops",
             mistakes={"BatchNorm counted at 4 per element": lambda: _catm_macs_bn4,
                       "one context mapping instead of two":
                           lambda: _catm_macs_one_phi}),
)
