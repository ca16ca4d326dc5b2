"""Every registered model has the same interface and refuses bad input the same clear way.

These tests walk the registry, so a family added later is checked without anyone
remembering to: every variant must have the interface (on the meta device, no weights),
the smallest variant of every family must run it end to end, and a table of bad inputs
and bad constructor arguments must give a hirilib error that says what works.
"""

from __future__ import annotations

from collections import defaultdict

import numpy as np
import pytest
import torch
import torch.nn as nn

import hirilib
from hirilib import registry
from hirilib.measure import count_flops, count_params

INTERFACE = ("num_features", "num_classes", "in_chans", "size_multiple", "min_input_size",
             "forward_features", "forward_head", "forward", "reset_classifier", "forward_pyramid",
             "check_input")


def _meta(name, **kw):
    with torch.device("meta"):
        return hirilib.create_model(name, **kw)


def _smallest_per_family():
    families = defaultdict(list)
    for name in hirilib.list_models():
        entry = registry.get_entry(name)
        families[entry.family].append((count_params(_meta(name)), name))
    return sorted(min(v)[1] for v in families.values())


SMALLEST = _smallest_per_family()


def _side(model, at_least=64):
    m = model.size_multiple
    side = max(at_least, model.min_input_size)
    return -(-side // m) * m


def test_registry_is_explicit_and_complete():
    names = hirilib.list_models()
    assert len(names) == len(set(names)) and names == sorted(names)
    families = {registry.get_entry(n).family for n in names}
    assert {"pvt_v2", "convnext", "convnext_roadmap", "hire_mlp"} <= families
    for n in names:  # each variant is a named function in its model file, grep-able
        entry = registry.get_entry(n)
        assert entry.factory.__name__ == n
        assert getattr(__import__(entry.factory.__module__, fromlist=[n]), n) is entry.factory


@pytest.mark.parametrize("name", hirilib.list_models())
def test_every_model_has_the_interface(name):
    model = _meta(name)
    missing = [a for a in INTERFACE if not hasattr(model, a)]
    assert not missing, f"{name} lacks {missing}"
    assert model.num_classes == 1000 and model.in_chans == 3
    assert isinstance(model.num_features, int) and model.num_features > 0


@pytest.mark.parametrize("name", SMALLEST)
def test_the_interface_works_end_to_end(name):
    torch.manual_seed(0)
    model = hirilib.create_model(name, num_classes=7).eval()
    side = _side(model)
    x = torch.randn(2, 3, side, side)
    with torch.no_grad():
        feats = model.forward_features(x)
        pyramid = model.forward_pyramid(x)
        pooled = model.forward_head(feats, pre_logits=True)
        logits = model(x)
    assert feats.ndim == 4 and feats.shape[:2] == (2, model.num_features)
    assert isinstance(pyramid, list) and len(pyramid) >= 3
    assert torch.equal(pyramid[-1], feats) or torch.allclose(pyramid[-1], feats)
    assert pooled.shape == (2, model.num_features)
    assert logits.shape == (2, 7)
    assert torch.allclose(model.forward_head(feats), logits, atol=1e-5)
    model.reset_classifier(3)
    assert model.num_classes == 3 and model(x).shape == (2, 3)
    model.reset_classifier(0)
    assert model(x).shape == (2, model.num_features)


@pytest.mark.parametrize("name", SMALLEST)
def test_any_constructor_argument_can_be_overridden(name):
    """``create_model`` passes any override to the model's class; an unknown one is a
    ValueError that lists what the model takes."""
    with pytest.raises(ValueError, match=r"has no argument 'no_such_argument'; it takes: .*num_classes"):
        _meta(name, no_such_argument=1)


@pytest.mark.parametrize("name", SMALLEST)
@pytest.mark.parametrize("kwargs, match", [
    (dict(drop_path_rate=-0.1), r"drop_path_rate must be a number in \[0, 1\), got -0.1"),
    (dict(drop_path_rate=1.0), r"drop_path_rate must be a number in \[0, 1\), got 1.0"),
    (dict(num_classes=-1), r"num_classes must be an integer >= 0, got -1"),
    (dict(num_classes=2.5), r"num_classes must be an integer >= 0, got 2.5"),
    (dict(in_chans=0), r"in_chans must be an integer >= 1, got 0"),
])
def test_bad_constructor_arguments(name, kwargs, match):
    with pytest.raises(ValueError, match=match):
        hirilib.create_model(name, **kwargs)


def _bad_inputs(model):
    side = _side(model)
    good = torch.zeros(1, 3, side, side)
    cases = [
        ("numpy array", np.zeros((1, 3, side, side), np.float32), TypeError, r"torch\.from_numpy"),
        ("python list", [[0.0]], TypeError, r"expects a torch\.Tensor"),
        ("uint8 image", good.to(torch.uint8), TypeError, r"x\.float\(\) / 255.*mean"),
        ("int64 image", good.long(), TypeError, r"x\.float\(\)"),
        ("no batch dim", good[0], ValueError, r"x\.unsqueeze\(0\)"),
        ("5-d tensor", good[None], ValueError, r"\(B, 3, H, W\)"),
        ("channels last", good.permute(0, 2, 3, 1), ValueError, r"x\.permute\(0, 3, 1, 2\)"),
        ("one channel", good[:, :1], ValueError, r"in_chans=1"),
    ]
    m = model.size_multiple
    if m > 1:
        odd = side + m // 2
        cases.append(("size not a multiple", torch.zeros(1, 3, odd, side), ValueError,
                      rf"divisible by {m}.*nearest sizes that work are {side} and {side + m}"))
    if model.min_input_size > 1:
        small = max(1, model.min_input_size - m) if m > 1 else model.min_input_size - 1
        cases.append(("too small", torch.zeros(1, 3, small, small), ValueError,
                      rf"at least {model.min_input_size}|nearest sizes that work are"))
    return cases


@pytest.mark.parametrize("name", SMALLEST)
def test_bad_inputs_get_clear_errors(name):
    model = hirilib.create_model(name).eval()
    for what, x, error, match in _bad_inputs(model):
        for fn in (model, model.forward_features, model.forward_pyramid):
            with pytest.raises(error, match=match):
                fn(x)
        if isinstance(x, torch.Tensor) and x.is_floating_point() and x.ndim == 4:
            with pytest.raises(error, match=match):  # the same check runs while counting
                count_flops(model, x)


def test_unknown_model_name_suggests_close_matches(monkeypatch):
    def tiny_test_net(**kw):
        return nn.Identity()

    monkeypatch.setitem(registry._MODELS, "tiny_test_net",
                        registry.ModelEntry("tiny_test_net", tiny_test_net))
    assert "tiny_test_net" in hirilib.list_models("tiny_*")
    assert isinstance(hirilib.create_model("tiny_test_net"), nn.Identity)
    with pytest.raises(ValueError, match="unknown model 'tiny_tset_net'.*did you mean: tiny_test_net"):
        hirilib.create_model("tiny_tset_net")


def test_pretrained_without_published_weights_says_which_have_them():
    with pytest.raises(ValueError, match=r"no published weights .*convnext_roadmap_00_resnet50.*pvt_v2_b0"):
        hirilib.create_model("convnext_roadmap_00_resnet50", pretrained=True)
