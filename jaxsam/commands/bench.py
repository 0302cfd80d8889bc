"""``jaxsam bench NAME ...``: the benchmarks behind every figure in the docs.

Each benchmark lives in ``jaxsam.bench.<name>`` (``import``: ``jaxsam.bench.imports``) and
exposes ``run(argv) -> int``; it prints its figures as ratios against a baseline measured in
the same run (``--json`` for rows).
"""

from __future__ import annotations

import argparse
import importlib

from jaxsam.cli_options import command

BENCHMARKS = {
    "train": "ensemble training throughput per model and strategy vs a sequential loop",
    "sam": "SAM-family step time vs SGD (and optax.contrib.sam), and extra memory",
    "score": "membership scoring at scale vs a per-target NumPy baseline",
    "data": "pool building and host-to-device throughput vs numpy.load",
    "faults": "fault injection: kills, damaged checkpoints, NaNs, full disk, bad inputs",
    "import": "import-logits peak memory against the logits file's size",
    "suite": "every benchmark behind the README figures in one run: DIR/bench.json, bench.md",
}

MODULES = {"import": "imports"}  # a module cannot be named after the keyword


HELP = "run a benchmark (train, sam, score, data, import, faults, suite); NAME --help for options"
DESCRIPTION = (
    "Benchmarks: "
    + "; ".join(f"{k}: {v}" for k, v in BENCHMARKS.items())
    + ". Options after NAME go to that benchmark (e.g. jaxsam bench train --json --quick)."
)


def add_parser(subparsers) -> None:
    p = command(subparsers, "bench", HELP, DESCRIPTION, run=run)
    p.add_argument(
        "name",
        choices=sorted(BENCHMARKS),
        metavar="NAME",
        help=f"one of {', '.join(sorted(BENCHMARKS))}",
    )
    p.add_argument("bench_args", nargs=argparse.REMAINDER, help="options for the benchmark")


def run(args: argparse.Namespace) -> int:
    from jaxsam.errors import ConfigError

    try:
        module = importlib.import_module(f"jaxsam.bench.{MODULES.get(args.name, args.name)}")
    except ModuleNotFoundError as e:
        raise ConfigError(f"benchmark {args.name!r} is not available in this install ({e})") from e
    return int(module.run(list(args.bench_args)) or 0)
