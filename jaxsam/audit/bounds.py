"""Lower bounds on epsilon from counts of guesses: the arithmetic of an audit.

Each function turns the outcome of one membership test, at one score threshold, into the
largest epsilon that the outcome refutes at a significance level: with probability at least
``1 - significance`` over the randomness of the audit, an (epsilon, delta)-DP mechanism does not
produce counts this extreme for any epsilon above the returned value. 0 means nothing is refuted.
Nothing here chooses a threshold: :mod:`jaxsam.audit.strategies` does, and pays for the choice.

- :func:`one_run_epsilon`: the one-run audit of Steinke, Nasr and Jagielski (2023, "Privacy
  auditing with one (1) training run", Theorem 3.1 with abstentions, one-sided guesses): ``m``
  canaries, each included independently with probability 1/2; the attack guesses "member" on
  ``guesses`` of them and ``correct`` of those guesses are members.
  :func:`one_run_p_value` is the theorem's p-value.
- :func:`fdp_epsilon`: the same counts audited against the Gaussian trade-off curve (Mahloujifar,
  Melis and Chaudhuri 2024, "Auditing f-differential privacy in one run"), the algorithm of
  ``jax_privacy.auditing.CanaryScoreAuditor.epsilon_one_run_fdp``. It refutes "the mechanism
  is mu-GDP" for the mu whose (epsilon, delta) curve passes through the returned epsilon: a
  lower bound on epsilon for a mechanism whose privacy is a Gaussian trade-off curve (the
  Gaussian mechanism; DP-SGD approximately), not for every (epsilon, delta)-DP mechanism.
- :func:`clopper_pearson_epsilon`: the multi-run audit (Jagielski et al. 2020; Nasr et al. 2021,
  "Adversary instantiation"): independent training runs, each with or without one canary; the
  true- and false-positive rates get one-sided Clopper-Pearson bounds at ``significance / 2``
  each, and ``TPR <= exp(epsilon) FPR + delta`` gives the bound.

Pure numpy and scipy; no jax.
"""

from __future__ import annotations

import functools
import math

import numpy as np
import scipy.optimize
import scipy.special
import scipy.stats
from scipy.special import ndtr, ndtri

from jaxsam.errors import ConfigError, option


def check_level(significance: float, delta: float) -> None:
    """Raises :class:`ConfigError` unless ``0 < significance < 0.5`` and ``0 <= delta < 1``."""
    if not (isinstance(significance, int | float) and 0.0 < significance < 0.5):
        raise ConfigError(
            f"{option('significance', repr(significance))} is out of range; it must lie in "
            f"(0, 0.5), e.g. {option('significance', '0.05')} for a 95% lower bound"
        )
    if not (isinstance(delta, int | float) and 0.0 <= delta < 1.0):
        raise ConfigError(f"delta = {delta!r} is out of range; it must lie in [0, 1), e.g. 1e-5")


def _check_counts(m: int, guesses: int, correct: int) -> None:
    if not (0 <= correct <= guesses <= m):
        raise ConfigError(
            f"counts canaries={m}, guesses={guesses}, correct={correct} are inconsistent; they "
            "need 0 <= correct <= guesses <= canaries"
        )


def one_run_p_value(m: int, guesses: int, correct: int, epsilon: float, delta: float) -> float:
    """The p-value of ``correct`` right guesses among ``guesses`` under (epsilon, delta)-DP.

    Steinke et al. (2023), Theorem 3.1 (guesses of "member" only: ``k_- = 0``): with
    ``q = e^eps / (1 + e^eps)`` and ``W`` the number of correct guesses among ``r = guesses``,

        P[W >= v] <= beta + 2 m delta * max_{i = 1..v} (P[Bin(r, q) >= v - i] - beta) / i,

    where ``beta = P[Bin(r, q) >= v]`` and ``v = correct``. The bound holds for any attack that
    decides its guesses from the mechanism's output (not from the canaries' coins).

    Args:
      m: canaries (trials), each a member with probability 1/2.
      guesses: how many the attack guessed to be members (the others: abstained).
      correct: how many of those guesses are members.
      epsilon: the claimed epsilon (>= 0).
      delta: the claimed delta (>= 0).

    Returns:
      The p-value in [0, 1].
    """
    _check_counts(m, guesses, correct)
    q = float(scipy.special.expit(epsilon))
    # scipy.special.bdtrc(k, n, p) = P[Bin(n, p) > k] (1 for k < 0): binom.sf without its
    # per-call overhead, which dominates a threshold search.
    beta = float(scipy.special.bdtrc(correct - 1, guesses, q))
    if delta == 0 or correct == 0:
        return min(beta, 1.0)
    i = np.arange(1, correct + 1)
    gaps = scipy.special.bdtrc(correct - i - 1, guesses, q) - beta
    alpha = float(np.max(gaps / i))
    return min(beta + 2.0 * m * delta * alpha, 1.0)


def one_run_epsilon(m: int, guesses: int, correct: int, significance: float, delta: float) -> float:
    """The largest epsilon whose one-run p-value (:func:`one_run_p_value`) is <= significance.

    0 when even epsilon = 0 is not refuted. The p-value grows with epsilon, so the bound is
    the root of ``p(eps) = significance``, found by bracketing and Brent's method (to 1e-9).
    """
    _check_counts(m, guesses, correct)
    check_level(significance, delta)

    def gap(eps: float) -> float:
        return significance - one_run_p_value(m, guesses, correct, eps, delta)

    if correct == 0 or gap(0.0) <= 0:
        return 0.0
    lo, hi = 0.0, 1.0
    while gap(hi) > 0:
        lo, hi = hi, 2.0 * hi
        if hi > 1e4:  # a p-value <= significance at any epsilon: impossible for significance < 1
            return float("inf")
    return float(scipy.optimize.brentq(gap, lo, hi, xtol=1e-9))


