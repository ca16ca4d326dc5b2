"""Reading training runs for the book: a run's log (``log.jsonl``, or a committed copy
under ``hirilib/results/``), its summary (throughput against the device's peak), the
mean and spread over seeds, and which recipe or ablation lever a run is (chapter 8's
tables)."""

from __future__ import annotations

import dataclasses
import json
import shlex
from pathlib import Path
from typing import Any, Dict, List, Optional


#: Settings added after some committed logs were written, with the value that gives the
#: behaviour of the code that wrote them (a log without the field ran that way).
_ADDED_SETTINGS = {"val_res": None, "final_res": None, "final_epochs": 0,
                   "schedule": "cosine", "eval_ema": "every"}


def read_log(path) -> List[Dict[str, Any]]:
    """The records of a run's log (``log.jsonl`` or a copy under hirilib/results/).  A
    start record written before a setting existed gets that setting's earlier
    behaviour (``_ADDED_SETTINGS``), and the names filled in under ``"filled"``."""
    path = Path(path)
    records = []
    for i, line in enumerate(path.read_text().splitlines(), 1):
        if not line.strip():
            continue
        try:
            r = json.loads(line)
        except json.JSONDecodeError as e:
            raise ValueError(
                f"{path}, line {i}, is not a JSON record ({e.msg}): the log is damaged"
            ) from None
        if not isinstance(r, dict):
            raise ValueError(
                f"{path}, line {i}, is not a JSON object: the log is damaged"
            )
        records.append(r)
    for r in records:
        if r.get("type") == "start" and "config" in r:
            missing = [k for k in _ADDED_SETTINGS if k not in r["config"]]
            for k in missing:
                r["config"][k] = _ADDED_SETTINGS[k]
            if missing:
                r["filled"] = missing
    return records


def find_run_logs(prefix: str = "train_") -> Dict[str, Path]:
    """The run logs committed under ``hirilib/results/`` (``<prefix>*.jsonl``, package
    data, so a pip-installed hirilib has them too), by name."""
    from hirilib.measure.results import RESULTS_DIR

    return {p.stem: p for p in sorted(RESULTS_DIR.glob(f"{prefix}*.jsonl"))}


def log_summary(records: List[Dict[str, Any]]) -> Dict[str, Any]:
    """What the book reports from a run's log: the device, the recipe, the per-epoch
    metrics, and the training step's throughput against its FLOPs bound.

    A training step costs about 3 forward passes (the backward pass is about twice the
    forward), plus one more for the teacher with EMA distillation; the bound is the
    device's measured matmul rate divided by that.  Step records after the first
    (which holds start-up and warm-up) give the median images/s and data-wait fraction.
    """
    import statistics

    start = next(r for r in records if r["type"] == "start")
    cfg = start["config"]
    steps = [r for r in records if r["type"] == "step"][1:] or [
        r for r in records if r["type"] == "step"
    ]
    # throughput at the main training resolution (progressive resizing's last epochs
    # run at another)
    steps = [r for r in steps if r.get("res", cfg["res"]) == cfg["res"]] or steps
    epochs = [r for r in records if r["type"] == "epoch"]
    gmacs = start["model"]["gmacs_per_image"]
    passes = 4 if cfg["distill"] else 3
    img_s = statistics.median(r["img_s"] for r in steps) if steps else None
    out = {
        # logs written before device_name's fix say '(1 threads)'
        "device": start["device"].replace("(1 threads)", "(1 thread)"),
        "device_type": start["device_type"],
        "torch": start["torch"],
        "date": start["date"],
        "command": start["command"],
        "model": cfg["model"],
        "recipe": cfg.get("recipe"),
        "config": cfg,
        "res": cfg["res"],
        "val_res": cfg.get("val_res") or cfg["res"],
        "batch_size": cfg["batch_size"],
        "epochs_planned": cfg["epochs"],
        "seed": cfg["seed"],
        "distill": cfg["distill"],
        "ema": cfg["ema"],
        "amp": start["amp"],
        "world_size": start["world_size"],
        "data": start.get("data"),
        "params": start["model"]["params"],
        "gmacs_per_image": gmacs,
        "gmacs_per_image_val": start["model"].get("gmacs_per_image_val", gmacs),
        "epochs": epochs,
        "final": epochs[-1] if epochs else None,
        "img_s": img_s,
        "data_wait": (
            statistics.median(r["data_wait"] for r in steps) if steps else None
        ),
        "peak_macs_per_s": start["peak_macs_per_s"],
        "wall_seconds": max((r.get("time", 0) for r in records), default=0),
        "train_seconds": sum(e.get("train_seconds", 0) for e in epochs),
        "eval_seconds": sum(e.get("eval_seconds", 0) for e in epochs),
    }
    if gmacs and img_s:
        train_macs = passes * gmacs * 1e9
        out.update(
            train_macs_per_image=train_macs,
            achieved_macs_per_s=img_s * train_macs,
            fraction_of_peak=img_s * train_macs / start["peak_macs_per_s"],
            bound_img_s=start["peak_macs_per_s"] / train_macs,
        )
    return out


