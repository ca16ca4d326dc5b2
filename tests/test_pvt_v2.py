"""PVTv2 (chapter 2): our model against the released code's numbers, against
timm, and on bad input.

Reference numbers (Wang et al. 2022, official code ``whai362/PVT``; the same
models in timm): parameter counts of the released code, and GFLOPs as the
official ``get_flops.py`` counts them, i.e. G multiply-accumulates at 224 x 224
including the attention matrix products.  Tolerances: 0.5% on parameters,
3% on FLOPs (fvcore counts LayerNorm at 5 per element and skips biases,
mmcv does not; the difference is well under 1%).
"""

from __future__ import annotations

import re

import pytest
import torch

import hirilib
from reference_impl import import_timm
from hirilib import analytic
from hirilib.bench import pvt_v2 as bench_pvt_v2
from hirilib.layers import MultiHeadAttention
from hirilib.measure import count_flops, count_params
from hirilib.models import pvt_v2
from hirilib.models.pvt_v2 import convert_state_dict
from hirilib.reference import PVT_V2

PARAMS_M = {name: ref["params_m"] for name, ref in PVT_V2.items()}  # the released code's
GFLOPS = {name: ref["gflops"] for name, ref in PVT_V2.items()}      # get_flops.py's
PARAM_TOL, FLOP_TOL = 0.005, 0.03
BIG = ("pvt_v2_b3", "pvt_v2_b4", "pvt_v2_b5")  # slower to trace for FLOPs (a few s each)


@pytest.fixture(scope="module")
def b0():
    torch.manual_seed(0)
    return hirilib.create_model("pvt_v2_b0").eval()


# ----------------------------------------------------------------------------- numbers

def test_all_variants_registered():
    assert set(hirilib.list_models("pvt_v2_*")) >= set(PARAMS_M)


@pytest.mark.parametrize("name", list(PARAMS_M))
def test_params_match_released_code(name):
    """Parameter counts within 0.5% of the released code's (built on the meta
    device: no memory, no initialisation, same parameters)."""
    with torch.device("meta"):
        model = hirilib.create_model(name)
    got = count_params(model) / 1e6
    assert abs(got / PARAMS_M[name] - 1) < PARAM_TOL, f"{name}: {got:.3f} M vs {PARAMS_M[name]} M"


@pytest.mark.parametrize("name", [pytest.param(n, marks=pytest.mark.slow) if n in BIG else n
                                  for n in GFLOPS])
def test_gflops_match_released_code(name):
    """GFLOPs (MACs) at 224 within 3% of the official get_flops.py counts."""
    model = hirilib.create_model(name)
    got = count_flops(model, (1, 3, 224, 224)) / 1e9
    assert abs(got / GFLOPS[name] - 1) < FLOP_TOL, f"{name}: {got:.3f} G vs {GFLOPS[name]} G"


@pytest.mark.parametrize("name, overrides, res", [("pvt_v2_b0", {}, 224),
                                                   ("pvt_v2_b2_li", {"depths": (1, 1, 1, 1)}, 160),
                                                   ("pvt_v2_b0", {"sr_ratios": (1, 1, 1, 1)}, 96)])
def test_attention_cost_model(name, overrides, res):
    """The closed-form attention cost (``analytic.pvt_v2_attention_macs``, which the
    chapter uses to extrapolate) equals what fvcore counts in the attention
    modules of the traced model, for SRA, linear SRA and full attention."""
    from hirilib.measure import flops_by_module

    model = hirilib.create_model(name, **overrides)
    per = flops_by_module(model, (1, 3, res, res), depth=5)  # stages.i.blocks.j.attn
    traced = sum(n for k, n in per.items() if k.endswith(".attn"))
    assert traced == analytic.pvt_v2_attention_macs(model, res, res)


@pytest.mark.parametrize("name", list(PARAMS_M))
def test_closed_form_params(name):
    """The parameter count written from the architecture alone equals the model's."""
    with torch.device("meta"):
        model = hirilib.create_model(name)
    assert analytic.pvt_v2_params(**pvt_v2.PVT_V2_CONFIGS[name]) == count_params(model)


@pytest.mark.parametrize("name, overrides, size", [
    ("pvt_v2_b0", {}, (224, 224)),
    ("pvt_v2_b0", {"sr_ratios": (1, 1, 1, 1), "num_classes": 0}, (96, 128)),
    ("pvt_v2_b2_li", {"depths": (1, 1, 2, 1), "num_classes": 10}, (200, 150)),
])
def test_closed_form_macs(name, overrides, size):
    """The whole-model MAC count written from the architecture alone (which the
    chapter uses up to 1024 px) equals fvcore's count of the traced model."""
    model = hirilib.create_model(name, **overrides)
    cfg = {**pvt_v2.PVT_V2_CONFIGS[name], **overrides}
    assert analytic.pvt_v2_macs(**cfg, H=size[0], W=size[1]) == count_flops(model, (1, 3, *size))


# ----------------------------------------------------------------------------- structure

