"""The Imagenette records (chapter 8, "Chasing the leaderboard"): the named recipes
resolve and take overrides, a wrong recipe or setting is one line that lists what
exists, each ablation changes one lever, the one-cycle schedule is its equation, the
5-epoch recipe shrunk to a tiny set the test makes lowers the loss, and the committed
logs hold what the chapter reads (the whole validation split at 128 px)."""

from __future__ import annotations

import math

import pytest
import torch

import hirilib
from conftest import ROOT
from hirilib import train as T
from hirilib.__main__ import main

RECORDS = ("imagenette_5ep", "imagenette_20ep")


# --------------------------------------------------------------------------- the model


@pytest.mark.parametrize("res", [96, 128])
def test_hiri_vit_nano_costs_what_its_closed_form_says(res):
    """The records' model, counted two ways: fvcore's trace and the closed forms of
    hirilib.analytic.hiri_vit (every part: stem, downsamplings, blocks, head)."""
    from hirilib.analytic.hiri_vit import hiri_vit_macs, hiri_vit_params
    from hirilib.measure import count_flops, count_params
    from hirilib.measure.flops import blank_model
    from hirilib.models.hiri_vit import HIRI_VIT_NANO

    model = blank_model("hiri_vit_nano", num_classes=10)
    assert count_flops(model, (1, 3, res, res)) == hiri_vit_macs(
        HIRI_VIT_NANO, res, num_classes=10
    )
    assert count_params(model) == hiri_vit_params(HIRI_VIT_NANO, num_classes=10)
    assert model.default_resolution == 128 and len(model.stages) == 4
    assert [b for b in model.blocks] == ["ffn", "ffn", "transformer", "transformer"]


# ------------------------------------------------------------------------- the recipes


@pytest.mark.parametrize("name", sorted(T.RECIPES))
def test_every_recipe_resolves_and_validates(name, parquet_set, tmp_path):
    """Every field a recipe sets exists, and the resolved recipe passes the checks a
    run makes before any work (the model builds, takes both resolutions)."""
    fields = {f.name for f in T.dataclasses.fields(T.TrainConfig)}
    assert set(T.RECIPES[name]) <= fields
    cfg = T.resolve_config(name, data=str(parquet_set), out=str(tmp_path / "run"))
    assert cfg.recipe == name
    checked = T.validate(cfg)
    assert checked.val_res == (cfg.val_res or cfg.res)
    assert checked.cache_res >= max(checked.res, checked.val_res)


def test_the_record_recipes_follow_the_rules():
    """Random weights, at most 128 px in training, the whole image at 128 px for
    validation; 5 and 20 epochs of the same recipe (the same model on CPU and GPU)."""
    five, twenty = (T.resolve_config(n) for n in RECORDS)
    for cfg in (five, twenty):
        assert cfg.model == "hiri_vit_nano" and cfg.val_res == 128
        assert cfg.res <= 128 and cfg.final_res <= 128
        assert cfg.train_subset is None and cfg.val_subset is None
        assert cfg.amp == "auto" and cfg.channels_last is None and cfg.compile is None
    assert (five.epochs, twenty.epochs) == (5, 20)
    diff = {
        k
        for k, v in five.recipe_fields().items()
        if twenty.recipe_fields()[k] != v
    }
    assert diff == {"epochs", "warmup_epochs", "final_epochs"}
    # the warm-up and the last epochs at 128 px are the same fractions of the run
    assert five.warmup_epochs / 5 == twenty.warmup_epochs / 20
    assert five.final_epochs / 5 == twenty.final_epochs / 20


def test_overrides_replace_single_fields_and_are_named_as_changes():
    cfg = T.resolve_config(
        "imagenette_5ep", seed=3, lr=1e-3, model_kwargs={"stem": "vit"}
    )
    assert cfg.seed == 3 and cfg.lr == 1e-3 and cfg.model == "hiri_vit_nano"
    assert cfg.epochs == 5 and cfg.recipe == "imagenette_5ep"
    changes = T.recipe_changes(cfg.as_dict(), "imagenette_5ep")
    assert changes == {"lr": (2e-3, 1e-3), "model_kwargs.stem": (None, "vit")}
    # the seed, the data's location and the speed settings are not the recipe
    cfg = T.resolve_config("imagenette_5ep", seed=2, data="elsewhere", compile=False)
    assert T.recipe_changes(cfg.as_dict(), "imagenette_5ep") == {}


