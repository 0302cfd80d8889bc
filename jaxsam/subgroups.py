"""Typical and atypical subgroups of the pool by memorization, and per-subgroup statistics.

The pool examples with a defined memorization score (float ``[N]``, from
:func:`jaxsam.memorization.memorization`) are split into a *typical* group (lowest memorization)
and an *atypical* group (highest) with an explicit rule for ties (:func:`split_by_memorization`).
Each group is then read two ways: its OUT (pool non-member) and training accuracy
(:func:`subgroup_accuracy`) and its attack TPR at fixed FPRs (:func:`subgroup_tpr_at_fpr`), with
the threshold set inside the group or at the attack's pooled operating point. Accuracy and TPR
at a fixed FPR are the definitions of :mod:`jaxsam.metrics`. :mod:`jaxsam.analysis` puts these
into a run's ``analysis.json``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import numpy as np

from jaxsam import metrics
from jaxsam.errors import ConfigError, DataError, option

# How far (relative) a by-value subgroup may be from its requested size before ``ties="value"``
# refuses the split.
TIE_TOLERANCE = 0.1
TIE_RULES = ("rank", "value")
_GROUPS = ("typical", "atypical")


def _size(fraction: float, n: int) -> int:
    """``fraction * n`` rounded half up (the requested size of a subgroup)."""
    return int(math.floor(fraction * n + 0.5))


def _by_rank(m: np.ndarray, ok: np.ndarray, want: dict[str, int], seed: int) -> dict:
    """Groups of exactly the requested sizes: ranked by score, ties in a seeded random order."""
    idx = np.flatnonzero(ok)
    n = idx.size
    tie_break = np.random.default_rng(seed).permutation(n)
    order = idx[np.lexsort((tie_break, m[idx]))]  # ascending score, seeded among ties
    groups = {g: np.zeros(m.shape, bool) for g in _GROUPS}
    groups["typical"][order[: want["typical"]]] = True
    groups["atypical"][order[n - want["atypical"] :]] = True
    return groups


def _by_value(m: np.ndarray, ok: np.ndarray, lo: float, hi: float) -> dict:
    """Groups of every example at or beyond its boundary score (ties kept together)."""
    return {"typical": ok & (m <= lo), "atypical": ok & (m >= hi) & (m > lo)}


def _group_rule(m: np.ndarray, ok: np.ndarray, groups: dict, g: str) -> dict:
    """Group ``g``'s size, boundary score and the defined examples tied at that boundary."""
    inside = groups[g]
    vals = m[inside]
    boundary = None if not vals.size else float(vals.max() if g == "typical" else vals.min())
    at = ok & (m == boundary) if boundary is not None else np.zeros(m.shape, bool)
    return {
        "n": int(inside.sum()),
        "boundary": boundary,
        "tied_at_boundary": int(at.sum()),
        "drawn_at_boundary": int((at & inside).sum()),
    }


def _check_value_sizes(rule: dict, n: int) -> None:
    """Refuses a by-value split whose groups are more than :data:`TIE_TOLERANCE` off size."""
    for g in _GROUPS:
        r = rule[g]
        if abs(r["n"] - r["requested_n"]) > TIE_TOLERANCE * max(r["requested_n"], 1):
            raise ConfigError(
                f"memorization ties: the {g} group by value ({r['definition']}) holds "
                f"{r['n']} of {n} examples, not the requested {r['requested_n']} "
                f"({r['tied_at_boundary']} examples share its boundary score "
                f"{r['boundary']:.4g}); use {option('ties', 'rank')} (a seeded tie-break, "
                "exact sizes) or other quantiles"
            )


