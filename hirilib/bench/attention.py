"""Chapter 1's suite: one attention layer and one FFN layer against the size of the map."""

from __future__ import annotations

from typing import List

import torch

from hirilib.measure import measure_latency

from . import suite


def attention_grid(quick: bool) -> List[int]:
    """Side lengths H = W of the token grids measured in chapter 1."""
    return [16, 32, 48, 64] if quick else [16, 32, 48, 64, 80, 96, 112, 128]


@suite("attention")
def bench_attention(device: str | torch.device = "cpu", quick: bool = True,
                    dim: int = 64, heads: int = 1, batch: int = 1,
                    progress: bool = False) -> List[dict]:
    """Latency of one attention layer (full, SRA R=2/4/8, linear SRA) and of one
    FFN layer (Mlp, ConvFFN, CFFN) against the side of the token grid.

    PVTv2-B2's first stage is the setting: C = 64, one head, 4x hidden FFN.
    Full attention uses the fused kernel (``use_sdpa``) so that its memory stays
    linear in the tokens, and every variant is timed the same way.  ``progress`` shows a
    progress bar (tqdm) over the map sizes.
    """
    from tqdm.auto import tqdm

    from hirilib.layers import CFFN, ConvFFN, Mlp, MultiHeadAttention

    variants = {"full attention": dict(sr_ratio=1), "SRA R=2": dict(sr_ratio=2),
                "SRA R=4": dict(sr_ratio=4), "SRA R=8": dict(sr_ratio=8),
                "linear SRA (7x7)": dict(linear=True)}
    ffns = {"Mlp": Mlp, "ConvFFN": ConvFFN, "CFFN": CFFN}
    runs, warmup = (10, 3) if quick else (50, 10)
    records = []
    for side in tqdm(attention_grid(quick), desc="map sizes", disable=not progress):
        x_shape = (batch, side * side, dim)
        for name, kw in variants.items():
            if side % kw.get("sr_ratio", 1):
                continue
            m = MultiHeadAttention(dim, heads, use_sdpa=True, **kw)
            r = measure_latency(m, x_shape, device=device, warmup=warmup, runs=runs,
                                extra_args=(side, side))
            records.append({"layer": "attention", "variant": name, "side": side, **r})
        for name, cls in ffns.items():
            r = measure_latency(cls(dim, 8 * dim), x_shape, device=device, warmup=warmup,
                                runs=runs, extra_args=(side, side))
            records.append({"layer": "ffn", "variant": name, "side": side, **r})
    return records
