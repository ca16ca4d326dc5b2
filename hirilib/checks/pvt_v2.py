"""Chapter 2's exercises: PVTv2's overlapping patch embedding, ConvFFN, the PVTv2 block,
and the parameters and FLOPs of a whole PVTv2 (plus the check of the chapter's own
linear-SRA cost formula).

Each check compares the student's answer with something independent of it: the pixels a
patch embedding must see (worked out from kernel, stride and padding), the equations
written with functional ops and the student's own weights, ``hirilib``'s block loaded
with the student's weights, fvcore's count of the modules, and the parameters of the
models actually built.  Known wrong answers (no padding, no LayerNorm, the activation
before the convolution, a post-norm block, a forgotten classifier ...) are recognised and
named in the failure message.
"""

from __future__ import annotations

import math
from typing import Dict

import torch
import torch.nn as nn
import torch.nn.functional as F
from einops import rearrange

from hirilib.checks import (CheckFailed, Exercise, assert_close, assert_equal_count,
                            randomize_, register)
from hirilib.measure import count_flops, count_params

# ----------------------------------------------------------------------------- 1. embedding


def covering_patches(pixel: int, size: int, kernel: int, stride: int,
                     padding: int | None = None) -> set:
    """Indices of the patches (along one axis) whose window contains ``pixel``, for a
    convolution zero-padded by ``padding`` (default ``kernel // 2`` when the windows
    overlap, 0 when kernel = stride): patch i covers pixels ``stride * i - padding`` to
    ``stride * i - padding + kernel - 1``.

    >>> sorted(covering_patches(5, 16, kernel=7, stride=4))  # overlapping: two patches
    [1, 2]
    >>> sorted(covering_patches(5, 16, kernel=4, stride=4))  # PVTv1-style (no padding): one
    [1]
    """
    pad = (kernel // 2 if kernel > stride else 0) if padding is None else padding
    n = (size + 2 * pad - kernel) // stride + 1
    return {i for i in range(n) if stride * i - pad <= pixel <= stride * i - pad + kernel - 1}


def check_overlap_patch_embed(cls) -> None:
    """``cls(in_chans, embed_dim, patch_size, stride)`` maps an image ``(B, C_in, H, W)``
    to ``(tokens (B, N, C), H', W')`` with a zero-padded ``patch_size`` convolution of
    stride ``stride`` (padding ``patch_size // 2``, with its bias), then LayerNorm over
    the channels.

    Checked: parameter count, output sizes (rounded up), normalised tokens, and, by
    changing one pixel at a time, that each token sees exactly the pixels of its window.
    """
    torch.manual_seed(0)
    for k, s, cin, c in [(7, 4, 3, 16), (3, 2, 8, 12)]:
        m = cls(in_chans=cin, embed_dim=c, patch_size=k, stride=s).eval()
        conv = k * k * cin * c + c
        assert_equal_count(count_params(m), conv + 2 * c,
                           f"parameters of the {k}x{k} embedding, {cin}->{c} channels",
                           mistakes={"no LayerNorm (its 2C scale and shift)": conv,
                                     "a convolution without bias": conv - c + 2 * c})
        for H, W in [(32, 32), (30, 21)]:
            x = torch.randn(2, cin, H, W)
            with torch.no_grad():
                out = m(x)
            if not (isinstance(out, (tuple, list)) and len(out) == 3):
                raise CheckFailed("forward must return (tokens, H', W')")
            tokens, h, w = out
            eh, ew = math.ceil(H / s), math.ceil(W / s)
            if (int(h), int(w)) != (eh, ew):
                nh, nw = (H - k) // s + 1, (W - k) // s + 1
                why = (": that is the size with no padding (padding 0); pad by "
                       f"patch_size // 2 = {k // 2}" if (int(h), int(w)) == (nh, nw) else
                       f" (padding kernel // 2 = {k // 2} rounds the size up)")
                raise CheckFailed(f"kernel {k}, stride {s} on {H}x{W}: a {h}x{w} grid, "
                                  f"expected {eh}x{ew}{why}")
            if not isinstance(tokens, torch.Tensor) or tokens.shape != (2, eh * ew, c):
                shape = tuple(getattr(tokens, "shape", ()))
                raise CheckFailed(f"tokens have shape {shape}, expected {(2, eh * ew, c)} "
                                  "(B, H'W', C): flatten the map and put channels last")
            mu = tokens.mean(-1).abs().max().item()
            if mu > 1e-4:
                raise CheckFailed("the tokens are not normalised over their channels (means "
                                  f"up to {mu:.2e}): no LayerNorm over the channels after "
                                  "the convolution?")
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
                er, ec = covering_patches(r, H, k, s), covering_patches(col, W, k, s)
                if rows != er or cols != ec:
                    raise CheckFailed(
                        f"kernel {k}, stride {s}: changing pixel ({r}, {col}) changed the "
                        f"tokens in rows {sorted(rows)} and columns {sorted(cols)}; windows "
                        f"of size {k}, stride {s}, padding {k // 2} give rows {sorted(er)} "
                        f"and columns {sorted(ec)} (tokens flattened row by row, "
                        "'b c h w -> b (h w) c'?)")


class _EmbedNoPadding(nn.Module):
    """A typical mistake: the convolution not padded."""

    def __init__(self, in_chans, embed_dim, patch_size, stride):
        super().__init__()
        self.proj = nn.Conv2d(in_chans, embed_dim, patch_size, stride)
        self.norm = nn.LayerNorm(embed_dim)

    def forward(self, x):
        x = self.proj(x)
        H, W = x.shape[-2:]
        return self.norm(rearrange(x, "b c h w -> b (h w) c")), H, W


class _EmbedNoNorm(_EmbedNoPadding):
    """A typical mistake: no LayerNorm."""

    def __init__(self, in_chans, embed_dim, patch_size, stride):
        super().__init__(in_chans, embed_dim, patch_size, stride)
        self.proj = nn.Conv2d(in_chans, embed_dim, patch_size, stride, patch_size // 2)
        self.norm = nn.Identity()


# ----------------------------------------------------------------------------- 2. ConvFFN


def _depthwise(m: nn.Module) -> nn.Conv2d:
    convs = [c for c in m.modules() if isinstance(c, nn.Conv2d)]
    if not convs:
        raise CheckFailed("found no nn.Conv2d: the depthwise 3x3 convolution is missing "
                          "(it is what makes the FFN convolutional)")
    if len(convs) > 1:
        raise CheckFailed(f"expected exactly one nn.Conv2d in the ConvFFN, found {len(convs)}")
    conv = convs[0]
    if not conv.groups == conv.in_channels == conv.out_channels:
        raise CheckFailed(f"the convolution must be depthwise (groups = channels), got "
                          f"groups={conv.groups}, channels {conv.in_channels}->"
                          f"{conv.out_channels}")
    if not (conv.kernel_size == (3, 3) and conv.padding == (1, 1) and conv.stride == (1, 1)):
        raise CheckFailed(f"PVTv2 uses a 3x3 depthwise conv, stride 1, padding 1; got "
                          f"kernel {conv.kernel_size}, stride {conv.stride}, "
                          f"padding {conv.padding}")
    return conv


def _dw(conv: nn.Conv2d, z: torch.Tensor, H: int, W: int) -> torch.Tensor:
    """The depthwise conv applied to tokens (B, N, E) on an H x W grid."""
    B, N, E = z.shape
    zm = z.transpose(1, 2).reshape(B, E, H, W)                   # (B, E, H, W)
    d = F.conv2d(zm, conv.weight, conv.bias, padding=1, groups=E)
    return d.reshape(B, E, N).transpose(1, 2)                    # (B, N, E)


def conv_ffn_reference(m: nn.Module, x: torch.Tensor, H: int, W: int,
                       extra_relu: bool) -> torch.Tensor:
    """ConvFFN(X) = FC(GELU(DWConv([ReLU](FC(X))))) with functional ops and ``m``'s weights."""
    z = F.linear(x, m.fc1.weight, m.fc1.bias)                     # (B, N, E)
    if extra_relu:
        z = F.relu(z)
    z = F.gelu(_dw(_depthwise(m), z, H, W))                       # (B, N, E)
    return F.linear(z, m.fc2.weight, m.fc2.bias)                  # (B, N, C)


def _conv_ffn_variants(m: nn.Module, x: torch.Tensor, H: int, W: int,
                       extra_relu: bool) -> Dict[str, torch.Tensor]:
    conv = _depthwise(m)
    fc2 = lambda t: F.linear(t, m.fc2.weight, m.fc2.bias)  # noqa: E731
    y = F.linear(x, m.fc1.weight, m.fc1.bias)
    r = F.relu(y) if extra_relu else y
    out = {
        "the GELU before the depthwise conv instead of after it":
            fc2(_dw(conv, F.gelu(r), H, W)),
        "no activation after the depthwise conv": fc2(_dw(conv, r, H, W)),
        "a ReLU instead of the GELU": fc2(F.relu(_dw(conv, r, H, W))),
        "a residual around the depthwise conv (that is HIRI-ViT's CFFN)":
            fc2(_dw(conv, F.gelu(r), H, W) + F.gelu(r)),
        "the depthwise conv skipped in forward": fc2(F.gelu(r)),
    }
    if extra_relu:
        out["the ReLU after the depthwise conv instead of between fc1 and it"] = fc2(
            F.gelu(F.relu(_dw(conv, y, H, W))))
        out["extra_relu ignored (no ReLU after fc1)"] = fc2(F.gelu(_dw(conv, y, H, W)))
    return out


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
        for attr in ("fc1", "fc2"):
            if not isinstance(getattr(m, attr, None), nn.Linear):
                raise CheckFailed(f"the module needs a linear layer named {attr!r}")
        with torch.no_grad():
            assert_close(m(x, H, W), conv_ffn_reference(m, x, H, W, extra_relu),
                         f"ConvFFN output (extra_relu={extra_relu})",
                         mistakes=_conv_ffn_variants(m, x, H, W, extra_relu))
        want = analytic.ffn_params(C, E, "convffn")
        assert_equal_count(count_params(m), want,
                           f"parameters (fc1 {C}x{E} + {E}, depthwise 3x3 {E}x9 + {E}, "
                           f"fc2 {E}x{C} + {C})",
                           mistakes={"the depthwise conv without bias": want - E})
        assert_equal_count(count_flops(m, (x[:1], H, W)),
                           analytic.ffn_macs(H, W, C, E, "convffn"),
                           "ConvFFN's MACs (count_flops of your module against the equation)")


class _ConvFFNActFirst(nn.Module):
    """A typical mistake: the activation before the depthwise conv."""

    def __init__(self, dim, hidden_dim, extra_relu=False):
        super().__init__()
        self.fc1, self.fc2 = nn.Linear(dim, hidden_dim), nn.Linear(hidden_dim, dim)
        self.dwconv = nn.Conv2d(hidden_dim, hidden_dim, 3, padding=1, groups=hidden_dim)
        self.extra_relu = extra_relu

    def forward(self, x, H, W):
        z = self.fc1(x)
        z = F.relu(z) if self.extra_relu else z
        return self.fc2(_dw(self.dwconv, F.gelu(z), H, W))


class _ConvFFNReluAfterConv(_ConvFFNActFirst):
    """A typical mistake: the linear variant's ReLU after the conv."""

    def forward(self, x, H, W):
        z = _dw(self.dwconv, self.fc1(x), H, W)
        return self.fc2(F.gelu(F.relu(z) if self.extra_relu else z))


class _FFNWithoutConv(nn.Module):
    """A typical mistake: no depthwise conv at all (a plain FFN)."""

    def __init__(self, dim, hidden_dim, extra_relu=False):
        super().__init__()
        self.fc1, self.fc2 = nn.Linear(dim, hidden_dim), nn.Linear(hidden_dim, dim)

    def forward(self, x, H, W):
        return self.fc2(F.gelu(self.fc1(x)))


# ----------------------------------------------------------------------------- 3. params


def _params_terms(embed_dims, depths, mlp_ratios, sr_ratios, linear, num_classes,
                  in_chans=3) -> Dict[str, int]:
    """The parameters of a PVTv2 configuration, by kind (they add up to the total)."""
    t = dict.fromkeys(["embed conv", "embed LN", "block LN", "qkv bias", "attention",
                       "reduction LN", "reduction", "ffn", "dw bias", "stage LN", "head",
                       "head bias"], 0)
    prev = in_chans
    for i, (C, L, e, R) in enumerate(zip(embed_dims, depths, mlp_ratios, sr_ratios)):
        k, E = (7 if i == 0 else 3), int(C * e)
        t["embed conv"] += k * k * prev * C + C
        t["embed LN"] += 2 * C
        t["block LN"] += L * 4 * C
        t["qkv bias"] += L * 3 * C
        t["attention"] += L * (4 * C * C + C)
        if linear or R > 1:
            t["reduction"] += L * ((C * C if linear else C * C * R * R) + C)
            t["reduction LN"] += L * 2 * C
        t["ffn"] += L * (2 * C * E + E + C + 9 * E)
        t["dw bias"] += L * E
        t["stage LN"] += 2 * C
        prev = C
    if num_classes:
        t["head"], t["head bias"] = prev * num_classes, num_classes
    return t


_PARAMS_MISTAKES = {
    "the classifier (C_4 K + K) forgotten": ["head", "head bias"],
    "the classifier's bias forgotten": ["head bias"],
    "the stage-end LayerNorms (2 C_i per stage) forgotten": ["stage LN"],
    "the patch embeddings' LayerNorms forgotten": ["embed LN"],
    "the blocks' two LayerNorms (4 C per block) forgotten": ["block LN"],
    "the reduction's LayerNorm (2 C per block) forgotten": ["reduction LN"],
    "the q and kv biases (3 C per block) forgotten": ["qkv bias"],
    "the depthwise conv's bias (E per block) forgotten": ["dw bias"],
}


def check_pvt_v2_params(fn) -> None:
    """``fn(embed_dims, depths, mlp_ratios, sr_ratios, linear, num_classes)`` gives the
    parameter count of that PVTv2 configuration: every released variant, plus a
    headless one and a full-attention one, against the model actually built."""
    import hirilib
    from hirilib.models.pvt_v2 import PVT_V2_CONFIGS

    # B2 first: in B0 the reductions' LayerNorms happen to have as many parameters as
    # the stage-end ones, so a count missing either could not be told apart
    cases = [(name, {}) for name in sorted(PVT_V2_CONFIGS, key=lambda n: n != "pvt_v2_b2")]
    cases += [("pvt_v2_b0", {"num_classes": 0}), ("pvt_v2_b1", {"sr_ratios": (1, 1, 1, 1)}),
              ("pvt_v2_b0", {"num_classes": 10, "depths": (1, 1, 3, 1)})]
    for name, over in cases:
        cfg = {**PVT_V2_CONFIGS[name], "num_classes": 1000, **over}
        args = [cfg[k] for k in ("embed_dims", "depths", "mlp_ratios", "sr_ratios", "linear",
                                 "num_classes")]
        got = fn(*args)
        with torch.device("meta"):  # parameters without memory or initialisation
            want = count_params(hirilib.create_model(name, **over))
        terms = _params_terms(*args)
        mistakes = {what: want - sum(terms[t] for t in parts)
                    for what, parts in _PARAMS_MISTAKES.items()
                    if sum(terms[t] for t in parts)}
        what = f"{name} {over}" if over else name
        assert_equal_count(got, want, what, mistakes)


def _params_without(*parts):
    def count(*args):
        t = _params_terms(*args)
        return sum(t.values()) - sum(t[p] for p in parts)
    return count


# ----------------------------------------------------------------------------- 4. MACs


def _macs_terms(embed_dims, depths, mlp_ratios, sr_ratios, linear, num_classes, H, W,
                in_chans=3, round_up=True, pool_size=7) -> Dict[str, int]:
    """The MACs of a PVTv2 configuration by kind, as ``count_flops`` counts them (they
    add up to the total), and under ``"biases"`` the bias additions it does not count."""
    t = dict.fromkeys(["embed", "LN", "reduction LN", "attention", "ffn", "mean", "head",
                       "biases"], 0)
    prev, h, w = in_chans, H, W
    for i, (C, L, e, R) in enumerate(zip(embed_dims, depths, mlp_ratios, sr_ratios)):
        k, s = (7, 4) if i == 0 else (3, 2)
        E = int(C * e)
        h, w = (-(-h // s), -(-w // s)) if round_up else (h // s, w // s)
        N = h * w
        reduced = linear or R > 1
        M = pool_size ** 2 if linear else (h // R) * (w // R)
        t["embed"] += N * k * k * prev * C
        t["LN"] += 5 * N * C * (2 * L + 2)          # embedding, two per block, stage end
        if linear:
            reduce = N * C + M * C * C               # average pool, 1x1 conv
        else:
            reduce = M * C * C * R * R if R > 1 else 0   # stride-R conv
        if reduced:
            t["reduction LN"] += L * 5 * M * C
        t["attention"] += L * (2 * N * C * C + 2 * M * C * C + 2 * N * M * C + reduce)
        t["ffn"] += L * (2 * N * C * E + 9 * N * E)
        t["biases"] += N * C + L * (2 * N * C + 2 * M * C + (M * C if reduced else 0)
                                    + 2 * N * E + N * C)
        prev = C
    t["mean"] = h * w * prev
    if num_classes:
        t["head"] = prev * num_classes
        t["biases"] += num_classes
    return t


def _macs_total(t: Dict[str, int]) -> int:
    return sum(v for k, v in t.items() if k != "biases")


def check_pvt_v2_macs(fn) -> None:
    """``fn(embed_dims, depths, mlp_ratios, sr_ratios, linear, num_classes, H, W)`` gives the
    multiply-accumulates of one forward pass of that PVTv2 configuration on an H x W image,
    counted as ``count_flops`` counts them, for SRA, linear SRA and full attention, on
    sizes that are multiples of 32 and (for linear SRA) sizes that are not."""
    import hirilib
    from hirilib.models.pvt_v2 import PVT_V2_CONFIGS

    cases = [("pvt_v2_b0", {}, 224, 224), ("pvt_v2_b0", {"num_classes": 0}, 96, 160),
             ("pvt_v2_b2_li", {"depths": (1, 1, 2, 1)}, 160, 224),
             ("pvt_v2_b2_li", {"depths": (1, 1, 1, 1)}, 100, 150),
             ("pvt_v2_b1", {"depths": (1, 1, 1, 1), "sr_ratios": (1, 1, 1, 1)}, 64, 64),
             ("pvt_v2_b5", {"depths": (1, 1, 1, 1), "num_classes": 10}, 128, 128)]
    for name, over, H, W in cases:
        cfg = {**PVT_V2_CONFIGS[name], "num_classes": 1000, **over}
        args = [cfg[k] for k in ("embed_dims", "depths", "mlp_ratios", "sr_ratios", "linear",
                                 "num_classes")]
        got = fn(*args, H, W)
        want = count_flops(hirilib.create_model(name, **over), (1, 3, H, W))
        t = _macs_terms(*args, H, W)
        if _macs_total(t) != want:  # pragma: no cover - the terms below would be off
            raise RuntimeError(f"the check's own terms miss count_flops for {name} {over}")
        mistakes = {
            "the LayerNorms (5 per element) left out": want - t["LN"] - t["reduction LN"],
            "the reduction's LayerNorm (5 M C per block) left out": want - t["reduction LN"],
            "the final mean over the tokens left out": want - t["mean"],
            "the classifier forgotten": want - t["head"],
            "the bias additions counted as MACs": want + t["biases"],
        }
        floor = _macs_total(_macs_terms(*args, H, W, round_up=False))
        mistakes["the map sizes rounded down (H // S): the padded embeddings round up, "
                 "to ceil(H / S)"] = floor
        mistakes = {k: v for k, v in mistakes.items() if v != want}
        what = f"{name} {over}" if over else name
        assert_equal_count(got, want, f"{what} at {H}x{W}", mistakes)


def _macs_without(*parts, **kw):
    def count(*args):
        t = _macs_terms(*args, **kw)
        return _macs_total(t) - sum(t[p] for p in parts)
    return count


# ----------------------------------------------------------------------------- 5. block


def _block_variants(ref: nn.Module, x: torch.Tensor, H: int, W: int,
                    linear: bool) -> Dict[str, torch.Tensor]:
    """Outputs of typical wrong PVTv2 blocks, with ``ref``'s weights."""
    attn, mlp, n1, n2 = ref.attn, ref.mlp, ref.norm1, ref.norm2
    y = x + attn(n1(x), H, W)
    out = {
        "post-norm (LayerNorm after each residual addition, x = LN(x + f(x)))":
            n2(n1(x + attn(x, H, W)) + mlp(n1(x + attn(x, H, W)), H, W)),
        "no residual around the attention": attn(n1(x), H, W) + mlp(
            n2(attn(n1(x), H, W)), H, W),
        "no residual around the ConvFFN": mlp(n2(y), H, W),
        "norm1 used before both branches (norm2 unused)": y + mlp(n1(y), H, W),
        "the ConvFFN fed the attention's input instead of its output": y + mlp(n2(x), H, W),
    }
    if linear:
        fc1, fc2, dw = mlp.fc1, mlp.fc2, mlp.dwconv
        out["the ConvFFN without the linear variant's ReLU (extra_relu=linear)"] = (
            y + fc2(F.gelu(dw(fc1(n2(y)), H, W))))
    return out


def check_pvt_v2_block(cls) -> None:
    """``cls(dim, num_heads, mlp_ratio, sr_ratio, linear=False)`` is PVTv2's encoder block,
    called as ``m(x, H, W)`` on tokens ``(B, N, C)``, with submodules ``norm1``, ``attn``
    (``hirilib.layers.MultiHeadAttention``), ``norm2`` and ``mlp``
    (``hirilib.layers.ConvFFN``, hidden width ``int(dim * mlp_ratio)``), LayerNorm eps
    1e-6: x + Attn(LN(x)), then x + ConvFFN(LN(x)).  Loaded into
    ``hirilib.models.pvt_v2.Block`` its weights must fit, and the two must agree, for SRA
    and for linear SRA."""
    from hirilib.models.pvt_v2 import Block

    torch.manual_seed(0)
    for dim, heads, ratio, R, linear, H, W in [(16, 2, 4, 2, False, 8, 6),
                                               (16, 1, 8, 1, True, 7, 9)]:
        what = (f"Block({dim}, num_heads={heads}, mlp_ratio={ratio}, sr_ratio={R}, "
                f"linear={linear})")
        mine = randomize_(cls(dim, heads, ratio, R, linear=linear))
        for attr in ("norm1", "attn", "norm2", "mlp"):
            if not isinstance(getattr(mine, attr, None), nn.Module):
                raise CheckFailed(f"{what}: the block needs a submodule named {attr!r}")
        ref = Block(dim, heads, ratio, R, linear).eval()
        want = {k: tuple(v.shape) for k, v in ref.state_dict().items()}
        got = {k: tuple(v.shape) for k, v in mine.state_dict().items()}
        if got != want:
            missing, extra = sorted(set(want) - set(got)), sorted(set(got) - set(want))
            shapes = sorted(k for k in set(got) & set(want) if got[k] != want[k])
            hints = []
            if any(k.startswith("attn.sr") or k.startswith("attn.norm") for k in missing):
                hints.append("pass sr_ratio and linear to MultiHeadAttention")
            if any(k.startswith("mlp.") for k in shapes):
                hints.append("the ConvFFN's hidden width is int(dim * mlp_ratio)")
            raise CheckFailed(f"{what}: its parameters do not match hirilib's block: missing "
                              f"{missing[:4]}, unexpected {extra[:4]}, wrong shape "
                              f"{shapes[:4]}" + (f" ({'; '.join(hints)})" if hints else ""))
        for n in ("norm1", "norm2"):
            eps = getattr(getattr(mine, n), "eps", None)
            if eps != 1e-6:
                raise CheckFailed(f"{what}: {n} has eps {eps}; PVTv2's blocks use "
                                  "nn.LayerNorm(dim, eps=1e-6)")
        ref.load_state_dict(mine.state_dict())
        x = torch.randn(2, H * W, dim)
        with torch.no_grad():
            assert_close(mine(x, H, W), ref(x, H, W), f"{what} on a {H}x{W} grid",
                         mistakes=_block_variants(ref, x, H, W, linear))


class _PostNormPVTBlock(nn.Module):
    """A typical mistake: post-norm."""

    def __init__(self, dim, num_heads, mlp_ratio, sr_ratio, linear=False):
        super().__init__()
        from hirilib.layers import ConvFFN, MultiHeadAttention

        self.norm1 = nn.LayerNorm(dim, eps=1e-6)
        self.attn = MultiHeadAttention(dim, num_heads, sr_ratio=sr_ratio, linear=linear)
        self.norm2 = nn.LayerNorm(dim, eps=1e-6)
        self.mlp = ConvFFN(dim, int(dim * mlp_ratio), extra_relu=linear)

    def forward(self, x, H, W):
        x = self.norm1(x + self.attn(x, H, W))
        return self.norm2(x + self.mlp(x, H, W))


class _PVTBlockNoRelu(_PostNormPVTBlock):
    """A typical mistake: the linear variant's ReLU left out."""

    def __init__(self, dim, num_heads, mlp_ratio, sr_ratio, linear=False):
        super().__init__(dim, num_heads, mlp_ratio, sr_ratio, linear)
        from hirilib.layers import ConvFFN

        self.mlp = ConvFFN(dim, int(dim * mlp_ratio))

    def forward(self, x, H, W):
        x = x + self.attn(self.norm1(x), H, W)
        return x + self.mlp(self.norm2(x), H, W)


class _PVTBlockNoSR(_PVTBlockNoRelu):
    """A typical mistake: the reduction ratio not passed on."""

    def __init__(self, dim, num_heads, mlp_ratio, sr_ratio, linear=False):
        super().__init__(dim, num_heads, mlp_ratio, sr_ratio, linear)
        from hirilib.layers import ConvFFN, MultiHeadAttention

        self.attn = MultiHeadAttention(dim, num_heads)
        self.mlp = ConvFFN(dim, int(dim * mlp_ratio), extra_relu=linear)


# ----------------------------------------------------------------------------- the chapter's


def check_linear_sra_macs(fn) -> None:
    """``fn(H, W, C, P)`` gives the MACs of linear SRA (PVTv2's ``MultiHeadAttention(C,
    linear=True, pool_size=P)``) on an H x W map of C channels, counted as fvcore counts
    them: average pooling 1 per input element, LayerNorm 5 per element, no biases."""
    from hirilib.layers import MultiHeadAttention

    for H, W, C, P in [(56, 56, 64, 7), (28, 28, 128, 7), (14, 14, 320, 7), (7, 7, 512, 7),
                       (64, 48, 64, 5)]:
        m = MultiHeadAttention(C, max(1, C // 64), linear=True, pool_size=P)
        want = count_flops(m, (torch.zeros(1, H * W, C), H, W))
        N, M = H * W, P * P
        assert_equal_count(fn(H, W, C, P), want, f"H={H}, W={W}, C={C}, P={P}", {
            "the average pooling (N C) left out": want - N * C,
            "the LayerNorm (5 P^2 C) left out": want - 5 * M * C,
            "the 1x1 convolution (P^2 C^2) left out": want - M * C * C,
            "only one of the two attention products counted": want - N * M * C})


# ----------------------------------------------------------------------------- registry


def _reference_patch_embed():
    from hirilib.layers import OverlapPatchEmbed
    return OverlapPatchEmbed


def _reference_conv_ffn():
    from hirilib.layers import ConvFFN
    return ConvFFN


def _reference_block():
    from hirilib.models.pvt_v2 import Block
    return Block


def _pvt_v2_params_reference(embed_dims, depths, mlp_ratios, sr_ratios, linear, num_classes):
    from hirilib.analytic import pvt_v2_params
    return pvt_v2_params(embed_dims, depths, mlp_ratios, sr_ratios, linear, num_classes)


def _pvt_v2_macs_reference(embed_dims, depths, mlp_ratios, sr_ratios, linear, num_classes,
                           H, W):
    from hirilib.analytic import pvt_v2_macs
    return pvt_v2_macs(embed_dims, depths, mlp_ratios, sr_ratios, linear, num_classes,
                       H=H, W=W)


register(
    Exercise("MyOverlapPatchEmbed", 2, 1, check_overlap_patch_embed,
             summary="PVTv2's overlapping patch embedding: which pixels each token sees",
             reference=_reference_patch_embed,
             mistakes={"no padding": lambda: _EmbedNoPadding,
                       "no LayerNorm": lambda: _EmbedNoNorm}),
    Exercise("MyConvFFN", 2, 2, check_conv_ffn, reference=_reference_conv_ffn,
             summary="PVTv2's ConvFFN (and the Li variant's ReLU), its parameters and MACs",
             mistakes={"the GELU before the depthwise conv": lambda: _ConvFFNActFirst,
                       "the ReLU after the depthwise conv": lambda: _ConvFFNReluAfterConv,
                       "the depthwise 3x3 convolution is missing": lambda: _FFNWithoutConv}),
    Exercise("pvt_v2_params", 2, 3, check_pvt_v2_params,
             summary="the parameter count of a PVTv2 configuration, against the model built",
             reference=lambda: _pvt_v2_params_reference,
             mistakes={"the classifier (C_4 K + K) forgotten":
                       lambda: _params_without("head", "head bias"),
                       "the stage-end LayerNorms": lambda: _params_without("stage LN"),
                       "the reduction's LayerNorm": lambda: _params_without("reduction LN")}),
    Exercise("pvt_v2_macs", 2, 4, check_pvt_v2_macs, reference=lambda: _pvt_v2_macs_reference,
             summary="the MACs of a whole PVTv2 at any input size, against count_flops",
             mistakes={"the reduction's LayerNorm (5 M C per block) left out":
                       lambda: _macs_without("reduction LN"),
                       "the bias additions counted": lambda: (
                           lambda *a: sum(_macs_terms(*a).values())),
                       "rounded down": lambda: _macs_without(round_up=False),
                       "the classifier forgotten": lambda: _macs_without("head")}),
    Exercise("MyPVTv2Block", 2, 5, check_pvt_v2_block, reference=_reference_block,
             summary="the PVTv2 block from chapter 1's modules, against hirilib's block",
             mistakes={"post-norm": lambda: _PostNormPVTBlock,
                       "without the linear variant's ReLU": lambda: _PVTBlockNoRelu,
                       "pass sr_ratio and linear to MultiHeadAttention": lambda: _PVTBlockNoSR}),
)
