"""``jaxsam demo``: SGD vs SAM shadow models on the embedded digits, scored and compared."""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from jaxsam import config as config_lib
from jaxsam.cli_options import add_training_options, command
from jaxsam.errors import ConfigError, RunExistsError

DEMO_OPTIMIZERS = ("sgd", "sam")


HELP = "train SGD and SAM shadow models, score them, print the comparison"
DESCRIPTION = """\
Train M shadow models with SGD and with SAM (same masks, seeds, model, schedule, epochs), score
membership from their logits, print a side-by-side table and save a log-log ROC plot. Defaults
run on scikit-learn's digits with no download."""


def add_parser(subparsers) -> None:
    p = command(subparsers, "demo", HELP, DESCRIPTION, run=run)
    p.add_argument(
        "--out",
        type=Path,
        default=Path("runs/demo"),
        help="directory for one run directory per optimizer (default: runs/demo)",
    )
    p.add_argument("--dataset", default="digits", help="dataset name (default: digits)")
    p.add_argument("--models", type=int, default=32, help="shadow models per optimizer (M)")
    p.add_argument("--epochs", type=int, help="epochs (default: 30 on digits)")
    p.add_argument("--model", default="mlp", help="network (default: mlp)")
    p.add_argument(
        "--optimizers",
        default=",".join(DEMO_OPTIMIZERS),
        help="comma-separated optimizers to compare (default: sgd,sam)",
    )
    p.add_argument("--rho", type=float, default=0.05, help="SAM radius (default: 0.05)")
    p.add_argument("--pkeep", type=float, default=0.5, help="fraction of models per example")
    p.add_argument(
        "--pool-size",
        type=int,
        help="pool examples (default: all of digits; 10000 for other datasets)",
    )
    p.add_argument("--seed", type=int, default=0, help="seed of the data split, masks and training")
    p.add_argument("--data-dir", help="tfds data directory")
    add_training_options(p, "retrain runs that already exist")


def demo_config(args: argparse.Namespace, optimizer: str) -> config_lib.Config:
    """The config of one demo arm; arms differ only in ``optim.name``."""
    embedded = args.dataset == "digits"
    pool_size = args.pool_size if args.pool_size is not None else (None if embedded else 10000)
    overrides = {
        "data.dataset": args.dataset,
        "data.pool_size": pool_size,
        "data.test_size": None if embedded else 2000,
        "data.data_dir": args.data_dir,
        "data.seed": args.seed,
        "masks.models": args.models,
        "masks.pkeep": args.pkeep,
        "masks.seed": args.seed,
        "model.name": args.model,
        "train.epochs": args.epochs if args.epochs is not None else (30 if embedded else 5),
        "train.seed": args.seed,
        "train.progress": not args.no_progress,
        "optim.name": optimizer,
        "optim.rho": args.rho,
    }
    return config_lib.replace(config_lib.Config(), **overrides)


def run(args: argparse.Namespace) -> int:
    from jaxsam import report
    from jaxsam.pipeline.compare import plot_comparison
    from jaxsam.pipeline.score import score_run
    from jaxsam.pipeline.study import train_and_export
    from jaxsam.store import load_run

    optimizers = [o.strip() for o in args.optimizers.split(",") if o.strip()]
    if len(optimizers) < 1:
        raise ConfigError("--optimizers is empty; name at least one, e.g. sgd,sam")
    configs = {o: demo_config(args, o) for o in optimizers}  # validate all before training
    t0 = time.perf_counter()
    named = []
    for opt, cfg in configs.items():
        out = args.out / opt
        try:
            run = train_and_export(cfg, out, overwrite=args.overwrite, desc=f"{opt} x{args.models}")
        except RunExistsError as e:
            if not e.finished:
                raise
            print(f"{out}: already trained with this config; rescoring (--overwrite retrains)")
            run = load_run(out)
        rep = score_run(run, write=True)
        named.append((opt, rep, run))
    print()
    print(report.compare_table([(n, rep) for n, rep, _ in named]))
    plot_path = args.out / "roc_compare.png"
    plot_comparison(named, plot_path)
    print(f"\nruns: {', '.join(str(r.path) for _, _, r in named)}")
    print(f"ROC plot: {plot_path}")
    print(f"total time: {time.perf_counter() - t0:.1f} s")
    return 0
