"""Chapter 4's suite: the Hire-MLP variants' latency against the input size (every size
works: each stage pads its regions), with their parameters and GFLOPs in the records."""

from __future__ import annotations

from typing import Any, Dict, List, Sequence

import torch

from hirilib.analytic import hire_mlp_macs
from hirilib.measure import count_params, measure_latency
from hirilib.models.hire_mlp import VARIANTS
from hirilib.registry import create_model

from . import main_variants, suite

main_variants("hire_mlp", "hire_mlp_tiny", "hire_mlp_small")

#: input sides timed in quick mode (CPU) and in full mode (GPU)
QUICK_SIZES, FULL_SIZES = (128, 224, 320), (224, 320, 448, 640, 768, 1024)


def time_variant(name: str, resolutions: Sequence[int],
                 device: str | torch.device = "cpu", batch: int = 1, warmup: int = 1,
                 runs: int = 3, **kwargs) -> List[Dict[str, Any]]:
    """Time one variant at each input side in ``resolutions`` (square inputs): one
    record per size with the name, parameters, GFLOPs at that size (the closed form,
    which equals ``count_flops``) and ``measure_latency``'s fields."""
    model = create_model(name, **kwargs)
    cfg = {**VARIANTS[name], **kwargs}
    params = count_params(model)
    records = []
    for r in resolutions:
        rec = {"kind": "resolution", "name": name, "resolution": r, "params": params,
               "gflops": hire_mlp_macs(**cfg, H=r) / 1e9}
        try:
            rec.update(measure_latency(model, (batch, 3, r, r), device=device,
                                       warmup=warmup, runs=runs))
        except torch.cuda.OutOfMemoryError:
            rec.update(oom=True, batch_size=batch)
            torch.cuda.empty_cache()
        records.append(rec)
    model.to("cpu")
    return records


@suite("hire_mlp")
def bench_hire_mlp(device: str | torch.device = "cuda", quick: bool = False
                   ) -> List[Dict[str, Any]]:
    """Each variant at input sides 224 to 1024 (batch 1, fp32, NCHW, no compile); in
    quick mode Tiny alone at 128, 224 and 320 with a few runs, so that a CPU finishes in
    seconds."""
    names = ["hire_mlp_tiny"] if quick else list(VARIANTS)
    sizes = QUICK_SIZES if quick else FULL_SIZES
    warmup, runs = (1, 3) if quick else (10, 30)
    records = []
    for name in names:
        records += time_variant(name, sizes, device, 1, warmup, runs)
    return records
