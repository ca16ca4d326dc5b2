"""Chapter 7's suite: what every family costs, measured the same way.

For the main variants of every family (``MAIN_VARIANTS``, declared in each family's bench
file) it records:

* over resolutions (224 ... 1024, where memory allows): parameters, GFLOPs, activations,
  latency at batch 1, throughput at a large batch and peak memory (GPU);
* at 224 and 448, throughput under each setting the hardware offers: fp32 / fp16 / bf16
  autocast (where native), channels_last off / on, ``torch.compile`` off / on (GPU);
* the device's peaks (datasheet, where known, and measured), for the roofline.

Every record names its kind ("resolution", "setting", "peak") and carries
``measure_latency``'s settings and spread.  A run that does not fit in memory is recorded
with ``"oom": True`` rather than crashing the suite.
"""

from __future__ import annotations

from typing import Any, Dict, Iterable, List, Optional

import torch

from hirilib.measure import blank_model, count_activations, count_flops, count_params
from hirilib.measure import measure_latency
from hirilib.measure.roofline import datasheet_peak, measure_peaks
from hirilib.measure.timing import device_name
from hirilib.registry import create_model

from . import MAIN_VARIANTS, suite

RESOLUTIONS = (224, 384, 448, 512, 768, 1024)


def _fits(model, res: int) -> bool:
    return res % model.size_multiple == 0 and res >= model.min_input_size


def _precisions(device: torch.device) -> List[str]:
    if device.type != "cuda":
        return ["fp32"]
    out = ["fp32", "fp16"]
    if torch.cuda.is_bf16_supported(including_emulation=False):
        out.append("bf16")
    return out


def _time(model, shape, device, **kw) -> Dict[str, Any]:
    try:
        return measure_latency(model, shape, device=device, **kw)
    except torch.cuda.OutOfMemoryError:
        return {"oom": True, "batch_size": shape[0], "input_size": list(shape), **kw}
    finally:
        if device.type == "cuda":
            torch.cuda.empty_cache()


def variants(families: Optional[Iterable[str]] = None, quick: bool = False) -> List[str]:
    """The variants the suite measures: every family's main ones (the first in quick mode)."""
    fams = list(families) if families else sorted(MAIN_VARIANTS)
    unknown = sorted(set(fams) - set(MAIN_VARIANTS))
    if unknown:
        raise ValueError(f"unknown family {unknown[0]!r}; the families are "
                         f"{', '.join(sorted(MAIN_VARIANTS))}")
    return [n for f in fams for n in (MAIN_VARIANTS[f][:1] if quick else MAIN_VARIANTS[f])]


@suite("models")
def bench_models(device: str | torch.device = "cpu", quick: bool = False,
                 families: Optional[Iterable[str]] = None) -> List[Dict[str, Any]]:
    """Measure every family's main variants; ``families`` restricts it (e.g. ["pvt_v2"]).

    Quick mode (CPU, CI): the first variant of each family at 64 and 128 px, few runs.
    On a CPU in full mode, GFLOPs and activations are counted at every resolution but
    times are taken at 224 and 448 only (batch 1 and 8), which a laptop finishes."""
    from tqdm.auto import tqdm

    device = torch.device(device)
    names = variants(families, quick)
    resolutions = (64, 128) if quick else RESOLUTIONS
    warmup, runs = (1, 2) if quick else (10, 30)
    big_batch = 4 if quick else 64          # at 224; scaled by (224 / res)^2, at least 1
    setting_res = (64,) if quick else (224, 448)
    timed = set(resolutions)
    if device.type == "cpu" and not quick:
        timed, big_batch, warmup, runs = {224, 448}, 8, 2, 5
    records: List[Dict[str, Any]] = []

    ds = {p: datasheet_peak(device_name(device), p) for p in _precisions(device)}
    for p in _precisions(device):
        measured = measure_peaks(device, p, size=512 if quick else 0, runs=2 if quick else 5)
        records.append({"kind": "peak", "dtype": p, "measured": measured, "datasheet": ds[p]})

    for name in tqdm(names, desc="models", leave=False):
        model = create_model(name).eval()
        blank = blank_model(name)  # zero weights: for counting only
        params = count_params(model)
        gflops: Dict[int, float] = {}
        for res in resolutions:
            if not _fits(model, res):
                continue
            rec = {"kind": "resolution", "model": name, "resolution": res, "params": params}
            rec["gflops"] = gflops[res] = count_flops(blank, (1, 3, res, res)) / 1e9
            rec["activations_m"] = count_activations(blank, (1, 3, res, res)) / 1e6
            if res in timed:
                rec["latency"] = _time(model, (1, 3, res, res), device, warmup=warmup,
                                       runs=runs)
                batch = max(1, int(big_batch * (224 / res) ** 2)) if not quick else big_batch
                rec["throughput"] = _time(model, (batch, 3, res, res), device, warmup=warmup,
                                          runs=runs)
            records.append(rec)
        for res in setting_res:
            if not _fits(model, res):
                continue
            batch = big_batch if quick else max(1, int(big_batch * (224 / res) ** 2))
            for p in _precisions(device):
                for cl in (False, True):
                    for comp in ((False, True) if device.type == "cuda" and not quick
                                 else (False,)):
                        r = _time(model, (batch, 3, res, res), device, dtype=p,
                                  channels_last=cl, compile=comp, warmup=warmup, runs=runs)
                        if res not in gflops:
                            gflops[res] = count_flops(blank, (1, 3, res, res)) / 1e9
                        records.append({"kind": "setting", "model": name, "resolution": res,
                                        "gflops": gflops[res], **r})
        del model, blank
        if device.type == "cuda":
            torch.cuda.empty_cache()
    return records
