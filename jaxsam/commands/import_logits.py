"""``jaxsam import-logits``: logits of models trained elsewhere -> a scorable run directory.

Two forms (docs/import.md)::

    jaxsam import-logits --keep K.npy --logits L.npy --labels Y.npy --out RUN
        [--test-logits TL.npy --test-labels TY.npy]
    jaxsam import-logits --lira-dir EXPDIR [--labels Y.npy] [--epoch E] --out RUN

The work is :mod:`jaxsam.pipeline.import_logits` (arrays) and
:mod:`jaxsam.pipeline.lira_layout` (the published LiRA code's experiment directories).
"""

from __future__ import annotations

import argparse
from pathlib import Path

from jaxsam import store
from jaxsam.cli_options import command

HELP = "turn logits of models trained elsewhere into a run directory that score reads"
DESCRIPTION = """\
Build a complete run directory from masks, logits and labels computed outside jaxsam (.npy
arrays, or the published LiRA code's experiment directories), so that `jaxsam score`, `compare`,
`analyze` and `status` work on it. Every array is checked before anything is written."""


def add_parser(subparsers) -> None:
    p = command(subparsers, "import-logits", HELP, DESCRIPTION, run=run)
    p.add_argument("--out", type=Path, required=True, metavar="RUN", help="run directory to create")
    p.add_argument("--keep", type=Path, metavar="KEEP.npy", help="bool [M, N] membership masks")
    p.add_argument(
        "--logits", type=Path, metavar="LOGITS.npy", help="float [M, N, A, C] or [M, N, C]"
    )
    p.add_argument(
        "--labels",
        type=Path,
        metavar="LABELS.npy",
        help="int [N] labels (with --lira-dir: default EXPDIR/y_train.npy, its first N)",
    )
    p.add_argument(
        "--test-logits", type=Path, metavar="T.npy", help="held-out logits [M, T, (A,) C]"
    )
    p.add_argument("--test-labels", type=Path, metavar="TY.npy", help="held-out labels int [T]")
    p.add_argument(
        "--lira-dir",
        type=Path,
        metavar="EXPDIR",
        help="the published LiRA code's log directory: one experiment-K_M/ per model with "
        "keep.npy and logits/*.npy (instead of --keep / --logits)",
    )
    p.add_argument(
        "--epoch",
        type=int,
        help="with --lira-dir: the checkpoint epoch whose logits to take (default: each "
        "model's latest)",
    )
    p.add_argument(
        "--skip-incomplete",
        action="store_true",
        help="with --lira-dir: leave out model directories that have no logits yet",
    )
    p.add_argument(
        "--query-names",
        help="comma-separated names of the A query views, the identity view first",
    )
    p.add_argument(
        "--min-models",
        type=int,
        default=2,
        help="every example must be IN at least this many models and OUT of at least this "
        "many (default 2: what LiRA's equal shadow groups need; 1 allows examples that LiRA "
        "cannot score)",
    )
    p.add_argument(
        "--drop-sparse",
        action="store_true",
        help="leave out the examples below --min-models instead of refusing the import",
    )
    p.add_argument(
        "--overwrite",
        action="store_true",
        help="replace the jaxsam run already in --out (never an unrelated directory)",
    )


def _check_form(args: argparse.Namespace) -> None:
    from jaxsam.errors import ConfigError

    if args.lira_dir is not None:
        clash = [f for f in ("keep", "logits", "test_logits", "test_labels") if getattr(args, f)]
        if clash:
            flags = ", ".join("--" + f.replace("_", "-") for f in clash)
            raise ConfigError(
                f"--lira-dir reads masks and logits from the experiment directories; drop {flags}"
            )
        return
    missing = [f for f in ("keep", "logits", "labels") if getattr(args, f) is None]
    if missing:
        flags = ", ".join("--" + f for f in missing)
        raise ConfigError(
            f"missing {flags}: pass --keep, --logits and --labels (.npy files), or --lira-dir "
            "EXPDIR for the published LiRA code's experiment directories"
        )
    for f in ("epoch", "skip_incomplete"):
        if getattr(args, f) not in (None, False):
            raise ConfigError(f"--{f.replace('_', '-')} applies to --lira-dir only; drop it")


def run(args: argparse.Namespace) -> int:
    from jaxsam.pipeline import import_logits as imp
    from jaxsam.pipeline import lira_layout

    _check_form(args)
    names = [s.strip() for s in args.query_names.split(",")] if args.query_names else None
    common = dict(query_names=names, min_models=args.min_models, drop_sparse=args.drop_sparse)
    if args.lira_dir is not None:
        store.check_run_dir(args.out, None, overwrite=args.overwrite)  # before reading M files
        im = lira_layout.read_lira_dir(
            args.lira_dir,
            args.labels,
            epoch=args.epoch,
            skip_incomplete=args.skip_incomplete,
            **common,
        )
        run_ = imp.import_run(args.out, im, overwrite=args.overwrite)
    else:
        run_ = imp.import_arrays(
            args.out,
            args.keep,
            args.logits,
            args.labels,
            args.test_logits,
            args.test_labels,
            overwrite=args.overwrite,
            **common,
        )
    m, n = run_.keep.shape
    prov = run_.info["provenance"]
    dropped = len(prov.get("dropped_examples", []))
    print(
        f"{run_.path}: imported {m} models x {n} examples x {len(run_.query_names)} queries "
        f"({prov['format']} from {prov['source']})"
        + (f", {dropped} sparse examples left out" if dropped else "")
        + f"; masks look {_design_words(run_.info.get('mask_design') or {})}"
        + f"; score it with `jaxsam score {run_.path}`"
    )
    return 0


def _design_words(found: dict) -> str:
    words = {
        "exact": "exact k-of-M (reference groups will be cut to equal sizes)",
        "bernoulli": "independent (Bernoulli; reference groups will be leave-one-out)",
        "dependent": "neither exact nor independent (reference groups will be cut)",
    }
    return words.get(found.get("design"), "unknown") + (
        f", dependence {found['dependence']:.2f}" if "dependence" in found else ""
    )
