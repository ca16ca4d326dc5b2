"""Chapter 2's coursework checks, run against hirilib (or a student's module).

``pytest hirilib`` grades our reference implementation;
``HIRILIB_STUDENT=my_pvt.py pytest hirilib`` grades the names that ``my_pvt.py``
defines (``OverlapPatchEmbed``, ``ConvFFN``, ``linear_sra_macs``,
``pvt_v2_params``, ``pvt_v2_macs``) and ours for the rest.
"""

from hirilib import analytic, layers
from hirilib.checks import implementation
from hirilib.checks import pvt_v2 as checks
from hirilib.analytic import pvt_v2_macs, pvt_v2_params


def _linear_sra_macs(H, W, C, P):
    return analytic.mha_macs(H, W, C, linear=True, pool_size=P)


def _pvt_v2_params(embed_dims, depths, mlp_ratios, sr_ratios, linear, num_classes):
    return pvt_v2_params(embed_dims, depths, mlp_ratios, sr_ratios, linear, num_classes)


def test_overlap_patch_embed():
    checks.check_overlap_patch_embed(implementation("OverlapPatchEmbed", layers.OverlapPatchEmbed))


def test_conv_ffn():
    checks.check_conv_ffn(implementation("ConvFFN", layers.ConvFFN))


def test_linear_sra_macs():
    checks.check_linear_sra_macs(implementation("linear_sra_macs", _linear_sra_macs))


def test_pvt_v2_params():
    checks.check_pvt_v2_params(implementation("pvt_v2_params", _pvt_v2_params))


def _pvt_v2_macs(embed_dims, depths, mlp_ratios, sr_ratios, linear, num_classes, H, W):
    return pvt_v2_macs(embed_dims, depths, mlp_ratios, sr_ratios, linear, num_classes,
                            H=H, W=W)


def test_pvt_v2_macs():
    checks.check_pvt_v2_macs(implementation("pvt_v2_macs", _pvt_v2_macs))
