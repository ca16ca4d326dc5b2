"""The layers of chapter 1 against independent formulations and their equations."""

import pytest
import torch
import torch.nn as nn

from hirilib import analytic
from hirilib.layers import (CFFN, ConvFFN, DropPath, LayerNorm2d, LinearSRA, Mlp,
                            MultiHeadAttention, OverlapPatchEmbed, SRA, TokenNorm)
from hirilib.checks.attention import mha_to_torch
from hirilib.measure import count_flops, count_params

TOL = 1e-5  # fp32, same maths in another summation order


@pytest.mark.parametrize("heads", [1, 2, 8])
def test_mha_equals_torch_multihead_attention(heads):
    torch.manual_seed(heads)
    m = MultiHeadAttention(64, heads).eval()
    x = torch.randn(3, 7 * 9, 64)
    with torch.no_grad():
        ref, _ = mha_to_torch(m)(x, x, x, need_weights=False)
        assert (m(x, 7, 9) - ref).abs().max() < TOL


@pytest.mark.parametrize("kw", [dict(), dict(sr_ratio=4), dict(linear=True)])
def test_sdpa_path_equals_explicit_softmax(kw):
    torch.manual_seed(0)
    m = MultiHeadAttention(32, 4, **kw).eval()
    x = torch.randn(2, 16 * 16, 32)
    with torch.no_grad():
        explicit = m(x, 16, 16)
        m.use_sdpa = True
        fused = m(x, 16, 16)
    assert (explicit - fused).abs().max() < TOL


def test_sra_equals_attention_over_reduced_keys():
    """SRA is MHA whose keys/values come from conv+LN of the map: check by hand."""
    torch.manual_seed(0)
    m = SRA(16, num_heads=2, sr_ratio=2).eval()
    x = torch.randn(1, 8 * 8, 16)
    with torch.no_grad():
        xm = x.transpose(1, 2).reshape(1, 16, 8, 8)
        kv_in = m.norm(m.sr(xm).flatten(2).transpose(1, 2))    # (1, 16, 16)
        k, v = m.kv(kv_in).chunk(2, dim=-1)
        q = m.q(x)
        ref = nn.functional.multi_head_attention_forward  # noqa: F841 (kept simple below)
        outs = []
        for h in range(2):
            s = slice(8 * h, 8 * h + 8)
            a = torch.softmax(q[..., s] @ k[..., s].transpose(1, 2) / 8 ** 0.5, dim=-1)
            outs.append(a @ v[..., s])
        want = m.proj(torch.cat(outs, dim=-1))
        assert (m(x, 8, 8) - want).abs().max() < TOL


