"""Chapter 1's coursework checks, run against hirilib (or a student's module).

``pytest hirilib`` grades our reference implementation;
``HIRILIB_STUDENT=my_attention.py pytest hirilib`` grades the names that
``my_attention.py`` defines (``scaled_dot_product_attention``,
``MultiHeadAttention``, ``CFFN``, ``attention_macs``) and ours for the rest.
"""

from hirilib import analytic, layers
from hirilib.checks import attention as checks
from hirilib.checks import implementation


def test_scaled_dot_product_attention():
    checks.check_scaled_dot_product_attention(
        implementation("scaled_dot_product_attention", layers.scaled_dot_product_attention))


def test_multi_head_attention_matches_torch():
    checks.check_mha(implementation("MultiHeadAttention", layers.MultiHeadAttention))


def test_spatial_reduction_shortens_keys():
    checks.check_spatial_reduction(implementation("MultiHeadAttention", layers.MultiHeadAttention))


def test_attention_mac_formula():
    checks.check_attention_macs(
        implementation("attention_macs", lambda H, W, C, R: analytic.mha_macs(H, W, C, R)))


def test_cffn():
    checks.check_cffn(implementation("CFFN", layers.CFFN))
