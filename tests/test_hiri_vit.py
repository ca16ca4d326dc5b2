"""HIRI-ViT (chapter 6): what these tests prove.

* The GFLOPs the paper prints, measured with ``count_flops`` on our reconstruction,
  each within ``TOL`` = 5% (stated by the issue, never loosened): the four-stage
  counterpart of S at 224 (4.7) and 448 (21.5), five stages + HR-stem at 448 (5.1),
  HIRI-ViT-S at 448 (about 5.0).
* The Table 7 path: registered in order, each row the previous plus its change, and its
  GFLOPs move the way the paper's text says at every row.
* At 448 the HR-stem and the HR-blocks cost less than the Conv-stem and the CFFN blocks
  they replace.
* B and L sit in the paper's size groups (constraints in ``test_b_and_l_size_groups``).
* The closed forms of ``hirilib.analytic.hiri_vit`` equal ``count_flops`` and
  ``count_params`` for every block and model.
* The blocks compute what the paper describes (the HR-block's upsampling is repetition,
  IRDS-b has its shortcut and a single norm), every BN folds at inference without
  changing the outputs, and inputs the model cannot take get the clear error.
* Any input side from 64 up works (the paper runs HIRI-ViT at 224, Sec. 5.1), and at
  multiples of 64 the outputs are exactly those of the exact-halving formulation (each
  shortcut a plain 2x2 pool, each upsampling a 2 x 2 repetition).
* ``HIRIViTConfig`` refuses bad configurations with a ``ValueError`` that quotes them.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

import hirilib
from hirilib.analytic import hiri_vit as ah
from hirilib.deploy import count_batchnorms, fuse_bn
from hirilib.measure import blank_model, count_flops, count_params, flop_analysis
from hirilib.models import hiri_vit as hv
from hirilib.reference import HIRI_VIT, HIRI_VIT_TABLE7, MAXVIT_L

TOL = 0.05  # the tolerance on every printed GFLOPs figure

S = hv.HIRI_VIT_CONFIGS["hiri_vit_s"]
ROWS = {row.name: row for row in hv.TABLE7}


_ANALYSES = {}


def _analysis(name: str, res: int):
    """fvcore's analysis of a registered model at res x res, traced once per test run
    (tracing a whole network takes seconds)."""
    if (name, res) not in _ANALYSES:
        model = blank_model(name)
        _ANALYSES[name, res] = (model, flop_analysis(model, (1, 3, res, res)))
    return _ANALYSES[name, res]


def _gflops(name: str, res: int) -> float:
    return _analysis(name, res)[1].total() / 1e9


def _closed_gflops(cfg, res: int) -> float:
    return ah.hiri_vit_macs(cfg, res) / 1e9


# ------------------------------------------------------------------ the paper's numbers


@pytest.mark.parametrize("name, res, paper", [
    ("hiri_vit_s_4stage", 224, 4.7),                # Table 7 row 6
    ("hiri_vit_s_4stage", 448, 21.5),               # row 7: the same network at 448
    ("hiri_vit_table7_09_hr_stem", 448, 5.1),       # row 9: five stages + HR-stem
    ("hiri_vit_s", 448, 5.0),                       # row 10 / abstract: about 5.0
])
def test_gflops_within_5_percent_of_the_paper(name, res, paper):
    assert _gflops(name, res) == pytest.approx(paper, rel=TOL)


def test_printed_numbers_are_the_references():
    table7 = HIRI_VIT_TABLE7
    assert table7["hiri_vit_table7_06_irds"]["gflops"] == 4.7
    assert table7["hiri_vit_table7_07_input_448"]["gflops"] == 21.5
    assert table7["hiri_vit_table7_09_hr_stem"]["gflops"] == 5.1
    assert HIRI_VIT["hiri_vit_s"]["gflops"] == 5.0


# ----------------------------------------------------------------------------- Table 7


def test_table7_is_registered_in_order_and_cumulative():
    names = [row.name for row in hv.TABLE7]
    assert names == sorted(names) and len(names) == 11
    assert names == hirilib.list_models("hiri_vit_table7_*")
    assert set(names) == set(HIRI_VIT_TABLE7)
    previous = {}
    for row in hv.TABLE7:
        cfg = hv.table7_config(row.name)
        assert {k: v[1] for k, v in hv.config_diff(previous, cfg).items()} == {
            k: v for k, v in row.diff.items() if previous.get(k) != v}, row.name
        previous = cfg
    # rows 6 and 7 are one network at two sizes; row 11 is row 10 trained differently
    assert hv.table7_config(names[5]) == hv.table7_config(names[6])
    assert hv.table7_config(names[9]) == hv.table7_config(names[10])


def test_row_10_is_hiri_vit_s_and_row_6_its_four_stage_counterpart():
    """Built from the Table 7 path or from the variant table, the same configuration
    (with the defaults filled in), hence the same network."""
    def full(c):
        cfg = hv.HIRIViTConfig(**c)
        return cfg.replace(sr_ratios=cfg.reductions, num_irds_a=cfg.irds_a_count,
                           stem_dim=cfg.stem_dim or cfg.dims[0])

    for row, cfg in (("hiri_vit_table7_10_hr_blocks", S),
                     ("hiri_vit_table7_06_irds", hv.four_stage_config(S))):
        assert full(hv.table7_config(row)) == full(cfg), row
    assert hv.hiri_vit_config("hiri_vit_table7_10_hr_blocks") == hv.table7_config(
        "hiri_vit_table7_10_hr_blocks")


def test_table7_gflops_move_the_way_the_paper_says():
    """Walk the rows at their resolutions; the text's statements about each step's
    cost (Sec. 4.1, 5.4), and its printed GFLOPs within TOL.  The closed forms are equal
    to ``count_flops`` (tested below), so they stand for the measurement here."""
    g, p = {}, {}
    for row in hv.TABLE7:
        cfg = hv.table7_config(row.name)
        g[row.name[16:18]] = _closed_gflops(cfg, row.resolution)
        p[row.name[16:18]] = ah.hiri_vit_params(cfg)
    # 2: the CFFN's depthwise conv adds a little (no figure printed)
    assert g["01"] < g["02"] < 1.05 * g["01"]
    # 3: no MHA in stages 1-2, wider CFFN: fewer GFLOPs and fewer parameters
    assert g["03"] < g["02"] and p["03"] < p["02"]
    # 4: LN -> BN, no printed figure: the count barely moves (BN 2/element, LN 5)
    assert g["04"] <= g["03"] and g["04"] == pytest.approx(g["03"], rel=0.01)
    # 5: at 224 the Conv-stem adds slightly to GFLOPs and parameters
    assert g["04"] < g["05"] < 1.10 * g["04"] and p["05"] > p["04"]
    # 6, 7: 4.7 at 224, 21.5 at 448
    assert g["06"] == pytest.approx(4.7, rel=TOL)
    assert g["07"] == pytest.approx(21.5, rel=TOL)
    # 8: five stages at 448: much lower than row 7
    assert g["08"] < 0.5 * g["07"]
    # 9: HR-stem: an obvious drop, to 5.1
    assert g["09"] < 0.95 * g["08"] and g["09"] == pytest.approx(5.1, rel=TOL)
    # 10: HR-blocks: slightly lower, about 5.0
    assert 0.98 * g["09"] < g["10"] < g["09"] and g["10"] == pytest.approx(5.0, rel=TOL)
    # 11: the same network
    assert g["11"] == g["10"] and p["11"] == p["10"]


# ---------------------------------------------------------------- the two-branch blocks


def test_hr_stem_and_hr_blocks_cost_less_than_what_they_replace_at_448():
    """Measured with count_flops on the modules, at the maps they see at 448."""
    conv_stem = count_flops(hv.ConvStem(3, 32, 32), (1, 3, 448, 448))
    hr_stem = count_flops(hv.HRStem(3, 32, 32), (1, 3, 448, 448))
    assert hr_stem < 0.5 * conv_stem
    # stage 1 (112 x 112, C 32) and stage 2 (56 x 56, C 64) of HIRI-ViT-S: one CFFN
    # block (ratio E) against the two HR-blocks (ratio 2E) that replace it
    for C, side, ratio in ((32, 112, 4), (64, 56, 8)):
        cffn = count_flops(hv.FFNBlock(C, ratio), (1, C, side, side))
        hr = count_flops(hv.HRBlock(C, 2 * ratio), (1, C, side, side))
        assert 2 * hr < cffn, (C, side, 2 * hr, cffn)


def test_hr_block_upsamples_by_repetition():
    """Independent formulation: the low-resolution output repeated 2 x 2."""
    torch.manual_seed(0)
    blk = hv.HRBlock(8, 4).eval()
    x = torch.randn(2, 8, 12, 10)
    with torch.no_grad():
        low = blk.low(x).repeat_interleave(2, dim=2).repeat_interleave(2, dim=3)
        assert torch.allclose(blk(x), x + blk.high(x) + low, atol=1e-6)
        bilinear = F.interpolate(blk.low(x), scale_factor=2, mode="bilinear")
        assert not torch.allclose(blk(x), x + blk.high(x) + bilinear, atol=1e-3)


def test_irds_b_has_one_norm_and_the_shortcut():
    torch.manual_seed(0)
    irds = hv.IRDSb(16, 32).eval()
    norms = [m for m in irds.conv.modules()
             if isinstance(m, (nn.BatchNorm2d, nn.LayerNorm))]
    acts = [m for m in irds.conv.modules() if isinstance(m, nn.GELU)]
    assert len(norms) == 1 and len(acts) == 1            # only after the first conv
    assert irds.conv[1].groups == 64 and irds.conv[1].stride == (2, 2)  # DW 3x3/2
    x = torch.randn(2, 16, 8, 8)
    with torch.no_grad():
        pooled = F.avg_pool2d(x, 2)
        want = irds.conv(x) + irds.shortcut.conv(pooled)
        assert torch.allclose(irds(x), want, atol=1e-6)
    assert hv.IRDSb(16, 32, shortcut=False).shortcut is None


def test_norms_are_where_the_paper_puts_them():
    """BN in the stem, the HR-blocks and every CFFN; LN only for attention and head."""
    m = blank_model("hiri_vit_s")
    for name, mod in m.named_modules():
        if isinstance(mod, nn.LayerNorm):
            assert name.endswith("norm1.norm") or name == "head.norm", name
    blk = m.stages[3].blocks[0]
    assert blk.norm1.kind == "ln" and blk.mlp.norm.kind == "bn"
    assert m.stages[2].blocks[0].mlp.norm.kind == "bn"


# ----------------------------------------------------------------------------- B and L


def test_b_and_l_size_groups():
    """Constraints we used (the paper's GFLOPs for B and L, in its Table 2, are not
    available to us):
    * B at 448 above the small group (S's 5.0 + 5%) and at most the large group's
      threshold, 11.7 G (Sec. 5.1: "large: over 11.7 GFLOPs"); its four-stage
      counterpart at 224 within 5% of Fig. 1's 8.2 G (our reading of Fig. 1);
    * L at 448 above 11.7 G and below MaxViT-L's 43.9 G (Sec. 5.1: HIRI-ViT-L at 448
      needs fewer GFLOPs than MaxViT-L);
    * parameters grow S < B < L."""
    large = HIRI_VIT["large_group_gflops"]
    g = {n: _closed_gflops(cfg, 448) for n, cfg in hv.HIRI_VIT_CONFIGS.items()}
    assert 5.0 * (1 + TOL) < g["hiri_vit_b"] <= large
    B = hv.HIRI_VIT_CONFIGS["hiri_vit_b"]
    four_b = _closed_gflops(hv.four_stage_config(B), 224)
    assert four_b == pytest.approx(HIRI_VIT["fig1"]["hiri_vit_gflops"][0], rel=TOL)
    assert large < g["hiri_vit_l"] < MAXVIT_L["gflops"]
    params = [ah.hiri_vit_params(hv.HIRI_VIT_CONFIGS[n])
              for n in ("hiri_vit_s", "hiri_vit_b", "hiri_vit_l")]
    assert params == sorted(params)


# ------------------------------------------------------------------------- closed forms


BLOCK_CASES = [
    ("HRStem", lambda: hv.HRStem(3, 32, 24), (1, 3, 64, 96),
     lambda: ah.hr_stem_cost(3, 32, 64, 96, 24)),
    ("HRStem k5", lambda: hv.HRStem(3, 16, kernel_size=5), (1, 3, 64, 64),
     lambda: ah.hr_stem_cost(3, 16, 64, 64, kernel_size=5)),
    ("ConvStem", lambda: hv.ConvStem(3, 64, 32), (1, 3, 64, 64),
     lambda: ah.conv_stem_cost(3, 64, 64, 64, 32)),
    ("ViTStem ln", lambda: hv.ViTStem(3, 64, "ln"), (1, 3, 64, 64),
     lambda: ah.vit_stem_cost(3, 64, 64, 64, "ln")),
    ("ViTStem bn", lambda: hv.ViTStem(3, 64, "bn"), (1, 3, 64, 64),
     lambda: ah.vit_stem_cost(3, 64, 64, 64, "bn")),
    ("HRBlock", lambda: hv.HRBlock(32, 8), (1, 32, 28, 20),
     lambda: ah.hr_block_cost(32, 8, 28, 20)),
    ("HRBlock k5", lambda: hv.HRBlock(16, 16, kernel_size=5), (1, 16, 16, 16),
     lambda: ah.hr_block_cost(16, 16, 16, 16, 5)),
    ("FFNBlock cffn bn", lambda: hv.FFNBlock(32, 8), (1, 32, 14, 14),
     lambda: ah.ffn_block_cost(32, 8, 14, 14)),
    ("FFNBlock mlp ln", lambda: hv.FFNBlock(32, 4, "mlp", "ln"), (1, 32, 14, 14),
     lambda: ah.ffn_block_cost(32, 4, 14, 14, "mlp", "ln")),
    ("TransformerBlock", lambda: hv.TransformerBlock(64, 2, 4), (1, 64, 14, 14),
     lambda: ah.transformer_block_cost(64, 4, 14, 14)),
    ("TransformerBlock sr2 mlp ln",
     lambda: hv.TransformerBlock(64, 2, 6, 2, "mlp", "ln"), (1, 64, 16, 16),
     lambda: ah.transformer_block_cost(64, 6, 16, 16, 2, "mlp", "ln")),
    ("IRDSa", lambda: hv.IRDSa(32, 64), (1, 32, 16, 16),
     lambda: ah.irds_a_cost(32, 64, 16, 16)),
    ("IRDSb", lambda: hv.IRDSb(64, 128, 3), (1, 64, 8, 8),
     lambda: ah.irds_b_cost(64, 128, 8, 8, 3)),
    ("IRDSb no shortcut", lambda: hv.IRDSb(64, 128, shortcut=False), (1, 64, 8, 8),
     lambda: ah.irds_b_cost(64, 128, 8, 8, shortcut=False)),
    ("IRDSa odd map", lambda: hv.IRDSa(32, 64), (1, 32, 15, 7),
     lambda: ah.irds_a_cost(32, 64, 15, 7)),
    ("IRDSb odd map", lambda: hv.IRDSb(32, 64), (1, 32, 7, 9),
     lambda: ah.irds_b_cost(32, 64, 7, 9)),
    ("HRBlock odd map", lambda: hv.HRBlock(16, 4), (1, 16, 15, 13),
     lambda: ah.hr_block_cost(16, 4, 15, 13)),
    ("HRStem odd side", lambda: hv.HRStem(3, 16), (1, 3, 30, 37),
     lambda: ah.hr_stem_cost(3, 16, 30, 37)),
    ("MViTDownsample", lambda: hv.MViTDownsample(32, 64, "bn"), (1, 32, 16, 16),
     lambda: ah.conv_downsample_cost(32, 64, 16, 16, "bn")),
]


@pytest.mark.parametrize("name, build, shape, closed", BLOCK_CASES,
                         ids=[c[0] for c in BLOCK_CASES])
def test_closed_form_equals_count_flops_for_every_block(name, build, shape, closed):
    module = build()
    cost = closed()
    assert count_flops(module, shape) == cost.macs
    assert count_params(module) == cost.params


_config = hv.hiri_vit_config


@pytest.mark.parametrize("name, res", [
    ("hiri_vit_s", 448), ("hiri_vit_s_4stage", 224), ("hiri_vit_s_4stage", 448),
    ("hiri_vit_s", 224),                          # odd maps from stage 1 on (57, 29 ...)
    ("hiri_vit_table7_09_hr_stem", 448),          # Conv-stem -> HR-stem, CFFN stage 1
    ("hiri_vit_table7_01_mvit", 224),             # ViT-stem, SR attention, FFN, LN
    ("hiri_vit_table7_05_conv_stem", 224),        # Conv-stem, conv downsampling with BN
])
def test_closed_form_equals_count_flops_per_module(name, res):
    """Stem, each stage's downsampling and blocks, and the head: every part of the
    networks whose GFLOPs the paper prints, and every kind of part the path uses."""
    model, analysis = _analysis(name, res)
    measured = analysis.by_module()
    cfg = _config(name)
    for key, cost in ah.hiri_vit_costs(cfg, res).items():
        assert measured[key] == cost.macs, key
        assert count_params(model.get_submodule(key)) == cost.params, key
    assert analysis.total() == ah.hiri_vit_macs(cfg, res)
    assert count_params(model) == ah.hiri_vit_params(cfg)


@pytest.mark.slow
@pytest.mark.parametrize("name", [
    "hiri_vit_b", "hiri_vit_l", "hiri_vit_b_4stage", "hiri_vit_l_4stage",
    "hiri_vit_table7_02_cffn", "hiri_vit_table7_03_no_early_mha",
    "hiri_vit_table7_04_batch_norm", "hiri_vit_table7_08_five_stages"])
def test_closed_form_equals_count_flops_for_the_other_registered_models(name):
    """The registered networks the test above does not trace (the others are the same
    networks as traced ones: rows 6, 7 = hiri_vit_s_4stage; 10, 11 = hiri_vit_s)."""
    model = blank_model(name)
    res = 2 * model.min_input_size
    assert count_flops(model, (1, 3, res, res)) == ah.hiri_vit_macs(_config(name), res)
    assert count_params(model) == ah.hiri_vit_params(_config(name))


# ---------------------------------------------------------------------------- inference


@pytest.mark.parametrize("name", ["hiri_vit_s", "hiri_vit_table7_04_batch_norm"])
def test_every_batchnorm_folds_and_the_outputs_do_not_change(name):
    from test_deploy import TOL as FUSE_TOL, _random_bn_stats_

    torch.manual_seed(0)
    model = _random_bn_stats_(hirilib.create_model(name))
    x = torch.randn(2, 3, 128, 128)
    with torch.no_grad():
        want = model(x)
        fused = fuse_bn(model)
        got = fused(x)
    assert count_batchnorms(model) > 0 and count_batchnorms(fused) == 0
    scale = max(1.0, want.abs().max().item())
    assert (got - want).abs().max().item() < FUSE_TOL * scale


@pytest.mark.parametrize("name, good, bad", [
    ("hiri_vit_s", (64, 100, 224, 385), (63, 32)),
    ("hiri_vit_s_4stage", (32, 97, 224), (31,)),
])
def test_any_side_from_the_minimum_works_and_smaller_ones_are_refused(name, good, bad):
    """Each stage's map is ceil(side / stride): what timm's models do at any size."""
    model = hirilib.create_model(name, num_classes=3).eval()
    five = len(model.stages) == 5
    assert model.size_multiple == 1 and model.min_input_size == (64 if five else 32)
    with torch.no_grad():
        for side in good:
            maps = model.forward_pyramid(torch.zeros(1, 3, side, side + 1))
            want = [(-(-side // s), -(-(side + 1) // s)) for s in model.strides]
            assert [tuple(m.shape[-2:]) for m in maps] == want, side
            assert want == list(ah.stage_sizes(_config(name), side, side + 1))
        for side in bad:
            with pytest.raises(ValueError, match=rf"at least {model.min_input_size} x "):
                model(torch.zeros(1, 3, side, side))


def test_key_value_reduction_still_needs_whole_patches():
    """Table 7 rows 1-2 reduce K/V by 4 and 2 in stages 1-2 (strides 4, 8): 16 | side."""
    model = hirilib.create_model("hiri_vit_table7_01_mvit", num_classes=3).eval()
    assert model.size_multiple == 16
    with pytest.raises(ValueError, match=r"divisible by 16 .*nearest sizes that work"):
        model(torch.zeros(1, 3, 100, 100))


def _exact_halving_forward(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """The formulation for sides that halve exactly (the model before it took any
    size): each IRDS shortcut a plain 2x2 average pool, each HR-block's low branch
    repeated 2 x 2."""
    def hr_block(blk, t):
        low = blk.low(t).repeat_interleave(2, dim=2).repeat_interleave(2, dim=3)
        return t + (blk.high(t) + low)

    def shortcut(sc, t):
        return sc.conv(F.avg_pool2d(t, 2))

    patched = []
    for mod in model.modules():
        if isinstance(mod, hv.HRBlock):
            patched.append((mod, lambda t, m=mod: hr_block(m, t)))
        elif isinstance(mod, hv.DownsampleShortcut):
            patched.append((mod, lambda t, m=mod: shortcut(m, t)))
    try:
        for mod, fn in patched:
            mod.forward = fn
        return model(x)
    finally:
        for mod, _ in patched:
            del mod.forward


@pytest.mark.parametrize("side", [128, 256])
def test_outputs_at_multiples_of_64_are_those_of_exact_halving(side):
    torch.manual_seed(0)
    model = hirilib.create_model("hiri_vit_s", num_classes=10).eval()
    x = torch.randn(2, 3, side, side)
    with torch.no_grad():
        want = _exact_halving_forward(model, x)
        got = model(x)
        assert torch.equal(got, want)
        # at an odd map the two differ: the rounding is real, not a no-op
        odd = torch.randn(1, 3, side + 32, side + 32)
        with pytest.raises(RuntimeError):
            _exact_halving_forward(model, odd)
        assert model(odd).shape == (1, 10)


def test_bad_configurations_are_refused():
    with pytest.raises(ValueError, match="blocks entries must be one of"):
        hv.HIRIViT(blocks=("hr", "hr", "cffn", "transformer", "transformer"))
    with pytest.raises(ValueError, match="head_dim=32"):
        hv.HIRIViT(dims=(32, 64, 128, 300, 448))
    with pytest.raises(ValueError, match="dims needs 5 entries"):
        hv.HIRIViT(dims=(32, 64, 128, 320))
    with pytest.raises(ValueError, match="stem must be one of"):
        hv.HIRIViT(stem="patchify")
    with pytest.raises(ValueError, match="hr_kernel_size must be odd"):
        hv.HIRIViT(hr_kernel_size=4)
    with pytest.raises(ValueError, match="num_irds_a=4, but there are only 3"):
        hv.HIRIViTConfig(**hv.four_stage_config(S), num_irds_a=4)
    with pytest.raises(ValueError, match="hiri_vit_s has no argument 'dim'; it takes"):
        hirilib.create_model("hiri_vit_s", dim=3)
    # a variant's configuration with one field changed is validated as a whole
    with pytest.raises(ValueError, match="mlp_ratios needs 4 entries"):
        hirilib.create_model("hiri_vit_s_4stage", mlp_ratios=(4, 4, 4, 4, 4))
    cfg = hirilib.create_model("hiri_vit_s_4stage", stem_mid=0).config
    assert cfg.stem_mid == 0 and cfg.depths == hv.four_stage_config(S)["depths"]
