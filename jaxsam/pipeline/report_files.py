"""The files ``jaxsam score`` publishes beside report.json, built in memory first.

:func:`report_extras` turns one scored run (:class:`jaxsam.pipeline.score.ScoredRun`) into the
extra files of :func:`jaxsam.store.write_report_files`: ``examples.parquet`` (and
``examples.csv``), ``by_class.csv``, ``plots/roc.png``, ``plots/exposed.png``,
``plots/by_class.png`` and ``report.html``. Every figure is drawn before anything is written,
so a failure leaves the previous outputs alone.

The pictures of the exposed examples need the pool's inputs, which a run directory does not
hold: :func:`pool_inputs` loads them from the run's data source when it is readable here and
its ids and labels match the run's pool fingerprint, and otherwise the panels say that the
input is not available (a run scored on another machine, or imported logits).
"""

from __future__ import annotations

import dataclasses
import tempfile
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd

from jaxsam import examples_table, metrics, plots, plots_examples, report_html, store
from jaxsam.errors import JaxsamError

# Panels per row of plots/exposed.png, and rows of the exposed table in report.html.
EXPOSED_PANELS = 8


def pool_inputs(run: store.Run) -> np.ndarray | None:
    """The pool's inputs ``[N, ...]`` (images or feature rows) in the run's order, or None.

    Loaded with downloads off; None when the source cannot be read here or is not the pool
    the run was trained on (its fingerprint differs).
    """
    from jaxsam.data import load_pool

    data = run.config.data
    if data.dataset == "imported":
        return None
    try:
        pool = load_pool(dataclasses.replace(data, download=False))
    except (JaxsamError, OSError, ImportError, ValueError):
        return None
    same = pool.fingerprint() == (run.info.get("pool") or {}).get("fingerprint")
    return np.asarray(pool.x) if same and pool.size == run.keep.shape[1] else None


def _panels(rows: pd.DataFrame, x: np.ndarray | None, what: Callable[[pd.Series], str]):
    return [
        (
            f"#{int(r['pool_index'])} label {int(r['label'])}\n{what(r)}",
            None if x is None else x[int(r["pool_index"])],
        )
        for _, r in rows.iterrows()
    ]


def exposed_rows(frame: pd.DataFrame, attack: str, x: np.ndarray | None) -> dict:
    """``plots/exposed.png``'s rows: the most exposed (by ``attack``) and most memorized."""
    f = examples_table.EXAMPLE_FPRS[0]
    col = examples_table.flag_column(attack, f, among_in=True)
    exposed = examples_table.most_exposed(frame, attack, EXPOSED_PANELS)
    memorized = examples_table.most_memorized(frame, EXPOSED_PANELS)

    def flagged(r):
        return f"{attack} flags {r[col]:.0%}"

    return {
        f"most exposed ({attack}, FPR {f:g})": _panels(exposed, x, flagged),
        "most memorized": _panels(memorized, x, lambda r: f"memorization {r['memorization']:.2f}"),
    }


def _png(draw: Callable[[Path], object]) -> bytes:
    with tempfile.TemporaryDirectory(prefix="jaxsam-plot-") as tmp:
        path = Path(tmp) / "figure.png"
        draw(path)
        return path.read_bytes()


def _roc_curves(result) -> dict:
    curves = {}
    for name, s in result.scores.items():
        fpr, tpr = metrics.roc_curve(np.asarray(s).ravel(), result.keep.ravel())[:2]
        curves[name] = (fpr, tpr)
    return curves


def report_figures(scored, run: store.Run) -> dict[str, bytes]:
    """``plots/*.png`` of a scored run as PNG bytes, by relative path."""
    frame, names = scored.examples, list(scored.result.scores)
    attack = examples_table.primary_attack(names)
    rows = exposed_rows(frame, attack, pool_inputs(run))
    figs = {
        "plots/roc.png": _png(
            lambda p: plots.plot_roc(_roc_curves(scored.result), p, f"{run.name}: membership ROC")
        ),
        "plots/exposed.png": _png(lambda p: plots_examples.plot_exposed(rows, p)),
    }
    if len(scored.by_class):
        figs["plots/by_class.png"] = _png(
            lambda p: plots_examples.plot_by_class(scored.by_class, attack, p)
        )
    return figs


_CAPTIONS = {
    "plots/roc.png": "membership ROC, all targets pooled (log-log)",
    "plots/exposed.png": "the most exposed and the most memorized pool examples",
    "plots/by_class.png": "per-class AUC and TPR of the headline attack",
}


def report_extras(scored, run: store.Run, *, csv: bool = False) -> dict[str, Callable]:
    """The extra files of ``jaxsam score``: relative path -> a function writing it there."""
    figs = report_figures(scored, run)
    attack = examples_table.primary_attack(list(scored.result.scores))
    top = examples_table.most_exposed(scored.examples, attack, EXPOSED_PANELS)
    page = report_html.render_run_html(
        scored.report,
        f"jaxsam report: {run.name}",
        by_class=scored.by_class,
        figures={_CAPTIONS[k]: v for k, v in figs.items()},
        exposed=top,
    )
    by_class_text = examples_table.by_class_csv(scored.by_class)
    extras: dict[str, Callable] = {
        "examples.parquet": lambda p: scored.examples.to_parquet(p, index=False),
        "by_class.csv": lambda p: p.write_text(by_class_text),
        "report.html": lambda p: p.write_text(page, encoding="utf-8"),
    }
    if csv:
        extras["examples.csv"] = lambda p: scored.examples.to_csv(p, index=False)
    for rel, png in figs.items():
        extras[rel] = lambda p, png=png: p.write_bytes(png)
    return extras
