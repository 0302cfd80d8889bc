"""ROC metrics of membership scores: AUC, balanced accuracy, advantage, TPR at low FPR.

Conventions: ``scores`` higher = member; ``is_member`` True for members. Scores of all targets
are pooled (flattened) unless a per-target helper is used. Ties are handled exactly: all
examples sharing a score value move across the threshold together, so the ROC has one point
per distinct score and the AUC equals the Mann-Whitney statistic with ties counted 1/2.

``tpr_at_fpr[f]`` is the ROC interpolated linearly at FPR ``f`` between its two adjacent points:
the TPR of the randomized threshold that flags every score above a level and each score *at*
the next level with the probability that makes the FPR exactly ``f`` (:func:`operating_point`).
Tied scores (RMIA's counts, say) cross a threshold together, so a deterministic threshold may
have to stop well short of ``f``; the randomized one does not, and without ties the two agree.
With ``n`` non-members, an FPR of ``f`` allows ``f * n`` false positives; when that is below 1
the value is the TPR at zero false positives (no interpolation) and says nothing specific about
``f`` (``resolvable`` False). Every TPR at a fixed FPR, pooled or per subgroup, reads the same
operating point (:func:`operating_point`).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from jaxsam.errors import ConfigError, DataError, option

# The FPRs of the paper's tables (attack TPR at 1% and 0.1%), and every FPR ``jaxsam score``
# reports. ``analyze`` reports per-subgroup TPR at the headline FPRs.
HEADLINE_FPRS = (1e-2, 1e-3)
DEFAULT_FPRS = (*HEADLINE_FPRS, 1e-4, 1e-5)


# The most bootstrap resamples asked for: each resample re-sorts the pooled [M, N] scores of
# every attack (8) and of every class, and report.json keeps every resample, so the time and
# the report grow with it; 10,000 already puts the resampling error far below the interval.
MAX_BOOTSTRAP = 100_000


def check_bootstrap(num_samples: Any, seed: Any = 0) -> None:
    """Refuses a number of bootstrap resamples outside ``[0, MAX_BOOTSTRAP]`` or a bad seed.

    Raises:
      ConfigError: naming the value and the range (``option("bootstrap")``'s words).
    """
    if isinstance(num_samples, bool) or not isinstance(num_samples, int | np.integer):
        raise ConfigError(
            f"bootstrap = {num_samples!r} is not an integer; pass {option('bootstrap', 'B')} "
            "with a whole number of resamples (0: no intervals)"
        )
    if num_samples < 0:
        raise ConfigError(
            f"bootstrap = {num_samples} resamples is negative; pass "
            f"{option('bootstrap', 'B')} with B >= 0 (0: no intervals, default 200)"
        )
    if num_samples > MAX_BOOTSTRAP:
        raise ConfigError(
            f"bootstrap = {num_samples:,} resamples is more than the {MAX_BOOTSTRAP:,} jaxsam "
            f"allows: each resample re-sorts every attack's pooled scores and report.json keeps "
            f"each one, so it would take {num_samples / 200:,.0f}x the default's time; pass "
            f"{option('bootstrap', 'B')} with B <= {MAX_BOOTSTRAP:,} (10,000 is plenty)"
        )
    if isinstance(seed, bool) or not isinstance(seed, int | np.integer) or seed < 0:
        raise ConfigError(f"bootstrap seed = {seed!r} must be an integer >= 0")


def check_fprs(fprs: Sequence[float]) -> None:
    """Refuses FPRs that are not numbers strictly between 0 and 1 (and an empty list).

    Raises:
      ConfigError: naming the first bad FPR.
    """
    values = list(fprs)
    if not values:
        raise ConfigError("fprs is empty; pass at least one FPR in (0, 1), e.g. 0.01")
    for f in values:
        if isinstance(f, bool) or not isinstance(f, int | float | np.number) or not 0 < f < 1:
            raise ConfigError(f"fprs holds {f!r}; every FPR must be a number in (0, 1), e.g. 0.01")


def fpr_key(f: float) -> str:
    """The report key of an FPR: ``repr(float)``, e.g. 0.01 -> "0.01", 1e-05 -> "1e-05"."""
    return repr(float(f))


def _check(scores: Any, is_member: Any) -> tuple[np.ndarray, np.ndarray]:
    s = np.asarray(scores, np.float64).ravel()
    y = np.asarray(is_member).ravel()
    if s.shape != y.shape:
        raise DataError(
            f"scores ({np.shape(scores)}) and is_member ({np.shape(is_member)}) differ in shape; "
            "pass arrays of the same shape"
        )
    if np.isnan(s).any():
        raise DataError("scores contain NaN; check the attack inputs for diverged models")
    y = y.astype(bool)
    if y.all() or not y.any():
        none = "non-member" if y.all() else "member"
        raise DataError(
            f"is_member holds no {none} (the masks put every (model, example) pair "
            f"{'in' if y.all() else 'out of'} training): a membership ROC needs both; the masks "
            "must leave every example in some models and out of others (masks.pkeep strictly "
            "between 0 and 1)"
        )
    return s, y


class _Sorted:
    """Scores sorted once (descending) with the index of the last item of each tie group."""

    def __init__(self, s: np.ndarray, y: np.ndarray):
        self.order = np.argsort(-s, kind="stable")
        ss = s[self.order]
        self.ends = np.append(np.nonzero(ss[1:] != ss[:-1])[0], ss.size - 1)
        self.thresholds = ss[self.ends]
        self.y = y[self.order]

    def curve(self, w: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        """(fpr, tpr), each [K + 1] starting at (0, 0); ``w`` are optional per-item weights."""
        pos = self.y.astype(np.float64)
        neg = 1.0 - pos
        if w is not None:
            ws = w[self.order]
            pos, neg = pos * ws, neg * ws
        tp = np.cumsum(pos)[self.ends]
        fp = np.cumsum(neg)[self.ends]
        tpr = np.concatenate([[0.0], tp / tp[-1]])
        fpr = np.concatenate([[0.0], fp / fp[-1]])
        return fpr, tpr


def _auc(fpr: np.ndarray, tpr: np.ndarray) -> float:
    return float(np.sum(np.diff(fpr) * (tpr[1:] + tpr[:-1]) / 2.0))


def _point_at(fpr: np.ndarray, f: float) -> int:
    """Index of the ROC point with the highest TPR whose FPR is at most ``f``."""
    return int(np.searchsorted(fpr, f * (1 + 1e-9), side="right") - 1)


def _segment(fpr: np.ndarray, f: float, n_neg: float) -> tuple[int, float]:
    """The ROC segment that FPR ``f`` falls in, and how far along it: ``(i, q)``.

    ``i`` is the point with the highest TPR whose FPR is at most ``f``; ``q`` in [0, 1) is the
    fraction of the way to point ``i + 1``: the randomized threshold that flags every score of
    point ``i`` and each score of the next level with probability ``q`` has FPR exactly ``f``.
    ``q`` is 0 at the last point and below the FPR resolution (``f * n_neg < 1``: fewer than
    one false positive allowed, where the value stays the TPR at zero false positives).
    """
    i = _point_at(fpr, f)
    if i + 1 >= fpr.size or f * n_neg * (1 + 1e-9) < 1.0:
        return i, 0.0
    q = (f - fpr[i]) / (fpr[i + 1] - fpr[i])
    return i, float(min(max(q, 0.0), 1.0))


def _tpr_at(fpr: np.ndarray, tpr: np.ndarray, f: float, n_neg: float) -> float:
    """TPR at FPR ``f``: the ROC interpolated linearly between adjacent points (a randomized
    threshold between two adjacent score levels), see :func:`_segment`."""
    i, q = _segment(fpr, f, n_neg)
    return float(tpr[i] + q * (tpr[i + 1] - tpr[i])) if q else float(tpr[i])


def operating_point(scores: Any, is_member: Any, fpr: float) -> tuple[float, float]:
    """The randomized threshold behind ``tpr_at_fpr[fpr]``: ``(threshold, weight)``.

    Flag ``score > threshold`` as a member, and ``score == threshold`` with probability
    ``weight`` (:func:`flag_weights`). On the pooled scores that has FPR ``fpr`` exactly
    (above the FPR resolution) and TPR the report's ``tpr_at_fpr[fpr]``: the ROC interpolated
    linearly between the two adjacent score levels, which is what tied scores need (they cross
    a threshold together, so no deterministic threshold may reach ``fpr``). Applied to a subset
    of the examples it gives that subset's (expected) TPR at the attack's operating point.

    Args:
      scores: float, any shape; higher = member.
      is_member: bool, same shape.
      fpr: the false-positive rate, in [0, 1].

    Returns:
      ``(threshold, weight)``, weight in [0, 1] (1 only where every score is flagged).
    """
    s, y = _check(scores, is_member)
    st = _Sorted(s, y)
    fpr_curve = st.curve()[0]
    i, q = _segment(fpr_curve, fpr, float((~y).sum()))
    if i >= st.thresholds.size:  # the last point: every score flagged
        return float(st.thresholds[-1]), 1.0
    # Point i flags the scores above level i (thresholds[i]); the segment adds that level.
    return float(st.thresholds[i]), q


def flag_weights(scores: Any, point: tuple[float, float]) -> np.ndarray:
    """How much each score is flagged at an :func:`operating_point`: float64, same shape.

    1 above the threshold, ``weight`` at it, 0 below; their mean over members is the TPR.
    """
    s = np.asarray(scores, np.float64)
    t, q = point
    return np.where(s > t, 1.0, np.where(s == t, q, 0.0))


def threshold_at_fpr(scores: Any, is_member: Any, fpr: float) -> float:
    """The deterministic threshold nearest below :func:`operating_point`: ``score >= threshold``.

    The pooled ROC point with the highest TPR whose FPR is at most ``fpr``. Without ties at
    the operating point it flags what :func:`operating_point` flags; with ties it leaves out
    the tied level, which the report's ``tpr_at_fpr`` counts in part (use
    :func:`operating_point` and :func:`flag_weights` for the same reading).

    Args:
      scores: float, any shape; higher = member.
      is_member: bool, same shape.
      fpr: the false-positive rate, in [0, 1].

    Returns:
      The threshold; ``inf`` when even the highest score has an FPR above ``fpr``.
    """
    st = _Sorted(*_check(scores, is_member))
    idx = _point_at(st.curve()[0], fpr)
    return float(st.thresholds[idx - 1]) if idx > 0 else float("inf")


def roc_curve(scores: Any, is_member: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """ROC of pooled scores.

    Args:
      scores: float, any shape (e.g. [M, N]); higher = member.
      is_member: bool, same shape.

    Returns:
      (fpr, tpr, thresholds): fpr and tpr float64 [K + 1] from (0, 0) to (1, 1), one point per
      distinct score; thresholds [K] (point i + 1 predicts "member" for scores >= thresholds[i]).
    """
    st = _Sorted(*_check(scores, is_member))
    fpr, tpr = st.curve()
    return fpr, tpr, st.thresholds


def _summary(fpr, tpr, fprs, n_neg: float) -> dict:
    adv = float(np.max(tpr - fpr))
    return {
        "auc": _auc(fpr, tpr),
        "advantage": adv,
        "balanced_accuracy": 0.5 + adv / 2.0,
        "tpr_at_fpr": {fpr_key(f): _tpr_at(fpr, tpr, f, n_neg) for f in fprs},
    }


def roc_metrics(scores: Any, is_member: Any, *, fprs: Sequence[float] = DEFAULT_FPRS) -> dict:
    """Pooled ROC summary.

    Args:
      scores: float, any shape (normally [M, N] pooled over all targets); higher = member.
      is_member: bool, same shape.
      fprs: false-positive rates at which to read the TPR.

    Returns:
      dict with ``auc``; ``advantage`` (max TPR - FPR); ``balanced_accuracy`` (best threshold:
      (1 + advantage) / 2); ``tpr_at_fpr`` {str(fpr): tpr}; ``num_members``; ``num_nonmembers``;
      ``fpr_support`` {str(fpr): {"false_positives_allowed": fpr * num_nonmembers,
      "resolvable": bool}}; ``lowest_resolvable_fpr`` (1 / num_nonmembers).
    """
    check_fprs(fprs)
    s, y = _check(scores, is_member)
    fpr, tpr = _Sorted(s, y).curve()
    n_neg = int((~y).sum())
    out = _summary(fpr, tpr, fprs, n_neg)
    out["num_members"] = int(y.sum())
    out["num_nonmembers"] = n_neg
    out["fpr_support"] = {
        fpr_key(f): {"false_positives_allowed": f * n_neg, "resolvable": bool(f * n_neg >= 1.0)}
        for f in fprs
    }
    out["lowest_resolvable_fpr"] = 1.0 / n_neg
    return out


def per_target_metrics(
    scores: Any, is_member: Any, *, fprs: Sequence[float] = DEFAULT_FPRS
) -> dict:
    """ROC summary of each target separately, as mean and std over targets.

    Args:
      scores: float [M, N]; is_member: bool [M, N].

    Returns:
      dict ``{"auc": {"mean", "std", "values"}, "advantage": ..., "balanced_accuracy": ...,
      "tpr_at_fpr": {str(fpr): {"mean", "std"}}, "num_nonmembers_per_target": mean count}``.
      Targets whose row has only members or only non-members are skipped.
    """
    s = np.asarray(scores, np.float64)
    y = np.asarray(is_member, bool)
    if s.ndim != 2 or s.shape != y.shape:
        raise DataError(
            f"per-target metrics need [M, N] scores and masks, got {s.shape}, {y.shape}"
        )
    rows = [
        _summary(*_Sorted(s[m], y[m]).curve(), fprs, float((~y[m]).sum()))
        for m in range(s.shape[0])
        if y[m].any() and not y[m].all()
    ]

    def ms(vals):
        v = np.asarray(vals, np.float64)
        return {"mean": float(v.mean()), "std": float(v.std())}

    out = {
        k: {**ms([r[k] for r in rows]), "values": [r[k] for r in rows]}
        for k in ("auc", "advantage", "balanced_accuracy")
    }
    out["tpr_at_fpr"] = {k: ms([r["tpr_at_fpr"][k] for r in rows]) for k in rows[0]["tpr_at_fpr"]}
    out["num_nonmembers_per_target"] = float((~y).sum(1).mean())
    return out


def bootstrap(
    scores: Any,
    is_member: Any,
    *,
    fprs: Sequence[float] = DEFAULT_FPRS,
    num_samples: int = 200,
    seed: int = 0,
    level: float = 0.95,
) -> dict:
    """Bootstrap intervals of the pooled metrics, resampling examples (columns) with replacement.

    Resampling whole examples (all M targets of an example together) respects the correlation
    between targets that share an example. Two runs over the same pool with the same ``seed``
    draw the same resamples, so differences of their ``samples`` are paired.

    Args:
      scores: float [M, N]; is_member: bool [M, N].
      num_samples: bootstrap resamples B.
      seed: seed of the resampling.
      level: coverage of the percentile interval.

    Returns:
      dict ``{metric: {"low", "high", "samples": [B floats]}}`` for ``auc``, ``advantage`` and
      ``tpr@<fpr>`` for each fpr, plus ``num_samples``, ``seed``, ``level``.
    """
    check_bootstrap(num_samples, seed)
    check_fprs(fprs)
    s, y = _check(scores, is_member)
    s2 = np.asarray(scores, np.float64)
    if s2.ndim != 2:
        s2 = s2.reshape(1, -1)
    m, n = s2.shape
    st = _Sorted(s, y)
    rng = np.random.default_rng(seed)
    names = ["auc", "advantage"] + [f"tpr@{fpr_key(f)}" for f in fprs]
    samples = {k: [] for k in names}
    for _ in range(num_samples):
        counts = np.bincount(rng.integers(0, n, n), minlength=n).astype(np.float64)
        w = np.broadcast_to(counts, (m, n)).ravel()
        fpr, tpr = st.curve(w)
        n_neg = float(w[~y].sum())
        samples["auc"].append(_auc(fpr, tpr))
        samples["advantage"].append(float(np.max(tpr - fpr)))
        for f in fprs:
            samples[f"tpr@{fpr_key(f)}"].append(_tpr_at(fpr, tpr, f, n_neg))
    lo, hi = 100 * (1 - level) / 2, 100 * (1 + level) / 2
    out: dict = {
        k: {"low": float(np.percentile(v, lo)), "high": float(np.percentile(v, hi)), "samples": v}
        for k, v in samples.items()
    }
    out.update(num_samples=num_samples, seed=seed, level=level)
    return out
