"""Closed-form parameter and multiply-accumulate counts: the chapters' independent checks.

These are written from the equations alone, independently of the modules, so that
``hirilib.measure.count_flops`` (which traces the modules) can be checked against
them; ``conventions`` says how they count.  One module per subject: ``layers``
(attention and the FFNs, chapter 1), ``pvt_v2`` (chapter 2), ``convnext`` (chapter 3).
"""

from .conventions import BN_PER_ELEMENT, LN_PER_ELEMENT
from .convnext import conv_cost, convnext_block_macs, convnext_macs
from .layers import ffn_macs, ffn_params, mha_macs, mha_params
from .pvt_v2 import pvt_v2_attention_macs, pvt_v2_macs, pvt_v2_params, pvt_v2_stage_sizes

__all__ = [
    "LN_PER_ELEMENT", "BN_PER_ELEMENT", "mha_macs", "mha_params", "ffn_macs", "ffn_params",
    "pvt_v2_params", "pvt_v2_macs", "pvt_v2_attention_macs", "pvt_v2_stage_sizes",
    "convnext_block_macs", "convnext_macs", "conv_cost",
]
