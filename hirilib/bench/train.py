"""Chapter 8's suite: images per second of the data side alone, of the whole training
step (the real loop of ``hirilib.train`` on synthetic images), and of each recipe
exactly as it trains (its model, batch, resolutions, precision and compilation), with
the fraction of step time spent waiting for data, the compile time apart, and the
step's rate against the device's measured matmul rate
(:func:`hirilib.measure.roofline.measure_peaks`, the roofline's peak)."""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any, Dict, List, Optional

import torch

from . import suite

#: The models of the step benchmark: (registered name, overrides), full and quick.
STEP_MODELS = {
    # hiri_vit_nano: the model of chapter 8's records (its step rate on a GPU says how
    # long imagenette_20ep takes there)
    "full": [("pvt_v2_b0", {}), ("convnext_tiny", {}), ("hiri_vit_nano", {})],
    "quick": [("pvt_v2_b0", {"depths": [1, 1, 1, 1]})],
}


def data_throughput(
    res: int, batch_size: int, steps: int, device: torch.device, n: int = 4096
) -> Dict[str, Any]:
    """The data side alone (index, crop, flip, Mixup/CutMix, normalise) on ``device``,
    the images held there: ``hirilib.data.benchmark`` on random pixels."""
    from hirilib.data import benchmark, synthetic_data

    data = synthetic_data(res, train_subset=max(n, 2 * batch_size), val_subset=8)
    return {"kind": "data", **benchmark(data, res, batch_size, steps, device)}


def step_throughput(
    model: str,
    model_kwargs: Dict[str, Any],
    res: int,
    batch_size: int,
    steps: int,
    device: torch.device,
    distill: bool = False,
    amp: str = "auto",
    compile: bool = False,
    channels_last: Optional[bool] = None,
) -> Dict[str, Any]:
    """``steps`` steps of the real training loop on synthetic images; the log's
    medians (the first logged window, warm-up and compilation, left out)."""
    from hirilib.train import log_summary, read_log, resolve_config, train

    with tempfile.TemporaryDirectory() as tmp:
        cfg = resolve_config(
            model=model,
            model_kwargs=model_kwargs,
            data="synthetic",
            res=res,
            train_subset=batch_size * steps,
            val_subset=batch_size,
            epochs=1,
            batch_size=batch_size,
            device=str(device),
            out=str(Path(tmp) / "run"),
            progress=False,
            log_every=max(1, steps // 6),
            distill=distill,
            amp=amp,
            compile=compile,
            channels_last=channels_last,
        )
        result = train(cfg, command="python -m hirilib bench train")
        summary = log_summary(read_log(result.log))
    keep = (
        "model",
        "res",
        "batch_size",
        "distill",
        "amp",
        "params",
        "gmacs_per_image",
        "img_s",
        "data_wait",
        "train_macs_per_image",
        "achieved_macs_per_s",
        "peak_macs_per_s",
        "fraction_of_peak",
        "bound_img_s",
        "device",
    )
    return {
        "kind": "step",
        "model_kwargs": model_kwargs,
        "steps": steps,
        "compile": compile,
        **{k: summary.get(k) for k in keep},
    }


def recipe_throughput(
    recipe: str, steps: int, device: torch.device, **overrides
) -> Dict[str, Any]:
    """A named recipe as it trains, on synthetic images: ``steps`` steps at each of its
    training resolutions (progressive resizing's too), the validation at its size, the
    compilation of a GPU run; images/s and data wait per resolution (the first step
    at each, which compiles, timed apart), and the fraction of the device's peak."""
    from hirilib.train import RECIPES, log_summary, read_log, resolve_config, train

    r = RECIPES[recipe]
    two = bool(r.get("final_res")) and r.get("final_epochs", 0) > 0
    with tempfile.TemporaryDirectory() as tmp:
        cfg = resolve_config(
            recipe,
            data="synthetic",
            train_subset=r["batch_size"] * steps,
            val_subset=r["batch_size"],
            epochs=2 if two else 1,
            final_epochs=1 if two else 0,
            device=str(device),
            out=str(Path(tmp) / "run"),
            progress=False,
            log_every=max(1, steps // 4),
            save_every_epochs=0,
            **overrides,
        )
        result = train(cfg, command=f"python -m hirilib bench train ({recipe})")
        records = read_log(result.log)
    summary = log_summary(records)
    by_res: Dict[str, Dict[str, float]] = {}
    for rec in records:
        if rec["type"] == "step":
            by_res.setdefault(str(rec["res"]), {"img_s": [], "data_wait": []})
            by_res[str(rec["res"])]["img_s"].append(rec["img_s"])
            by_res[str(rec["res"])]["data_wait"].append(rec["data_wait"])
    import statistics

    epochs = [rec for rec in records if rec["type"] == "epoch"]
    return {
        "kind": "recipe",
        "recipe": recipe,
        "steps_per_resolution": steps,
        "compile": cfg.compile,
        "img_s_by_res": {
            k: statistics.median(v["img_s"][1:] or v["img_s"])
            for k, v in by_res.items()
        },
        "data_wait_by_res": {
            k: statistics.median(v["data_wait"][1:] or v["data_wait"])
            for k, v in by_res.items()
        },
        "compile_seconds": sum(e.get("compile_seconds", 0.0) for e in epochs),
        **{
            k: summary.get(k)
            for k in (
                "model", "res", "val_res", "batch_size", "amp", "img_s", "data_wait",
                "fraction_of_peak", "peak_macs_per_s", "bound_img_s", "device",
            )
        },  # fmt: skip
    }


@suite("train")
def train_suite(device: torch.device, quick: bool) -> List[Dict[str, Any]]:
    res = 32 if quick else 128
    records = [
        data_throughput(res, b, 3 if quick else 50, device)
        for b in ([32] if quick else [128, 256])
    ]
    batch, steps = (16, 4) if quick else (128, 60)
    for name, kw in STEP_MODELS["quick" if quick else "full"]:
        for distill in (False, True):
            records.append(
                step_throughput(name, kw, res, batch, steps, device, distill)
            )
    if not quick:  # the records' recipes as they train (a CPU run would take hours)
        for recipe in ("imagenette_5ep",):
            records.append(recipe_throughput(recipe, 40, device))
    return records
