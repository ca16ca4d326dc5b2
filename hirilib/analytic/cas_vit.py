"""Closed-form parameters and MACs of CAS-ViT (chapter 5), from the architecture alone.

The convolutional additive token mixer (CATM) on an H x W map of C channels,
N = H W, with BN counted at ``bn`` per element (``BN_PER_ELEMENT``: 2, as the fvcore
release used here counts at inference; CAS-ViT's published GFLOPs count 4, as older
fvcore releases did):

    Q, K, V (one 1x1 conv C -> 3C)             3 N C^2
    per context mapping Phi (two: Q and K)
        spatial: DW 3x3, BN, 1x1 C -> 1       9 N C + bn N C + N C
        channel: mean, 1x1 C -> C             N C + C^2
    Gamma (DW 3x3) and proj (DW 3x3)           18 N C
    ------------------------------------------------------------
    CATM                              3 N C^2 + 2 (11 + bn) N C + 18 N C + 2 C^2

Every term is at most linear in N: there is no N x N product (attention's
2 N^2 C) and no softmax.  The gates' multiplications and the sum
Phi(Q) + Phi(K) are element-wise, which the papers' counters leave out.
"""

from __future__ import annotations

from typing import List, Optional, Sequence, Tuple

from .conventions import BN_PER_ELEMENT


def _half(n: int) -> int:
    return -(-n // 2)  # a 3x3 stride-2 conv with padding 1: ceil(n / 2)


def cas_vit_stage_sizes(H: int, W: int) -> List[Tuple[int, int]]:
    """The (H_i, W_i) map of each stage for an H x W input: the stem halves twice, then
    each downsampling halves (padded stride-2 convs round up).

    >>> cas_vit_stage_sizes(224, 224)
    [(56, 56), (28, 28), (14, 14), (7, 7)]
    >>> cas_vit_stage_sizes(72, 88)
    [(18, 22), (9, 11), (5, 6), (3, 3)]
    """
    h, w = _half(_half(H)), _half(_half(W))
    sizes = [(h, w)]
    for _ in range(3):
        h, w = _half(h), _half(w)
        sizes.append((h, w))
    return sizes


def catm_params(C: int, qkv_bias: bool = False) -> int:
    """Parameters of the CATM: qkv 3C^2 (+3C), two context mappings of
    (9C + C) + 2C + C + C^2 each, Gamma and proj 2 (9C + C).

    >>> catm_params(64)
    23424
    """
    phi = 9 * C + C + 2 * C + C + C * C
    return 3 * C * C + (3 * C if qkv_bias else 0) + 2 * phi + 2 * (9 * C + C)


def catm_macs(H: int, W: int, C: int, bn_per_element: int = BN_PER_ELEMENT,
              batch: int = 1) -> int:
    """MACs of the CATM on an H x W map of C channels, counted as ``count_flops``
    counts them (BN at ``bn_per_element``): linear in H W.

    >>> N, C = 56 * 56, 48
    >>> catm_macs(56, 56, C) == N * (3 * C**2 + 2 * 13 * C + 18 * C) + 2 * C**2
    True
    """
    N = H * W
    phi = 9 * N * C + bn_per_element * N * C + N * C + N * C + C * C
    return batch * (3 * N * C * C + 2 * phi + 18 * N * C)


def block_params(C: int, mlp_ratio: float = 4.0, qkv_bias: bool = False) -> int:
    """Parameters of one block: local integration 2C^2 + 14C, two BNs 4C, the CATM,
    the MLP 2CE + E + C (E = int(C mlp_ratio))."""
    E = int(C * mlp_ratio)
    return (2 * C * C + 14 * C) + 4 * C + catm_params(C, qkv_bias) + 2 * C * E + E + C


def block_macs(H: int, W: int, C: int, mlp_ratio: float = 4.0,
               bn_per_element: int = BN_PER_ELEMENT) -> int:
    """MACs of one block on an H x W map: local integration 2NC^2 + 9NC + its BN,
    two BN pre-norms, the CATM and the MLP 2NCE."""
    N, E = H * W, int(C * mlp_ratio)
    local = 2 * N * C * C + 9 * N * C + bn_per_element * N * C
    return (local + 2 * bn_per_element * N * C + catm_macs(H, W, C, bn_per_element)
            + 2 * N * C * E)


def cas_vit_params(depths: Sequence[int], dims: Sequence[int], mlp_ratio: float = 4.0,
                   num_classes: int = 1000, in_chans: int = 3,
                   distillation: bool = True, qkv_bias: bool = False, **unused) -> int:
    """Parameter count of a CAS-ViT configuration from the architecture alone: the stem
    (two 3x3 convs with bias and BN), a 3x3 conv + BN before stages 2-4, the blocks, and
    the head (BN, one or two classifiers).

    >>> from hirilib.models.cas_vit import VARIANTS
    >>> cas_vit_params(**VARIANTS["cas_vit_m"])  # 12.42 M, as in the model zoo
    12421520
    """
    c0 = dims[0] // 2
    total = 9 * in_chans * c0 + 3 * c0 + 9 * c0 * dims[0] + 3 * dims[0]   # stem
    for i, (L, C) in enumerate(zip(depths, dims)):
        if i > 0:
            total += 9 * dims[i - 1] * C + 3 * C                       # downsampling
        total += L * block_params(C, mlp_ratio, qkv_bias)
    C = dims[-1]
    heads = 2 if distillation else 1
    head = heads * (C * num_classes + num_classes) if num_classes > 0 else 0
    return total + 2 * C + head


def cas_vit_macs(depths: Sequence[int], dims: Sequence[int], mlp_ratio: float = 4.0,
                 num_classes: int = 1000, in_chans: int = 3, distillation: bool = True,
                 H: int = 224, W: Optional[int] = None,
                 bn_per_element: int = BN_PER_ELEMENT, **unused) -> int:
    """Multiply-accumulates of one forward pass on an H x W image, counted as
    ``count_flops`` counts them (convs and linears without bias, BN at
    ``bn_per_element``, the head's mean 1 per element); with ``bn_per_element=4`` as
    the older fvcore behind the published GFLOPs counted.

    >>> from hirilib.models.cas_vit import VARIANTS
    >>> macs = cas_vit_macs(**VARIANTS["cas_vit_xs"], bn_per_element=4)
    >>> round(macs / 1e9, 2)  # the paper's 0.56
    0.56
    """
    W = H if W is None else W
    bn = bn_per_element
    c0 = dims[0] // 2
    h1, w1 = _half(H), _half(W)
    sizes = cas_vit_stage_sizes(H, W)
    n1 = sizes[0][0] * sizes[0][1]
    total = h1 * w1 * c0 * (9 * in_chans + bn) + n1 * dims[0] * (9 * c0 + bn)   # stem
    for i, ((h, w), L, C) in enumerate(zip(sizes, depths, dims)):
        if i > 0:
            total += h * w * C * (9 * dims[i - 1] + bn)                # downsampling
        total += L * block_macs(h, w, C, mlp_ratio, bn)
    (h, w), C = sizes[-1], dims[-1]
    total += h * w * C * (bn + 1)                                      # BN, mean
    heads = 2 if distillation else 1
    return total + (heads * C * num_classes if num_classes > 0 else 0)
