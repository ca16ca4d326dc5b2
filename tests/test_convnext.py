"""ConvNeXt (Liu et al., CVPR 2022): what these tests prove.

* The five variants have the paper's parameters (within 0.5%) and GFLOPs (within 2%),
  Table 1 / the [A] counts of the reference spec; FLOPs are fvcore MACs.
* timm's ConvNeXt-T gives our outputs after ``convert_state_dict`` (when timm is
  installed), and synthetic timm / official checkpoints load key for key.
* Bad input raises a ValueError that says what works.
"""

from __future__ import annotations

import pytest
import torch

import hirilib
from reference_impl import import_timm
from hirilib.checks.convnext import randomize_
from hirilib.measure import blank_model, count_flops, count_params
from hirilib.models import convnext as cnx
from hirilib.reference import CONVNEXT

# Table 1 / spec [A]: parameters (M) and GFLOPs (G-MACs) at 224.
PAPER_VARIANTS = {name: (ref["params_m"], ref["gflops"]) for name, ref in CONVNEXT.items()}
PARAM_TOL, FLOP_TOL = 0.005, 0.02


# ----------------------------------------------------------------------------- the variants


@pytest.mark.parametrize("name", list(PAPER_VARIANTS))
def test_variant_params_and_flops_match_the_paper(name):
    params_m, gflops = PAPER_VARIANTS[name]
    model = blank_model(name)
    assert count_params(model) / 1e6 == pytest.approx(params_m, rel=PARAM_TOL)
    assert count_flops(model, (1, 3, 224, 224)) / 1e9 == pytest.approx(gflops, rel=FLOP_TOL)


def test_shapes_pyramid_and_options():
    model = randomize_(blank_model("convnext_tiny", num_classes=10, in_chans=1))
    x = torch.randn(2, 1, 64, 96)
    maps = model.forward_pyramid(x)
    assert [tuple(m.shape) for m in maps] == [(2, 96, 16, 24), (2, 192, 8, 12),
                                              (2, 384, 4, 6), (2, 768, 2, 3)]
    assert torch.equal(model.forward_features(x), maps[-1])
    assert model(x).shape == (2, 10)
    assert torch.allclose(model(x), model.forward_head(maps[-1]))


def test_init_layer_scale_head_scale_and_drop_path():
    # ConvNeXt-T's depths at a sixth of its widths: the same init, built quickly
    model = cnx.ConvNeXt(dims=(16, 32, 64, 128), drop_path_rate=0.1, head_init_scale=1e-3)
    block = model.stages[0].blocks[0]
    assert torch.all(block.gamma == 1e-6) and block.norm.eps == 1e-6
    assert model.stem[1].eps == 1e-6 and model.head.norm.eps == 1e-6
    assert 0.015 < model.stages[2].blocks[0].pwconv1.weight.std().item() < 0.025  # trunc normal .02
    assert model.head.fc.weight.std().item() < 1e-4                           # .02 x 1e-3
    rates = [b.drop_path.p if hasattr(b.drop_path, "p") else 0.0 for s in model.stages for b in s.blocks]
    assert rates[0] == 0.0 and rates[-1] == pytest.approx(0.1) and len(rates) == 18
    assert rates == sorted(rates)
    assert blank_model("convnext_tiny", ls_init_value=None).stages[0].blocks[0].gamma is None
    model.train()
    x = torch.randn(8, 128, 2, 2)
    last = model.stages[3].blocks[2]                          # drop path 0.1: whole samples dropped
    with torch.no_grad():
        last.gamma.fill_(1.0)
        torch.manual_seed(0)
        kept = [bool(d.abs().sum() > 0) for _ in range(20) for d in last(x) - x]
    assert 0 < kept.count(False) < len(kept)


@pytest.mark.parametrize("name", ["convnext_tiny", "convnext_roadmap_00_resnet50",
                                  "convnext_roadmap_13_convnext_tiny"])
def test_bad_input_says_what_works(name):  # (the roadmap's nets share the check)
    model = blank_model(name)
    with pytest.raises(ValueError, match="in_chans"):
        model(torch.zeros(1, 4, 64, 64))
    with pytest.raises(ValueError, match=r"divisible by 32.*224 and 256"):
        model(torch.zeros(1, 3, 225, 230))
    with pytest.raises(ValueError, match="32"):
        model(torch.zeros(1, 3, 20, 64))


