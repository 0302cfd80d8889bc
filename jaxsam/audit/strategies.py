"""Threshold strategies: from canary scores to corrected lower bounds on epsilon.

An attack's scores become guesses at a threshold: "member" where ``score >= threshold``,
abstain elsewhere. Picking the threshold that gives the largest bound after looking at the
memberships is a search over many tests, and its best bound is not a valid bound. Each strategy
pays for its choice:

- ``split`` (default): the trials are split at random (seeded, independent of memberships) into
  a selection half and an evaluation half; the threshold is chosen on the selection half and
  the bound is computed on the evaluation half alone, at the full significance.
- ``multisplit``: :data:`SPLITS` independent splits, each bound at ``significance / 2``; the
  median is reported (Meinshausen, Meier and Buehlmann 2009: twice the median p-value is a
  p-value). The record's counts are those of the median split.
- ``bonferroni``: every one of at most :data:`MAX_CANDIDATES` thresholds, fixed from the scores
  alone (never from the memberships), is tested at ``significance / K``; the largest bound is
  reported.

Methods (:data:`METHODS`):

- ``one_run``: the trials are every (canary, target) pair, pooled over targets; the one-run
  bound of :func:`jaxsam.audit.bounds.one_run_epsilon`.
- ``fdp``: the same trials and counts, the f-DP bound of :func:`jaxsam.audit.bounds.fdp_epsilon`
  (its threshold is chosen with the one-run bound, which is cheaper and equally valid).
- ``clopper_pearson``: per canary, the trials are the targets (independent training runs that
  include the canary with probability 1/2); :func:`jaxsam.audit.bounds.clopper_pearson_epsilon`
  at a threshold shared by all canaries, the largest over canaries with a Bonferroni
  correction over them (``significance / C``). ``split`` and ``multisplit`` split the canaries.

Every result also has its ceiling: the same method, strategy and splits applied to a perfect
attack (scores equal to the memberships, which guesses every member and nothing else), with
Bonferroni's divisor of the real attack. A bound far below its ceiling says the attack is weak;
a small ceiling says the audit (too few canaries or targets) cannot show more, whatever the
attack.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import scipy.special

from jaxsam.audit import bounds
from jaxsam.config import show as config_show
from jaxsam.errors import ConfigError, option

METHODS = ("one_run", "clopper_pearson", "fdp")
STRATEGIES = ("split", "multisplit", "bonferroni")
# Bonferroni's thresholds: at most this many, at guess counts spread geometrically.
MAX_CANDIDATES = 32
# Multisplit's number of splits (odd: the median is one split's bound, with its counts).
SPLITS = 21
SELECTION_FRACTION = 0.5


@dataclasses.dataclass(frozen=True)
class Outcome:
    """One test: a method's bound at one threshold on one set of trials.

    Attributes:
      epsilon: the lower bound (>= 0).
      trials: the trials the bound counts (pooled: canaries x targets in the set; per canary:
        the targets of the reported canary).
      guesses: trials guessed "member"; correct: guesses that are members.
      members: members among the trials.
      threshold: the score threshold (guess where ``score >= threshold``).
      canary: per-canary methods: the row of the reported canary, else None.
    """

    epsilon: float
    trials: int
    guesses: int
    correct: int
    members: int
    threshold: float
    canary: int | None = None


def candidate_thresholds(scores: np.ndarray) -> np.ndarray:
    """Every threshold that changes the guesses: midpoints between consecutive distinct scores.

    Returns float64 [K], descending: the first guesses only the highest score(s), the last
    guesses every trial. A function of the scores alone (never of the memberships).
    """
    u = np.unique(np.asarray(scores, np.float64).ravel())[::-1]  # distinct, descending
    if u.size == 0:
        return np.zeros(0)
    mid = (u[:-1] + u[1:]) / 2.0
    return np.r_[mid, u[-1] - 1.0]


def bonferroni_thresholds(scores: np.ndarray, most: int = MAX_CANDIDATES) -> np.ndarray:
    """At most ``most`` of :func:`candidate_thresholds`, at guess counts spaced geometrically.

    Fixed from the scores alone, so testing each at ``significance / K`` is a valid correction.
    """
    cands = candidate_thresholds(scores)
    if cands.size <= most:
        return cands
    flat = np.sort(np.asarray(scores, np.float64).ravel())
    guesses = flat.size - np.searchsorted(flat, cands, side="left")  # increasing with index
    want = np.unique(np.round(np.geomspace(1, flat.size, most)).astype(np.int64))
    idx = np.unique(np.clip(np.searchsorted(guesses, want, side="left"), 0, cands.size - 1))
    return cands[idx]


def _pooled_counts(s: np.ndarray, y: np.ndarray, thresholds: np.ndarray):
    """Guesses and correct guesses [K] at each threshold, trials pooled (any shape)."""
    s, y = s.ravel(), y.ravel()
    order = np.argsort(-s, kind="stable")
    ss, yy = s[order], y[order]
    cum_correct = np.r_[0, np.cumsum(yy)]
    guesses = np.searchsorted(-ss, -thresholds, side="right")  # count of ss >= threshold
    return guesses, cum_correct[guesses]


def _pooled(method: str, s, y, theta: float, alpha: float, delta: float) -> Outcome:
    g, c = _pooled_counts(s, y, np.array([theta]))
    g, c, m = int(g[0]), int(c[0]), int(s.size)
    fn = bounds.fdp_epsilon if method == "fdp" else bounds.one_run_epsilon
    return Outcome(fn(m, g, c, alpha, delta), m, g, c, int(y.sum()), float(theta))


def _per_canary_all(s, y, thresholds: np.ndarray, alpha: float, delta: float):
    """Clopper-Pearson per canary (rows of [C, T]) at ``alpha / C``, at each of K thresholds.

    Returns eps, tp, fp [K, C] and members [C].
    """
    guess = s[None] >= np.asarray(thresholds, np.float64)[:, None, None]  # [K, C, T]
    tp, fp = (guess & y).sum(-1), (guess & ~y).sum(-1)
    members = y.sum(1)
    eps = bounds.clopper_pearson_epsilon(
        tp, members, fp, y.shape[1] - members, alpha / y.shape[0], delta
    )
    return eps, tp, fp, members


def _best_canary(eps, tp, fp, members, t: int) -> int:
    """The best canary of one threshold's row; ties (all 0) go to the largest TPR - FPR."""
    with np.errstate(divide="ignore", invalid="ignore"):
        gap = np.nan_to_num(tp / members) - np.nan_to_num(fp / (t - members))
    return int(np.lexsort((-gap, -eps))[0])


