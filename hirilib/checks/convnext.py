"""Checks for chapter 3: the ConvNeXt block, its cost, and Linear = 1x1 conv.

Every check takes the implementation to grade and compares it with an
independent formulation: ``hirilib.models.convnext.Block`` loaded with the
same weights, fvcore's count of the traced block, or the roadmap's last step
(written with 1x1 convolutions) against ConvNeXt (written with Linear layers).
"""

from __future__ import annotations

import torch

from hirilib.measure import flop_analysis
from hirilib.checks import CheckFailed, Exercise, assert_close, assert_equal_count, register



def randomize_(module: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
    """Random weights, norm scales and layer scale near 1: every parameter matters."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in module.named_parameters():
            noise = torch.randn(p.shape, generator=g)
            near_one = name.endswith("gamma") or (p.ndim == 1 and "norm" in name and name.endswith("weight"))
            p.copy_(1 + 0.1 * noise if near_one else 0.1 * noise)
    return module.eval()



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
        assert got == want, (
            f"dim={dim}: parameters differ from the reference: missing "
            f"{sorted(set(want) - set(got))}, unexpected {sorted(set(got) - set(want))}, "
            f"wrong shape {sorted(k for k in set(got) & set(want) if got[k] != want[k])} "
            f"(expected {want})")
        gamma = mine.state_dict()["gamma"]
        assert torch.allclose(gamma, torch.full_like(gamma, 1e-6)), \
            "layer scale gamma must start at ls_init_value = 1e-6"
        norm = getattr(mine, "norm", None)
        assert getattr(norm, "eps", None) == 1e-6, "ConvNeXt's LayerNorm uses eps = 1e-6"
        mine.load_state_dict(randomize_(ref).state_dict())
        mine.eval()
        x = torch.randn(2, dim, 9, 11, generator=torch.Generator().manual_seed(dim))
        with torch.no_grad():
            assert_close(mine(x), ref(x), f"Block({dim}) on a (2, {dim}, 9, 11) map "
                   "(order: DW conv, LN over C, Linear 4x, GELU, Linear, gamma, + input)")


def check_block_macs(fn) -> None:
    """``fn(dim, height, width, kernel_size)`` gives the MACs of a ConvNeXt block's
    convolution and linear layers, as fvcore counts them (LayerNorm excluded)."""
    from hirilib.models.convnext import Block

    for dim, h, w, k in [(96, 56, 56, 7), (384, 14, 14, 7), (64, 8, 16, 3), (32, 7, 7, 11)]:
        ops = flop_analysis(Block(dim, kernel_size=k), (1, dim, h, w)).by_operator()
        conv, linear = int(ops.get("conv", 0)), int(ops.get("linear", 0))
        got = fn(dim, h, w, k)
        assert got == conv + linear, (
            f"C={dim}, {h}x{w}, k={k}: you give {got:,}, fvcore counts {conv + linear:,} "
            f"(depthwise conv {conv:,}: k*k MACs per output element, not k*k*C; "
            f"the two Linear layers {linear:,})")


def check_roadmap_state_dict(fn) -> None:
    """``fn(convnext_state_dict)`` maps a ``ConvNeXt``'s weights onto ``RoadmapNet`` at the
    roadmap's last step, so that the two compute the same outputs.  (Block layers are
    renamed ``dwconv -> conv_dw``, ``norm -> norm_dw``, ``pwconv1 -> pw1``,
    ``pwconv2 -> pw2``; a Linear weight ``(out, in)`` is a 1x1 conv weight ``(out, in, 1, 1)``.)"""
    from hirilib.models.convnext import ConvNeXt
    from hirilib.models.convnext_roadmap import RoadmapNet, roadmap_config

    cfg = roadmap_config("convnext_roadmap_13_convnext_tiny", width=8, depths=(1, 1, 2, 1),
                         layer_scale=1e-6)
    convnext = randomize_(ConvNeXt(cfg.depths, [8, 16, 32, 64], num_classes=10))
    roadmap = RoadmapNet(cfg, num_classes=10).eval()
    mapped = fn(convnext.state_dict())
    want = {k: tuple(v.shape) for k, v in roadmap.state_dict().items()}
    got = {k: tuple(v.shape) for k, v in mapped.items()}
    assert set(got) == set(want), (
        f"keys differ from RoadmapNet's: missing {sorted(set(want) - set(got))[:6]}, "
        f"unexpected {sorted(set(got) - set(want))[:6]}")
    bad = sorted(k for k in want if got[k] != want[k])
    assert not bad, f"wrong shapes: {[(k, got[k], want[k]) for k in bad[:4]]}"
    roadmap.load_state_dict(mapped)
    x = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        assert_close(roadmap(x), convnext(x), "RoadmapNet with the mapped weights vs ConvNeXt", atol=1e-4)


class _PostNormBlock(torch.nn.Module):
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


def _conv_macs_as_dense(dim, height, width, kernel_size=7):
    return height * width * dim * (kernel_size ** 2 * dim + 8 * dim)  # a dense k x k conv


def _linear_not_reshaped(state_dict):
    return {k.replace(".dwconv.", ".conv_dw.").replace(".norm.", ".norm_dw.")
             .replace(".pwconv1.", ".pw1.").replace(".pwconv2.", ".pw2.")
             if ".blocks." in k else k: v for k, v in state_dict.items()}


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
             mistakes={"max abs difference": lambda: _PostNormBlock}),
    Exercise("my_block_macs", 3, 2, check_block_macs, reference=_reference_block_macs,
             mistakes={"not k*k*C": lambda: _conv_macs_as_dense}),
    Exercise("my_roadmap_state_dict", 3, 3, check_roadmap_state_dict,
             reference=_reference_roadmap_state_dict,
             mistakes={"wrong shapes": lambda: _linear_not_reshaped}),
)
