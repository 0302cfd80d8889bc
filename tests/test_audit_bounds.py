"""Validity of the audit's bounds and threshold strategies (jaxsam.audit)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import scipy.optimize

from jaxsam.audit import bounds, strategies
from jaxsam.audit.strategies import METHODS, STRATEGIES, audit_bound
from jaxsam.errors import ConfigError


def naive_p_value(m: int, r: int, v: int, eps: float, delta: float) -> float:
    """Steinke, Nasr, Jagielski (2023), Theorem 3.1, written out term by term.

    P[W >= v] <= f(v) + 2 m delta max_{i in 1..v} (f(v - i) - f(v)) / i, with
    f(k) = P[Binomial(r, e^eps / (1 + e^eps)) >= k], summed from the binomial pmf.
    """
    q = math.exp(eps) / (1.0 + math.exp(eps))

    def f(k: int) -> float:
        return sum(math.comb(r, j) * q**j * (1 - q) ** (r - j) for j in range(max(k, 0), r + 1))

    tail = f(v)
    worst = max(((f(v - i) - tail) / i for i in range(1, v + 1)), default=0.0)
    return min(1.0, tail + 2 * m * delta * worst)


@pytest.mark.parametrize(
    "m,r,v", [(10, 4, 4), (100, 30, 22), (200, 60, 60), (50, 50, 31), (80, 7, 1), (40, 0, 0)]
)
@pytest.mark.parametrize("eps", [0.0, 0.3, 1.7, 4.0])
@pytest.mark.parametrize("delta", [0.0, 1e-5, 1e-2])
def test_one_run_p_value_matches_the_theorem(m, r, v, eps, delta):
    got = bounds.one_run_p_value(m, r, v, eps, delta)
    assert got == pytest.approx(naive_p_value(m, r, v, eps, delta), rel=1e-9, abs=1e-12)


@pytest.mark.parametrize("m,r,v", [(100, 30, 25), (400, 50, 45), (60, 60, 60)])
@pytest.mark.parametrize("delta", [0.0, 1e-5])
def test_one_run_epsilon_inverts_the_naive_p_value(m, r, v, delta):
    eps = bounds.one_run_epsilon(m, r, v, 0.05, delta)
    assert eps > 0
    # The bound is where the theorem's p-value crosses the significance.
    assert (
        naive_p_value(m, r, v, eps - 1e-4, delta) < 0.05 < naive_p_value(m, r, v, eps + 1e-4, delta)
    )
    root = scipy.optimize.brentq(lambda e: naive_p_value(m, r, v, e, delta) - 0.05, 0.0, 20.0)
    assert eps == pytest.approx(root, abs=1e-6)


def _scores_for(m, g, c):
    """in / out scores whose guesses at threshold 1 are g, of which c correct (m trials)."""
    ins = np.r_[np.ones(c), np.zeros(max(m - g - 1, 0))]
    outs = np.r_[np.ones(g - c), np.zeros(m - g - max(m - g - 1, 0))]
    assert ins.size + outs.size == m
    return ins, outs


@pytest.mark.parametrize("m,g,c", [(100, 30, 25), (400, 50, 45), (80, 20, 15), (200, 20, 12)])
def test_one_run_and_fdp_agree_with_canary_score_auditor(m, g, c):
    auditing = pytest.importorskip("jax_privacy.auditing")
    ins, outs = _scores_for(m, g, c)
    auditor = auditing.CanaryScoreAuditor(ins, outs)
    explicit = auditing.Explicit(1.0)
    ref = auditor.epsilon_one_run(0.05, 1e-5, threshold_strategy=explicit)
    assert bounds.one_run_epsilon(m, g, c, 0.05, 1e-5) == pytest.approx(ref, abs=1e-5)
    ref = auditor.epsilon_one_run_fdp(0.05, 1e-5, threshold_strategy=explicit)
    assert bounds.fdp_epsilon(m, g, c, 0.05, 1e-5) == pytest.approx(ref, abs=1e-5)


@pytest.mark.parametrize("tp,n_in,fp,n_out", [(50, 50, 0, 50), (40, 50, 5, 60), (3, 4, 1, 4)])
def test_clopper_pearson_agrees_with_canary_score_auditor(tp, n_in, fp, n_out):
    auditing = pytest.importorskip("jax_privacy.auditing")
    ins = np.r_[np.ones(tp), np.zeros(n_in - tp)]
    outs = np.r_[np.ones(fp), np.zeros(n_out - fp)]
    ref = auditing.CanaryScoreAuditor(ins, outs).epsilon_clopper_pearson(
        0.05, 1e-5, threshold_strategy=auditing.Explicit(1.0)
    )
    got = bounds.clopper_pearson_epsilon(tp, n_in, fp, n_out, 0.05, 1e-5)
    assert float(got) == pytest.approx(ref, abs=1e-9)


def _signal(rng, c, t, strength):
    member = rng.random((c, t)) < 0.5
    return member * strength + rng.normal(size=(c, t)), member


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("strategy", STRATEGIES)
def test_shuffled_membership_certifies_nothing(method, strategy):
    """Scores with a strong signal, memberships shuffled: eps_hat = 0 in >= 95% of seeds.

    ``split`` is a near-exact level-0.05 test at epsilon = 0: about 1 seed in 20 rejects (2 of
    these 40 do); the other strategies pay more and reject less often.
    """
    seeds = 40
    positive = 0
    for seed in range(seeds):
        rng = np.random.default_rng(seed)
        scores, member = _signal(rng, 30, 4, 3.0)
        shuffled = rng.permutation(member.ravel()).reshape(member.shape)
        rec = audit_bound(method, scores, shuffled, strategy=strategy, seed=seed)
        positive += rec["epsilon_lower"] > 0
    assert positive <= 0.05 * seeds, (method, strategy, positive)


def test_the_best_of_many_thresholds_is_not_a_bound():
    """The uncorrected search the strategies exist to avoid fails the same null test."""
    positive = 0
    for seed in range(40):
        rng = np.random.default_rng(seed)
        scores, member = _signal(rng, 30, 4, 3.0)
        y = rng.permutation(member.ravel())
        s = scores.ravel()
        best = 0.0
        for t in strategies.candidate_thresholds(s):
            g = s >= t
            best = max(
                best, bounds.one_run_epsilon(s.size, int(g.sum()), int((g & y).sum()), 0.05, 1e-5)
            )
        positive += best > 0
    assert positive > 0.05 * 40


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("strategy", STRATEGIES)
def test_a_perfect_attack_reaches_the_ceiling(method, strategy):
    rng = np.random.default_rng(3)
    member = rng.random((40, 6)) < 0.5
    rec = audit_bound(method, np.where(member, 5.0, -2.0), member, strategy=strategy)
    assert rec["epsilon_lower"] == pytest.approx(rec["ceiling"], rel=1e-9)
    assert rec["correct"] == rec["guesses"] == rec["members"]
    if method != "clopper_pearson":  # 6 trials per canary certify nothing: the ceiling says so
        assert rec["ceiling"] > 1.0
    # A separable attack with continuous scores comes close to it, never above.
    noisy = np.where(member, 5.0, -2.0) + rng.uniform(-1, 1, member.shape)
    rec2 = audit_bound(method, noisy, member, strategy=strategy)
    assert rec2["epsilon_lower"] <= rec2["ceiling"] + 1e-9
    assert rec2["epsilon_lower"] >= 0.8 * rec2["ceiling"]
    if strategy != "bonferroni":  # Bonferroni's ceiling pays for the attack's own K thresholds
        assert rec2["ceiling"] == pytest.approx(rec["ceiling"], rel=1e-9)


def _gdp_epsilon(mu: float, delta: float) -> float:
    """The epsilon at delta of mu-GDP (Dong, Roth, Su 2019, Corollary 2.13)."""
    from scipy.stats import norm

    def gap(eps):
        return norm.cdf(-eps / mu + mu / 2) - math.exp(eps) * norm.cdf(-eps / mu - mu / 2) - delta

    return scipy.optimize.brentq(gap, 0.0, 100.0)


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_bounds_of_a_gaussian_mechanism_stay_below_its_epsilon(strategy):
    """Each trial's score is S * mu + N(0, 1): mu-GDP in each canary, so (eps, delta)-DP."""
    mu, delta = 2.0, 1e-5
    eps = _gdp_epsilon(mu, delta)
    for seed in range(3):
        rng = np.random.default_rng(100 + seed)
        member = rng.random((60, 5)) < 0.5
        scores = member * mu + rng.normal(size=member.shape)
        for method in METHODS:
            rec = audit_bound(method, scores, member, strategy=strategy, delta=delta, seed=seed)
            assert 0.0 <= rec["epsilon_lower"] <= eps, (method, rec)
            if method != "clopper_pearson":
                assert rec["epsilon_lower"] > 0.3  # the test has power: it is not all zeros


