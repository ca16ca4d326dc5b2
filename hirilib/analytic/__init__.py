"""Closed-form parameter and multiply-accumulate counts: the chapters' independent checks.

These are written from the equations alone, independently of the modules, so that
``hirilib.measure.count_flops`` (which traces the modules) can be checked against
them; ``conventions`` says how they count.  One module per subject: ``layers``
(attention and the FFNs, chapter 1), ``pvt_v2`` (chapter 2), ``convnext`` (chapter 3),
``hire_mlp`` (chapter 4), ``cas_vit`` (chapter 5),
``hiri_vit`` (chapter 6: every block of HIRI-ViT and any ``HIRIViT`` configuration).
"""

from .cas_vit import (catm_macs, catm_params, cas_vit_macs, cas_vit_params,
                      cas_vit_stage_sizes)
from .conventions import BN_PER_ELEMENT, LN_PER_ELEMENT
from .intensity import op_cost
from .convnext import conv_cost, convnext_block_macs, convnext_macs
from .hire_mlp import (hire_block_macs, hire_block_params, hire_mlp_macs, hire_mlp_params,
                       hire_mlp_stage_sizes, hire_mlp_token_mixer_macs, hire_module_macs,
                       hire_module_params)
from .layers import ffn_macs, ffn_params, mha_macs, mha_params
from .pvt_v2 import pvt_v2_attention_macs, pvt_v2_macs, pvt_v2_params, pvt_v2_stage_sizes

__all__ = [
    "op_cost",
    "LN_PER_ELEMENT", "BN_PER_ELEMENT", "mha_macs", "mha_params", "ffn_macs", "ffn_params",
    "pvt_v2_params", "pvt_v2_macs", "pvt_v2_attention_macs", "pvt_v2_stage_sizes",
    "convnext_block_macs", "convnext_macs", "conv_cost", "hire_mlp_params", "hire_mlp_macs",
    "hire_mlp_stage_sizes", "hire_mlp_token_mixer_macs", "hire_module_params",
    "hire_module_macs", "hire_block_params", "hire_block_macs",
    "catm_macs", "catm_params", "cas_vit_params", "cas_vit_macs", "cas_vit_stage_sizes",
]
