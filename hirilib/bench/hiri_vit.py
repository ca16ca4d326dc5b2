"""Chapter 6's suite: GFLOPs, latency and memory against the input resolution for
HIRI-ViT-S, its four-stage counterpart, PVTv2-B2 and ConvNeXt-T; and the latency of
HIRI-ViT-S with LN before every CFFN, with BN, and with the BNs folded (Sec. 4.4)."""

from __future__ import annotations

from functools import lru_cache
from typing import Any, Dict, List, Mapping, Sequence

import torch

from hirilib.analytic import hiri_vit as analytic_hiri
from hirilib.analytic import pvt_v2_macs
from hirilib.deploy import fuse_bn
from hirilib.measure import blank_model, count_flops, measure_latency, measure_memory
from hirilib.registry import create_model

from . import main_variants, suite

main_variants("hiri_vit", "hiri_vit_s_4stage", "hiri_vit_s", "hiri_vit_b")

#: The four networks chapter 6 compares, by label.
MODELS: Dict[str, str] = {
    "HIRI-ViT-S": "hiri_vit_s",
    "four-stage HIRI-ViT-S": "hiri_vit_s_4stage",
    "PVTv2-B2": "pvt_v2_b2",
    "ConvNeXt-T": "convnext_tiny",
}
RESOLUTIONS = (224, 256, 384, 448, 512, 640, 768, 896, 1024)


def supports(name: str, resolution: int) -> bool:
    """Whether the registered model takes a ``resolution`` x ``resolution`` input (the
    five-stage nets need multiples of 64, so not 224)."""
    multiple, minimum = _sizes(name)
    return resolution % multiple == 0 and resolution >= minimum


@lru_cache(maxsize=None)
def _sizes(name: str):
    with torch.device("meta"):            # no weights: only the size rules are read
        m = create_model(name)
    return m.size_multiple, m.min_input_size


@lru_cache(maxsize=None)
def _convnext_split(name: str):
    """ConvNeXt's MACs at 224 split into the part that works per pixel and the rest
    (the LayerNorm of the pooled vector, 5 C, and the classifier, C K)."""
    model = blank_model(name)
    total = count_flops(model, (1, 3, 224, 224))
    C, K = model.num_features, model.num_classes
    const = 5 * C + C * K
    return total - const, const