def test_record_counts_reproduce_the_bound():
    rng = np.random.default_rng(5)
    scores, member = _signal(rng, 60, 4, 2.5)
    for strategy in STRATEGIES:
        rec = audit_bound("one_run", scores, member, strategy=strategy)
        again = bounds.one_run_epsilon(
            rec["canaries"], rec["guesses"], rec["correct"], rec["test_significance"], rec["delta"]
        )
        assert rec["epsilon_lower"] == pytest.approx(again, abs=1e-12)
        assert rec["epsilon_lower"] > 0
    rec = audit_bound("one_run", scores, member, strategy="split")
    assert rec["test_significance"] == rec["significance"] == 0.05
    assert rec["canaries"] == 120  # the evaluation half of 60 x 4 trials


def test_bonferroni_thresholds_depend_on_scores_only():
    s = np.random.default_rng(0).normal(size=500)
    t = strategies.bonferroni_thresholds(s)
    assert len(t) <= strategies.MAX_CANDIDATES and np.all(np.diff(t) < 0)
    assert strategies.candidate_thresholds(np.array([1.0, 1.0, 0.0])).tolist() == [0.5, -1.0]


def test_bad_input_is_refused():
    s, y = np.zeros((4, 2)), np.zeros((4, 2), bool)
    with pytest.raises(ConfigError, match="significance"):
        audit_bound("one_run", s, y, significance=0.7)
    with pytest.raises(ConfigError, match="strategy"):
        audit_bound("one_run", s, y, strategy="best")
    with pytest.raises(ConfigError, match="method"):
        audit_bound("lira", s, y)
    with pytest.raises(ConfigError, match="one shape"):
        audit_bound("one_run", s, y[:2])
    with pytest.raises(ConfigError, match="inconsistent"):
        bounds.one_run_epsilon(10, 3, 4, 0.05, 0.0)
    for seed in (-1, 2**32, True, 1.5):  # numpy's SeedSequence raised ValueError on -1
        with pytest.raises(ConfigError, match=r"seed=.* is out of range.*\[0, 2\*\*32\)"):
            audit_bound("one_run", s, y, seed=seed)