# ----------------------------------------------------------------------------- weights


def timm_keys_from_ours(state_dict):
    """Our keys -> timm's keys, written by hand from timm's ConvNeXt layout."""
    out = {}
    for k, v in state_dict.items():
        k = (k.replace(".dwconv.", ".conv_dw.").replace(".pwconv1.", ".mlp.fc1.")
             .replace(".pwconv2.", ".mlp.fc2."))
        out[k] = v.clone()
    return out


def official_keys_from_ours(state_dict):
    """Our keys -> the official repository's keys (downsample_layers, stages.i.j, norm, head)."""
    out = {}
    for k, v in state_dict.items():
        if k.startswith("stem."):
            k = "downsample_layers.0." + k[len("stem."):]
        elif ".downsample." in k:
            i = k.split(".")[1]
            k = f"downsample_layers.{i}." + k.split(".downsample.")[1]
        elif k.startswith("stages."):
            k = k.replace(".blocks.", ".")
        elif k.startswith("head.norm."):
            k = "norm." + k[len("head.norm."):]
        elif k.startswith("head.fc."):
            k = "head." + k[len("head.fc."):]
        out[k] = v.clone()
    return out


@pytest.mark.parametrize("layout", [timm_keys_from_ours, official_keys_from_ours])
def test_convert_state_dict_on_synthetic_checkpoints(layout):
    model = blank_model("convnext_tiny")
    ours = model.state_dict()
    foreign = layout(ours)
    assert set(foreign) != set(ours)
    if layout is timm_keys_from_ours:
        assert "stages.2.blocks.8.mlp.fc2.weight" in foreign and "head.fc.weight" in foreign
        assert "stages.1.downsample.1.weight" in foreign and "stem.1.bias" in foreign
    else:
        assert "downsample_layers.3.1.weight" in foreign and "stages.2.8.pwconv2.weight" in foreign
    converted = cnx.convert_state_dict(foreign)
    assert set(converted) == set(ours)
    assert all(torch.equal(converted[k], ours[k]) for k in ours)
    model.load_state_dict(converted, strict=True)


def test_matches_timm_convnext_tiny():
    timm = import_timm()
    theirs = randomize_(timm.create_model("convnext_tiny", pretrained=False))
    ours = hirilib.create_model("convnext_tiny").eval()
    ours.load_state_dict(cnx.convert_state_dict(theirs.state_dict()), strict=True)
    x = torch.randn(2, 3, 224, 224)
    with torch.no_grad():
        diff = (ours(x) - theirs(x)).abs().max().item()
    assert diff < 1e-4


def test_pretrained_from_a_local_timm_file(tmp_path):
    """``create_model(name, checkpoint=file)``: timm's keys through the converter; another
    number of classes loads the backbone and keeps our classifier, with a warning."""
    src = randomize_(blank_model("convnext_tiny"))
    path = tmp_path / "pytorch_model.bin"
    torch.save(timm_keys_from_ours(src.state_dict()), path)
    dst = hirilib.create_model("convnext_tiny", checkpoint=path).eval()
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        assert torch.equal(src(x), dst(x))
    with pytest.warns(UserWarning, match="classifier"):
        head = hirilib.create_model("convnext_tiny", num_classes=5, checkpoint=path)
    assert torch.equal(head.stem[0].weight, src.stem[0].weight) and head.head.fc.out_features == 5


def test_overrides_and_interface():
    """Any constructor argument can be overridden (the issue's ``dims`` clash), and the
    classifier can be replaced."""
    m = hirilib.create_model("convnext_tiny", dims=(8, 16, 32, 64), depths=(1, 1, 1, 1))
    assert m.dims == [8, 16, 32, 64] and m.num_features == 64
    m.reset_classifier(7)
    x = torch.randn(2, 3, 64, 64)
    assert m(x).shape == (2, 7) and m.forward_head(m.forward_features(x), pre_logits=True).shape == (2, 64)
