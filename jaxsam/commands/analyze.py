"""``jaxsam analyze RUN...``: memorization and mechanism statistics of one or more runs.

The work is :func:`jaxsam.pipeline.analyze.analyze_runs`; this module parses and prints.
Writes ``analysis.json`` (run name -> the :func:`jaxsam.analysis.analyze_run` dict) and PNG plots
under ``plots/``: ``memorization_hist.png`` (runs overlaid, e.g. SAM vs SGD),
``out_variance.png``, ``subgroups.png`` and, when the runs hold test logits,
``entropy_buckets.png``. Everything goes to ``--out DIR`` when given, else into the first run
directory. Needs only the run directories (masks, logits, labels, optional test logits).
Per-subgroup attack TPR is reported when the loaded run carries ``[M, N]`` attack scores
(a ``.scores`` array, or a dict of them where ``lira_online`` is preferred); else it is null.

Subgroups (typical / atypical) are defined once, from the memorization averaged over all runs
that share the same pool, so that SAM and SGD are compared on the same examples.

Failed (excluded) models, listed in a run's ``run.json`` ``failed_models``, are dropped before
anything is computed, exactly as ``jaxsam score`` drops them: they are in no statistic.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from jaxsam import store
from jaxsam.cli_options import add_no_verify_option


def add_parser(subparsers) -> None:
    """Adds the ``analyze`` sub-command to an argparse ``subparsers`` object."""
    p = subparsers.add_parser(
        "analyze",
        help="memorization, OUT-variance and subgroup analyses of run directories",
        description=__doc__.split("\n\n")[0],
    )
    p.add_argument("runs", nargs="+", metavar="RUN", help="run directories (e.g. sgd/ sam/)")
    p.add_argument(
        "--out",
        default=None,
        metavar="DIR",
        help="where analysis.json and plots/ go (default: the first run directory)",
    )
    p.add_argument(
        "--typical-quantile",
        type=float,
        default=0.5,
        help="examples below this memorization quantile count as typical",
    )
    p.add_argument(
        "--atypical-quantile",
        type=float,
        default=0.9,
        help="examples above this memorization quantile count as atypical",
    )
    p.add_argument(
        "--min-influence", type=float, default=0.0, help="entropy ignores influences <= this"
    )
    add_no_verify_option(p)
    p.set_defaults(func=run)


def _print_table(result: dict) -> None:
    names = [k for k in result if not k.startswith("_")]
    rows = [
        ("mean memorization", lambda s: s["memorization"]["mean"]),
        ("median OUT variance", lambda s: s["out_variance"]["median"]),
        ("OUT acc (typical)", lambda s: s["subgroups"]["typical"]["accuracy"]["out"]),
        ("OUT acc (atypical)", lambda s: s["subgroups"]["atypical"]["accuracy"]["out"]),
        ("held-out acc", lambda s: s["heldout_accuracy"]),
    ]
    print(f"{'':26s}" + "".join(f"{n:>14s}" for n in names))
    for label, get in rows:
        vals = [get(result[n]) for n in names]
        print(f"{label:26s}" + "".join(f"{'-' if v is None else f'{v:.4f}':>14s}" for v in vals))


def run(args: argparse.Namespace) -> int:
    """Entry point: loads ``args.runs`` with ``jaxsam.store.load_run`` and analyses them."""
    out = Path(args.out) if args.out else Path(args.runs[0])
    with store.run_lock(out, "analyze", create=bool(args.out)):  # one writer of out at a time
        runs = [store.load_run(Path(p), verify=not args.no_verify) for p in args.runs]
        return _analyze(runs, out, args)


def _analyze(runs: list, out: Path, args: argparse.Namespace) -> int:
    from jaxsam.pipeline.analyze import analyze_runs

    result = analyze_runs(
        runs,
        out,
        typical_quantile=args.typical_quantile,
        atypical_quantile=args.atypical_quantile,
        min_influence=args.min_influence,
    )
    _print_table(result)
    print(f"wrote {out / 'analysis.json'} and {', '.join(result['_plots'])}")
    return 0
