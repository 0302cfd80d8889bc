"""``jaxsam score RUN``: membership attacks from the saved logits alone."""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np


def add_parser(subparsers) -> None:
    p = subparsers.add_parser(
        "score",
        help="score membership from a run directory's saved logits",
        description="Run every membership attack on RUN's saved logits (no dataset, no model "
        "code) and write RUN/report.json, RUN/report.md, RUN/scores/ and RUN/plots/.",
    )
    p.add_argument("runs", nargs="+", type=Path, metavar="RUN")
    p.add_argument(
        "--attacks",
        default=None,
        help="comma-separated attack names (default: all), e.g. lira_online,loss",
    )
    p.add_argument(
        "--bootstrap",
        type=int,
        default=200,
        help="bootstrap resamples for confidence intervals (0: none)",
    )
    p.set_defaults(func=run)


def run_summary(run) -> dict:
    """What the report says about the run it scores."""
    c = run.config
    return {
        "name": run.name,
        "path": str(run.path),
        "optimizer": c.optim.name,
        "rho": c.optim.rho if c.optim.name != "sgd" else None,
        "dataset": c.data.dataset,
        "model": c.model.name,
        "models": int(run.keep.shape[0]),
        "examples": int(run.keep.shape[1]),
        "queries": len(run.query_names),
        "query_names": run.query_names,
        "failed_models": run.failed_models,
        "heldout_accuracy": run.metrics.get("mean_heldout_accuracy"),
    }


def mechanism_stats(logits: np.ndarray, labels: np.ndarray, keep: np.ndarray) -> dict:
    """Mean Feldman-Zhang memorization and the median OUT variance of logit-scaled confidence."""
    from jaxsam.attacks.signals import logit_scaled_confidence
    from jaxsam.memorization import memorization, out_confidence_variance

    correct = logits[:, :, 0, :].argmax(-1) == labels[None]
    mem = memorization(correct, keep)
    signal = np.asarray(logit_scaled_confidence(logits, labels)).mean(-1)  # [M, N]
    var = out_confidence_variance(signal, keep)
    return {
        "memorization": {
            "mean": float(np.nanmean(mem)),
            "median": float(np.nanmedian(mem)),
            "fraction_above_0.5": float(np.nanmean(mem > 0.5)),
        },
        "out_confidence_variance": {
            "median": float(np.nanmedian(var)),
            "mean": float(np.nanmean(var)),
        },
    }


def score_run(run, attacks: list[str] | None = None, bootstrap: int = 200) -> dict:
    """Scores ``run`` (a :class:`jaxsam.store.Run`), writes its report files, returns the report."""
    from jaxsam import plots, report, store
    from jaxsam.metrics import roc_curve
    from jaxsam.scoring import score

    ok = np.ones(run.keep.shape[0], bool)
    ok[run.failed_models] = False
    result = score(
        run.logits,
        run.labels,
        run.keep,
        attacks=attacks,
        bootstrap=bootstrap,
        exclude_models=run.failed_models,
    )
    rep = dict(result.report)
    rep["run"] = run_summary(run)
    rep.update(mechanism_stats(run.logits[ok], run.labels, run.keep[ok]))
    run.write_json("report.json", rep)
    (run.path / "report.md").write_text(
        report.render_markdown(rep, title=f"jaxsam report: {run.name}")
    )
    store.save_arrays(run.path / "scores", {k: np.asarray(v) for k, v in result.scores.items()})
    curves = {}
    for name, s in result.scores.items():
        fpr, tpr = roc_curve(np.asarray(s)[ok].ravel(), run.keep[ok].ravel())[:2]
        curves[name] = (fpr, tpr)
    (run.path / "plots").mkdir(exist_ok=True)
    plots.plot_roc(curves, run.path / "plots" / "roc.png", title=f"{run.name}: membership ROC")
    return rep


def run(args: argparse.Namespace) -> int:
    from jaxsam.store import load_run

    attacks = [a.strip() for a in args.attacks.split(",")] if args.attacks else None
    runs = [load_run(p) for p in args.runs]  # check every directory before scoring any
    for r in runs:
        rep = score_run(r, attacks, args.bootstrap)
        lo = rep["attacks"].get("lira_online") or next(iter(rep["attacks"].values()))
        print(
            f"{r.path}: test acc {rep['accuracy']['test']:.4f}, "
            f"AUC {lo['auc']:.4f}; wrote {r.path / 'report.json'}"
        )
    return 0
