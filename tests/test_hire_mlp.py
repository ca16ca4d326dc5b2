"""Hire-MLP (Guo et al., CVPR 2022): what these tests prove.

* The four variants have the released code's parameters (within 0.5%) and GFLOPs
  (MACs, within 3%) of ``hirilib.reference.HIRE_MLP``, and the closed forms of
  ``hirilib.analytic.hire_mlp`` equal ``count_params`` / ``count_flops`` exactly, at
  224 and at sizes that need padding, for both fusions.
* Loaded with the official model's weights through ``convert_state_dict``, ours gives
  the official model's outputs: ``tests/data/hire_mlp_official_small.npz`` holds a
  small ``HireMLPNet`` of the official code (depths (2, 2, 3, 2), widths (16, 24, 36,
  42), the official region sizes and step schedules, random weights and random
  BatchNorm statistics) with its eval-mode outputs and stage maps on a 64 x 64 and a
  72 x 88 batch, run in float32 and float64 (format: the file's ``meta_json``).
* The rearrangements are bijections: fold then unfold and shift then restore return
  their input exactly, and the branch MLP of a region sees exactly that region's p
  tokens (proved with tokens that carry distinct powers of two).
* Token mixing is local within a region without the shift and crosses regions with it;
  the receptive field, measured with gradients, grows over blocks only with the shift.
* Any input from ``min_input_size`` up works; smaller ones get a clear error.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn as nn

import hirilib
from hirilib import analytic
from hirilib.deploy import count_batchnorms, fuse_bn
from hirilib.layers import Mlp
from hirilib.measure import blank_model, count_flops, count_params
from hirilib.models import hire_mlp as hm
from hirilib.reference import HIRE_MLP

PARAM_TOL, FLOP_TOL = 0.005, 0.03
FIXTURE = Path(__file__).parent / "data" / "hire_mlp_official_small.npz"
# float32 against the official float32 outputs: the official model's own float32 and
# float64 logits differ by 1.5e-5 at logits up to 17 (the fixture's meta), so two
# float32 computations of the same maths may differ by a few times that: 1e-4.  In
# float64 the same maths agrees to rounding: 1e-9.
ATOL_F32, ATOL_F64 = 1e-4, 1e-9
BIG = {"hire_mlp_small", "hire_mlp_base", "hire_mlp_large"}  # over 10 s each to trace


def _randomize(model: nn.Module, seed: int = 0) -> nn.Module:
    """Random weights and BatchNorm statistics, so that every parameter matters."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.weight.copy_(torch.rand(m.weight.shape, generator=g) + 0.5)
                m.bias.copy_(torch.randn(m.bias.shape, generator=g) * 0.2)
                m.running_mean.copy_(torch.randn(m.num_features, generator=g) * 0.2)
                m.running_var.copy_(torch.rand(m.running_var.shape, generator=g) + 0.5)
            elif isinstance(m, (nn.Conv2d, nn.Linear)):
                fan_in = m.weight[0].numel()
                m.weight.copy_(torch.randn(m.weight.shape, generator=g) / fan_in ** 0.5)
                if m.bias is not None:
                    m.bias.copy_(torch.randn(m.bias.shape, generator=g) * 0.1)
    return model.eval()


# ------------------------------------------------------------------------- the numbers


@pytest.mark.parametrize("name", [pytest.param(n, marks=pytest.mark.slow) if n in BIG
                                  else n for n in HIRE_MLP])
def test_variant_matches_the_reference_and_the_closed_form(name):
    """Params within 0.5% and GFLOPs within 3% of the reference; closed forms exact."""
    ref, cfg = HIRE_MLP[name], hm.VARIANTS[name]
    model = blank_model(name)
    params, macs = count_params(model), count_flops(model, (1, 3, 224, 224))
    assert abs(params / 1e6 / ref["params_m"] - 1) < PARAM_TOL, (name, params)
    assert abs(macs / 1e9 / ref["gflops"] - 1) < FLOP_TOL, (name, macs)
    assert params == analytic.hire_mlp_params(**cfg)
    assert macs == analytic.hire_mlp_macs(**cfg, H=224)


