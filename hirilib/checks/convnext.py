"""Chapter 3's exercises: the ConvNeXt block, its cost, and Linear = 1x1 conv.

Every check compares the student's answer with an independent formulation:
``hirilib.models.convnext.Block`` loaded with the same weights, fvcore's count of the
traced block, or the roadmap's last step (written with 1x1 convolutions) against ConvNeXt
(written with Linear layers).  Known wrong answers (post-norm, no layer scale, no GELU, a
dense convolution counted, Linear weights not reshaped ...) are named when they match.
"""

from __future__ import annotations

from typing import Dict

import torch
import torch.nn as nn
import torch.nn.functional as F

from hirilib.checks import (CheckFailed, Exercise, assert_close, assert_equal_count,
                            randomize_, register)
from hirilib.measure import flop_analysis

__all__ = ["randomize_", "check_block", "check_block_macs", "check_roadmap_state_dict"]

# ----------------------------------------------------------------------------- 1. block


def _block_variants(ref: nn.Module, x: torch.Tensor) -> Dict[str, torch.Tensor]:
    """Outputs of typical wrong ConvNeXt blocks, with ``ref``'s weights."""
    last = lambda t: t.permute(0, 2, 3, 1)   # noqa: E731  (B, C, H, W) -> (B, H, W, C)
    first = lambda t: t.permute(0, 3, 1, 2)  # noqa: E731
    d = last(ref.dwconv(x))
    mlp = lambda t, act=F.gelu: ref.pwconv2(act(ref.pwconv1(t)))  # noqa: E731
    g = ref.gamma
    return {
        "post-norm (the LayerNorm after the MLP instead of before it)":
            x + first(g * ref.norm(mlp(d))),
        "no layer scale (the branch not multiplied by gamma)": x + first(mlp(ref.norm(d))),
        "no GELU between the two Linear layers": x + first(g * mlp(ref.norm(d), lambda t: t)),
        "a ReLU instead of the GELU": x + first(g * mlp(ref.norm(d), F.relu)),
        "no residual (the input not added back)": first(g * mlp(ref.norm(d))),
        "no LayerNorm": x + first(g * mlp(d)),
        "the depthwise conv skipped in forward": x + first(g * mlp(ref.norm(last(x)))),
    }


def check_block(cls) -> None:
    """``cls(dim, drop_path=0.0, ls_init_value=1e-6)`` is the ConvNeXt block with the
    official layer names ``dwconv`` (7x7 depthwise), ``norm`` (LayerNorm over channels,
    eps 1e-6), ``pwconv1`` (Linear C->4C), ``pwconv2`` (Linear 4C->C) and ``gamma``
    (layer scale): loaded with the reference block's weights it gives its outputs."""
    from hirilib.models.convnext import Block

    for dim in (8, 24):
        ref, mine = Block(dim), cls(dim)
        want = {k: tuple(v.shape) for k, v in ref.state_dict().items()}
        got = {k: tuple(v.shape) for k, v in mine.state_dict().items()}
        if got != want:
            missing, extra = sorted(set(want) - set(got)), sorted(set(got) - set(want))
            shapes = sorted(k for k in set(got) & set(want) if got[k] != want[k])
            hint = ""
            if "gamma" in missing:
                hint = (": no layer scale? gamma is an nn.Parameter of shape (dim,), "
                        "filled with ls_init_value")
            elif "dwconv.weight" in shapes:
                hint = ": the 7x7 convolution must be depthwise (groups=dim)"
            raise CheckFailed(f"dim={dim}: parameters differ from the reference: missing "
                              f"{missing}, unexpected {extra}, wrong shape {shapes}{hint}")
        gamma = mine.state_dict()["gamma"]
        if not torch.allclose(gamma, torch.full_like(gamma, 1e-6)):
            raise CheckFailed("layer scale gamma must start at ls_init_value = 1e-6")
        eps = getattr(getattr(mine, "norm", None), "eps", None)
        if eps != 1e-6:
            raise CheckFailed(f"ConvNeXt's LayerNorm uses eps = 1e-6, yours has {eps}")
        mine.load_state_dict(randomize_(ref).state_dict())
        mine.eval()
        x = torch.randn(2, dim, 9, 11, generator=torch.Generator().manual_seed(dim))
        with torch.no_grad():
            assert_close(mine(x), ref(x), f"Block({dim}) on a (2, {dim}, 9, 11) map "
                         "(order: DW conv, LN over C, Linear 4x, GELU, Linear, gamma, "
                         "+ input)", mistakes=_block_variants(ref, x))


