"""Run directories -> memorization and mechanism statistics, ``analysis.json`` and figures.

:func:`analyze_runs` takes loaded runs (:func:`jaxsam.store.load_run`), drops each run's failed
models (``run.json`` ``failed_models``, exactly as :func:`jaxsam.pipeline.score.score_run` drops
them), computes :func:`jaxsam.analysis.analyze_run_arrays` per run and writes
``analysis.json`` (run name -> summary) and the figures of :mod:`jaxsam.plots` under
``plots/``: ``memorization_hist.png`` (runs overlaid, e.g. SAM vs SGD), ``out_variance.png``,
``subgroups.png`` and, when the runs hold test logits, ``entropy_buckets.png``.

Subgroups (typical / atypical) are defined once, from the memorization averaged over all runs
that share the same pool, so that SAM and SGD are compared on the same examples; by rank, ties
broken by a seeded order (:func:`jaxsam.subgroups.split_by_memorization`). Per-subgroup
attack TPR is reported when a run carries ``[M, N]`` attack scores (a ``.scores`` array, or a
dict of them where ``lira_online`` is preferred); else it is null. It is read two ways
(:func:`jaxsam.subgroups.subgroup_tpr_at_fpr`): with the threshold set inside the subgroup, and
at the pooled threshold next to the FPR measured inside the subgroup.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from jaxsam import analysis, plots, store
from jaxsam import memorization as memo
from jaxsam.errors import ConfigError, DataError, option
from jaxsam.pipeline.score import scorable_models


def _unique_names(runs: Sequence) -> list[str]:
    """Run names; duplicates become the shortest distinguishing tail of their paths."""
    names = [str(getattr(r, "name", None) or Path(r.path).name) for r in runs]
    if len(set(names)) == len(names):
        return names
    parts = [Path(r.path).resolve().parts for r in runs]
    for k in range(1, max(len(p) for p in parts) + 1):
        tails = ["/".join(p[-k:]) for p in parts]
        if len(set(tails)) == len(tails):
            return tails
    return [f"{n}#{i}" for i, n in enumerate(names)]


def _attack_scores(run) -> np.ndarray | None:
    """Optional [M, N] attack scores a run may carry (``.scores`` attribute); None otherwise."""
    s = getattr(run, "scores", None)
    if isinstance(s, dict):
        s = s.get("lira_online", next(iter(s.values()), None))
    if s is None:
        return None
    s = np.asarray(s)
    return s if s.shape == np.shape(run.keep) else None


class _KeptModels:
    """A run's arrays restricted to its kept models (``failed_models`` dropped) and to the
    study's examples (a run's canaries, ``run.canaries``, are left out: docs/audit.md)."""

    def __init__(self, run):
        ok = scorable_models(run, "analyze")
        n = np.shape(run.keep)[1]
        canaries = getattr(run, "canaries", None)
        cols = (  # a slice copies nothing for a run without canaries
            slice(None)
            if canaries is None or len(canaries) == 0
            else np.setdiff1d(np.arange(n), np.asarray(canaries, np.int64))
        )
        self.path, self.name = run.path, getattr(run, "name", None)
        self.labels = np.asarray(run.labels)[cols]
        self.keep = np.asarray(run.keep, bool)[ok][:, cols]
        self.logits = np.asarray(run.logits)[ok][:, cols]
        test_logits = getattr(run, "test_logits", None)
        self.test_logits = None if test_logits is None else np.asarray(test_logits)[ok]
        self.test_labels = getattr(run, "test_labels", None)
        scores = _attack_scores(run)
        self.scores = None if scores is None else scores[ok][:, cols]


def check_options(min_influence: float, tie_seed: int) -> None:
    """Refuses a ``min_influence`` outside ``[0, 1)`` (or NaN) and a negative ``tie_seed``.

    Influences are differences of probabilities, in ``[-1, 1]``: the entropy needs the positive
    ones (a threshold below 0 would mix in negative weights), and one of 1 or more leaves none.

    Raises:
      ConfigError: naming the value and the range.
    """
    if isinstance(min_influence, bool) or not isinstance(min_influence, int | float | np.number):
        raise ConfigError(f"min_influence = {min_influence!r} is not a number")
    if not 0 <= min_influence < 1:  # NaN fails too
        raise ConfigError(
            f"min_influence = {min_influence} is outside [0, 1): influences are differences "
            f"of probabilities and the entropy takes the positive ones above it; pass "
            f"{option('min_influence', 'X')} with 0 <= X < 1 (default 0, 0.15 for "
            "high-influence pairs)"
        )
    if isinstance(tie_seed, bool) or not isinstance(tie_seed, int | np.integer) or tie_seed < 0:
        raise ConfigError(
            f"tie_seed = {tie_seed!r} is not an integer >= 0; pass {option('tie_seed', 'S')} "
            "with S >= 0 (default 0)"
        )


def analyze_runs(
    runs: Sequence,
    out_dir: str | Path,
    *,
    typical_quantile: float = 0.5,
    atypical_quantile: float = 0.9,
    ties: str = "rank",
    tie_seed: int = 0,
    min_influence: float = 0.0,
    overwrite: bool = False,
) -> dict:
    """Analyses loaded runs and writes ``out_dir/analysis.json`` and ``out_dir/plots/*.png``.

    Args:
      runs: objects with ``.keep`` bool [M, N], ``.logits`` [M, N, A, C], ``.labels`` [N],
        ``.path``, ``.name`` and optionally ``.test_logits`` [M, T, A, C], ``.test_labels`` [T],
        ``.scores`` [M, N] (higher = member), ``.failed_models`` (indices of excluded models,
        dropped from every statistic).
      out_dir: output directory (created).
      typical_quantile, atypical_quantile, ties, tie_seed: the subgroups
        (:func:`jaxsam.subgroups.split_by_memorization`).
      min_influence: see :func:`jaxsam.analysis.influence_entropy`.
      overwrite: replace an earlier analysis in an ``out_dir`` that is not a run directory
        (:func:`jaxsam.store.check_analysis_out`: files analyze did not write are never
        replaced).

    Returns:
      The dict written to ``analysis.json``: run name -> summary, plus ``"_plots"`` (file names).
    """
    if not runs:
        raise DataError("no runs to analyze; pass at least one run directory.")
    check_options(min_influence, tie_seed)
    store.check_analysis_out(out_dir, overwrite=overwrite)
    names = _unique_names(runs)
    runs = [_KeptModels(r) for r in runs]
    # Shared subgroups: average memorization over runs on the same pool (same labels).
    mems = {}
    for name, r in zip(names, runs, strict=True):
        mems[name] = np.asarray(memo.memorization_from_logits(r.logits, r.labels, r.keep))
    ref = None
    first = runs[0]
    if len(runs) > 1 and all(
        np.shape(r.labels) == np.shape(first.labels) and np.array_equal(r.labels, first.labels)
        for r in runs
    ):
        ref = np.nanmean(np.stack(list(mems.values())), axis=0)
    summaries, arrays = {}, {}
    for name, r in zip(names, runs, strict=True):
        test_logits = getattr(r, "test_logits", None)
        test_labels = getattr(r, "test_labels", None)
        summaries[name], arrays[name] = analysis.analyze_run_arrays(
            np.asarray(r.logits),
            np.asarray(r.labels),
            np.asarray(r.keep),
            scores=r.scores,
            test_logits=None if test_logits is None else np.asarray(test_logits),
            test_labels=None if test_labels is None else np.asarray(test_labels),
            reference_memorization=ref,
            typical_quantile=typical_quantile,
            atypical_quantile=atypical_quantile,
            ties=ties,
            tie_seed=tie_seed,
            min_influence=min_influence,
        )
        summaries[name]["run_dir"] = str(r.path)
    return _write_outputs(Path(out_dir), summaries, arrays)


def _write_outputs(out_dir: Path, summaries: dict, arrays: dict) -> dict:
    """Writes the figures under ``out_dir/plots/``, then ``analysis.json``; returns the latter."""
    figures = store.plots_dir(out_dir)
    with store.write_errors(figures, "plots"):
        written = [
            plots.plot_memorization_histograms(
                {k: a["memorization"] for k, a in arrays.items()}, figures / "memorization_hist.png"
            ),
            plots.plot_out_variance(
                {k: a["out_variance"] for k, a in arrays.items()}, figures / "out_variance.png"
            ),
            plots.plot_subgroup_bars(summaries, figures / "subgroups.png"),
            plots.plot_entropy_buckets(summaries, figures / "entropy_buckets.png"),
        ]
    result = dict(summaries)
    result["_plots"] = [str(p.relative_to(out_dir)) for p in written if p is not None]
    store.write_analysis(out_dir, result)
    return result
