"""Chapter 3's coursework checks, run against hirilib (or a student's module).

``pytest hirilib`` grades our reference implementation;
``HIRILIB_STUDENT=my_convnext.py pytest hirilib`` grades the names that
``my_convnext.py`` defines (``Block``, ``block_macs``, ``roadmap_state_dict``)
and ours for the rest.  The last test shows that the checks catch mistakes.
"""

import torch
import torch.nn as nn

from hirilib.checks import convnext as checks
from hirilib.checks import grade, implementation
from hirilib.analytic import convnext_block_macs
from hirilib.models import convnext as ref
from hirilib.models.convnext_roadmap import roadmap_state_dict


def test_block():
    checks.check_block(implementation("Block", ref.Block))


def test_block_macs():
    checks.check_block_macs(implementation("block_macs", convnext_block_macs))


def test_roadmap_state_dict():
    checks.check_roadmap_state_dict(implementation("roadmap_state_dict", roadmap_state_dict))


class _PostNormBlock(ref.Block):
    """A common mistake: LayerNorm after the MLP instead of before it."""

    def forward(self, x):
        shortcut = x
        x = self.dwconv(x).permute(0, 2, 3, 1)
        x = self.norm(self.pwconv2(self.act(self.pwconv1(x))))
        return shortcut + (self.gamma * x).permute(0, 3, 1, 2)


def _conv_macs_as_dense(dim, height, width, kernel_size):
    return height * width * dim * (kernel_size ** 2 * dim + 8 * dim)  # a dense k x k conv


def _linear_not_reshaped(state_dict):
    return {k.replace(".dwconv.", ".conv_dw.").replace(".norm.", ".norm_dw.")
             .replace(".pwconv1.", ".pw1.").replace(".pwconv2.", ".pw2.")
             if ".blocks." in k else k: v for k, v in state_dict.items()}


class _NoLayerScale(nn.Module):
    def __init__(self, dim, drop_path=0.0, ls_init_value=1e-6):
        super().__init__()
        self.inner = ref.Block(dim, ls_init_value=None)

    def forward(self, x):
        return self.inner(x)


class _Stub(nn.Module):
    def __init__(self, dim, drop_path=0.0, ls_init_value=1e-6):
        super().__init__()
        raise NotImplementedError


def test_checks_catch_mistakes(capsys):
    assert grade("post-norm", checks.check_block, _PostNormBlock) is False
    assert grade("no layer scale", checks.check_block, _NoLayerScale) is False
    assert grade("dense count", checks.check_block_macs, _conv_macs_as_dense) is False
    assert grade("no reshape", checks.check_roadmap_state_dict, _linear_not_reshaped) is False
    assert grade("stub", checks.check_block, _Stub) is None
    out = capsys.readouterr().out
    assert "max abs difference" in out and "not k*k*C" in out and "wrong shapes" in out
    assert torch.is_tensor(ref.Block(8).gamma)
