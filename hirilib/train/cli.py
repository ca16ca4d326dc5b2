"""The command line of ``python -m hirilib train``: one flag per
:class:`~hirilib.train.config.TrainConfig` field, its type and range read from the
field's metadata (so the command line and :func:`~hirilib.train.config.validate` check
the same table), and :func:`run_cli`, which trains and says in one line how a run ended.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import shlex
import sys
from pathlib import Path
from typing import Any, Dict, List, Optional

from .config import (
    LOG_NAME,
    RECIPE_NOTES,
    RECIPES,
    ConfigError,
    TrainConfig,
    field_kind,
    flag,
    range_problem,
    resolve_config,
)
from .dist import world_from_env


def _typed(f: dataclasses.Field):
    """An argparse type for a field: parses its kind and checks its range (from the
    field's metadata), with a clear message."""
    kind, meta = field_kind(f), f.metadata
    if kind is dict:
        return _json_dict
    if kind is str:
        return str

    def parse(text: str):
        try:
            v = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(
                f"must be {'an integer' if kind is int else 'a number'}, got {text!r}"
            ) from None
        problem = range_problem(meta, v)
        if problem:
            raise argparse.ArgumentTypeError(f"{problem}, got {text!r}")
        return v

    return parse


def _json_dict(text: str) -> dict:
    try:
        v = json.loads(text)
    except json.JSONDecodeError as e:
        raise argparse.ArgumentTypeError(
            f"must be a JSON object, e.g. '{{\"depths\": [1, 1, 2, 1]}}' ({e.msg})"
        ) from None
    if not isinstance(v, dict):
        raise argparse.ArgumentTypeError(f"must be a JSON object, got {text!r}")
    return v


def recipes_help() -> str:
    """The named recipes in words, for ``--recipe``'s help."""
    return "; ".join(
        f"{name}: {RECIPE_NOTES.get(name, 'see hirilib.train.RECIPES')}"
        for name in sorted(RECIPES)
    )


def add_train_arguments(parser: argparse.ArgumentParser) -> None:
    """One flag per :class:`TrainConfig` field (``--batch-size`` for ``batch_size``;
    booleans as ``--ema/--no-ema``).  Flags not given stay unset, so that a recipe's
    value is only replaced by a flag the user wrote.  Abbreviated flags are refused
    (``--epoch`` is not ``--epochs``)."""
    parser.allow_abbrev = False
    groups = {
        "recipe": parser.add_argument_group("recipe (what is trained)"),
        "run": parser.add_argument_group("run (where and how)"),
    }
    fields = sorted(dataclasses.fields(TrainConfig), key=lambda f: f.name != "recipe")
    for f in fields:
        meta, g = f.metadata, groups[f.metadata["kind"]]
        default = (
            f.default if f.default is not dataclasses.MISSING else f.default_factory()
        )
        help = (
            meta["help"] if default is None else f"{meta['help']} [default: {default}]"
        )
        if f.name == "recipe":
            g.add_argument(
                flag(f.name),
                default=argparse.SUPPRESS,
                choices=sorted(RECIPES),
                help="start from a named recipe (flags after it change single "
                f"fields): {recipes_help()}",
            )
        elif field_kind(f) is bool:
            g.add_argument(
                flag(f.name),
                action=argparse.BooleanOptionalAction,
                default=argparse.SUPPRESS,
                help=help,
            )
        else:
            g.add_argument(
                flag(f.name),
                type=_typed(f),
                default=argparse.SUPPRESS,
                choices=meta.get("choices"),
                help=help,
                metavar=f.name.upper() if meta.get("choices") is None else None,
            )


def unknown_flag_message(extra: List[str]) -> str:
    """The one-line error for command-line words ``train`` does not know: the first of
    them, and every setting (flag) that exists."""
    flags = sorted(flag(f.name) for f in dataclasses.fields(TrainConfig))
    word = next((w for w in extra if w.startswith("-")), extra[0])
    what = "setting" if word.startswith("-") else "argument"
    return (
        f"python -m hirilib train: unknown {what} {word!r}; the settings are "
        f"{', '.join(flags)} (see python -m hirilib train --help)"
    )


def config_from_args(args: argparse.Namespace) -> TrainConfig:
    """The config the parsed flags describe (recipe first, then the flags given)."""
    names = {f.name for f in dataclasses.fields(TrainConfig)}
    given = {k: v for k, v in vars(args).items() if k in names and k != "recipe"}
    recipe = getattr(args, "recipe", None)
    if given.get("resume") and recipe is None and "model" not in given:
        # ``--resume --out RUN`` alone: the run's own settings, from its log
        previous = _settings_of_run(Path(given.get("out") or "."))
        if previous is not None:
            recipe = previous.pop("recipe", None)
            previous.update(given)
            given = previous
    return resolve_config(recipe, **given)


#: Settings of how (not what) a run trains, which a resume takes from its own flags.
_PER_INVOCATION = ("resume", "stop_after_steps", "out", "progress", "device", "workers")


def _settings_of_run(out: Path) -> Optional[Dict[str, Any]]:
    """The settings a run in ``out`` started with (its log's first record), less those
    that belong to one invocation; None when there is no readable log."""
    path = out / LOG_NAME
    if not path.is_file():
        return None
    try:
        with open(path) as f:
            first = json.loads(f.readline())
        config = dict(first["config"])
    except (ValueError, KeyError, TypeError, UnicodeDecodeError):
        raise ConfigError(
            f"--resume: the first line of {path} is not the run's start record (the "
            "log is damaged), so its settings are unknown; give the run's --model or "
            "--recipe and flags with --resume to continue from its checkpoint"
        ) from None
    names = {f.name for f in dataclasses.fields(TrainConfig)}
    return {k: v for k, v in config.items() if k in names and k not in _PER_INVOCATION}


def _summary_line(cfg: TrainConfig, result) -> str:
    m = result.metrics
    if not m:
        return f"{cfg.model}: log {result.log}, checkpoint {result.checkpoint}"
    ema = f", EMA {m['ema_val_top1']:.2f}%" if "ema_val_top1" in m else ""
    return (
        f"{cfg.model}: val top-1 {m['val_top1']:.2f}%{ema} after {m['epoch']} "
        f"epochs; log {result.log}, checkpoint {result.checkpoint}"
    )


def run_cli(args: argparse.Namespace) -> int:
    """``python -m hirilib train ...``: the config from the flags, checked, trained.
    Ctrl-C or SIGTERM end in one line that says what was kept and how to continue."""
    from .loop import train
    from .setup import Interrupted

    cfg = config_from_args(args)
    argv = getattr(args, "argv", None)
    command = None
    if argv is not None:
        prefix = (
            "torchrun ... -m hirilib " if world_from_env() > 1 else "python -m hirilib "
        )
        command = prefix + " ".join(shlex.quote(a) for a in argv)
    main = int(os.environ.get("RANK", "0")) == 0
    try:
        result = train(cfg, command)
    except Interrupted as e:
        if main:
            print(str(e), file=sys.stderr)
        return e.code
    if main:
        if result.finished_before:
            print(f"the run in {result.out} is already finished; nothing to train")
        print(_summary_line(cfg, result))
    if world_from_env() > 1:
        import torch.distributed as tdist

        if tdist.is_initialized():
            tdist.destroy_process_group()
    return 0
