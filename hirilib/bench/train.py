"""Chapter 8's suite: images per second of the data side alone, and of the whole
training step (the real loop of ``hirilib.train`` on synthetic images), with the
fraction of step time spent waiting for data and the step's rate against the device's
measured matmul rate (its FLOPs bound)."""

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
    return records
