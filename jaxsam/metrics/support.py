"""What a report's TPR rows mean and how far the data supports them.

Read from one attack's report entry (:func:`jaxsam.metrics.roc.roc_metrics`' keys, plus ``ci``
from :func:`jaxsam.metrics.roc.bootstrap`): the operating points at fixed FPRs (advantage, lift,
members flagged, :func:`operating_points`), and which TPR rows rest on at least one allowed false
positive (:func:`row_support`); a row that does not gets the exact Clopper-Pearson interval of
the members above the highest non-member score (:func:`exact_interval`) in place of a
bootstrap interval (:func:`mark_support`).
"""

from __future__ import annotations

from collections.abc import Sequence

from jaxsam.errors import DataError
from jaxsam.metrics.roc import fpr_key

# The FPRs at which reports count the members an attack flags (``operating_points``).
OPERATING_FPRS = (1e-3, 1e-4)


def tpr_key(fpr: float) -> str:
    """The key of FPR ``fpr`` in a report's ``tpr_at_fpr`` (and ``operating_points``) dict.

    Users never need to spell a key: ``entry["tpr_at_fpr"][tpr_key(1e-5)]`` reads TPR at
    0.001% FPR (the key is ``"1e-05"``). Same as :func:`fpr_key`.
    """
    return fpr_key(fpr)


def operating_points(entry: dict, fprs: Sequence[float] = OPERATING_FPRS) -> dict:
    """What an attack does at fixed FPRs: advantage, lift and members flagged, with intervals.

    Read from one attack's report entry (:func:`roc_metrics`, plus ``ci`` from
    :func:`bootstrap` when present). At FPR budget ``f`` the attack's threshold flags a
    fraction ``tpr`` of the member (target, example) pairs:

    * ``advantage`` = tpr - f (membership advantage at that operating point; 0 = chance);
    * ``lift`` = tpr / f (how many times more often a member is flagged than a non-member
      may be; 1 = chance);
    * ``members_flagged`` = tpr * num_members (pooled member pairs above the threshold).

    Args:
      entry: an attack entry with ``tpr_at_fpr``, ``num_members`` and ``num_nonmembers``.
      fprs: the FPR budgets (each must have a ``tpr_at_fpr`` key).

    Returns:
      ``{fpr_key(f): {"fpr", "tpr", "advantage", "lift", "members_flagged", "resolvable",
      "supported" (same as resolvable),
      "ci": {"advantage", "lift", "members_flagged": {"low", "high"}}}}``; ``ci`` only where
      the entry has a bootstrap interval of that TPR and ``f`` is resolvable (at least one
      false positive allowed).
    """
    out = {}
    n_mem, n_neg = int(entry["num_members"]), int(entry["num_nonmembers"])
    for f in fprs:
        key = fpr_key(f)
        tpr = float(entry["tpr_at_fpr"][key])
        point = {
            "fpr": float(f),
            "tpr": tpr,
            "advantage": tpr - f,
            "lift": tpr / f,
            "members_flagged": int(round(tpr * n_mem)),
            "resolvable": bool(f * n_neg >= 1.0),
        }
        point["supported"] = point["resolvable"]
        ci = (entry.get("ci") or {}).get(f"tpr@{key}")
        if ci and point["resolvable"] and "low" in ci:
            lo, hi = float(ci["low"]), float(ci["high"])
            point["ci"] = {
                "advantage": {"low": lo - f, "high": hi - f},
                "lift": {"low": lo / f, "high": hi / f},
                "members_flagged": {"low": int(round(lo * n_mem)), "high": int(round(hi * n_mem))},
            }
        out[key] = point
    return out


# What a TPR below the FPR resolution is, in words (report.json's ``fpr_support[f]["reads"]``).
ZERO_FP_WORDS = "TPR at zero false positives"
EXACT_INTERVAL_METHOD = "Clopper-Pearson"
EXACT_INTERVAL_CONDITION = (
    "the threshold at the highest non-member score, held fixed: the interval leaves out that "
    "threshold's own variability and treats the pooled member pairs as independent"
)


