"""Mechanism analyses of a run: memorization subgroups, influence entropy, OUT variance.

These functions turn what a run directory holds (masks ``keep`` [M, N], logits [M, N, A, C],
labels [N], optionally test logits [M, T, A, C] and attack scores [M, N]) into the statistics
behind the paper's mechanism claims:

* typical / atypical subgroups of the pool by memorization rank (ties broken by a seeded
  order, or kept together and refused when far from the requested sizes), with per-subgroup OUT
  (pool non-member) accuracy and per-subgroup attack TPR at a fixed FPR, with the threshold
  set inside the subgroup or, at the pooled threshold, next to the FPR measured inside it
  (computed by :mod:`jaxsam.subgroups`, whose functions this module re-exports);
* the variance across OUT models of the logit-scaled confidence (and the IN - OUT gap);
* influence-entropy buckets of the test points (see :func:`influence_entropy`).

Accuracy and TPR at a fixed FPR are the definitions of :mod:`jaxsam.metrics`. :func:`analyze_run`
returns one JSON-serialisable dict per run; :func:`mechanism_stats` is the short summary the
score report carries. The figures are drawn by :mod:`jaxsam.plots`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np

from jaxsam import memorization as memo
from jaxsam import metrics
from jaxsam.errors import ConfigError, DataError
from jaxsam.subgroups import (  # noqa: F401 (re-exported: analysis.split_by_memorization, ...)
    TIE_RULES,
    TIE_TOLERANCE,
    memorization_subgroups,
    split_by_memorization,
    subgroup_accuracy,
    subgroup_tpr_at_fpr,
)

DEFAULT_QUANTILES: tuple[float, ...] = (0.01, 0.1, 0.25, 0.5, 0.75, 0.9, 0.99)
N_ENTROPY_BUCKETS = 5


# --------------------------------------------------------------------------- influence entropy


def _entropy_terms(infl: np.ndarray, min_influence: float) -> tuple[np.ndarray, np.ndarray]:
    """Per column: S = sum_i a_i and Q = sum_i a_i log a_i, a = infl where infl > min, else 0."""
    a = np.where(np.isfinite(infl) & (infl > min_influence), infl, 0.0).astype(np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        alog = np.where(a > 0, a * np.log(np.where(a > 0, a, 1.0)), 0.0)
    return a.sum(0), alog.sum(0)


def _entropy_from_terms(s: np.ndarray, q: np.ndarray) -> np.ndarray:
    # H = -sum p log p with p = a / S  =>  H = log S - Q / S.
    with np.errstate(divide="ignore", invalid="ignore"):
        h = np.log(s) - q / s
    return np.where(s > 0, np.maximum(h, 0.0), np.nan)


def influence_entropy(infl: np.ndarray, *, min_influence: float = 0.0) -> np.ndarray:
    """Entropy of each test point's distribution of positive influence over the pool.

    Definition (ours; the paper's exact recipe was not available to us): for test point ``j``
    take the influences ``a_ij = infl[i, j]`` that exceed ``min_influence`` (default 0, i.e. the
    positive ones; NaN rows are dropped), normalise them to ``p_ij = a_ij / sum_i a_ij`` and return
    ``H_j = -sum_i p_ij log p_ij`` in nats. Low entropy: the test point leans on a few training
    examples (an atypical sub-population, which needs memorization); high entropy: many
    training examples support it (a typical pattern). Raise ``min_influence`` (Feldman & Zhang use
    0.15 for "high-influence pairs") to suppress the estimation noise of few models.

    Args:
      infl: float ``[N, T]`` from :func:`jaxsam.memorization.influence`.
      min_influence: influences at or below this are ignored.

    Returns:
      float64 ``[T]`` entropies in nats, in ``[0, log N]``; NaN where no influence exceeds
      ``min_influence``.
    """
    if np.ndim(infl) != 2:
        raise DataError(f"infl must be [N, T], got shape {np.shape(infl)}; pass influence(...).")
    return _entropy_from_terms(*_entropy_terms(np.asarray(infl), min_influence))


def influence_entropy_from_masks(
    test_correct: np.ndarray | jax.Array,
    keep: np.ndarray | jax.Array,
    *,
    min_influence: float = 0.0,
    block_size: int = 4096,
) -> np.ndarray:
    """:func:`influence_entropy` of the influence matrix, streamed in blocks of pool examples.

    Never holds more than ``block_size x T`` influences, so it works for CIFAR-size N x T.

    Args:
      test_correct: bool ``[M, T]`` test-point correctness per model.
      keep: bool ``[M, N]`` masks.
      min_influence: see :func:`influence_entropy`.
      block_size: pool examples per block.

    Returns:
      float64 ``[T]`` entropies in nats (NaN where no influence exceeds ``min_influence``).
    """
    keep = np.asarray(keep, bool)
    t = np.shape(test_correct)[1]
    s, q = np.zeros(t), np.zeros(t)
    for start in range(0, keep.shape[1], block_size):
        block = memo.influence(
            test_correct, keep[:, start : start + block_size], block_size=block_size
        )
        ds, dq = _entropy_terms(block, min_influence)
        s += ds
        q += dq
    return _entropy_from_terms(s, q)


def entropy_buckets(
    entropy: np.ndarray, n_buckets: int = N_ENTROPY_BUCKETS, *, method: str = "quantile"
) -> tuple[np.ndarray, np.ndarray]:
    """Assigns each test point to one of ``n_buckets`` influence-entropy buckets.

    Args:
      entropy: float ``[T]`` (NaN allowed).
      n_buckets: number of buckets (the paper uses 5).
      method: "quantile" (default): equal-count buckets between entropy quantiles; "uniform":
        equal-width buckets between the smallest and largest finite entropy.

    Returns:
      ``(bucket, edges)``: int ``[T]`` with 0 = lowest entropy (most concentrated influence) up to
      ``n_buckets - 1``, and -1 for NaN entropy; float ``[n_buckets + 1]`` bucket edges. Bucket
      ``b`` holds ``edges[b] < H <= edges[b + 1]`` (bucket 0 also its left edge), so ties at an
      edge (e.g. many zero entropies) fall into the lower bucket.
    """
    if n_buckets < 1:
        raise ConfigError(f"n_buckets must be >= 1, got {n_buckets}; use 5 as in the paper.")
    e = np.asarray(entropy, np.float64)
    finite = np.isfinite(e)
    bucket = np.full(e.shape, -1, np.int64)
    if not finite.any():
        return bucket, np.full(n_buckets + 1, np.nan)
    if method == "quantile":
        edges = np.quantile(e[finite], np.linspace(0.0, 1.0, n_buckets + 1))
    elif method == "uniform":
        edges = np.linspace(e[finite].min(), e[finite].max(), n_buckets + 1)
    else:
        raise ConfigError(f"unknown bucket method {method!r}; use 'quantile' or 'uniform'.")
    inner = edges[1:-1]
    bucket[finite] = np.searchsorted(inner, e[finite], side="left")
    return bucket, edges


# --------------------------------------------------------------------------- per run

# What each per-subgroup TPR of ``analysis.json`` is (its ``tpr_rule``).
TPR_RULE = {
    "tpr_at_fpr": "threshold at the attack's pooled operating point on all examples; the FPR "
    "measured inside the subgroup at that threshold is fpr_realised, not the FPR named",
    "tpr_at_fpr_within": "threshold set inside the subgroup on its own non-members, so the "
    "subgroup's FPR is the one named; within_supported is False where the subgroup's "
    "non-members allow fewer than one false positive (then it is the TPR at zero false "
    "positives)",
}


def confidence_signal(logits: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """Logit-scaled confidence averaged over query augmentations: float32 ``[M, N]``.

    Uses :func:`jaxsam.attacks.signals.logit_scaled_confidence` (``[M, N, A]``), higher = member.
    """
    from jaxsam.attacks.signals import logit_scaled_confidence

    return np.asarray(logit_scaled_confidence(jnp.asarray(logits), jnp.asarray(labels))).mean(-1)


def mechanism_arrays(logits: np.ndarray, labels: np.ndarray, keep: np.ndarray) -> dict:
    """The per-example arrays behind the mechanism claims, for the models given.

    Pass the kept models only (failed ones dropped). Memorization uses the identity view's
    correctness (:data:`jaxsam.metrics.ACCURACY_QUERY`); the OUT variance uses the logit-scaled
    confidence averaged over the queries (:func:`confidence_signal`).

    Returns:
      ``correct`` bool [M, N], ``memorization`` float64 [N], ``signal`` float32 [M, N],
      ``out_variance`` float64 [N] and ``in_out_gap`` float64 [N] (IN mean minus OUT mean of
      the same signal).
    """
    correct = metrics.correct_predictions(logits, labels)
    signal = confidence_signal(logits, labels)
    return {
        "correct": correct,
        "memorization": np.asarray(memo.memorization(correct, keep), np.float64),
        "signal": signal,
        "out_variance": np.asarray(memo.out_confidence_variance(signal, keep), np.float64),
        "in_out_gap": np.asarray(memo.in_out_gap(signal, keep), np.float64),
    }


def variance_relative_to_gap(out_variance: np.ndarray, gap: np.ndarray) -> float | None:
    """The scale-free OUT variance: median OUT variance / (mean IN - OUT gap)^2.

    The OUT-confidence variance is in units of the logit-scaled confidence squared, and the
    recipe sets that scale (label smoothing caps the confidence, so it shrinks the signal and
    its variance together). Dividing by the squared mean IN - OUT gap of the same signal
    cancels any rescaling of the signal by a constant: the ratio compares the spread of OUT
    models with the separation of IN from OUT (the inverse square of a signal-to-noise ratio;
    lower = members stand out more). It does not undo a non-linear change of the signal.

    Args:
      out_variance: float ``[N]`` per-example OUT variance (NaN allowed).
      gap: float ``[N]`` per-example IN - OUT gap of the same signal (NaN allowed).

    Returns:
      The ratio, or None when either is undefined or the mean gap is 0.
    """
    v, g = np.asarray(out_variance, np.float64), np.asarray(gap, np.float64)
    if not np.isfinite(v).any() or not np.isfinite(g).any():
        return None
    mean_gap = float(np.nanmean(g))
    return _num(np.nanmedian(v) / mean_gap**2) if mean_gap != 0 else None


def mechanism_stats(logits, labels, keep, arrays: dict | None = None) -> dict:
    """The report's mechanism summary: mean memorization and median OUT variance.

    Computed from :func:`mechanism_arrays` (the arrays ``analyze`` describes in full; pass
    them as ``arrays`` when already computed). Pass the kept models only.

    Returns:
      ``{"memorization": {mean, median, fraction_above_0.5, query},
      "out_confidence_variance": {median, mean, in_out_gap_mean, relative_to_gap, scale}}``:
      ``relative_to_gap`` is :func:`variance_relative_to_gap` (scale-free; compare it across
      recipes), ``scale`` says that the variance itself is not.
    """
    a = arrays if arrays is not None else mechanism_arrays(logits, labels, keep)
    mem, var = a["memorization"], a["out_variance"]
    gap = a.get("in_out_gap")
    return {
        "memorization": {
            "mean": _nan_stat(np.nanmean, mem),
            "median": _nan_stat(np.nanmedian, mem),
            "fraction_above_0.5": float(np.nanmean(mem > 0.5)),
            "query": metrics.ACCURACY_QUERY,
        },
        "out_confidence_variance": {
            "median": _nan_stat(np.nanmedian, var),
            "mean": _nan_stat(np.nanmean, var),
            **(
                {
                    "in_out_gap_mean": _num(np.nanmean(gap)),
                    "relative_to_gap": variance_relative_to_gap(var, gap),
                }
                if gap is not None and np.isfinite(gap).any()
                else {}
            ),
            "scale": VARIANCE_SCALE,
        },
    }


VARIANCE_SCALE = (
    "logit-scaled confidence squared: the recipe sets this scale (e.g. label smoothing caps "
    "the confidence); compare relative_to_gap across recipes"
)


def _nan_stat(stat, x) -> float:
    """``stat`` (``np.nanmean``, ``np.nanmedian``) of ``x``, NaN without NumPy's empty-slice
    warning when ``x`` is empty or all NaN (e.g. no example with two OUT models)."""
    x = np.asarray(x, np.float64)
    return math.nan if np.isnan(x).all() else float(stat(x))


def _num(x: float | np.floating) -> float | None:
    x = float(x)
    return x if math.isfinite(x) else None


def _describe(x: np.ndarray, quantiles: Sequence[float]) -> dict:
    x = np.asarray(x, np.float64)
    ok = x[np.isfinite(x)]
    if ok.size == 0:
        return {"mean": None, "std": None, "median": None, "quantiles": {}, "n_undefined": x.size}
    return {
        "mean": _num(ok.mean()),
        "std": _num(ok.std()),
        "median": _num(np.median(ok)),
        "quantiles": {
            str(q): _num(v) for q, v in zip(quantiles, np.quantile(ok, quantiles), strict=True)
        },
        "n_undefined": int(x.size - ok.size),
    }


def _subgroup_rows(
    mech: dict,
    keep: np.ndarray,
    groups: dict[str, np.ndarray],
    rule: dict,
    scores: np.ndarray | None,
    fprs: Sequence[float],
) -> dict[str, dict]:
    """``analysis.json``'s ``subgroups``: one row per group of :func:`split_by_memorization`.

    ``mech`` is :func:`mechanism_arrays`' dict; ``scores`` (float ``[M, N]``) adds the TPR keys
    (:func:`subgroup_tpr_at_fpr`), else they are None.
    """
    mem, out_var = mech["memorization"], mech["out_variance"]
    acc = subgroup_accuracy(mech["correct"], keep, groups)
    tpr = subgroup_tpr_at_fpr(scores, keep, groups, fprs) if scores is not None else None
    rows = {}
    for name, g in groups.items():
        t = tpr[name] if tpr else {}
        rows[name] = {
            "n": int(g.sum()),
            "requested_n": rule[name]["requested_n"] if name in rule else int(g.sum()),
            "memorization_mean": _num(_nan_stat(np.nanmean, mem[g])),
            "out_variance_median": _num(_nan_stat(np.nanmedian, out_var[g])),
            "accuracy": acc[name],
            "tpr_at_fpr": t.get("tpr"),
            "fpr_realised": t.get("fpr"),
            "tpr_at_fpr_within": t.get("tpr_within"),
            "within_supported": t.get("within_supported"),
            "nonmembers": t.get("nonmembers"),
        }
    return rows


def _heldout(
    test_logits: np.ndarray,
    test_labels: np.ndarray | None,
    keep: np.ndarray,
    min_influence: float,
    block_size: int,
    n_buckets: int,
) -> tuple[dict, np.ndarray, np.ndarray]:
    """The held-out part of :func:`analyze_run_arrays`.

    Returns:
      ``({"heldout_accuracy", "influence_entropy"}, entropy float64 [T], bucket int [T])``.
    """
    if test_labels is None:
        raise DataError("test_logits given without test_labels; pass both or neither.")
    if np.shape(test_logits)[0] != keep.shape[0]:
        raise DataError(
            f"test_logits has {np.shape(test_logits)[0]} models but keep has "
            f"{keep.shape[0]}; pass the test logits of the same run."
        )
    test_correct = metrics.correct_predictions(test_logits, test_labels)
    ent = influence_entropy_from_masks(
        test_correct, keep, min_influence=min_influence, block_size=block_size
    )
    bucket, edges = entropy_buckets(ent, n_buckets)
    summary = {
        "heldout_accuracy": metrics.pooled_accuracy(test_correct),
        "influence_entropy": _entropy_summary(
            test_correct, bucket, edges, min_influence, n_buckets
        ),
    }
    return summary, ent, bucket


def _entropy_summary(
    test_correct: np.ndarray,
    bucket: np.ndarray,
    edges: np.ndarray,
    min_influence: float,
    n_buckets: int,
) -> dict:
    """``analysis.json``'s ``influence_entropy``: held-out accuracy per entropy bucket.

    ``test_correct`` bool ``[M, T]``; ``bucket`` int ``[T]`` and ``edges`` from
    :func:`entropy_buckets`.
    """
    return {
        "definition": f"entropy (nats) of positive influence > {min_influence} over the pool",
        "edges": [_num(e) for e in edges],
        "n_undefined": int((bucket < 0).sum()),
        "buckets": [
            {
                "bucket": b,
                "n": int((bucket == b).sum()),
                "heldout_accuracy": metrics.pooled_accuracy(test_correct[:, bucket == b]),
            }
            for b in range(n_buckets)
        ],
    }


def analyze_run_arrays(
    logits: np.ndarray,
    labels: np.ndarray,
    keep: np.ndarray,
    *,
    scores: np.ndarray | None = None,
    test_logits: np.ndarray | None = None,
    test_labels: np.ndarray | None = None,
    reference_memorization: np.ndarray | None = None,
    typical_quantile: float = 0.5,
    atypical_quantile: float = 0.9,
    ties: str = "rank",
    tie_seed: int = 0,
    fprs: Sequence[float] = metrics.HEADLINE_FPRS,
    quantiles: Sequence[float] = DEFAULT_QUANTILES,
    n_buckets: int = N_ENTROPY_BUCKETS,
    min_influence: float = 0.0,
    block_size: int = 4096,
) -> tuple[dict, dict[str, np.ndarray]]:
    """:func:`analyze_run`, also returning the per-example arrays behind the summary.

    Returns:
      ``(summary, arrays)`` with arrays ``memorization`` [N], ``out_variance`` [N],
      ``in_out_gap`` [N], ``typical`` / ``atypical`` bool [N] and, with test logits,
      ``influence_entropy`` [T] and ``entropy_bucket`` int [T].
    """
    keep = np.asarray(keep, bool)
    labels = np.asarray(labels)
    if np.ndim(logits) != 4 or np.shape(logits)[:2] != keep.shape:
        raise DataError(
            f"logits {np.shape(logits)} must be [M, N, A, C] with [M, N] = keep {keep.shape}; "
            "pass the logits and masks of the same run."
        )
    mech = mechanism_arrays(logits, labels, keep)
    mem, out_var, gap = mech["memorization"], mech["out_variance"], mech["in_out_gap"]
    ref = mem if reference_memorization is None else np.asarray(reference_memorization)
    groups, rule = split_by_memorization(
        ref,
        typical_quantile=typical_quantile,
        atypical_quantile=atypical_quantile,
        ties=ties,
        seed=tie_seed,
    )
    summary: dict = {
        "n_models": int(keep.shape[0]),
        "n_examples": int(keep.shape[1]),
        "pkeep": float(keep.mean()),
        "memorization": _describe(mem, quantiles),
        "out_variance": _describe(out_var, quantiles),
        "in_out_gap": _describe(gap, quantiles),
        "out_variance_relative_to_gap": variance_relative_to_gap(out_var, gap),
        "subgroup_rule": {
            **rule,
            "reference": "own run" if reference_memorization is None else "shared reference",
        },
        "tpr_rule": dict(TPR_RULE),
        "subgroups": _subgroup_rows(mech, keep, groups, rule, scores, fprs),
        "heldout_accuracy": None,
        "influence_entropy": None,
    }
    arrays = {
        "memorization": mem,
        "out_variance": out_var,
        "in_out_gap": gap,
        "typical": groups["typical"],
        "atypical": groups["atypical"],
    }
    if test_logits is not None:
        held, ent, bucket = _heldout(
            test_logits, test_labels, keep, min_influence, block_size, n_buckets
        )
        summary.update(held)
        arrays.update(influence_entropy=ent, entropy_bucket=bucket)
    return summary, arrays


def analyze_run(logits: np.ndarray, labels: np.ndarray, keep: np.ndarray, **kwargs) -> dict:
    """Mechanism statistics of one run, as a JSON-serialisable dict.

    Args:
      logits: float ``[M, N, A, C]`` pool logits.
      labels: int ``[N]``.
      keep: bool ``[M, N]`` masks.
      **kwargs: the keywords of :func:`analyze_run_arrays`: ``scores`` (optional float
        ``[M, N]`` attack scores, higher = member, for per-subgroup TPR), ``test_logits``
        (optional float ``[M, T, A, C]`` logits on test points no model trained on) with
        ``test_labels`` (int ``[T]``), ``reference_memorization`` (a shared [N] score that
        defines the subgroups, so two runs are compared on the same examples),
        ``typical_quantile``, ``atypical_quantile``, ``ties`` and ``tie_seed`` (the tie rule
        of :func:`split_by_memorization`), ``fprs``, ``quantiles``, ``n_buckets``,
        ``min_influence``, ``block_size``.

    Returns:
      dict with ``memorization`` / ``out_variance`` / ``in_out_gap`` (mean, std, median,
      quantiles, n_undefined), ``subgroup_rule`` (:func:`split_by_memorization`'s rule: each
      group's definition, requested and actual size, ties at its boundary), ``tpr_rule``
      (:data:`TPR_RULE`), ``subgroups`` (all / typical / atypical: n, requested_n,
      memorization mean, OUT-variance median, accuracy {out, train}; with scores
      tpr_at_fpr {"0.01": ...} at the pooled threshold with fpr_realised, the FPR measured
      inside the group, and tpr_at_fpr_within with the threshold set inside the group,
      within_supported, nonmembers; see :func:`subgroup_tpr_at_fpr`),
      ``heldout_accuracy`` (accuracy on the held-out test points) and ``influence_entropy``
      buckets (None without test logits). NaN is written as None. Every accuracy and the
      memorization use the identity view (query 0).
    """
    return analyze_run_arrays(logits, labels, keep, **kwargs)[0]