@pytest.mark.parametrize("name", list(HIRE_MLP))
@pytest.mark.parametrize("fusion", ["softmax", "sum"])
def test_params_closed_form_every_variant(name, fusion):
    with torch.device("meta"):
        model = hirilib.create_model(name, fusion=fusion, num_classes=10, in_chans=1)
    want = analytic.hire_mlp_params(**hm.VARIANTS[name], fusion=fusion, num_classes=10,
                                    in_chans=1)
    assert count_params(model) == want


@pytest.mark.parametrize("H, W, fusion", [(19, 19, "softmax"), (97, 131, "softmax"),
                                          (225, 230, "sum"), (64, 40, "sum")])
def test_macs_closed_form_at_odd_sizes(H, W, fusion):
    """Sizes whose stage maps need padding on H, W, both or neither (odd widths too)."""
    cfg = dict(hm.VARIANTS["hire_mlp_tiny"], embed_dims=(20, 36, 42, 66),
               depths=(2, 1, 3, 2))
    model = hm.HireMLP(**cfg, fusion=fusion, num_classes=7)
    want = analytic.hire_mlp_macs(**cfg, fusion=fusion, num_classes=7, H=H, W=W)
    assert count_flops(model, (1, 3, H, W)) == want


@pytest.mark.parametrize("C, H, W, p, step", [(42, 5, 6, 3, 1), (17, 7, 9, 4, 2),
                                               (64, 14, 14, 3, 2), (8, 2, 3, 2, 1)])
def test_hire_module_closed_form(C, H, W, p, step):
    for fusion in ("softmax", "sum"):
        module = hm.HireModule(C, p, step, fusion)
        assert count_params(module) == analytic.hire_module_params(C, p, fusion)
        want = analytic.hire_module_macs(C, H, W, p, fusion)
        assert count_flops(module, (1, C, H, W)) == want


def test_stage_sizes_and_min_input_size():
    model = blank_model("hire_mlp_tiny")
    for H, W in [(224, 224), (72, 88), (19, 23), (225, 97)]:
        assert model.stage_sizes(H, W) == analytic.hire_mlp_stage_sizes(H, W)
        maps = model.forward_pyramid(torch.zeros(1, 3, H, W))
        assert [tuple(f.shape[2:]) for f in maps] == model.stage_sizes(H, W)
    assert model.min_input_size == hm.min_input_size((4, 3, 3, 2)) == 19
    assert model.steps == [[0, 2], [0, 2], [0, 1, 2, 0], [0, 1]]  # the official steps
    assert blank_model("hire_mlp_base").steps[2] == [0, 1, 2] * 8


# ------------------------------------------------------------------ the official model


def _fixture():
    z = np.load(FIXTURE, allow_pickle=False)
    meta = json.loads(str(z["meta_json"]))
    kw = meta["kwargs"]
    model = hm.HireMLP(depths=kw["layers"], embed_dims=kw["embed_dims"],
                       mlp_ratios=kw["mlp_ratios"], regions=kw["pixel"],
                       step_strides=kw["step_stride"],
                       step_dilations=kw["step_dilation"],
                       num_classes=kw["num_classes"])
    official = {k[3:]: torch.from_numpy(z[k]) for k in z.files if k.startswith("sd/")}
    return z, meta, model, official


def test_official_weights_give_the_official_outputs():
    """Eval mode, BatchNorm statistics included; logits and every stage's map."""
    z, meta, model, official = _fixture()
    model.load_state_dict(hm.convert_state_dict(official), strict=True)
    model.eval()
    for tag in meta["sizes"]:
        x = torch.from_numpy(z[f"in/{tag}"])
        with torch.no_grad():
            maps = model.forward_pyramid(x)
            logits = model.forward_head(maps[-1])
        want = torch.from_numpy(z[f"out/{tag}"])
        assert (logits - want).abs().max() < ATOL_F32, tag
        for i, f in enumerate(maps):
            ref = torch.from_numpy(z[f"feat/{tag}/network.{2 * i}"])
            scale = max(1.0, ref.abs().max().item() / 10)      # as for logits up to 10
            assert (f - ref).abs().max() < ATOL_F32 * scale
        with torch.no_grad():
            logits64 = model.double()(x.double())
        model.float()
        want64 = torch.from_numpy(z[f"out64/{tag}"])
        assert (logits64 - want64).abs().max() < ATOL_F64, tag