@pytest.mark.parametrize("lever", sorted(T.IMAGENETTE_ABLATION))
def test_each_ablation_changes_one_lever(lever):
    overrides = T.IMAGENETTE_ABLATION[lever]
    cfg = T.resolve_config("imagenette_5ep", **overrides)
    assert len(T.recipe_changes(cfg.as_dict(), "imagenette_5ep")) == 1
    assert T.ablation_lever(cfg.as_dict()) == lever  # the chapter names the row so
    with torch.device("meta"):  # the model builds with the lever's arguments
        hirilib.create_model(cfg.model, num_classes=10, **cfg.model_kwargs)


def test_unknown_recipe_or_setting_is_one_line_listing_what_exists(capsys):
    with pytest.raises(T.ConfigError) as e:
        T.resolve_config("imagenette_10ep")
    msg = str(e.value)
    assert "unknown recipe 'imagenette_10ep'" in msg and "\n" not in msg
    assert all(name in msg for name in T.RECIPES)
    with pytest.raises(T.ConfigError) as e:
        T.resolve_config("imagenette_5ep", lr_max=1.0)
    msg = str(e.value)
    assert "unknown training setting 'lr_max'" in msg and "\n" not in msg
    assert all(f.name in msg for f in T.dataclasses.fields(T.TrainConfig))
    # the same from the command line: one line, exit status 2, what exists
    for argv, words in (
        (["--recipe", "imagenette_10ep"], ["invalid choice", *T.RECIPES]),
        (
            ["--recipe", "imagenette_5ep", "--lr-max", "3"],
            ["unknown setting '--lr-max'", "--lr,", "--warmup-epochs", "--val-res"],
        ),
    ):
        assert main(["train", *argv]) == 2
        err = capsys.readouterr().err
        assert len(err.strip().splitlines()) == 1, err
        assert all(w in err for w in words), err


# ------------------------------------------------------------------------ the schedule


def test_onecycle_rises_as_a_cosine_then_falls_as_the_cosine_schedule():
    total, warm, base, low = 100, 25, 2e-3, 1e-5
    lrs = [T.onecycle_lr(s, total, warm, base, low) for s in range(total)]
    a = base / 25  # fastai's div: the warm-up starts at base / 25
    assert lrs[0] == pytest.approx(a + (base - a) * (1 - math.cos(math.pi / warm)) / 2)
    assert lrs[warm - 1] == pytest.approx(base) and max(lrs) == pytest.approx(base)
    assert all(a < b for a, b in zip(lrs[: warm - 1], lrs[1:warm]))  # up
    assert all(a >= b for a, b in zip(lrs[warm:], lrs[warm + 1 :]))  # then down
    # after the warm-up it is the cosine schedule itself
    cosine = [T.lr_at(s, total, warm, base, low) for s in range(total)]
    assert lrs[warm:] == cosine[warm:]
    assert T.lr_for("cosine", 3, total, warm, base, low) == cosine[3]
    with pytest.raises(T.ConfigError, match="the schedules are cosine, onecycle"):
        T.lr_for("step", 0, total, warm, base, low)


def test_mean_std_is_over_seeds():
    assert T.mean_std([80.0, 82.0, 84.0]) == (82.0, 2.0)
    assert T.mean_std([81.5]) == (81.5, 0.0)
    with pytest.raises(ValueError):
        T.mean_std([])


# -------------------------------------------------------------------------- a tiny run


