"""``fuse_bn`` folds BatchNorms into their neighbours without changing the outputs."""

from __future__ import annotations

import pytest
import torch
import torch.nn as nn

from hirilib.deploy import count_batchnorms, fold_bn_before, fuse_bn
from hirilib.layers import CFFN, ClassifierHead, ConvFFN, ConvNormAct

TOL = 1e-5  # fp32: the same affine maps, multiplied in another order


def _random_bn_stats_(model: nn.Module, seed: int = 0) -> nn.Module:
    """BN statistics and affine parameters far from their initial values, so that a fold
    that is wrong anywhere shows in the outputs."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, (nn.BatchNorm1d, nn.BatchNorm2d)):
                n = m.num_features
                m.running_mean.copy_(torch.randn(n, generator=g))
                m.running_var.copy_(torch.rand(n, generator=g) * 2 + 0.1)
                m.weight.copy_(torch.randn(n, generator=g))
                m.bias.copy_(torch.randn(n, generator=g))
    return model.eval()


class _Net(nn.Module):
    """Conv+BN units, a BN pre-norm CFFN on tokens, and a BN-first head."""

    def __init__(self):
        super().__init__()
        self.stem = nn.Sequential(ConvNormAct(3, 8, 3, 2, act="relu"),
                                  nn.Conv2d(8, 16, 3, padding=1, bias=False), nn.BatchNorm2d(16))
        self.cffn = CFFN(16, 32, norm="bn")
        self.convffn = ConvFFN(16, 32, norm="bn")
        self.head = ClassifierHead(16, 5, norm="bn", norm_first=True)

    def forward(self, x):
        x = self.stem(x)                                   # (B, 16, H, W)
        B, C, H, W = x.shape
        t = x.flatten(2).transpose(1, 2)                   # (B, N, C)
        t = t + self.cffn(t, H, W)
        t = t + self.convffn(t, H, W)
        return self.head(t.transpose(1, 2).reshape(B, C, H, W))


def test_fused_outputs_equal_and_batchnorms_are_gone():
    torch.manual_seed(0)
    net = _random_bn_stats_(_Net())
    x = torch.randn(2, 3, 16, 16)
    with torch.no_grad():
        want = net(x)
        fused = fuse_bn(net)
        got = fused(x)
    assert count_batchnorms(net) == 5 and count_batchnorms(fused) == 0
    assert (got - want).abs().max().item() < TOL * max(1.0, want.abs().max().item())
    assert count_batchnorms(net) == 5  # the original is untouched


def test_unfoldable_pairs_are_refused():
    bn = _random_bn_stats_(nn.BatchNorm2d(4))
    with pytest.raises(ValueError, match="1x1"):
        fold_bn_before(bn, nn.Conv2d(4, 4, 3, padding=1))


def test_a_batchnorm_without_a_neighbour_stays():
    net = _random_bn_stats_(nn.Sequential(nn.ReLU(), nn.BatchNorm2d(3)))
    assert count_batchnorms(fuse_bn(net)) == 1


class _SumThenBN(nn.Module):
    """Two convs summed, then a BN: HIRI-ViT's HR-stem ends this way."""

    bn_fusion = (("norm", ("a", "b.1"), "after"),)

    def __init__(self):
        super().__init__()
        self.a = nn.Conv2d(3, 8, 3, padding=1, bias=False)
        self.b = nn.Sequential(nn.ReLU(), nn.Conv2d(3, 8, 1))
        self.norm = nn.BatchNorm2d(8)

    def forward(self, x):
        return self.norm(self.a(x) + self.b(x))


def test_a_batchnorm_after_a_sum_folds_into_every_summand():
    net = _random_bn_stats_(_SumThenBN())
    x = torch.randn(2, 3, 8, 8)
    with torch.no_grad():
        want = net(x)
        fused = fuse_bn(net)
        got = fused(x)
    assert count_batchnorms(fused) == 0
    assert (got - want).abs().max().item() < TOL * max(1.0, want.abs().max().item())


def test_mlp_declares_its_batchnorm_pre_norm():
    from hirilib.layers import Mlp

    mlp = _random_bn_stats_(Mlp(8, 16, norm="bn"))
    x = torch.randn(2, 5, 8)
    with torch.no_grad():
        want = mlp(x)
        got = fuse_bn(mlp)(x)
    assert (got - want).abs().max().item() < TOL * max(1.0, want.abs().max().item())


def test_a_batchnorm_before_two_classifiers_folds_into_both():
    """A BN head with a distillation classifier: the BN folds into ``fc`` and
    ``fc_dist`` (both read the same pooled vector); the mean logits are unchanged."""
    head = ClassifierHead(16, 5, norm="bn", norm_first=True, distillation=True)
    head = _random_bn_stats_(head)
    x = torch.randn(2, 16, 4, 4)
    with torch.no_grad():
        want = head(x)
        fused = fuse_bn(head)
        got = fused(x)
        cls, dist = fused(x, return_dist=True)
    assert count_batchnorms(fused) == 0
    assert (got - want).abs().max().item() < TOL * max(1.0, want.abs().max().item())
    assert torch.allclose((cls + dist) / 2, got)


def test_onnx_helpers_say_what_to_install_without_onnxruntime(monkeypatch, tmp_path):
    import sys

    from hirilib import deploy

    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # `import onnxruntime` fails
    with pytest.raises(deploy.OnnxUnavailable, match=r"pip install onnx onnxruntime"):
        deploy.onnx_session(tmp_path / "missing.onnx")