def test_official_details(b0):
    """LayerNorm eps (1e-6 blocks/stages, 1e-5 patch embedding and reduction),
    drop-path schedule, zero biases and the conv fan-out init."""
    blk = b0.stages[0].blocks[0]
    assert blk.norm1.eps == blk.norm2.eps == b0.stages[3].norm.eps == 1e-6
    assert b0.stages[0].patch_embed.norm.eps == blk.attn.norm.eps == 1e-5
    assert b0.stages[0].patch_embed.proj.kernel_size == (7, 7)
    assert b0.stages[0].patch_embed.proj.stride == (4, 4)
    assert b0.stages[1].patch_embed.proj.kernel_size == (3, 3)
    assert b0.stages[1].patch_embed.proj.padding == (1, 1)
    assert [s.blocks[0].attn.sr_ratio for s in b0.stages] == [8, 4, 2, 1]
    assert not hasattr(b0.stages[3].blocks[0].attn, "sr")
    with torch.no_grad():
        assert not blk.attn.q.bias.any() and not b0.head.bias.any()
        assert abs(blk.attn.q.weight.std().item() - 0.02) < 0.003
        w = b0.stages[0].patch_embed.proj.weight  # fan_out = 7 * 7 * 32
        assert abs(w.std().item() / (2 / (7 * 7 * 32)) ** 0.5 - 1) < 0.1

    m = hirilib.create_model("pvt_v2_b0", drop_path_rate=0.1)
    rates = [getattr(b.drop_path, "p", 0.0) for s in m.stages for b in s.blocks]
    assert rates == pytest.approx([0.1 * i / 7 for i in range(8)])
    li = hirilib.create_model("pvt_v2_b2_li")
    assert all(b.attn.linear and isinstance(b.mlp.relu, torch.nn.ReLU)
               for s in li.stages for b in s.blocks)
    assert isinstance(li.stages[3].blocks[0].attn.act, torch.nn.GELU)