def split_by_memorization(
    mem: np.ndarray,
    *,
    typical_quantile: float = 0.5,
    atypical_quantile: float = 0.9,
    ties: str = "rank",
    seed: int = 0,
) -> tuple[dict[str, np.ndarray], dict]:
    """Typical and atypical pool examples by memorization score, with an explicit tie rule.

    Of the ``n`` examples with a defined (non-NaN) score, *typical* are the
    ``round(typical_quantile * n)`` lowest-memorization examples and *atypical* the
    ``round((1 - atypical_quantile) * n)`` highest. Memorization is often tied (with 16 models it
    is exactly 0 up to its 0.9 quantile), so the rule for ties matters:

    * ``ties="rank"`` (default): examples are ranked by score, ties broken by a random order
      drawn from ``seed``; each group has exactly its requested size, and which of the tied
      examples at a group's boundary fall inside is that seeded draw (counted in the rule as
      ``drawn_at_boundary``).
    * ``ties="value"``: a group is every example at or beyond its boundary score (ties kept
      together: typical ``mem <= q(typical_quantile)``, atypical ``mem >= q(atypical_quantile)``
      and above the typical boundary); refused (:class:`ConfigError`) when a group's size is
      more than :data:`TIE_TOLERANCE` of its requested size away from it.

    The groups never overlap. NaN examples are in neither.

    Args:
      mem: float ``[N]`` memorization scores.
      typical_quantile: fraction of the defined examples in the typical group, from the bottom.
      atypical_quantile: the atypical group is the top ``1 - atypical_quantile``.
      ties: "rank" or "value".
      seed: seed of the tie-break order (``ties="rank"``).

    Returns:
      ``(groups, rule)``: groups ``{"all", "typical", "atypical"}`` -> bool ``[N]`` ("all" =
      every defined example); rule ``{"ties", "seed", "defined", "typical": {...},
      "atypical": {...}}``, each group's entry ``{"definition", "requested_n", "n",
      "boundary" (the score at its edge), "tied_at_boundary" (defined examples with that
      score), "drawn_at_boundary" (of those, the ones inside the group)}``.
    """
    if not 0.0 <= typical_quantile <= atypical_quantile <= 1.0:
        raise ConfigError(
            f"need 0 <= typical_quantile <= atypical_quantile <= 1, got {typical_quantile} and "
            f"{atypical_quantile}; e.g. 0.5 and 0.9."
        )
    if ties not in TIE_RULES:
        raise ConfigError(f"unknown tie rule {ties!r}; use 'rank' or 'value'.")
    m = np.asarray(mem, np.float64)
    ok = np.isfinite(m)
    n = int(ok.sum())
    want = {"typical": _size(typical_quantile, n), "atypical": n - _size(atypical_quantile, n)}
    rule: dict = {"ties": ties, "seed": seed if ties == "rank" else None, "defined": n}
    words = {
        "typical": f"the {want['typical']} lowest-memorization examples "
        f"({typical_quantile:g} of {n})",
        "atypical": f"the {want['atypical']} highest-memorization examples "
        f"({1 - atypical_quantile:.3g} of {n})",
    }
    if n == 0:
        for g in _GROUPS:
            rule[g] = {"definition": words[g], "requested_n": 0, "n": 0, "boundary": None}
        return {"all": ok, **{g: np.zeros(m.shape, bool) for g in _GROUPS}}, rule
    if ties == "rank":
        groups = _by_rank(m, ok, want, seed)
        words = {g: w + ", ties broken by a seeded random order" for g, w in words.items()}
    else:
        lo, hi = np.quantile(m[ok], [typical_quantile, atypical_quantile])
        groups = _by_value(m, ok, lo, hi)
        words = {
            "typical": f"mem <= q({typical_quantile:g}) = {lo:.4g} (ties kept together)",
            "atypical": f"mem >= q({atypical_quantile:g}) = {hi:.4g} (ties kept together)",
        }
    for g in _GROUPS:
        rule[g] = {"definition": words[g], "requested_n": want[g], **_group_rule(m, ok, groups, g)}
    if ties == "value":
        _check_value_sizes(rule, n)
    return {"all": ok, **groups}, rule


def memorization_subgroups(mem: np.ndarray, **kwargs) -> dict[str, np.ndarray]:
    """The groups of :func:`split_by_memorization` (``{"all", "typical", "atypical"}`` -> bool
    ``[N]``), without its rule.

    Args:
      mem: float ``[N]`` memorization scores.
      **kwargs: the keywords of :func:`split_by_memorization` (``typical_quantile``,
        ``atypical_quantile``, ``ties``, ``seed``).
    """
    return split_by_memorization(mem, **kwargs)[0]


