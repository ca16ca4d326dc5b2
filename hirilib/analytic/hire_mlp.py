"""Closed-form parameters and MACs of Hire-MLP (chapter 4), from the architecture
alone: nothing here builds or traces a model, so these counts check
``count_params`` / ``count_flops`` and extend them to any resolution.

For a Hire module on an H x W map of C channels with regions of p tokens, the
h-branch folds the map, padded to H' = p * ceil(H / p) rows, into
(H'/p) * W positions of C*p channels; its MLP C*p -> C/2 -> C*p costs
2 * C*p * (C//2) MACs per position, plus BatchNorm on the C//2 bottleneck channels.
With W' = p * ceil(W / p) for the w-branch, the module costs

    (H'W + HW') / p * (2 Cp (C//2) + 2 (C//2))     the two region branches
    + 2 H W C^2                                    channel branch and projection
    + H W C + C (C//4) + (C//4) 3C                 split attention (mean, MLP)

which is linear in H * W: a region holds p tokens whatever the image size.
Counting conventions: ``conventions.py`` (BN 2 per element, means 1 per element,
biases free).
"""

from __future__ import annotations

from typing import List, Optional, Sequence, Tuple

from .conventions import BN_PER_ELEMENT as BN


def hire_mlp_stage_sizes(H: int, W: int, num_stages: int = 4) -> List[Tuple[int, int]]:
    """The (H_i, W_i) map of each stage: the 7x7 stride-4 stem with padding 2 gives
    floor((H - 3) / 4) + 1, each 3x3 stride-2 downsampling (padding 1) ceil(H / 2).

    >>> hire_mlp_stage_sizes(224, 224)
    [(56, 56), (28, 28), (14, 14), (7, 7)]
    >>> hire_mlp_stage_sizes(72, 88)
    [(18, 22), (9, 11), (5, 6), (3, 3)]
    """
    sizes, h, w = [], (H - 3) // 4 + 1, (W - 3) // 4 + 1
    for i in range(num_stages):
        if i > 0:
            h, w = -(-h // 2), -(-w // 2)
        sizes.append((h, w))
    return sizes


def _padded(n: int, p: int) -> int:
    return -(-n // p) * p


def hire_module_params(C: int, p: int, fusion: str = "softmax") -> int:
    """Parameters of one Hire module: two region MLPs (C*p -> C//2 without bias, BN,
    C//2 -> C*p), the channel branch and the projection (C x C + bias each), and the
    split attention's MLP (C -> C//4 -> 3C, with biases).

    >>> hire_module_params(64, 4)
    46032
    """
    b, q = C // 2, C // 4
    branch = C * p * b + 2 * b + b * C * p + C * p
    p_ = 2 * branch + 2 * (C * C + C)
    if fusion == "softmax":
        p_ += C * q + q + q * 3 * C + 3 * C
    return p_


def hire_module_macs(C: int, H: int, W: int, p: int, fusion: str = "softmax",
                     batch: int = 1) -> int:
    """MACs of one Hire module on an H x W map (the module docstring's formula).

    >>> hire_module_macs(64, 56, 56, 4) == (56 * 56 * 2 // 4) * (2 * 256 * 32 + 64) \\
    ...     + 2 * 56 * 56 * 64 ** 2 + 56 * 56 * 64 + 64 * 16 + 16 * 192
    True
    """
    b, q = C // 2, C // 4
    per_region_position = 2 * C * p * b + BN * b
    positions = (_padded(H, p) * W + H * _padded(W, p)) // p
    macs = positions * per_region_position + 2 * H * W * C * C
    if fusion == "softmax":
        macs += H * W * C + C * q + q * 3 * C
    return batch * macs


def hire_block_params(C: int, p: int, mlp_ratio: float = 4, fusion: str = "softmax"
                      ) -> int:
    """A Hire block: two BNs, the Hire module and the MLP C -> rC -> C."""
    E = int(C * mlp_ratio)
    return 2 * 2 * C + hire_module_params(C, p, fusion) + 2 * C * E + E + C


def hire_block_macs(C: int, H: int, W: int, p: int, mlp_ratio: float = 4,
                    fusion: str = "softmax") -> int:
    """A Hire block: two BNs (2 per element each), the Hire module, the MLP."""
    E = int(C * mlp_ratio)
    return 2 * BN * H * W * C + hire_module_macs(C, H, W, p, fusion) + 2 * H * W * C * E


def hire_mlp_params(depths: Sequence[int], embed_dims: Sequence[int],
                    mlp_ratios: Sequence[float] = (4, 4, 4, 4),
                    regions: Sequence[int] = (4, 3, 3, 2), fusion: str = "softmax",
                    num_classes: int = 1000, in_chans: int = 3, **unused) -> int:
    """Parameters of a Hire-MLP configuration (``VARIANTS`` entries are accepted as
    keywords).  Stem: 7x7 conv + BN; downsamplings: 3x3 conv + BN; blocks; head BN +
    Linear.

    >>> from hirilib.models.hire_mlp import VARIANTS
    >>> hire_mlp_params(**VARIANTS["hire_mlp_small"])
    33113848
    """
    total = 49 * in_chans * embed_dims[0] + embed_dims[0] + 2 * embed_dims[0]
    prev = embed_dims[0]
    for i, (C, L, r, p) in enumerate(zip(embed_dims, depths, mlp_ratios, regions)):
        if i > 0:
            total += 9 * prev * C + C + 2 * C
        total += L * hire_block_params(C, p, r, fusion)
        prev = C
    total += 2 * prev
    return total + (prev * num_classes + num_classes if num_classes > 0 else 0)


def hire_mlp_macs(depths: Sequence[int], embed_dims: Sequence[int],
                  mlp_ratios: Sequence[float] = (4, 4, 4, 4),
                  regions: Sequence[int] = (4, 3, 3, 2), fusion: str = "softmax",
                  num_classes: int = 1000, in_chans: int = 3, H: int = 224,
                  W: Optional[int] = None, batch: int = 1, **unused) -> int:
    """Multiply-accumulates of one forward pass on an H x W image, counted as
    ``count_flops`` counts them.

    >>> from hirilib.models.hire_mlp import VARIANTS
    >>> round(hire_mlp_macs(**VARIANTS["hire_mlp_small"]) / 1e9, 3)
    4.242
    """
    W = H if W is None else W
    sizes = hire_mlp_stage_sizes(H, W, len(depths))
    h, w = sizes[0]
    macs = (49 * in_chans + BN) * embed_dims[0] * h * w              # stem conv + BN
    prev = embed_dims[0]
    for i, ((h, w), C, L, r, p) in enumerate(zip(sizes, embed_dims, depths, mlp_ratios,
                                                  regions)):
        if i > 0:
            macs += (9 * prev + BN) * C * h * w                         # downsampling
        macs += L * hire_block_macs(C, h, w, p, r, fusion)
        prev = C
    macs += (BN + 1) * prev * h * w                                    # head BN, mean
    macs += prev * num_classes if num_classes > 0 else 0               # classifier
    return batch * macs


def hire_mlp_token_mixer_macs(depths: Sequence[int], embed_dims: Sequence[int],
                              regions: Sequence[int] = (4, 3, 3, 2),
                              fusion: str = "softmax", H: int = 224,
                              W: Optional[int] = None, **unused) -> int:
    """MACs of all Hire modules of a configuration (the token mixers alone), to set
    beside the attention layers of chapter 2 (``pvt_v2_attention_macs``)."""
    W = H if W is None else W
    sizes = hire_mlp_stage_sizes(H, W, len(depths))
    return sum(L * hire_module_macs(C, h, w, p, fusion)
               for (h, w), C, L, p in zip(sizes, embed_dims, depths, regions))
