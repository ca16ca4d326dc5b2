"""Building blocks shared by several models, each written once (chapter 1 builds most)."""

from .backbone import HierarchicalBackbone
from .attention import LinearSRA, MultiHeadAttention, SRA, scaled_dot_product_attention
from .checks import (check_image, check_int, check_model_args, check_positive_ints, check_rate,
                     check_tokens)
from .drop import DropPath, drop_path, drop_path_schedule
from .embed import ConvDownsample, ConvNormAct, OverlapPatchEmbed, PatchEmbed
from .ffn import CFFN, ConvFFN, DWConv, Mlp
from .head import ClassifierHead
from .init import fan_out_init, trunc_normal_init
from .norm import LayerNorm2d, TokenNorm, make_act, make_norm, norm2d
from .stage import Stage

__all__ = [
    "MultiHeadAttention", "SRA", "LinearSRA", "scaled_dot_product_attention",
    "Mlp", "DWConv", "ConvFFN", "CFFN", "DropPath", "drop_path", "drop_path_schedule",
    "LayerNorm2d", "TokenNorm", "make_norm", "norm2d", "make_act",
    "OverlapPatchEmbed", "PatchEmbed", "Stage", "HierarchicalBackbone", "ConvDownsample",
    "ConvNormAct", "ClassifierHead", "trunc_normal_init", "fan_out_init", "check_image",
    "check_tokens", "check_model_args", "check_int", "check_rate", "check_positive_ints",
]