def mean_std(values) -> tuple:
    """The mean and the sample standard deviation (n - 1; 0 for a single value) of a
    list of numbers: how the book reports a metric over seeds, never the best seed.

    >>> mean_std([80.0, 82.0, 84.0])
    (82.0, 2.0)
    """
    import statistics

    values = [float(v) for v in values]
    if not values:
        raise ValueError("mean_std needs at least one value")
    sd = statistics.stdev(values) if len(values) > 1 else 0.0
    return statistics.fmean(values), sd


def recipe_command(recipe: str, seed: int = 0, out: Optional[str] = None,
                   **overrides) -> str:
    """The command line that runs a named recipe with a seed and overrides (how the
    book prints the runs it owes).

    >>> print(recipe_command("imagenette_5ep", 1, distill=False))
    python -m hirilib train --recipe imagenette_5ep --seed 1 --no-distill
    """
    from hirilib.train.config import resolve_config

    resolve_config(recipe, **overrides)  # unknown fields: the usual error
    words = "python -m hirilib train --recipe".split() + [recipe, "--seed", str(seed)]
    for k, v in overrides.items():
        flag = "--" + k.replace("_", "-")
        if isinstance(v, bool):
            words.append(flag if v else "--no-" + k.replace("_", "-"))
        else:
            words += [flag, json.dumps(v) if isinstance(v, (dict, list)) else str(v)]
    if out:
        words += ["--out", out]
    return " ".join(shlex.quote(w) for w in words)


def recipe_changes(config: Dict[str, Any], recipe: str) -> Dict[str, tuple]:
    """What a run's logged ``config`` changed from the named recipe: ``{field: (the
    recipe's value, the run's)}`` over the fields that define what is trained (the
    seed, the data's location and the speed settings excluded).  Empty: the run *is*
    the recipe; one entry: a one-lever ablation."""
    from hirilib.train.config import _NOT_THE_RECIPE, resolve_config

    base = resolve_config(recipe)
    base = dataclasses.replace(base, val_res=base.val_res or base.res)  # as validated
    out = {}
    for k, v in base.recipe_fields().items():
        if k in _NOT_THE_RECIPE or k not in config:
            continue
        if config[k] != v:
            out[k] = (v, config[k])
    if config.get("model_kwargs") and "model_kwargs" in out:
        del out["model_kwargs"]  # one entry per changed constructor argument
        for k, v in config["model_kwargs"].items():
            out[f"model_kwargs.{k}"] = (None, v)
    return out


def ablation_lever(config: Dict[str, Any], recipe: str = "imagenette_5ep") -> str:
    """Which row of :data:`IMAGENETTE_ABLATION` a run's logged ``config`` is: ``""``
    for the recipe itself, the lever's name for a one-lever run; a ``ConfigError`` for
    a run that is neither."""
    from hirilib.train.config import IMAGENETTE_ABLATION, ConfigError, resolve_config

    changes = recipe_changes(config, recipe)
    if not changes:
        return ""
    for lever, overrides in IMAGENETTE_ABLATION.items():
        expected = recipe_changes(resolve_config(recipe, **overrides).as_dict(), recipe)
        if changes == expected:
            return lever
    raise ConfigError(
        f"a run of {recipe} that changes {', '.join(sorted(changes))} is not one of "
        f"the ablation's levers ({'; '.join(IMAGENETTE_ABLATION)})"
    )
