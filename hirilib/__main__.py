"""Command line: ``python -m hirilib {list, summary, bench} ...``.

    python -m hirilib list 'pvt_v2*'
    python -m hirilib summary pvt_v2_b2 --resolution 224
    python -m hirilib bench attention --out book/results/attention.json
"""

from __future__ import annotations

import argparse
import shlex
import sys


def _cmd_list(args) -> int:
    import hirilib

    for name in hirilib.list_models(args.pattern):
        print(name)
    return 0


def _cmd_summary(args) -> int:
    import torch

    import hirilib
    from hirilib.profile import count_flops, count_params

    model = hirilib.create_model(args.model, num_classes=args.num_classes)
    x = torch.zeros(1, 3, args.resolution, args.resolution)
    print(f"{args.model}: {count_params(model) / 1e6:.2f} M parameters, "
          f"{count_flops(model, x) / 1e9:.3f} GFLOPs (G multiply-accumulates) "
          f"at {args.resolution}x{args.resolution}")
    return 0


def _cmd_bench(args) -> int:
    from hirilib.bench import run_suite
    from hirilib.profile import save_results

    quick = True if args.quick else (False if args.full else None)
    records, settings = run_suite(args.suite, device=args.device, quick=quick)
    command = "python -m hirilib " + " ".join(shlex.quote(a) for a in args.argv)
    out = args.out or f"book/results/{args.suite}.json"
    path = save_results(out, records, settings=settings, command=command)
    print(f"wrote {len(records)} records to {path} ({records[0]['device'] if records else '-'})")
    return 0


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m hirilib", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="cmd", required=True)
    s = sub.add_parser("list", help="list registered models")
    s.add_argument("pattern", nargs="?", default="*")
    s.set_defaults(fn=_cmd_list)
    s = sub.add_parser("summary", help="parameters and GFLOPs of a model")
    s.add_argument("model")
    s.add_argument("--resolution", type=int, default=224)
    s.add_argument("--num-classes", type=int, default=1000)
    s.set_defaults(fn=_cmd_summary)
    s = sub.add_parser("bench", help="run a benchmark suite and write a results file")
    s.add_argument("suite")
    s.add_argument("--out", help="results file (default book/results/SUITE.json)")
    s.add_argument("--device", help="cuda or cpu (default: the GPU if there is one)")
    g = s.add_mutually_exclusive_group()
    g.add_argument("--quick", action="store_true", help="small sizes, few runs")
    g.add_argument("--full", action="store_true", help="full sizes (default on a GPU)")
    s.set_defaults(fn=_cmd_bench)
    argv = list(sys.argv[1:] if argv is None else argv)
    args = p.parse_args(argv)
    args.argv = argv
    try:
        return args.fn(args)
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