class _PostNormBlock(nn.Module):
    """A typical mistake: the LayerNorm after the MLP instead of before it."""

    def __init__(self, dim, drop_path=0.0, ls_init_value=1e-6):
        super().__init__()
        from hirilib.models.convnext import Block

        ref = Block(dim, ls_init_value=ls_init_value)
        self.dwconv, self.norm, self.pwconv1 = ref.dwconv, ref.norm, ref.pwconv1
        self.act, self.pwconv2, self.gamma = ref.act, ref.pwconv2, ref.gamma

    def forward(self, x):
        shortcut = x
        x = self.dwconv(x).permute(0, 2, 3, 1)
        x = self.norm(self.pwconv2(self.act(self.pwconv1(x))))
        return shortcut + (self.gamma * x).permute(0, 3, 1, 2)


class _NoLayerScaleBlock(_PostNormBlock):
    """A typical mistake: gamma defined, never applied."""

    def forward(self, x):
        y = self.dwconv(x).permute(0, 2, 3, 1)
        y = self.pwconv2(self.act(self.pwconv1(self.norm(y))))
        return x + y.permute(0, 3, 1, 2)


class _NoGeluBlock(_PostNormBlock):
    """A typical mistake: the activation forgotten."""

    def forward(self, x):
        y = self.dwconv(x).permute(0, 2, 3, 1)
        y = self.gamma * self.pwconv2(self.pwconv1(self.norm(y)))
        return x + y.permute(0, 3, 1, 2)


class _NoGammaParameterBlock(nn.Module):
    """A typical mistake: no layer scale parameter at all."""

    def __init__(self, dim, drop_path=0.0, ls_init_value=1e-6):
        super().__init__()
        self.dwconv = nn.Conv2d(dim, dim, 7, padding=3, groups=dim)
        self.norm = nn.LayerNorm(dim, eps=1e-6)
        self.pwconv1, self.act = nn.Linear(dim, 4 * dim), nn.GELU()
        self.pwconv2 = nn.Linear(4 * dim, dim)

    def forward(self, x):
        y = self.pwconv2(self.act(self.pwconv1(self.norm(self.dwconv(x).permute(0, 2, 3, 1)))))
        return x + y.permute(0, 3, 1, 2)


# ----------------------------------------------------------------------------- 2. block MACs


def check_block_macs(fn) -> None:
    """``fn(dim, height, width, kernel_size)`` gives the MACs of a ConvNeXt block's
    convolution and linear layers, as fvcore counts them (LayerNorm excluded, biases
    free)."""
    from hirilib.models.convnext import Block

    for dim, h, w, k in [(96, 56, 56, 7), (384, 14, 14, 7), (64, 8, 16, 3), (32, 7, 7, 11)]:
        ops = flop_analysis(Block(dim, kernel_size=k), (1, dim, h, w)).by_operator()
        conv, linear = int(ops.get("conv", 0)), int(ops.get("linear", 0))
        want, P, C = conv + linear, h * w, dim
        assert_equal_count(fn(dim, h, w, k), want, f"C={dim}, {h}x{w}, k={k} (depthwise "
                           f"conv {conv:,}, the two Linear layers {linear:,})", mistakes={
                               "a dense k x k convolution (k*k*C MACs per output element, "
                               "not k*k: the conv is depthwise)": want + P * C * k * k * (C - 1),
                               "the LayerNorm counted (the exercise leaves it out)":
                                   want + 5 * P * C,
                               "the biases counted (6 C per position)": want + 6 * P * C,
                               "an MLP without its 4x expansion (2C^2 per position instead "
                               "of 8C^2)": want - 6 * P * C * C,
                               "only one of the two Linear layers counted":
                                   want - 4 * P * C * C,
                               "the depthwise conv left out": want - P * C * k * k})


def _conv_macs_as_dense(dim, height, width, kernel_size=7):
    return height * width * dim * (kernel_size ** 2 * dim + 8 * dim)  # a dense k x k conv


def _macs_with_layernorm(dim, height, width, kernel_size=7):
    return height * width * dim * (kernel_size ** 2 + 8 * dim + 5)


# ----------------------------------------------------------------------------- 3. Linear = 1x1


