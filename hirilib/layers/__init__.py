"""Building blocks shared by several models (chapter 1 builds most of them)."""

from .attention import LinearSRA, MultiHeadAttention, SRA, scaled_dot_product_attention
from .drop import DropPath, drop_path
from .embed import OverlapPatchEmbed
from .ffn import CFFN, ConvFFN, DWConv, Mlp
from .norm import LayerNorm2d, TokenNorm, make_norm

__all__ = [
    "MultiHeadAttention", "SRA", "LinearSRA", "scaled_dot_product_attention",
    "Mlp", "DWConv", "ConvFFN", "CFFN", "DropPath", "drop_path",
    "LayerNorm2d", "TokenNorm", "make_norm", "OverlapPatchEmbed",
]