def test_converter_maps_every_official_key_onto_ours(tmp_path):
    z, meta, model, official = _fixture()
    converted = hm.convert_state_dict(official)
    ours = model.state_dict()
    assert set(converted) == set(ours)
    assert all(converted[k].shape == ours[k].shape for k in ours)
    assert hm.convert_state_dict(ours).keys() == ours.keys()       # ours pass unchanged
    # an official checkpoint file, {"model": state_dict}, through create_model
    path = tmp_path / "hire_mlp_official.pth"
    torch.save({"model": official, "epoch": 299}, path)
    kw = meta["kwargs"]
    loaded = hirilib.create_model("hire_mlp_tiny", checkpoint=path, depths=kw["layers"],
                                  embed_dims=kw["embed_dims"], num_classes=10).eval()
    tag = meta["sizes"][1]
    x, want = torch.from_numpy(z[f"in/{tag}"]), torch.from_numpy(z[f"out/{tag}"])
    with torch.no_grad():
        assert (loaded(x) - want).abs().max() < ATOL_F32


# ---------------------------------------------------------------------- rearrangements


@pytest.mark.parametrize("axis", ["h", "w"])
@pytest.mark.parametrize("p", [2, 3, 4])
def test_fold_then_unfold_is_the_identity(axis, p):
    x = torch.randn(2, 5, 4 * p, 3 * p)
    y = hm.inner_region_rearrange(x, p, axis)
    expected = (2, 5 * p, 4, 3 * p) if axis == "h" else (2, 5 * p, 4 * p, 3)
    assert tuple(y.shape) == expected
    assert torch.equal(hm.inner_region_restore(y, p, axis), x)
    # channel c*p + o at group g holds row (column) g*p + o: consecutive tokens, c-major
    c, o, g = 3, p - 1, 2
    if axis == "h":
        assert torch.equal(y[:, c * p + o, g], x[:, c, g * p + o])
    else:
        assert torch.equal(y[:, c * p + o, :, g], x[:, c, :, g * p + o])


@pytest.mark.parametrize("size, p, step", [(7, 2, 1), (14, 3, 2), (5, 3, 1), (4, 4, 2),
                                            (2, 3, 2), (3, 2, 5), (9, 4, 0)])
@pytest.mark.parametrize("axis", ["h", "w"])
def test_shift_then_restore_is_the_identity(size, p, step, axis):
    shape = (1, 3, size, size + 1) if axis == "h" else (1, 3, size + 1, size)
    x = torch.randn(shape)
    t = hm.cross_region_shift(x, step, p, axis)
    dim = 2 if axis == "h" else 3
    assert t.shape[dim] % p == 0 and t.shape[dim] - size == -size % p
    assert torch.equal(hm.cross_region_restore(t, step, size, axis), x)
    assert torch.equal(hm.region_mixing(x, p, step, lambda v: v, axis), x)


def test_shift_rolls_down_and_pads_with_the_shifted_top_rows():
    x = torch.arange(5.0).reshape(1, 1, 5, 1)                     # rows 0..4
    t = hm.cross_region_shift(x, 1, 3, "h")
    assert t.flatten().tolist() == [4, 0, 1, 2, 3, 4]        # roll by +1, then pad 1
    with pytest.raises(ValueError, match="needs at least 2 rows"):
        hm.cross_region_shift(torch.zeros(1, 1, 1, 4), 0, 3, "h")  # 1 row cannot fill 3


def _regions(size, p, step):
    """Independent formulation: the original rows whose tokens share a region with each
    row r.  Shifted index i holds row (i - step) mod size; padded index i >= size
    repeats index i - size; the region of r is that of its shifted index (r + step)."""
    regions = []
    for r in range(size):
        g = ((r + step) % size) // p
        regions.append(sorted(((g * p + o) % size - step) % size for o in range(p)))
    return regions


@pytest.mark.parametrize("size, p, step", [(8, 4, 0), (8, 4, 2), (7, 3, 2), (5, 3, 1),
                                            (6, 2, 1), (2, 3, 1)])