def subgroup_tpr_at_fpr(
    scores: np.ndarray,
    keep: np.ndarray,
    groups: Mapping[str, np.ndarray],
    fprs: Sequence[float] = metrics.HEADLINE_FPRS,
) -> dict[str, dict]:
    """Per-subgroup attack TPR at fixed FPRs, all M targets pooled, read two ways.

    * ``tpr`` / ``fpr``: the threshold for each FPR is the attack's own operating point on all
      examples pooled (:func:`jaxsam.metrics.operating_point`, the point behind the report's
      ``tpr_at_fpr``, randomized at a tied threshold: a tied score counts with the point's
      weight); the TPR *and the FPR actually measured inside the subgroup* at that point. The
      two FPRs differ: an atypical group's FPR at the pooled 1 % threshold is often several
      percent.
    * ``tpr_within``: the threshold set inside the subgroup, on its own non-members, so that
      the FPR inside the group is the one named (:func:`jaxsam.metrics.roc_metrics` on the
      group's pairs); ``within_supported`` says per FPR whether the group's non-member count
      allows at least one false positive (else the value is the TPR at zero false positives);
      ``nonmembers`` is that count.

    Args:
      scores: float ``[M, N]`` membership scores, higher = member.
      keep: bool ``[M, N]``.
      groups: name -> bool ``[N]`` example subsets.
      fprs: target false-positive rates.

    Returns:
      ``{group: {"tpr": {str(fpr): tpr}, "fpr": {str(fpr): measured fpr}, "tpr_within":
      {str(fpr): tpr}, "within_supported": {str(fpr): bool}, "nonmembers": int}``; None for a
      value where the group has no IN (or OUT) entries.
    """
    scores = np.asarray(scores, np.float64)
    keep = np.asarray(keep, bool)
    if scores.shape != keep.shape:
        raise DataError(
            f"scores {scores.shape} must match keep {keep.shape}; pass one score per model and "
            "pool example ([M, N]), e.g. an attack's pooled leave-one-out scores."
        )
    points = {metrics.fpr_key(f): metrics.operating_point(scores, keep, f) for f in fprs}

    def mean(w, where):
        return float(w[where].mean()) if where.any() else None

    out: dict[str, dict] = {}
    for name, g in groups.items():
        s, k = scores[:, g], keep[:, g]
        both = bool(k.any() and (~k).any())
        own = metrics.roc_metrics(s, k, fprs=fprs) if both else None
        flags = {key: metrics.flag_weights(s, p) for key, p in points.items()}
        out[name] = {
            "tpr": {key: mean(w, k) for key, w in flags.items()},
            "fpr": {key: mean(w, ~k) for key, w in flags.items()},
            "tpr_within": {key: own["tpr_at_fpr"][key] if own else None for key in points},
            "within_supported": {
                key: bool(own["fpr_support"][key]["resolvable"]) if own else False for key in points
            },
            "nonmembers": int((~k).sum()),
        }
    return out


def subgroup_accuracy(
    correct: np.ndarray, keep: np.ndarray, groups: Mapping[str, np.ndarray]
) -> dict[str, dict[str, float | None]]:
    """OUT (pool non-member) and training (IN) accuracy of each subgroup, pooled over models.

    Args:
      correct: bool ``[M, N]``; keep: bool ``[M, N]``; groups: name -> bool ``[N]``.

    Returns:
      ``{group: {"out": mean correct over OUT entries, "train": ... over IN entries}}``.
    """
    correct = np.asarray(correct, bool)
    keep = np.asarray(keep, bool)
    res: dict[str, dict[str, float | None]] = {}
    for name, g in groups.items():
        c, k = correct[:, g], keep[:, g]
        res[name] = {"out": metrics.pooled_accuracy(c, ~k), "train": metrics.pooled_accuracy(c, k)}
    return res
