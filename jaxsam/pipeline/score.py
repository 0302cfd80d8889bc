"""A finished run directory -> membership scores and its report files.

:func:`score_run` reads nothing but the run (logits, labels, masks, config), runs the attacks
(:func:`jaxsam.scoring.score`), adds what the report says about the run, its held-out accuracy
and the mechanism statistics (:func:`jaxsam.analysis.mechanism_stats`), and publishes
``report.json``, ``report.md``, ``scores/`` and ``plots/roc.png`` together
(:func:`jaxsam.store.write_report_files`).
"""

from __future__ import annotations

import numpy as np

from jaxsam import analysis, metrics, plots, report, scoring, store
from jaxsam.errors import TooFewModelsError


def run_summary(run: store.Run) -> dict:
    """What the report says about the run it scores (the report's ``run`` entry).

    A run made by ``jaxsam import-logits`` adds run.json's ``provenance``; its optimizer and
    model are unknown (None).
    """
    c = run.config
    provenance = run.info.get("provenance")
    imported = isinstance(provenance, dict) and provenance.get("kind") == "imported"
    return {
        "name": run.name,
        "path": str(run.path),
        "optimizer": None if imported else c.optim.name,
        "base": None if imported else c.optim.base,
        "rho": c.optim.rho if c.optim.name != "sgd" and not imported else None,
        "label_smoothing": None if imported else c.train.label_smoothing,
        # DP-SGD's guarantee as run.json records it ({epsilon, delta, accountant, sampling}).
        "dp": run.info.get("dp"),
        "dataset": c.data.dataset,
        "model": None if imported else c.model.name,
        "models": int(run.keep.shape[0]),
        "examples": int(run.keep.shape[1]),
        "queries": len(run.query_names),
        "query_names": run.query_names,
        "failed_models": run.failed_models,
        "heldout_accuracy": run.metrics.get("mean_heldout_accuracy"),
        **({"provenance": provenance} if provenance is not None else {}),
    }


def kept_heldout_accuracy(run: store.Run, ok: np.ndarray) -> float | None:
    """Mean accuracy (identity view) of the kept models ``ok`` (bool [M]) on the held-out split.

    None when the run has no held-out split.
    """
    if run.test_logits.shape[1] == 0:
        return None
    correct = metrics.correct_predictions(run.test_logits[ok], run.test_labels)
    return float(metrics.accuracy_per_model(correct).mean())


def full_scores(scores: np.ndarray, ok: np.ndarray) -> np.ndarray:
    """[M', N] scores of the kept models -> [M, N] with NaN rows for the excluded models."""
    out = np.full((ok.shape[0], scores.shape[1]), np.nan, np.float32)
    out[ok] = scores
    return out


def score_run(run: store.Run, attacks: list[str] | None = None, bootstrap: int = 200) -> dict:
    """Scores ``run`` (a :class:`jaxsam.store.Run`), writes its report files, returns the report.

    Failed models (``run.failed_models``) are dropped from every attack (as targets and as
    shadows), the accuracies and the mechanism statistics. ``scores/`` holds ``[M, N]`` arrays
    with NaN rows for them. Nothing is written until everything is computed; then
    ``report.json``, ``report.md``, ``scores/`` and ``plots/roc.png`` are published together
    (:func:`jaxsam.store.write_report_files`).

    Args:
      run: the finished run.
      attacks: attack names from :data:`jaxsam.scoring.ATTACKS` (default: all).
      bootstrap: bootstrap resamples for the confidence intervals (0: none).
    """
    ok = scoring.kept_models(run.failed_models, run.keep.shape[0])
    if ok.sum() < 2:
        raise TooFewModelsError(
            f"{run.path}: {int(ok.sum())} of {ok.size} models are left to score (failed models "
            f"{run.failed_models} in run.json); membership scoring needs at least 2: retrain "
            "with a lower optim.learning_rate or more masks.models"
        )
    result = scoring.score(
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
    rep.update(analysis.mechanism_stats(run.logits[ok], run.labels, run.keep[ok]))
    markdown = report.render_markdown(
        rep, title=f"jaxsam report: {report.escape_markdown(run.name)}"
    )
    curves = {}
    for name, s in result.scores.items():
        fpr, tpr = metrics.roc_curve(np.asarray(s).ravel(), result.keep.ravel())[:2]
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
