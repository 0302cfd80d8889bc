"""A finished run directory -> membership scores and its report files.

:func:`score_run` reads nothing but the run (logits, labels, masks, config), runs the attacks
(:func:`jaxsam.scoring.score`), adds what the report says about the run, its held-out accuracy
and the mechanism statistics (:func:`jaxsam.analysis.mechanism_stats`), builds the per-example
and per-class tables (:mod:`jaxsam.examples_table`) and, when asked (``write=True``), publishes
``report.json``, ``report.md``, ``report.html``, ``scores/``, ``examples.parquet``,
``by_class.csv`` and ``plots/`` together (:func:`jaxsam.store.write_report_files`).
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pandas as pd

from jaxsam import analysis, examples_table, metrics, report, report_audit, scoring, store
from jaxsam.errors import TooFewModelsError

AUDIT_FILE = report_audit.AUDIT_FILE


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
        # Models that trained without NaN but ended near chance (metrics.json).
        "untrained_models": run.metrics.get("untrained_models", []),
        "mask_design": run.info.get("mask_design"),
        "heldout_accuracy": run.metrics.get("mean_heldout_accuracy"),
        **({"provenance": provenance} if provenance is not None else {}),
    }


def scorable_models(run: store.Run, what: str = "score") -> np.ndarray:
    """Bool [M]: the models of ``run`` that are scored (or analysed): all but its failed ones.

    The one check of ``jaxsam score`` and ``jaxsam analyze`` (``what``: the word for the
    messages) that enough models are left.

    Raises:
      TooFewModelsError: fewer than 2 models are left (e.g. every model diverged under
        ``train.on_divergence = 'exclude'``).
    """
    failed = list(getattr(run, "failed_models", None) or [])
    ok = scoring.kept_models(failed, np.shape(run.keep)[0])
    if ok.sum() < 2:
        raise TooFewModelsError(
            f"{run.path}: {int(ok.sum())} of {ok.size} models are left to {what} (failed models "
            f"{failed} in run.json); membership scoring and analysis need at least 2: retrain "
            "with a lower optim.learning_rate or more masks.models"
        )
    return ok


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


@dataclasses.dataclass
class ScoredRun:
    """Everything :func:`score_outputs` computes for one run, before anything is written.

    Attributes:
      report: the report (``report.json``).
      markdown: ``report.md``'s text.
      result: the attacks' :class:`jaxsam.scoring.ScoreResult` (kept models only).
      scores: attack -> float32 [M, N] with NaN rows for the excluded models (``scores/``).
      examples: the per-example table (``examples.parquet``,
        :func:`jaxsam.examples_table.examples_frame`).
      by_class: the per-class table (``by_class.csv``,
        :func:`jaxsam.examples_table.by_class_frame`).
    """

    report: dict
    markdown: str
    result: scoring.ScoreResult
    scores: dict[str, np.ndarray]
    examples: pd.DataFrame
    by_class: pd.DataFrame


def canary_mask(run: store.Run) -> np.ndarray | None:
    """Bool [N]: the run's canaries (``run.canaries``: a bool mask or int indices), or None."""
    canaries = getattr(run, "canaries", None)
    if canaries is None:
        return None
    c = np.asarray(canaries)
    n = run.keep.shape[1]
    if c.dtype == bool and c.shape == (n,):
        return c
    mask = np.zeros(n, bool)
    mask[c.astype(np.int64).ravel()] = True
    return mask


def study_view(run: store.Run) -> tuple[store.Run, np.ndarray | None]:
    """``(view, columns)``: the run without its canaries, and the pool columns it keeps.

    A run with canaries (docs/audit.md) is scored as a membership study on its other examples
    only: the canaries' masks are not the study's design (references never train on them), so
    they would bias every attack and accuracy. ``columns`` is None (and ``view`` is ``run``)
    for a run without canaries.
    """
    canaries = getattr(run, "canaries", None)
    if canaries is None or len(canaries) == 0:
        return run, None
    cols = np.setdiff1d(np.arange(run.keep.shape[1]), np.asarray(canaries, np.int64))
    info = {k: v for k, v in run.info.items() if k != "audit"}
    view = dataclasses.replace(
        run, info=info, keep=run.keep[:, cols], labels=run.labels[cols], ids=run.ids[cols]
    )
    arrays = dict(run._logit_arrays)
    arrays.update(logits=run.logits[:, cols], labels=run.labels[cols])
    view.__dict__["_logit_arrays"] = arrays  # the cached arrays, restricted
    return view, cols


def _with_canary_rows(frame: pd.DataFrame, run: store.Run, cols: np.ndarray) -> pd.DataFrame:
    """The study's per-example table (rows ``cols``) plus one row per canary, in pool order.

    Canary rows carry their origin, label and masks, ``canary = True``, and NaN for every
    score and statistic (``jaxsam audit`` scores them).
    """
    frame = frame.copy()
    frame["pool_index"] = cols.astype(np.int64)
    idx = np.asarray(run.canaries, np.int64)
    rows = pd.DataFrame(
        {
            "pool_index": idx,
            "index": np.asarray(run.ids[idx], np.int64),
            "label": np.asarray(run.labels[idx], np.int64),
            "n_in": run.keep[:, idx].sum(0).astype(np.int64),
            "n_out": (~run.keep[:, idx]).sum(0).astype(np.int64),
        }
    )
    for c in ("dataset", "split"):
        rows[c] = frame[c].iloc[0] if len(frame) else ""
    out = pd.concat([frame, rows], ignore_index=True).sort_values("pool_index")
    for c in ("dataset", "split"):
        out[c] = pd.Categorical(out[c].astype(str))
    out["canary"] = np.isin(out["pool_index"].to_numpy(), idx)
    return out.reset_index(drop=True)[[*frame.columns, "canary"]]