@functools.lru_cache(maxsize=4096)
def _gdp_mu(epsilon: float, delta: float) -> float:
    """mu of the Gaussian mechanism that is exactly (epsilon, delta)-DP (1 / its sigma)."""
    import dp_accounting

    sigma = dp_accounting.get_sigma_gaussian(epsilon, delta)
    return math.inf if sigma == 0 else 1.0 / sigma


def _fdp_objective(eps: float, m: int, guesses: int, correct: int, alpha: float, delta: float):
    """Positive when the counts refute the Gaussian trade-off curve of (eps, delta).

    The recursion ``audit_rh_with_cap`` of Mahloujifar et al. (2024), as
    ``jax_privacy.auditing`` runs it, with ``f^-1(x) = Phi(Phi^-1(x) - mu)``.
    """
    mu = _gdp_mu(eps, delta)
    r = alpha * correct / m
    h = alpha * (guesses - correct) / m
    for i in range(correct - 1, -1, -1):
        blown = 1.0 if math.isinf(mu) else float(ndtr(ndtri(r) - mu)) if r > 0 else 0.0
        h_new = max(h, blown)
        if h == h_new:  # neither h nor r can change any more
            break
        r = min(r + (i / (guesses - i)) * (h_new - h), 1.0)
        h = h_new
    return r + h - guesses / m


def fdp_epsilon(m: int, guesses: int, correct: int, significance: float, delta: float) -> float:
    """The one-run f-DP bound of Mahloujifar et al. (2024) for the Gaussian trade-off curve.

    The algorithm of ``jax_privacy.auditing.CanaryScoreAuditor.epsilon_one_run_fdp`` at one
    explicit threshold (a test checks that the two agree), with scipy's normal ufuncs instead
    of ``scipy.stats.norm``'s per-call overhead, which made a threshold search slow. The
    auditor's ``epsilon_from_gdp`` is never used (jax-privacy 2.0.0 takes ``abs`` where a clamp
    at 0 belongs, and reports a positive epsilon on scores with no signal).
    """
    _check_counts(m, guesses, correct)
    check_level(significance, delta)
    delta = max(delta, 1e-300)  # mu-GDP at delta = 0 is no privacy claim at all

    def objective(eps: float) -> float:
        return _fdp_objective(eps, m, guesses, correct, significance, delta)

    if correct == 0 or objective(0.0) <= 0:
        return 0.0
    lo, hi = 0.0, 1.0
    while objective(hi) > 0:
        lo, hi = hi, 2.0 * hi
        if hi > 1e4:
            return math.inf
    return float(scipy.optimize.brentq(objective, lo, hi, xtol=1e-6))


def clopper_pearson_upper(k: np.ndarray, n: np.ndarray, significance: float) -> np.ndarray:
    """One-sided Clopper-Pearson upper bound on a binomial rate: ``k`` of ``n`` trials.

    With probability at least ``1 - significance`` the true rate is below it (1 where k = n,
    and where n = 0: nothing is known).
    """
    k, n = np.asarray(k, float), np.asarray(n, float)
    safe = (k < n) & (n > 0)
    ub = scipy.stats.beta.ppf(
        1.0 - significance, np.where(safe, k + 1, 1), np.where(safe, n - k, 1)
    )
    return np.where(safe, ub, 1.0)


def clopper_pearson_epsilon(
    tp: np.ndarray,
    members: np.ndarray,
    fp: np.ndarray,
    non_members: np.ndarray,
    significance: float,
    delta: float,
) -> np.ndarray:
    """The multi-run bound ``log((TPR_lo - delta) / FPR_hi)``, clamped at 0 (vectorized).

    ``TPR_lo = 1 - CP_upper(members - tp, members, significance / 2)`` and ``FPR_hi =
    CP_upper(fp, non_members, significance / 2)``: the two one-sided intervals hold together
    with probability at least ``1 - significance`` (the form of
    ``CanaryScoreAuditor.epsilon_clopper_pearson``, one-sided).

    Args:
      tp, members: guesses that are members, and members (per trial set, broadcastable).
      fp, non_members: guesses that are non-members, and non-members.
      significance, delta: the level and the claimed delta.

    Returns:
      float array of the broadcast shape, >= 0.
    """
    check_level(significance, delta)
    tp, members = np.asarray(tp), np.asarray(members)
    fp, non_members = np.asarray(fp), np.asarray(non_members)
    tpr_lo = 1.0 - clopper_pearson_upper(members - tp, members, significance / 2)
    fpr_hi = clopper_pearson_upper(fp, non_members, significance / 2)
    with np.errstate(divide="ignore", invalid="ignore"):
        eps = np.log(np.maximum(tpr_lo - delta, 0.0)) - np.log(fpr_hi)
    return np.where(tpr_lo > delta, np.maximum(eps, 0.0), 0.0)


def logistic_ceiling(m: int, significance: float, delta: float) -> float:
    """The one-run bound of ``m`` guesses all correct: the most ``m`` canaries can certify."""
    return one_run_epsilon(m, m, m, significance, delta) if m else 0.0


__all__ = [
    "check_level",
    "clopper_pearson_epsilon",
    "clopper_pearson_upper",
    "fdp_epsilon",
    "logistic_ceiling",
    "one_run_epsilon",
    "one_run_p_value",
]
