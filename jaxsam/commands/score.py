"""``jaxsam score RUN``: membership attacks from the saved logits alone.

The work is :func:`jaxsam.pipeline.score.score_run`; this module parses and prints.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from jaxsam.cli_options import add_no_verify_option, command

# --equal-groups word -> the attacks' equal_groups value
EQUAL_GROUPS = {"auto": "auto", "on": True, "off": False}

HELP = "score membership from a run directory's saved logits"
DESCRIPTION = """\
Run every membership attack on RUN's saved logits (no dataset, no model code) and write
RUN/report.json, RUN/report.md, RUN/report.html, RUN/scores/, RUN/examples.parquet (one row per
pool example), RUN/by_class.csv and RUN/plots/."""


def add_parser(subparsers) -> None:
    p = command(subparsers, "score", HELP, DESCRIPTION, run=run)
    p.add_argument(
        "runs", nargs="+", type=Path, metavar="RUN", help="finished run directories to score"
    )
    p.add_argument(
        "--attacks",
        help="comma-separated attack names (default: all), e.g. lira_online,loss",
    )
    p.add_argument(
        "--bootstrap",
        type=int,
        default=200,
        help="bootstrap resamples for confidence intervals (0: none; at most 100000)",
    )
    p.add_argument(
        "--csv",
        action="store_true",
        help="also write RUN/examples.csv (the per-example table of examples.parquet as CSV)",
    )
    p.add_argument(
        "--equal-groups",
        choices=tuple(EQUAL_GROUPS),
        default="auto",
        help="reference groups of LiRA, RMIA and calibrated loss: auto (default: cut on exact "
        "k-of-M masks, leave-one-out on independent ones), on (cut to sizes that do not depend "
        "on the target's membership), off (leave-one-out); report.json records the rule",
    )
    add_no_verify_option(p)


def run(args: argparse.Namespace) -> int:
    from contextlib import ExitStack

    from jaxsam.store import load_run, run_lock

    attacks = [a.strip() for a in args.attacks.split(",")] if args.attacks else None
    with ExitStack() as locks:  # one writer per run directory
        for p in args.runs:
            locks.enter_context(run_lock(p, "score", create=False))
        runs = [load_run(p, verify=not args.no_verify) for p in args.runs]  # check all first
        eg = EQUAL_GROUPS[args.equal_groups]
        return _score_all(runs, attacks, args.bootstrap, args.csv, eg)


def _score_all(runs, attacks, bootstrap, csv=False, equal_groups="auto") -> int:
    from jaxsam.pipeline.score import score_run
    from jaxsam.report import heldout_accuracy, out_accuracy

    for r in runs:
        rep = score_run(r, attacks, bootstrap, write=True, csv=csv, equal_groups=equal_groups)
        attack = "lira_online" if "lira_online" in rep["attacks"] else next(iter(rep["attacks"]))
        lo = rep["attacks"][attack]
        held = heldout_accuracy(rep)
        excluded = f", excluded models {r.failed_models}" if r.failed_models else ""
        for name, why in rep.get("skipped_attacks", {}).items():
            print(f"{r.path}: {name} not scored: {why}")
        print(
            f"{r.path}: OUT (pool non-member) acc {out_accuracy(rep):.4f}, held-out acc "
            f"{'-' if held is None else f'{held:.4f}'}, {attack} AUC {lo['auc']:.4f}{excluded}; "
            f"wrote {r.path / 'report.json'}, {r.path / 'report.html'}, "
            f"{r.path / 'examples.parquet'}"
        )
    return 0