def check_roadmap_state_dict(fn) -> None:
    """``fn(state_dict)`` maps a ``ConvNeXt``'s weights onto ``RoadmapNet`` at the
    roadmap's last step, so that the two compute the same outputs.  (Block layers are
    renamed ``dwconv -> conv_dw``, ``norm -> norm_dw``, ``pwconv1 -> pw1``,
    ``pwconv2 -> pw2``; a Linear weight ``(out, in)`` is a 1x1 conv weight
    ``(out, in, 1, 1)``.)"""
    from hirilib.models.convnext import ConvNeXt
    from hirilib.models.convnext_roadmap import RoadmapNet, roadmap_config

    cfg = roadmap_config("convnext_roadmap_13_convnext_tiny", width=8, depths=(1, 1, 2, 1),
                         layer_scale=1e-6)
    convnext = randomize_(ConvNeXt(cfg.depths, [8, 16, 32, 64], num_classes=10))
    roadmap = RoadmapNet(cfg, num_classes=10).eval()
    sd = convnext.state_dict()
    mapped = fn({k: v.clone() for k, v in sd.items()})
    if not isinstance(mapped, dict):
        raise CheckFailed(f"expected a dict (a state dict), got {type(mapped).__name__}")
    want = {k: tuple(v.shape) for k, v in roadmap.state_dict().items()}
    got = {k: tuple(v.shape) for k, v in mapped.items()}
    if set(got) != set(want):
        missing, extra = sorted(set(want) - set(got)), sorted(set(got) - set(want))
        hint = ""
        if any(".blocks." in k and k.split(".")[-2] in ("dwconv", "norm", "pwconv1",
                                                         "pwconv2") for k in extra):
            hint = (": the block layers were not renamed (dwconv -> conv_dw, norm -> "
                    "norm_dw, pwconv1 -> pw1, pwconv2 -> pw2)")
        elif any("norm_dw" in k and ".blocks." not in k for k in extra):
            hint = (": 'norm' renamed outside the blocks too; only the blocks' layers "
                    "change names")
        raise CheckFailed(f"keys differ from RoadmapNet's: missing {missing[:4]}, "
                          f"unexpected {extra[:4]}{hint}")
    bad = sorted(k for k in want if got[k] != want[k])
    if bad:
        hint = ""
        if all(len(got[k]) == 2 and want[k] == got[k] + (1, 1) for k in bad):
            hint = (": the Linear weights were not reshaped; a Linear weight (out, in) is "
                    "a 1x1 conv weight (out, in, 1, 1) (w[:, :, None, None])")
        raise CheckFailed(f"wrong shapes: {[(k, got[k], want[k]) for k in bad[:3]]}{hint}")
    roadmap.load_state_dict(mapped)
    x = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        assert_close(roadmap(x), convnext(x), "RoadmapNet with the mapped weights vs "
                     "ConvNeXt", atol=1e-4)


def _renamed(state_dict):
    return {k.replace(".dwconv.", ".conv_dw.").replace(".norm.", ".norm_dw.")
             .replace(".pwconv1.", ".pw1.").replace(".pwconv2.", ".pw2.")
            if ".blocks." in k else k: v for k, v in state_dict.items()}


def _linear_not_reshaped(state_dict):
    return _renamed(state_dict)


def _not_renamed(state_dict):
    return {k: (v[:, :, None, None] if "pwconv" in k and v.ndim == 2 else v)
            for k, v in state_dict.items()}


# ----------------------------------------------------------------------------- registry


def _reference_block():
    from hirilib.models.convnext import Block
    return Block


def _reference_block_macs():
    from hirilib.analytic import convnext_block_macs
    return convnext_block_macs


def _reference_roadmap_state_dict():
    from hirilib.models.convnext_roadmap import roadmap_state_dict
    return roadmap_state_dict


register(
    Exercise("MyBlock", 3, 1, check_block, reference=_reference_block,
             summary="the ConvNeXt block, loaded with the reference block's weights",
             mistakes={"post-norm": lambda: _PostNormBlock,
                       "no layer scale (the branch not multiplied by gamma)":
                           lambda: _NoLayerScaleBlock,
                       "no layer scale?": lambda: _NoGammaParameterBlock,
                       "no GELU": lambda: _NoGeluBlock}),
    Exercise("my_block_macs", 3, 2, check_block_macs, reference=_reference_block_macs,
             summary="a ConvNeXt block's MACs (convolution and Linear layers)",
             mistakes={"a dense k x k convolution": lambda: _conv_macs_as_dense,
                       "the LayerNorm counted": lambda: _macs_with_layernorm}),
    Exercise("my_roadmap_state_dict", 3, 3, check_roadmap_state_dict,
             summary="ConvNeXt's weights onto the roadmap's last step: Linear = 1x1 conv",
             reference=_reference_roadmap_state_dict,
             mistakes={"the Linear weights were not reshaped": lambda: _linear_not_reshaped,
                       "the block layers were not renamed": lambda: _not_renamed}),
)
