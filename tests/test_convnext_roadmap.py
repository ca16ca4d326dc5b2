"""The ResNet-50 -> ConvNeXt-T roadmap (ConvNeXt Sec. 2, Table 10): what these tests prove.

* Every step of the roadmap lands within 3% of Table 10's GFLOPs, and step 0 is exactly
  torchvision's ResNet-50 (25,557,032 parameters).
* The steps are registered in order, each one the previous plus its switch.
* The roadmap's last step computes what ``convnext_tiny`` computes: two independent
  formulations (1x1 convs on channels-first maps vs Linear on channels-last tokens)
  give the same outputs for the same weights.
"""

from __future__ import annotations

import pytest
import torch

import hirilib
from hirilib.checks.convnext import randomize_
from hirilib.measure import blank_model, count_flops, count_params
from hirilib.models import convnext_roadmap as rm
from hirilib.reference import CONVNEXT_ROADMAP, CONVNEXT_ROADMAP_ARCH_GFLOPS

ROADMAP_TOL = 0.03
# Table 10's GFLOPs for every registered roadmap step.  Step 12 (BN -> LN) is printed as
# 4.46 in the paper, but swapping a norm adds no multiply-accumulates, so we test the
# architecture's 4.15 (reference.CONVNEXT_ROADMAP_ARCH_GFLOPS says why).
PAPER_ROADMAP_GFLOPS = {name: CONVNEXT_ROADMAP_ARCH_GFLOPS.get(name, ref["gflops"])
                        for name, ref in CONVNEXT_ROADMAP.items()}


@pytest.mark.parametrize("name", list(PAPER_ROADMAP_GFLOPS))
def test_roadmap_step_gflops_match_table_10(name):
    gflops = count_flops(blank_model(name), (1, 3, 224, 224)) / 1e9
    assert gflops == pytest.approx(PAPER_ROADMAP_GFLOPS[name], rel=ROADMAP_TOL)


def test_roadmap_is_registered_in_order_and_cumulative():
    names = [s.name for s in rm.ROADMAP]
    assert names == sorted(names) and len(names) == 14
    assert set(PAPER_ROADMAP_GFLOPS) == set(names + [s.name for s in rm.KERNEL_SWEEP])
    assert set(PAPER_ROADMAP_GFLOPS) <= set(hirilib.list_models("convnext_roadmap_*"))
    cfg = rm.RoadmapConfig()
    for step in rm.ROADMAP:
        nxt = rm.roadmap_config(step.name)
        assert {k: v[1] for k, v in cfg.diff(nxt).items()} == step.diff, step.name
        cfg = nxt
    # step 1 is a recipe change: the same network as step 0
    assert rm.roadmap_config(names[0]) == rm.roadmap_config(names[1])
    # the kernel sweep is reachable as registered steps and as an override
    assert rm.roadmap_config("convnext_roadmap_08_kernel7", kernel_size=5) == \
        rm.roadmap_config("convnext_roadmap_08_kernel5")
    model = blank_model("convnext_roadmap_08_kernel7", kernel_size=11)
    assert model.stages[0].blocks[0].conv_dw.kernel_size == (11, 11)


def test_step0_is_resnet50():
    model = blank_model("convnext_roadmap_00_resnet50")
    assert count_params(model) == 25_557_032                # torchvision's resnet50
    stem = model.stem
    assert (stem[0].kernel_size, stem[0].stride, type(stem[3])) == ((7, 7), (2, 2), torch.nn.MaxPool2d)
    first = model.stages[1].blocks[0]
    assert first.conv2.stride == (2, 2) and first.conv1.stride == (1, 1)   # stride on the 3x3 (v1.5)
    assert [len(s.blocks) for s in model.stages] == [3, 4, 6, 3]


def test_intermediate_steps_follow_the_anonymous_code():
    c = blank_model("convnext_roadmap_03_patchify_stem")
    assert len(c.stem) == 1 and c.stem[0].bias is not None      # a bare 4x4/4 conv
    b = blank_model("convnext_roadmap_07_move_up_dw").stages[2].blocks[0]
    assert b.conv_dw.stride == (2, 2) and b.conv_dw.groups == 192 == b.conv_dw.in_channels
    assert b.shortcut[0].stride == (2, 2) and isinstance(b.shortcut[1], torch.nn.BatchNorm2d)
    assert b.pw1.bias is None                                    # BN: no conv bias
    b11 = blank_model("convnext_roadmap_11_fewer_norms").stages[0].blocks[0]
    assert isinstance(b11.norm1, torch.nn.Identity) and isinstance(b11.act_out, torch.nn.Identity)
    assert isinstance(b11.act_dw, torch.nn.Identity) and isinstance(b11.act, torch.nn.GELU)
    b12 = blank_model("convnext_roadmap_12_layer_norm").stages[0].blocks[0]
    assert b12.pw1.bias is not None and b12.conv_dw.bias is not None  # LN: convs gain bias
    m12 = blank_model("convnext_roadmap_12_layer_norm")
    assert isinstance(m12.head.norm, torch.nn.Identity) and len(m12.stem) == 1
    with pytest.raises(ValueError, match="inverted_bottleneck"):
        rm.RoadmapConfig(move_up_dw=True)
    with pytest.raises(ValueError, match="odd"):
        rm.RoadmapConfig(kernel_size=4)


def test_registered_last_step_is_exactly_convnext_tiny():
    step, tiny = blank_model("convnext_roadmap_13_convnext_tiny"),\
        blank_model("convnext_tiny")
    assert count_params(step) == count_params(tiny)
    assert step.config.layer_scale == 1e-6
    step.load_state_dict(rm.roadmap_state_dict(tiny.state_dict()), strict=True)


@pytest.mark.parametrize("layer_scale", [None, 1e-6])
def test_last_step_is_convnext_tiny(layer_scale):
    """Roadmap step 13 (1x1 convs, channels-first) == convnext_tiny (Linear, channels-last).

    As registered, step 13 carries ConvNeXt-T's layer scale (1e-6) and matches the released
    ``convnext_tiny``; with ``layer_scale=None`` (the roadmap's run) it matches
    ``convnext_tiny(ls_init_value=None)``."""
    ref = randomize_(blank_model("convnext_tiny", ls_init_value=layer_scale))
    step = blank_model("convnext_roadmap_13_convnext_tiny", layer_scale=layer_scale)
    assert isinstance(step, rm.RoadmapNet)
    assert count_params(step) == count_params(ref)
    step.load_state_dict(rm.roadmap_state_dict(ref.state_dict()), strict=True)
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        expected, got = ref(x), step(x)
    assert expected.abs().mean() > 0.1                       # a signal, not a vanishing output
    assert (got - expected).abs().max().item() < 1e-4
