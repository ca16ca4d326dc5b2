"""Closed-form parameters and MACs of a PVTv2 configuration (chapter 2), from the
architecture alone: they never build or trace a model, so they can be checked
against ``count_params`` / ``count_flops`` and extrapolated to resolutions where
tracing full attention would need tens of GB.
"""

from __future__ import annotations

from typing import List, Optional, Sequence, Tuple

from .conventions import LN_PER_ELEMENT as LN
from .layers import ffn_macs, ffn_params, mha_macs, mha_params


def pvt_v2_stage_sizes(H: int, W: int, num_stages: int = 4) -> List[Tuple[int, int]]:
    """The (H_i, W_i) token grid of each stage for an H x W input: strides 4, then 2
    (padded convs round up).

    >>> pvt_v2_stage_sizes(224, 224)
    [(56, 56), (28, 28), (14, 14), (7, 7)]
    """
    sizes = []
    for i in range(num_stages):
        s = 4 if i == 0 else 2
        H, W = -(-H // s), -(-W // s)
        sizes.append((H, W))
    return sizes


def pvt_v2_attention_macs(model, H: int, W: Optional[int] = None) -> int:
    """MACs of all attention layers of a built PVTv2 ``model`` on an H x W input, from
    the closed form ``mha_macs`` of chapter 1, without running anything.

    >>> import torch, hirilib
    >>> with torch.device("meta"):
    ...     m = hirilib.create_model("pvt_v2_b0")
    >>> pvt_v2_attention_macs(m, 224) / 1e9 > 0.05
    True
    """
    W = H if W is None else W
    total = 0
    for stage, (h, w) in zip(model.stages, pvt_v2_stage_sizes(H, W, len(model.stages))):
        for blk in stage.blocks:
            a = blk.attn
            total += mha_macs(h, w, a.dim, a.sr_ratio, a.linear, a.pool_size)
    return total


def pvt_v2_params(embed_dims: Sequence[int], depths: Sequence[int],
                  mlp_ratios: Sequence[float], sr_ratios: Sequence[int] = (8, 4, 2, 1),
                  linear: bool = False, num_classes: int = 1000, in_chans: int = 3,
                  **unused) -> int:
    """Parameter count of a PVTv2 configuration from the architecture alone.

    Per stage i with C = C_i, E = mlp_ratio * C and kernel k (7, then 3):
    patch embedding k^2 C_{i-1} C + C (conv) + 2C (LayerNorm); per block two
    LayerNorms (4C), attention (``mha_params``) and ConvFFN (``ffn_params``); the
    stage LayerNorm 2C; and the head C_4 K + K.

    >>> from hirilib.models.pvt_v2 import PVT_V2_CONFIGS
    >>> pvt_v2_params(**PVT_V2_CONFIGS["pvt_v2_b2"])
    25362856
    """
    total, prev = 0, in_chans
    for i, (C, L, e, R) in enumerate(zip(embed_dims, depths, mlp_ratios, sr_ratios)):
        k = 7 if i == 0 else 3
        total += k * k * prev * C + C + 2 * C                  # patch embedding + its LN
        block = 4 * C + mha_params(C, R, linear) + ffn_params(C, int(C * e), "convffn")
        total += L * block + 2 * C                             # blocks + stage LN
        prev = C
    return total + (prev * num_classes + num_classes if num_classes > 0 else 0)


def pvt_v2_macs(embed_dims: Sequence[int], depths: Sequence[int],
                mlp_ratios: Sequence[float], sr_ratios: Sequence[int] = (8, 4, 2, 1),
                linear: bool = False, num_classes: int = 1000, in_chans: int = 3,
                H: int = 224, W: Optional[int] = None, pool_size: int = 7, **unused) -> int:
    """Multiply-accumulates of one forward pass of a PVTv2 configuration on an H x W
    image, counted as ``count_flops`` counts them (convs and linears without bias,
    LayerNorm 5 per element, pooling and the final mean 1 per input element).

    Per stage, with N_i tokens of C channels: the patch embedding N_i k^2 C_{i-1} C
    plus its LayerNorm; per block two LayerNorms, attention (``mha_macs``) and
    ConvFFN (``ffn_macs``); the stage LayerNorm; then the mean over the last
    stage's tokens and the classifier.

    >>> from hirilib.models.pvt_v2 import PVT_V2_CONFIGS
    >>> pvt_v2_macs(**PVT_V2_CONFIGS["pvt_v2_b2"], H=224)  # 4.05 G, as released
    4045842240
    """
    W = H if W is None else W
    total, prev, h, w = 0, in_chans, H, W
    for i, (C, L, e, R) in enumerate(zip(embed_dims, depths, mlp_ratios, sr_ratios)):
        k, s = (7, 4) if i == 0 else (3, 2)
        h, w = -(-h // s), -(-w // s)
        N = h * w
        total += N * k * k * prev * C + LN * N * C                     # patch embedding
        block = (2 * LN * N * C + mha_macs(h, w, C, R, linear, pool_size)
                 + ffn_macs(h, w, C, int(C * e), "convffn"))
        total += L * block + LN * N * C                                # blocks, stage LN
        prev = C
    total += h * w * prev                                              # mean over tokens
    return total + (prev * num_classes if num_classes > 0 else 0)      # classifier