def _per_canary(s, y, theta: float, alpha: float, delta: float) -> Outcome:
    """Clopper-Pearson per canary at one threshold; the best canary's outcome."""
    eps, tp, fp, members = (
        a[0] if a.ndim == 2 else a for a in _per_canary_all(s, y, np.array([theta]), alpha, delta)
    )
    c = _best_canary(eps, tp, fp, members, y.shape[1])
    return Outcome(
        float(eps[c]),
        int(y.shape[1]),
        int(tp[c] + fp[c]),
        int(tp[c]),
        int(members[c]),
        float(theta),
        c,
    )


def _test(method: str, s, y, theta: float, alpha: float, delta: float) -> Outcome:
    if method == "clopper_pearson":
        return _per_canary(s, y, theta, alpha, delta)
    return _pooled(method, s, y, theta, alpha, delta)


def _select(method: str, s, y, alpha: float, delta: float) -> float:
    """The threshold with the largest bound on a selection set (any rule is valid here).

    The one-run bound ranks thresholds for ``one_run`` and ``fdp`` (pruned: a threshold whose
    raw precision cannot beat the best bound so far is skipped); ties go to the higher
    precision, then to more guesses.
    """
    cands = candidate_thresholds(s)
    guesses, correct = _pooled_counts(s, y, cands)
    if method == "clopper_pearson":
        eps = _per_canary_all(s, y, cands, alpha, delta)[0].max(axis=1)
        precision = correct / np.maximum(guesses, 1)
        return float(cands[np.lexsort((guesses, precision, eps))[-1]])
    m = int(s.size)
    best, best_key = 0, (-1.0, -1.0, -1)
    floor = 0.5
    for i in np.argsort(-(correct / np.maximum(guesses, 1)), kind="stable"):
        g, c = int(guesses[i]), int(correct[i])
        precision = c / max(g, 1)
        if precision <= floor and best_key[0] > 0:
            continue
        eps = bounds.one_run_epsilon(m, g, c, alpha, delta) if precision > floor else 0.0
        key = (eps, precision, g)
        if key > best_key:
            best, best_key = i, key
            if eps > 0:
                floor = float(scipy.special.expit(eps))
    return float(cands[best])


def _split_once(method, s, y, alpha, delta, rng) -> Outcome:
    n = s.shape[0]
    perm = rng.permutation(n)
    cut = int(n * SELECTION_FRACTION)
    if cut == 0 or cut == n:
        raise ConfigError(
            f"the split strategy needs at least 2 units to split, got {n}; add canaries "
            f"(audit.canaries) or use {option('threshold', 'bonferroni')}"
        )
    sel, ev = perm[:cut], perm[cut:]
    theta = _select(method, s[sel], y[sel], alpha, delta)
    return _test(method, s[ev], y[ev], theta, alpha, delta)


