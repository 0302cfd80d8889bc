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
    p.add_argument(
        "--no-verify",
        action="store_true",
        help="read runs whose files differ from the digests recorded when they finished",
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
    """Mean Feldman-Zhang memorization and the median OUT variance of logit-scaled confidence.

    Pass the kept models only. Memorization follows the rule ``analyze`` uses
    (:func:`jaxsam.memorization.memorization_from_logits`: identity view, query 0); the OUT
    variance uses the logit-scaled confidence averaged over the queries, as ``analyze`` does.
    """
    from jaxsam.analysis import confidence_signal
    from jaxsam.memorization import memorization_from_logits, out_confidence_variance

    mem = np.asarray(memorization_from_logits(logits, labels, keep))
    var = np.asarray(out_confidence_variance(confidence_signal(logits, labels), keep))
    return {
        "memorization": {
            "mean": float(np.nanmean(mem)),
            "median": float(np.nanmedian(mem)),
            "fraction_above_0.5": float(np.nanmean(mem > 0.5)),
            "query": 0,
        },
        "out_confidence_variance": {
            "median": float(np.nanmedian(var)),
            "mean": float(np.nanmean(var)),
        },
    }


def kept_heldout_accuracy(run, ok: np.ndarray) -> float | None:
    """Mean accuracy (identity view) of the kept models on the held-out split; None without one."""
    test_logits = run.test_logits
    if test_logits.shape[1] == 0:
        return None
    pred = test_logits[ok][:, :, 0, :].argmax(-1)
    return float((pred == run.test_labels[None]).mean())


def full_scores(scores: np.ndarray, ok: np.ndarray) -> np.ndarray:
    """[M', N] scores of the kept models -> [M, N] with NaN rows for the excluded models."""
    out = np.full((ok.shape[0], scores.shape[1]), np.nan, np.float32)
    out[ok] = scores
    return out


def score_run(run, attacks: list[str] | None = None, bootstrap: int = 200) -> dict:
    """Scores ``run`` (a :class:`jaxsam.store.Run`), writes its report files, returns the report.

    Failed models (``run.failed_models``) are dropped from every attack (as targets and as
    shadows), the accuracies and the mechanism statistics. ``scores/`` holds ``[M, N]`` arrays
    with NaN rows for them. Nothing is written until everything is computed; then
    ``report.json``, ``report.md``, ``scores/`` and ``plots/roc.png`` are published together
    (:func:`jaxsam.store.write_report_files`).
    """
    from jaxsam import plots, report, store
    from jaxsam.metrics import roc_curve
    from jaxsam.scoring import kept_models, score

    ok = kept_models(run.failed_models, run.keep.shape[0])
    result = score(
        run.logits,
        run.labels,
        run.keep,
        attacks=attacks,
        bootstrap=bootstrap,
        exclude_models=~ok,
    )
    rep = dict(result.report)
    rep["run"] = run_summary(run)
    rep["accuracy"] = dict(rep["accuracy"], heldout=kept_heldout_accuracy(run, ok))
    rep.update(mechanism_stats(run.logits[ok], run.labels, run.keep[ok]))
    markdown = report.render_markdown(rep, title=f"jaxsam report: {run.name}")
    curves = {}
    for name, s in result.scores.items():
        fpr, tpr = roc_curve(np.asarray(s).ravel(), result.keep.ravel())[:2]
        curves[name] = (fpr, tpr)

    def draw_roc(path):
        plots.plot_roc(curves, path, title=f"{run.name}: membership ROC")

    store.write_report_files(
        run.path,
        report=rep,
        markdown=markdown,
        scores={k: full_scores(np.asarray(v), ok) for k, v in result.scores.items()},
        extra={"plots/roc.png": draw_roc},
    )
    return rep


def run(args: argparse.Namespace) -> int:
    from contextlib import ExitStack

    from jaxsam.store import load_run, run_lock

    attacks = [a.strip() for a in args.attacks.split(",")] if args.attacks else None
    with ExitStack() as locks:  # one writer per run directory
        for p in args.runs:
            locks.enter_context(run_lock(p, "score", create=False))
        runs = [load_run(p, verify=not args.no_verify) for p in args.runs]  # check all first
        return _score_all(runs, attacks, args.bootstrap)


def _score_all(runs, attacks, bootstrap) -> int:
    from jaxsam.report import heldout_accuracy, out_accuracy

    for r in runs:
        rep = score_run(r, attacks, bootstrap)
        lo = rep["attacks"].get("lira_online") or next(iter(rep["attacks"].values()))
        held = heldout_accuracy(rep)
        excluded = f", excluded models {r.failed_models}" if r.failed_models else ""
        for name, why in rep.get("skipped_attacks", {}).items():
            print(f"{r.path}: {name} not scored: {why}")
        print(
            f"{r.path}: OUT (pool non-member) acc {out_accuracy(rep):.4f}, held-out acc "
            f"{'-' if held is None else f'{held:.4f}'}, AUC {lo['auc']:.4f}{excluded}; "
            f"wrote {r.path / 'report.json'}"
        )
    return 0
