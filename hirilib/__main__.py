"""The command line of hirilib: list the models, summarise one, run a benchmark suite, train.

examples:
  python -m hirilib list 'pvt_v2*'
  python -m hirilib summary pvt_v2_b2 --resolution 224
  python -m hirilib bench attention
  python -m hirilib train --model pvt_v2_b0 --data imagenette --res 128 --epochs 5
      --batch-size 128 --out runs/pvt_v2_b0 [--distill] [--resume]

Every argument is checked before any work starts; a mistake prints one line on
stderr and exits with status 2 (no traceback). 'python -m hirilib COMMAND --help'
describes each command.
"""

from __future__ import annotations

import argparse
import functools
import os
import shlex
import sys
import tempfile
from pathlib import Path


class UsageError(ValueError):
    """A mistake in the command line: printed as one line, exit status 2."""


class _Parser(argparse.ArgumentParser):
    def error(self, message):  # one line, not the usage block
        raise UsageError(f"{self.prog}: error: {message} (see {self.prog} --help)")


def positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {text!r}")
    return value


def nonnegative_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be an integer >= 0, got {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be an integer >= 0, got {text!r}")
    return value


def check_writable(path: str | os.PathLike) -> Path:
    """``path`` if a file can be written there (its folder exists or can be created, and is
    writable; the path is not a folder), else a ``UsageError`` saying why."""
    path = Path(path)
    if path.is_dir():
        raise UsageError(f"--out {path} is a folder; give a file name such as {path / 'x.json'}")
    parent = path.parent
    while not parent.exists():
        parent = parent.parent
    if not parent.is_dir():
        raise UsageError(f"cannot write {path}: {parent} is a file, not a folder")
    try:  # the only reliable test (permissions, read-only or virtual file systems): try it
        with tempfile.TemporaryFile(dir=parent):
            pass
    except OSError as e:
        raise UsageError(f"cannot write {path}: {parent} is not writable ({e.strerror})") from None
    if path.exists() and not os.access(path, os.W_OK):
        raise UsageError(f"cannot write {path}: the file is read-only")
    return path


def _cmd_list(args) -> int:
    import hirilib

    for name in hirilib.list_models(args.pattern, pretrained=args.pretrained):
        print(name)
    return 0


def _cmd_summary(args) -> int:
    import torch

    import hirilib
    from hirilib.measure import count_flops, count_params
    from hirilib.registry import get_entry

    get_entry(args.model)
    with torch.device("meta"):
        meta = hirilib.create_model(args.model, num_classes=args.num_classes)
    if args.resolution is None:  # the resolution the model's paper uses it at
        args.resolution = getattr(meta, "default_resolution", 224)
    # the model's own input check, before building real weights
    meta.forward_features(torch.empty(1, meta.in_chans, args.resolution, args.resolution,
                                      device="meta"))
    model = hirilib.create_model(args.model, num_classes=args.num_classes)
    x = torch.zeros(1, model.in_chans, args.resolution, args.resolution)
    print(f"{args.model}: {count_params(model) / 1e6:.2f} M parameters, "
          f"{count_flops(model, x) / 1e9:.3f} GFLOPs (G multiply-accumulates) "
          f"at {args.resolution}x{args.resolution}")
    return 0


def _cmd_bench(args) -> int:
    from hirilib.bench import SUITES, run_suite
    from hirilib.measure import save_results
    from hirilib.measure.results import check_overwrite
    from hirilib.runtime import resolve_device

    if args.suite not in SUITES:
        raise UsageError(f"unknown suite {args.suite!r}; choose one of "
                         f"{', '.join(sorted(SUITES))}")
    device = resolve_device(args.device)
    from hirilib.measure.results import default_results_path

    out = check_writable(args.out or default_results_path(args.suite, device.type))
    check_overwrite(out, device.type, force=args.force)
    quick = True if args.quick else (False if args.full else None)
    options = {}
    if args.family:
        if args.suite != "models":
            raise UsageError("--family applies to the 'models' suite only")
        from hirilib.bench import MAIN_VARIANTS

        unknown = sorted(set(args.family) - set(MAIN_VARIANTS))
        if unknown:
            raise UsageError(f"unknown family {unknown[0]!r}; choose from "
                             f"{', '.join(sorted(MAIN_VARIANTS))}")
        options["families"] = args.family
    if args.suite == "vs-timm":
        from hirilib.bench.vs_timm import import_timm

        import_timm()  # before any work: say how to install it if it is missing
    records, settings = run_suite(args.suite, device=device, quick=quick, **options)
    command = "python -m hirilib " + " ".join(shlex.quote(a) for a in args.argv)
    path = save_results(out, records, settings=settings, command=command, device=device,
                        force=args.force)
    from hirilib.measure import device_name

    print(f"wrote {len(records)} records to {path} (measured on {device_name(device)})")
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(prog="python -m hirilib", description=__doc__, allow_abbrev=False,
                formatter_class=argparse.RawDescriptionHelpFormatter)
    # allow_abbrev=False everywhere: '--epoch' is an error, never silently '--epochs'
    sub = p.add_subparsers(dest="cmd", required=True,
                           parser_class=functools.partial(_Parser, allow_abbrev=False))
    s = sub.add_parser("list", help="list registered models")
    s.add_argument("pattern", nargs="?", default="*", help="a shell glob, e.g. 'pvt_v2*'")
    s.add_argument("--pretrained", action="store_true", help="only models with published weights")
    s.set_defaults(fn=_cmd_list)
    s = sub.add_parser("summary", help="parameters and GFLOPs of a model")
    s.add_argument("model")
    s.add_argument("--resolution", type=positive_int, default=None,
                   help="input side in pixels (default: the model's own, "
                        "e.g. 224 for most, 448 for the five-stage HIRI-ViTs)")
    s.add_argument("--num-classes", type=nonnegative_int, default=1000)
    s.set_defaults(fn=_cmd_summary)
    s = sub.add_parser("bench", help="run a benchmark suite and write a results file")
    s.add_argument("suite")
    s.add_argument("--out", help="results file (default hirilib/results/SUITE.json on a GPU, "
                                 "hirilib/results/cpu/SUITE.json on a CPU)")
    s.add_argument("--device", help="cpu, cuda or cuda:N (default: the GPU if there is one)")
    s.add_argument("--family", action="append",
                   help="with the 'models' suite: measure only this family (repeatable)")
    s.add_argument("--force", action="store_true",
                   help="let a CPU run replace a results file measured on a GPU")
    g = s.add_mutually_exclusive_group()
    g.add_argument("--quick", action="store_true", help="small sizes, few runs")
    g.add_argument("--full", action="store_true", help="full sizes (default on a GPU)")
    s.set_defaults(fn=_cmd_bench)
    s = sub.add_parser("train", help="train a model on an ImageNet subset (also under "
                       "torchrun)", description=_train_doc())
    _add_train_arguments(s)
    s.set_defaults(fn=_cmd_train)
    return p


def _train_doc() -> str:
    from hirilib import train

    return train.__doc__.split("\n\n")[0]


def _add_train_arguments(parser) -> None:
    from hirilib.train import add_train_arguments  # the flags live beside the loop

    add_train_arguments(parser)


def _cmd_train(args) -> int:
    from hirilib.train import run_cli

    return run_cli(args)


def main(argv=None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        parser = build_parser()
        args, extra = parser.parse_known_args(argv)
        if extra and args.cmd == "train":  # name what exists, in one line
            from hirilib.train import unknown_flag_message

            raise UsageError(unknown_flag_message(extra))
        if extra:
            parser.error(f"unrecognized arguments: {' '.join(extra)}")
        args.argv = argv
        return args.fn(args)
    except (ValueError, TypeError, OSError) as e:  # hirilib's errors say what works: one line
        msg = str(e).splitlines()[0] if str(e) else type(e).__name__
        print(msg if "error: " in msg else f"error: {msg}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