def score_outputs(
    run: store.Run,
    attacks: list[str] | None = None,
    bootstrap: int = 200,
    *,
    equal_groups: str | bool = "auto",
):
    """Scores ``run`` and builds its report and tables in memory; writes nothing.

    Returns a :class:`ScoredRun`. Arguments as :func:`score_run`. A run with canaries is
    scored without them (:func:`study_view`); its score arrays hold NaN in the canaries'
    columns, its per-example table has a ``canary`` column, and report.md keeps the audit
    section of ``jaxsam audit``.
    """
    metrics.check_bootstrap(bootstrap)  # before any work: a bad count is refused at once
    full = run
    run, cols = study_view(run)
    scored = _score_outputs(run, attacks, bootstrap, equal_groups)
    if cols is None:
        return scored
    for name, s in scored.scores.items():
        wide = np.full((s.shape[0], full.keep.shape[1]), np.nan, np.float32)
        wide[:, cols] = s
        scored.scores[name] = wide
    scored.examples = _with_canary_rows(scored.examples, full, cols)
    audit = full.read_json(AUDIT_FILE)  # `jaxsam audit`'s result: its section stays
    if audit is not None:
        scored.markdown = report_audit.splice_markdown(
            scored.markdown, report_audit.audit_markdown(audit)
        )
    return scored


def _score_outputs(
    run: store.Run, attacks: list[str] | None, bootstrap: int, equal_groups: str | bool = "auto"
) -> ScoredRun:
    """:func:`score_outputs` of a run without canaries (or a :func:`study_view`)."""
    ok = scorable_models(run)
    result = scoring.score(
        run.logits,
        run.labels,
        run.keep,
        attacks=attacks,
        bootstrap=bootstrap,
        exclude_models=~ok,
        equal_groups=equal_groups,
    )
    rep = dict(result.report)
    rep["run"] = run_summary(run)
    rep["accuracy"] = dict(rep["accuracy"], heldout=kept_heldout_accuracy(run, ok))
    mech = analysis.mechanism_arrays(run.logits[ok], run.labels, run.keep[ok])
    rep.update(analysis.mechanism_stats(None, None, None, arrays=mech))
    markdown = report.render_markdown(
        rep, title=f"jaxsam report: {report.escape_markdown(run.name)}"
    )
    pool = run.info.get("pool") or {}
    per_example = {"memorization": mech["memorization"], "out_variance": mech["out_variance"]}
    examples = examples_table.examples_frame(
        scores=result.scores,
        keep=result.keep,
        labels=run.labels,
        ids=run.ids,
        dataset=str(pool.get("dataset", run.config.data.dataset)),
        split=str(pool.get("pool_split", run.config.data.pool_split)),
        canary=canary_mask(run),
        **per_example,
    )
    by_class = examples_table.by_class_frame(
        scores=result.scores,
        keep=result.keep,
        labels=run.labels,
        bootstrap=bootstrap,
        **per_example,
    )
    scores = {k: full_scores(np.asarray(v), ok) for k, v in result.scores.items()}
    return ScoredRun(rep, markdown, result, scores, examples, by_class)


def score_run(
    run: store.Run,
    attacks: list[str] | None = None,
    bootstrap: int = 200,
    *,
    write: bool = False,
    csv: bool = False,
    equal_groups: str | bool = "auto",
) -> dict:
    """Scores ``run`` (a :class:`jaxsam.store.Run`) and returns the report; writes when asked.

    Failed models (``run.failed_models``) are dropped from every attack (as targets and as
    shadows), the accuracies and the mechanism statistics. With ``write=True`` (what
    ``jaxsam score`` does) the run's report files are published together, once everything
    is computed (:func:`jaxsam.store.write_report_files`): ``report.json``, ``report.md``,
    ``report.html``, ``scores/`` ([M, N] arrays, NaN rows for failed models),
    ``examples.parquet``, ``by_class.csv`` and ``plots/`` (``roc.png``, ``exposed.png``,
    ``by_class.png``). Without it nothing is written: call it to look at the numbers, or
    :func:`score_outputs` for the tables too.

    Args:
      run: the finished run.
      attacks: attack names from :data:`jaxsam.scoring.ATTACKS` (default: all).
      bootstrap: bootstrap resamples for the confidence intervals (0: none).
      write: publish the report files in the run directory.
      csv: with ``write``, also write ``examples.csv`` (the per-example table as CSV).
      equal_groups: the reference-group rule of LiRA, RMIA and the calibrated loss: ``"auto"``
        (default: from the masks), True (cut) or False (leave-one-out); report.json's
        ``reference_groups`` records it (:func:`jaxsam.scoring.score`).
    """
    scored = score_outputs(run, attacks, bootstrap, equal_groups=equal_groups)
    if write:
        from jaxsam.pipeline.report_files import report_extras

        store.write_report_files(
            run.path,
            report=scored.report,
            markdown=scored.markdown,
            scores=scored.scores,
            extra=report_extras(scored, run, csv=csv),
        )
        if not csv:  # a CSV of an earlier scoring would no longer match examples.parquet
            (run.path / "examples.csv").unlink(missing_ok=True)
    return scored.report