@pytest.mark.parametrize("H,W,R", [(56, 56, 8), (28, 28, 4), (14, 28, 2), (7, 7, 1)])
def test_spatial_reduction_kv_length(H, W, R):
    m = MultiHeadAttention(32, 2, sr_ratio=R)
    x = torch.randn(1, H * W, 32)
    assert m.reduce(x, H, W).shape[1] == (H // R) * (W // R) == m.kv_tokens(H, W)


@pytest.mark.parametrize("H", [14, 56])
def test_linear_sra_has_fixed_kv_length(H):
    m = LinearSRA(32, 2, pool_size=7)
    assert m.reduce(torch.randn(1, H * H, 32), H, H).shape[1] == 49


@pytest.mark.parametrize("H", [32, 64])
@pytest.mark.parametrize("kw", [dict(sr_ratio=1), dict(sr_ratio=4), dict(sr_ratio=8),
                                dict(linear=True)])
def test_attention_flops_match_formula(H, kw):
    C = 64
    m = MultiHeadAttention(C, 2, **kw)
    x = torch.zeros(1, H * H, C)
    assert count_flops(m, (x, H, H)) == analytic.mha_macs(H, H, C, kw.get("sr_ratio", 1),
                                                          kw.get("linear", False))
    assert count_params(m) == analytic.mha_params(C, kw.get("sr_ratio", 1), kw.get("linear", False))


def test_sdpa_is_counted_like_explicit_matmuls():
    m = MultiHeadAttention(64, 4, sr_ratio=2)
    x = torch.zeros(1, 28 * 28, 64)
    explicit = count_flops(m, (x, 28, 28))
    m.use_sdpa = True
    assert count_flops(m, (x, 28, 28)) == explicit


@pytest.mark.parametrize("H", [14, 28])
@pytest.mark.parametrize("cls,kind,norm", [(Mlp, "mlp", None), (ConvFFN, "convffn", None),
                                           (CFFN, "cffn", None), (CFFN, "cffn", "bn"),
                                           (ConvFFN, "convffn", "ln")])
def test_ffn_flops_and_params_match_formula(H, cls, kind, norm):
    C, E = 48, 192
    m = cls(C, E) if norm is None else cls(C, E, norm=norm)
    x = torch.zeros(1, H * H, C)
    assert count_flops(m, (x, H, H)) == analytic.ffn_macs(H, H, C, E, kind, norm)
    assert count_params(m) == analytic.ffn_params(C, E, kind, norm=norm)


def test_cffn_has_residual_around_dwconv_and_convffn_does_not():
    torch.manual_seed(0)
    cffn, convffn = CFFN(8, 16).eval(), ConvFFN(8, 16).eval()
    for m in (cffn, convffn):
        nn.init.zeros_(m.dwconv.dwconv.weight)
        nn.init.zeros_(m.dwconv.dwconv.bias)
    x = torch.randn(1, 16, 8)
    with torch.no_grad():
        # zero DWConv: CFFN falls back to the plain FFN, ConvFFN to fc2(act(0))
        plain = cffn.fc2(cffn.act(cffn.fc1(x)))
        assert (cffn(x, 4, 4) - plain).abs().max() < TOL
        const = convffn.fc2(torch.zeros(1, 16, 16))
        assert (convffn(x, 4, 4) - const).abs().max() < TOL


def test_layernorm2d_equals_channels_last_layernorm():
    torch.manual_seed(0)
    ln2d = LayerNorm2d(12)
    nn.init.normal_(ln2d.weight)
    nn.init.normal_(ln2d.bias)
    ln = nn.LayerNorm(12, eps=1e-6)
    ln.load_state_dict(ln2d.state_dict())
    x = torch.randn(2, 12, 5, 6)
    assert (ln2d(x) - ln(x.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)).abs().max() < TOL


def test_token_norm_bn_normalises_per_channel_over_batch_and_tokens():
    tn = TokenNorm(4, "bn").train()
    x = torch.randn(3, 10, 4) * 5 + 2
    y = tn(x)
    assert y.mean(dim=(0, 1)).abs().max() < 1e-5
    assert (y.var(dim=(0, 1), unbiased=False) - 1).abs().max() < 1e-3


def test_drop_path_keeps_expectation_and_drops_whole_samples():
    torch.manual_seed(0)
    dp = DropPath(0.25).train()
    y = dp(torch.ones(20000, 3))
    assert abs(y.mean().item() - 1.0) < 0.03
    rows = y[:, 0]
    assert torch.isclose(y, torch.tensor(0.0)).logical_or(torch.isclose(y, torch.tensor(1 / 0.75))).all()
    assert (y == rows[:, None]).all(), "a sample is dropped whole, not per element"
    assert torch.equal(dp.eval()(torch.ones(4, 3)), torch.ones(4, 3))


def test_overlap_patch_embed_shapes():
    pe = OverlapPatchEmbed(3, 32, patch_size=7, stride=4)
    tokens, H, W = pe(torch.randn(2, 3, 224, 160))
    assert (H, W) == (56, 40) and tokens.shape == (2, 56 * 40, 32)


# ----------------------------------------------------------------------- bad input

def test_wrong_channel_count_is_reported():
    with pytest.raises(ValueError, match=r"expects tokens \(B, N, 64\)"):
        MultiHeadAttention(64, 2)(torch.randn(1, 16, 32), 4, 4)
    with pytest.raises(ValueError, match=r"expects tokens \(B, N, 8\)"):
        CFFN(8, 16)(torch.randn(1, 16, 9), 4, 4)
    with pytest.raises(ValueError, match=r"expects \(B, 3, H, W\)"):
        OverlapPatchEmbed(3, 8)(torch.randn(1, 4, 32, 32))


def test_tokens_that_do_not_fill_the_grid_are_reported():
    with pytest.raises(ValueError, match="do not fill"):
        MultiHeadAttention(8, 2)(torch.randn(1, 15, 8), 4, 4)


def test_resolution_not_divisible_by_reduction_ratio():
    with pytest.raises(ValueError, match=r"divisible by 4.*28 and 32"):
        MultiHeadAttention(8, 2, sr_ratio=4)(torch.randn(1, 30 * 30, 8), 30, 30)


def test_reduction_ratio_larger_than_map():
    with pytest.raises(ValueError, match="larger than the 4 x 4 map"):
        MultiHeadAttention(8, 2, sr_ratio=8)(torch.randn(1, 16, 8), 4, 4)


def test_heads_must_divide_channels():
    with pytest.raises(ValueError, match="not divisible by num_heads"):
        MultiHeadAttention(30, 4)