def exact_interval(successes: int, trials: int, level: float = 0.95) -> tuple[float, float]:
    """The exact (Clopper-Pearson) binomial interval of a proportion ``successes / trials``.

    Args:
      successes: k, in [0, trials].
      trials: n >= 1.
      level: coverage.

    Returns:
      (low, high) fractions; low is 0 when k = 0 and high is 1 when k = n.
    """
    from scipy import stats

    k, n = int(successes), int(trials)
    if n < 1 or not 0 <= k <= n:
        raise DataError(f"an exact interval needs 0 <= successes <= trials >= 1; got {k} of {n}")
    a = (1.0 - level) / 2.0
    low = 0.0 if k == 0 else float(stats.beta.ppf(a, k, n - k + 1))
    high = 1.0 if k == n else float(stats.beta.ppf(1.0 - a, k + 1, n - k))
    return low, high


def row_support(entry: dict, level: float = 0.95) -> dict:
    """Which TPR rows of an attack entry the data supports, and what the others are.

    A TPR at FPR ``f`` is *supported* when at least one false positive is allowed
    (``f * num_nonmembers >= 1``). Below that resolution the value is the TPR at zero false
    positives: the fraction of member pairs scoring above the single highest of the
    ``num_nonmembers`` non-member scores. Such a row gets no bootstrap interval (a bootstrap of
    an extreme order statistic is not a valid interval) and no difference between runs is
    called on it; it gets instead the exact Clopper-Pearson interval of the ``k`` of
    ``num_members`` members above that score, conditional on that threshold.

    Works on entries of reports written before ``supported`` existed (reads ``tpr_at_fpr``,
    ``num_members``, ``num_nonmembers``); an entry without counts has every row supported.

    Args:
      entry: one attack of a report (:func:`roc_metrics`' keys).
      level: coverage of the exact interval.

    Returns:
      ``{fpr_key: {"false_positives_allowed", "resolvable", "supported"}}``, plus for an
      unsupported row ``"reads"`` (:data:`ZERO_FP_WORDS`), ``"nonmember_scores"``,
      ``"members_above_highest_nonmember"``, ``"members"`` and ``"exact_interval"``
      ``{"method", "level", "low", "high", "conditional_on"}``.
    """
    n_neg, n_mem = entry.get("num_nonmembers"), entry.get("num_members")
    out = {}
    for key, tpr in (entry.get("tpr_at_fpr") or {}).items():
        row = dict((entry.get("fpr_support") or {}).get(key) or {})
        if n_neg:
            row.setdefault("false_positives_allowed", float(key) * n_neg)
            row.setdefault("resolvable", bool(float(key) * n_neg >= 1.0))
        row["supported"] = bool(row.get("resolvable", True))
        if not row["supported"] and n_mem and tpr is not None:
            k = int(round(float(tpr) * n_mem))
            low, high = exact_interval(k, n_mem, level)
            row.update(
                reads=ZERO_FP_WORDS,
                nonmember_scores=int(n_neg),
                members_above_highest_nonmember=k,
                members=int(n_mem),
                exact_interval={
                    "method": EXACT_INTERVAL_METHOD,
                    "level": level,
                    "low": low,
                    "high": high,
                    "conditional_on": EXACT_INTERVAL_CONDITION,
                },
            )
        out[key] = row
    return out


def mark_support(entry: dict, level: float = 0.95) -> dict:
    """``entry`` with :func:`row_support` as its ``fpr_support`` and no bootstrap interval
    (``ci["tpr@<f>"]``) on an unsupported row; returns the same (modified) dict."""
    entry["fpr_support"] = row_support(entry, level)
    ci = entry.get("ci")
    for key, row in entry["fpr_support"].items():
        if not row["supported"] and isinstance(ci, dict):
            ci.pop(f"tpr@{key}", None)
    return entry