@pytest.mark.parametrize("res", [224, 256])
def test_forward_and_pyramid(b0, res):
    """Any size divisible by 32 works: logits, final map and the 4-level pyramid."""
    x = torch.randn(2, 3, res, res)
    with torch.no_grad():
        logits = b0(x)
        feats = b0.forward_pyramid(x)
        last = b0.forward_features(x)
    assert logits.shape == (2, 1000) and torch.isfinite(logits).all()
    assert [tuple(f.shape) for f in feats] == [
        (2, c, res // s, res // s) for c, s in zip((32, 64, 160, 256), (4, 8, 16, 32))]
    assert torch.equal(last, feats[-1])
    assert torch.allclose(b0.forward_head(last), logits)


def test_non_square_and_heads():
    m = hirilib.create_model("pvt_v2_b0", num_classes=10, in_chans=1).eval()
    with torch.no_grad():
        assert m(torch.randn(1, 1, 224, 320)).shape == (1, 10)
    m = hirilib.create_model("pvt_v2_b0", num_classes=0).eval()
    with torch.no_grad():
        assert m(torch.randn(1, 3, 64, 64)).shape == (1, 256)


def test_linear_variant_takes_any_size():
    """Linear SRA pools adaptively and the embeddings pad, so the math
    supports any input size (maps round up)."""
    m = hirilib.create_model("pvt_v2_b2_li", depths=(1, 1, 1, 1)).eval()
    assert m.size_multiple == 1
    with torch.no_grad():
        feats = m.forward_pyramid(torch.randn(1, 3, 225, 100))
    assert [tuple(f.shape[-2:]) for f in feats] == [(57, 25), (29, 13), (15, 7), (8, 4)]


# ----------------------------------------------------------------------------- bad input

def test_wrong_channels(b0):
    with pytest.raises(ValueError, match=r"3-channel.*got 1 channels"):
        b0(torch.randn(1, 1, 224, 224))
    with pytest.raises(ValueError, match=r"x.unsqueeze\(0\)"):
        b0(torch.randn(3, 224, 224))


@pytest.mark.parametrize("shape, near", [((225, 225), "224 and 256"), ((224, 300), "288 and 320")])
def test_size_not_divisible_by_32(b0, shape, near):
    with pytest.raises(ValueError, match=f"divisible by 32.*nearest sizes that work are {near}"):
        b0(torch.randn(1, 3, *shape))


def test_sr_ratio_larger_than_map():
    """Every stride-R reduction must tile its stage's map, so the input must be a multiple
    of (and at least) stride_i * R_i in every stage: 64 when stage 1 reduces by 16."""
    m = hirilib.create_model("pvt_v2_b0", sr_ratios=(16, 4, 2, 1)).eval()
    assert m.size_multiple == 64  # stage 1 (stride 4) needs 4 * 16
    with pytest.raises(ValueError, match=r"at least 64 x 64.*got 32 x 32"):
        m(torch.randn(1, 3, 32, 32))
    with pytest.raises(ValueError, match=r"at least 32 x 32.*got 20 x 20"):
        hirilib.create_model("pvt_v2_b0")(torch.randn(1, 3, 20, 20))
    with pytest.raises(ValueError, match=r"reduction ratio 8 is larger than the 4 x 4 map"):
        MultiHeadAttention(32, 1, sr_ratio=8)(torch.randn(1, 16, 32), 4, 4)


# ----------------------------------------------------------------------------- checkpoints

def _to_timm_keys(sd):
    """Our keys -> timm's, written independently of convert_state_dict."""
    out = {}
    for k, v in sd.items():
        if k.startswith("stages.0.patch_embed."):
            k = "patch_embed." + k[len("stages.0.patch_embed."):]
        else:
            k = re.sub(r"^stages\.([1-9])\.patch_embed\.", r"stages.\1.downsample.", k)
        out[k.replace(".mlp.dwconv.dwconv.", ".mlp.dwconv.")] = v
    return out


def _to_official_keys(sd):
    """Our keys -> the official repository's (1-based patch_embed{i}, block{i}, norm{i})."""
    out = {}
    for k, v in sd.items():
        m = re.match(r"^stages\.(\d)\.(patch_embed|blocks|norm)\.(.*)$", k)
        if m:
            i, part, rest = int(m.group(1)) + 1, m.group(2), m.group(3)
            prefix = {"patch_embed": "patch_embed", "blocks": "block", "norm": "norm"}[part]
            k = f"{prefix}{i}.{rest}"
        out[k] = v
    return out


@pytest.mark.parametrize("name", ["pvt_v2_b0", "pvt_v2_b2_li"])
@pytest.mark.parametrize("to_foreign", [_to_timm_keys, _to_official_keys])
def test_convert_state_dict_round_trip(name, to_foreign):
    src = hirilib.create_model(name, depths=(1, 2, 1, 1))
    foreign = to_foreign({k: torch.randn_like(v) for k, v in src.state_dict().items()})
    assert "stages.0.patch_embed.proj.weight" not in foreign
    dst = hirilib.create_model(name, depths=(1, 2, 1, 1))
    dst.load_state_dict(convert_state_dict(foreign), strict=True)
    back = to_foreign(dst.state_dict())
    assert back.keys() == foreign.keys()
    assert all(torch.equal(back[k], foreign[k]) for k in foreign)
    # our own keys, and a DDP 'module.' prefix, pass through
    assert convert_state_dict(dst.state_dict()).keys() == dst.state_dict().keys()
    assert list(convert_state_dict({"module.head.bias": 0})) == ["head.bias"]


@pytest.mark.parametrize("name", ["pvt_v2_b0", "pvt_v2_b2_li"])
def test_equivalent_to_timm(name):
    """timm's model with random weights, converted: the same logits (fp32)."""
    timm = import_timm()
    torch.manual_seed(0)
    theirs = timm.create_model(name, pretrained=False).eval()
    with torch.no_grad():  # move LayerNorms and biases off their trivial init
        for p in theirs.parameters():
            p.add_(0.02 * torch.randn_like(p))
    ours = hirilib.create_model(name).eval()
    ours.load_state_dict(convert_state_dict(theirs.state_dict()), strict=True)
    x = torch.randn(2, 3, 224, 224)
    with torch.no_grad():
        diff = (ours(x) - theirs(x)).abs().max().item()
    assert diff < 1e-4, f"max |logit difference| {diff:.2e}"


def test_pretrained_from_a_local_timm_file(tmp_path):
    """``create_model(name, checkpoint=file)`` reads timm's keys through the converter."""
    src = hirilib.create_model("pvt_v2_b0")
    path = tmp_path / "pytorch_model.bin"
    torch.save(_to_timm_keys(src.state_dict()), path)
    dst = hirilib.create_model("pvt_v2_b0", checkpoint=path)
    assert all(torch.equal(a, b) for a, b in zip(src.state_dict().values(),
                                                 dst.state_dict().values()))


# ----------------------------------------------------------------------------- benchmark

def test_latency_records(monkeypatch):
    """The benchmark suite's records carry timings and settings; a configuration
    whose attention matrices would not fit is recorded as out of memory, not run."""
    models = {"B0": ("pvt_v2_b0", {}), "B0 full": ("pvt_v2_b0", {"sr_ratios": (1, 1, 1, 1)})}
    recs = bench_pvt_v2.latency_vs_resolution(models, [96], "cpu", warmup=0, runs=1,
                                              use_sdpa=False)
    assert [r["label"] for r in recs] == ["B0", "B0 full"]
    assert all(r["median_ms"] > 0 and r["batch_size"] == 1 and r["dtype"] == "fp32" for r in recs)
    monkeypatch.setattr(bench_pvt_v2, "_memory_bytes", lambda device: 2**20)  # a 1 MB device
    recs = bench_pvt_v2.latency_vs_resolution(models, [96], "cpu", warmup=0, runs=1,
                                              use_sdpa=False)
    assert not recs[0].get("oom") and recs[1]["oom"] and "median_ms" not in recs[1]