def test_the_5_epoch_recipe_on_a_tiny_set_lowers_the_loss(
    parquet_set, cache_dir, tmp_path
):
    """The recipe (one-cycle, EMA distillation, progressive resizing, validation at a
    higher resolution than most training) on 64 coloured squares at 32 and 64 px."""
    cfg = T.resolve_config(
        "imagenette_5ep",
        data=str(parquet_set),
        res=32,
        final_res=64,
        val_res=64,
        cache_res=64,
        epochs=6,
        batch_size=16,
        cache_dir=str(cache_dir),
        out=str(tmp_path / "run"),
        progress=False,
        log_every=1,
        device="cpu",
    )
    result = T.train(cfg, command="python -m hirilib train --recipe imagenette_5ep")
    log = T.read_log(result.log)
    start = log[0]
    assert start["config"]["recipe"] == "imagenette_5ep"
    assert start["config"]["val_res"] == 64 and start["config"]["cache_res"] == 64
    assert start["model"]["gmacs_per_image_val"] > start["model"]["gmacs_per_image"]
    records = [r for r in log if r["type"] == "step"]
    # progressive resizing: the last epoch (steps 21-24) at final_res
    assert [r["res"] for r in records] == [32] * 20 + [64] * 4
    steps = [r["loss"] for r in records]
    first, last = sum(steps[:4]) / 4, sum(steps[-4:]) / 4
    assert last < 0.8 * first, (first, last)
    s = T.log_summary(log)
    assert s["val_res"] == 64 and s["final"]["epoch"] == 6
    assert s["final"]["val_top1"] > 25  # better than chance (4 classes)
    # the recipe evaluates the EMA after the last epoch only
    assert ["ema_val_top1" in e for e in s["epochs"]] == [False] * 5 + [True]


# ------------------------------------------------------------------ the committed logs

LOGS = sorted((ROOT / "hirilib" / "results").glob("train_cpu_imagenette_*.jsonl"))


def test_the_committed_records_are_there():
    """The chapter needs at least three seeds of the 5-epoch recipe and one 20-epoch
    run; every ablation lever has a run with the recipe's first seed."""
    runs = [T.log_summary(T.read_log(p)) for p in LOGS]
    def plain(name):
        return [s for s in runs if s["recipe"] == name
                and not T.recipe_changes(s["config"], name)]
    assert len({s["seed"] for s in plain("imagenette_5ep")}) >= 3
    assert len(plain("imagenette_20ep")) >= 1
    first = min(s["seed"] for s in plain("imagenette_5ep"))
    levers = {T.ablation_lever(s["config"]) for s in runs
              if s["recipe"] == "imagenette_5ep" and s["seed"] == first}
    missing = set(T.IMAGENETTE_ABLATION) - levers
    assert not missing, f"no run of the levers {sorted(missing)} with seed {first}"


@pytest.mark.parametrize("path", LOGS, ids=lambda p: p.name)
def test_a_committed_record_log_has_what_the_chapter_reads(path):
    records = T.read_log(path)
    start = records[0]
    cfg = start["config"]
    assert cfg["recipe"] in RECORDS and start["device_type"] == "cpu"
    assert start["command"].startswith("python -m hirilib train ")
    assert f"--recipe {cfg['recipe']}" in start["command"]
    # the whole training and validation splits, validation at 128 px, no pretraining
    assert start["data"]["train"] == 9469 and start["data"]["validation"] == 3925
    assert cfg["val_res"] == 128 and cfg["res"] <= 128
    assert cfg["train_subset"] is None and cfg["val_subset"] is None
    assert len(T.recipe_changes(cfg, cfg["recipe"])) <= 1  # the recipe, or one lever
    s = T.log_summary(records)
    assert [e["epoch"] for e in s["epochs"]] == list(range(1, cfg["epochs"] + 1))
    for e in s["epochs"]:
        assert 0 <= e["val_top1"] <= e["val_top5"] <= 100 and e["train_seconds"] > 0
    assert 0 <= s["final"]["ema_val_top1"] <= 100  # the EMA, after the last epoch
    assert s["params"] > 0 and s["gmacs_per_image_val"] > 0 and s["img_s"] > 0
    assert s["wall_seconds"] > 0 and records[-1]["type"] == "end"


def test_a_run_that_is_neither_the_recipe_nor_a_lever_is_named_as_such():
    plain = T.resolve_config("imagenette_5ep", seed=3).as_dict()
    assert T.ablation_lever(plain) == ""
    two = T.resolve_config("imagenette_5ep", distill=False, label_smoothing=0.0)
    with pytest.raises(T.ConfigError, match="changes distill, label_smoothing"):
        T.ablation_lever(two.as_dict())