def _run_strategy(method, strategy, s, y, significance, delta, seed, k_bonferroni):
    """(outcome, test significance, number of Bonferroni thresholds, split bounds)."""
    if strategy == "bonferroni":
        thresholds = bonferroni_thresholds(s)
        k = k_bonferroni or len(thresholds)
        level = significance / k
        outs = [_test(method, s, y, t, level, delta) for t in thresholds]
        best = max(outs, key=lambda o: (o.epsilon, o.correct / max(o.guesses, 1)))
        return best, level, k, None
    rng = np.random.default_rng(np.random.SeedSequence([seed, 0x617564]))
    if strategy == "split":
        return _split_once(method, s, y, significance, delta, rng), significance, None, None
    outs = [_split_once(method, s, y, significance / 2, delta, rng) for _ in range(SPLITS)]
    order = np.argsort([o.epsilon for o in outs], kind="stable")
    return outs[order[SPLITS // 2]], significance / 2, None, [o.epsilon for o in outs]


def check_seed(seed: int) -> None:
    """Raises :class:`ConfigError` unless ``seed`` (the splits' seed) is an integer in
    ``[0, 2**32)``, the range of ``audit.seed``."""
    if not (isinstance(seed, int) and not isinstance(seed, bool) and 0 <= seed < 2**32):
        raise ConfigError(
            f"{option('seed', config_show(seed))} is out of range; the seed of the splits is an "
            f"integer in [0, 2**32), e.g. {option('seed', '0')}"
        )


def audit_bound(
    method: str,
    scores: np.ndarray,
    member: np.ndarray,
    *,
    significance: float = 0.05,
    delta: float = 1e-5,
    strategy: str = "split",
    seed: int = 0,
) -> dict:
    """One method's lower bound on epsilon, with its strategy's correction and its ceiling.

    Args:
      method: one of :data:`METHODS`.
      scores: float [C, T]: the attack's score of canary c on target t (higher = member).
      member: bool [C, T]: whether target t trained on canary c (each drawn with probability
        1/2, independently).
      significance: the bound holds with probability at least ``1 - significance``.
      delta: the delta of the (epsilon, delta) claim being audited.
      strategy: one of :data:`STRATEGIES`.
      seed: seed of the splits (chosen without looking at the memberships).

    Returns:
      The record: ``method``, ``epsilon_lower``, ``significance``, ``delta``, ``threshold`` (the
      strategy), ``canaries`` (the trials the bound counts), ``guesses``, ``correct``,
      ``members`` (members among those trials), ``test_significance`` (the level of the one
      test the counts come from: ``epsilon_lower`` is the method's bound of these counts at
      this level; for multisplit, of the median split), ``score_threshold``, ``ceiling``
      (a perfect attack's bound under the same strategy), and ``bonferroni_thresholds`` /
      ``split_bounds`` / ``canary_row`` where they apply.

    Raises:
      ConfigError: an unknown method or strategy, bad shapes or levels, a bad seed.
    """
    if method not in METHODS:
        raise ConfigError(f"audit method {method!r} is unknown; use one of {list(METHODS)}")
    if strategy not in STRATEGIES:
        raise ConfigError(
            f"threshold strategy {strategy!r} is unknown; use one of {list(STRATEGIES)}"
        )
    bounds.check_level(significance, delta)
    check_seed(seed)
    s = np.asarray(scores, np.float64)
    y = np.asarray(member)
    if s.ndim != 2 or y.shape != s.shape or y.dtype != np.bool_:
        raise ConfigError(
            f"scores {s.shape} and member {y.shape} ({y.dtype}) must be float and bool arrays "
            "of one shape [canaries, targets]"
        )
    if not np.isfinite(s).all():
        raise ConfigError("canary scores hold NaN or infinite values; rescore the run")
    if method != "clopper_pearson":
        s, y = s.ravel(), y.ravel()
    out, level, k, splits = _run_strategy(method, strategy, s, y, significance, delta, seed, None)
    perfect = y.astype(np.float64)
    ceil, _, _, _ = _run_strategy(method, strategy, perfect, y, significance, delta, seed, k)
    record = {
        "method": method,
        "epsilon_lower": float(out.epsilon),
        "significance": float(significance),
        "delta": float(delta),
        "threshold": strategy,
        "canaries": out.trials,
        "guesses": out.guesses,
        "correct": out.correct,
        "members": out.members,
        "test_significance": float(level),
        "score_threshold": out.threshold,
        "ceiling": float(ceil.epsilon),
    }
    if k is not None:
        record["bonferroni_thresholds"] = int(k)
    if splits is not None:
        record["split_bounds"] = [float(e) for e in splits]
    if out.canary is not None:
        record["canary_row"] = out.canary
    return record