def gflops(name: str, resolution: int) -> float:
    """GFLOPs (G MACs) of a registered model at ``resolution``, without tracing it:
    the closed forms for HIRI-ViT and PVTv2 (``hirilib.analytic``, equal to
    ``count_flops``), and for ConvNeXt the count at 224 scaled by the pixel count, which
    is exact for a ConvNet whose every layer but the classifier works per pixel (the
    tests check it against ``count_flops``)."""
    from hirilib.models.hiri_vit import (HIRI_VIT_CONFIGS, TABLE7, four_stage_config,
                                         table7_config)
    from hirilib.models.pvt_v2 import PVT_V2_CONFIGS

    if name in HIRI_VIT_CONFIGS:
        cfg = HIRI_VIT_CONFIGS[name]
    elif name.endswith("_4stage") and name[:-7] in HIRI_VIT_CONFIGS:
        cfg = four_stage_config(HIRI_VIT_CONFIGS[name[:-7]])
    elif name in {r.name for r in TABLE7}:
        cfg = table7_config(name)
    elif name in PVT_V2_CONFIGS:
        return pvt_v2_macs(**PVT_V2_CONFIGS[name], H=resolution) / 1e9
    elif name.startswith("convnext_"):
        per_pixel, const = _convnext_split(name)
        return (per_pixel * resolution ** 2 // 224 ** 2 + const) / 1e9
    else:
        return count_flops(blank_model(name), (1, 3, resolution, resolution)) / 1e9
    return analytic_hiri.hiri_vit_macs(cfg, resolution) / 1e9


def resolution_sweep(models: Mapping[str, str] = MODELS,
                     resolutions: Sequence[int] = RESOLUTIONS,
                     device: str | torch.device = "cpu", batch_size: int = 1,
                     warmup: int = 5, runs: int = 20, latency: bool = True,
                     memory: bool = True, progress: bool = False
                     ) -> List[Dict[str, Any]]:
    """One record per (model, resolution) the model takes: label, name, resolution,
    GFLOPs (``gflops``), parameters, and if asked ``measure_latency``'s fields (fp32,
    batch ``batch_size``) and the peak activation memory (``measure_memory``).  A GPU
    that runs out of memory gives ``"oom": True`` instead of a crash."""
    from hirilib.measure import count_params

    device = torch.device(device)
    jobs = [(label, name, res) for label, name in models.items() for res in resolutions
            if supports(name, res)]
    if progress:
        import warnings

        with warnings.catch_warnings():  # tqdm's "IProgress not found" without widgets
            warnings.simplefilter("ignore")
            from tqdm.auto import tqdm

        # on stderr, as every bar of the book (a chapter's cell tags it remove-stderr)
        jobs = tqdm(jobs, desc="models x resolutions")
    records, built = [], {}
    for label, name, res in jobs:
        if name not in built:
            built.clear()  # one model in memory at a time
            built[name] = create_model(name).eval()
        model = built[name]
        rec: Dict[str, Any] = {"kind": "resolution", "label": label, "model": name,
                               "resolution": res, "gflops": gflops(name, res),
                               "params": count_params(model)}
        try:
            if latency:
                rec.update(measure_latency(model, (batch_size, 3, res, res),
                                           device=device, warmup=warmup, runs=runs))
            if memory:
                mem = measure_memory(model, (1, 3, res, res), device=device)
                rec.update(memory_mb=mem["peak_mem_mb"], memory_method=mem["method"],
                           device=mem["device"])
        except torch.cuda.OutOfMemoryError:
            rec.update(oom=True)
        finally:
            if device.type == "cuda":
                torch.cuda.empty_cache()
        records.append(rec)
    return records


#: Sec. 4.4's comparison: LN or BN before every CFFN, and the BNs folded for inference.
NORM_VARIANTS = {"LN before every CFFN": {"norm": "ln"}, "BN (as trained)": {},
                 "BN folded (fuse_bn)": {}}


def bn_fusion_latency(name: str = "hiri_vit_s", resolution: int = 448,
                      device: str | torch.device = "cpu", batch_size: int = 1,
                      warmup: int = 5, runs: int = 20) -> List[Dict[str, Any]]:
    """Latency of ``name`` with LN in its CFFN blocks (``norm="ln"``), with BN, and with
    every BN folded into its neighbour (``hirilib.deploy.fuse_bn``).  The three are
    timed in turn, ``runs`` times each, interleaved, so that a slow spell of a shared
    machine hits all three alike."""
    models = {}
    for label, overrides in NORM_VARIANTS.items():
        torch.manual_seed(0)
        m = create_model(name, **overrides).eval()
        models[label] = fuse_bn(m) if "folded" in label else m
    size = (batch_size, 3, resolution, resolution)
    for m in models.values():                       # warm-up, once per model
        measure_latency(m, size, device=device, warmup=warmup, runs=1)
    rounds = {label: [] for label in models}
    for _ in range(runs):
        for label, m in models.items():
            rounds[label].append(measure_latency(m, size, device=device, warmup=0,
                                                 runs=1))
    records = []
    for label, rs in rounds.items():
        times = sorted(r["median_ms"] for r in rs)
        rec = dict(rs[0])
        rec.update(kind="bn_fusion", label=label, model=name, resolution=resolution,
                   median_ms=times[len(times) // 2], min_ms=times[0], max_ms=times[-1],
                   runs=runs, warmup=warmup)
        records.append(rec)
    return records


@suite("hiri_vit")
def bench_hiri_vit(device: str | torch.device = "cuda", quick: bool = False
                   ) -> List[Dict[str, Any]]:
    """The chapter-6 suite: ``resolution_sweep`` of the four models from 224 to 1024
    (batch 1, fp32, fused attention), and ``bn_fusion_latency`` of HIRI-ViT-S at 448.
    ``quick`` shrinks it to two small resolutions and a few runs, for a CPU."""
    if quick:
        return (resolution_sweep(MODELS, (128, 256), device, warmup=1, runs=2)
                + bn_fusion_latency("hiri_vit_s", 256, device, warmup=1, runs=3))
    return (resolution_sweep(MODELS, RESOLUTIONS, device, warmup=10, runs=30)
            + bn_fusion_latency("hiri_vit_s", 448, device, batch_size=64, warmup=10,
                                runs=30))