@pytest.mark.parametrize("axis", ["h", "w"])
def test_branch_mlp_sees_exactly_its_regions_p_tokens(size, p, step, axis):
    """Token t carries (p+1)**t (exact in float64).  An MLP that replaces every folded
    position by the sum of its p sub-tokens then returns, at each token, a number whose
    base-(p+1) digits count how often each token was grouped with it: exactly the p
    tokens of its region (a token twice where the circular padding repeats it)."""
    base = p + 1
    x = (float(base) ** torch.arange(size, dtype=torch.float64)).reshape(1, 1, size, 1)
    x = x if axis == "h" else x.transpose(2, 3)
    region_sum = nn.Conv2d(p, p, 1, bias=False).double()
    nn.init.ones_(region_sum.weight)                          # each output: sum of p
    out = hm.region_mixing(x, p, step, region_sum, axis).flatten().long().tolist()
    for r, (value, want) in enumerate(zip(out, _regions(size, p, step))):
        counts = [value // base ** t % base for t in range(size)]
        assert counts == [want.count(t) for t in range(size)], (r, counts, want)
        assert r in want and sum(counts) == p


def test_each_branch_mixes_only_along_its_axis():
    """One output token's gradient: the h-branch reaches only its column, the w-branch
    only its row."""
    torch.manual_seed(0)
    for axis, across in (("h", 0), ("w", 1)):
        branch = _randomize(hm.InnerRegionBranch(6, 3, 1, axis)).double()
        x = torch.randn(4, 6, 7, 8, dtype=torch.float64, requires_grad=True)
        branch(x)[:, :, 4, 5].sum().backward()
        touched = x.grad.abs().sum((0, 1)) > 0                      # (H, W)
        assert touched.any(dim=across).sum() == 1            # one column / one row
        assert touched.sum() == 3                                  # p tokens


# --------------------------------------------------------------------- receptive field


def _receptive_field(steps, fusion="sum", size=24, p=4, dim=8, seed=0):
    """Input positions that reach output token (11, 13) after each block of a stack
    (nonzero gradient for any of 4 random inputs: one input may leave a ReLU dead)."""
    torch.manual_seed(seed)
    blocks = [_randomize(hm.HireBlock(dim, p, s, fusion=fusion), seed + k).double()
              for k, s in enumerate(steps)]
    fields = []
    for n in range(1, len(blocks) + 1):
        x = torch.randn(4, dim, size, size, dtype=torch.float64, requires_grad=True)
        y = x
        for b in blocks[:n]:
            y = b(y)
        y[:, :, 11, 13].sum().backward()
        fields.append(x.grad.abs().sum((0, 1)) > 0)
    return fields


def test_without_shift_token_mixing_stays_inside_the_region():
    fields = _receptive_field([0, 0, 0, 0])
    region = torch.zeros(24, 24, dtype=torch.bool)
    region[8:12, 12:16] = True                           # the 4x4 region of (11, 13)
    cross = region.clone() & False
    cross[8:12, 13] = cross[11, 12:16] = True            # one block: column + row
    assert torch.equal(fields[0], cross)
    for f in fields[1:]:
        assert torch.equal(f, region)                                # never leaves it


def test_with_shift_the_receptive_field_crosses_regions_and_grows():
    fields = _receptive_field([0, 2, 0, 2])
    sizes = [int(f.sum()) for f in fields]
    assert sizes == sorted(sizes) and sizes[-1] > sizes[1] > 16  # past one region
    rows = fields[1].any(1).nonzero().flatten().tolist()
    assert min(rows) < 8 or max(rows) > 11                          # crosses the border


def test_split_attention_gates_see_the_whole_map_weakly():
    """With the softmax fusion each output also depends on every token through the
    gates (a mean over the map), but far less than on its own region."""
    fields_sum = _receptive_field([0], "sum")[0]
    torch.manual_seed(0)
    block = _randomize(hm.HireBlock(8, 4, 0, fusion="softmax")).double()
    x = torch.randn(1, 8, 24, 24, dtype=torch.float64, requires_grad=True)
    block(x)[0, :, 11, 13].sum().backward()
    g = x.grad.abs().sum(1)[0]
    assert (g > 0).all()
    assert g[~fields_sum].max() < 0.1 * g[fields_sum].max()


# ------------------------------------------------------------------------- the modules


def test_split_attention_is_a_softmax_over_interleaved_branches():
    torch.manual_seed(0)
    fuse = hm.SplitAttention(12, 3).eval()
    xs = [torch.randn(2, 12, 5, 6) for _ in range(3)]
    a = fuse.weights(xs)
    assert a.shape == (3, 2, 12, 1, 1)
    assert torch.allclose(a.sum(0), torch.ones(2, 12, 1, 1))
    with torch.no_grad():       # output channel j -> (channel j // 3, branch j % 3)
        fuse.mlp.fc2.weight.zero_()
        bias = [50.0 if j % 3 == 1 else 0.0 for j in range(36)]
        fuse.mlp.fc2.bias.copy_(torch.tensor(bias))
    assert torch.allclose(fuse(xs), xs[1], atol=1e-6)          # all weight on branch 1
    module = hm.HireModule(12, 3, 1, fusion="sum").eval()
    x = torch.randn(2, 12, 5, 7)
    with torch.no_grad():
        want = module.proj(module.h_branch(x) + module.w_branch(x) + module.c_branch(x))
        assert torch.equal(module(x), want)
    with pytest.raises(ValueError, match="fusion must be 'softmax'.*or 'sum'"):
        hm.HireModule(12, 3, fusion="max")


def test_conv_mlp_equals_linear_mlp_on_tokens():
    torch.manual_seed(0)
    lin, conv = Mlp(6, 10), Mlp(6, 10, use_conv=True)
    conv.load_state_dict({k: v.reshape(*v.shape, 1, 1) if v.ndim == 2 else v
                          for k, v in lin.state_dict().items()})
    x = torch.randn(2, 6, 3, 4)
    tokens = x.flatten(2).transpose(1, 2)                           # (B, N, C)
    want = lin(tokens).transpose(1, 2).reshape(2, 6, 3, 4)
    assert (conv(x) - want).abs().max() < 1e-6


def test_init_drop_path_and_fused_batchnorm():
    model = hm.HireMLP(depths=(2, 1, 2, 1), embed_dims=(16, 24, 32, 40),
                       drop_path_rate=0.1)
    w = model.stages[2].blocks[0].mlp.fc1.weight
    assert 0.015 < w.std().item() < 0.025                  # truncated normal, std .02
    rates = [getattr(b.drop_path, "p", 0.0) for s in model.stages for b in s.blocks]
    assert rates == pytest.approx([0.1 * i / 5 for i in range(6)])  # over (n - 1)
    _randomize(model)
    fused = fuse_bn(model)
    x = torch.randn(2, 3, 45, 61)
    with torch.no_grad():
        assert (fused(x) - model(x)).abs().max() < 1e-4
    assert count_batchnorms(fused) < count_batchnorms(model)


# ---------------------------------------------------------------------- any input size


@pytest.mark.parametrize("H, W", [(19, 19), (20, 33), (64, 64), (101, 47), (224, 225)])
def test_any_size_from_the_minimum_works(H, W):
    model = _randomize(hm.HireMLP(depths=(1, 1, 2, 1), embed_dims=(8, 16, 24, 32),
                                  num_classes=5))
    with torch.no_grad():
        y = model(torch.randn(2, 3, H, W))
    assert y.shape == (2, 5) and torch.isfinite(y).all()


def test_too_small_inputs_say_what_works():
    model = blank_model("hire_mlp_tiny")
    for size in [(18, 18), (18, 64), (64, 5)]:
        with pytest.raises(ValueError, match=r"Hire-MLP needs inputs of at least "
                                             r"19 x 19 .*pad circularly"):
            model(torch.zeros(1, 3, *size))
    with pytest.raises(ValueError, match="in_chans"):
        model(torch.zeros(1, 4, 64, 64))
    # the minimum follows the region sizes
    assert blank_model("hire_mlp_tiny", regions=(2, 2, 2, 2)).min_input_size < 19


@pytest.mark.parametrize("kwargs, match", [
    (dict(regions=(4, 3, 3)), r"regions needs 4 entries"),
    (dict(regions=(4, 0, 3, 2)), r"regions must be positive integers"),
    (dict(step_dilations=(1, 1)), r"step_dilations and mlp_ratios need 4 entries"),
    (dict(fusion="mean"), r"fusion must be"),
])
def test_bad_constructor_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        hirilib.create_model("hire_mlp_tiny", **kwargs)
