"""Metrics: analytic Gaussian ROC, an independent brute-force ROC with ties, bootstrap."""

import numpy as np
import pytest
from scipy.stats import norm

from jaxsam import metrics
from jaxsam.errors import DataError


def test_gaussian_analytic_auc_and_tpr():
    # IN ~ N(mu, 1), OUT ~ N(0, 1): AUC = Phi(mu / sqrt 2); TPR(f) = 1 - Phi(Phi^-1(1 - f) - mu).
    rng = np.random.default_rng(0)
    mu, n = 1.5, 200_000
    s = np.concatenate([rng.normal(mu, 1, n), rng.normal(0, 1, n)])
    y = np.r_[np.ones(n, bool), np.zeros(n, bool)]
    r = metrics.roc_metrics(s, y)
    # Tolerances: AUC standard error ~ 1e-3 here; TPR@1% ~ 4e-3, TPR@0.1% ~ 1e-2.
    assert abs(r["auc"] - norm.cdf(mu / np.sqrt(2))) < 5e-3
    for f, tol in ((1e-2, 0.015), (1e-3, 0.03)):
        want = 1 - norm.cdf(norm.ppf(1 - f) - mu)
        assert abs(r["tpr_at_fpr"][metrics.fpr_key(f)] - want) < tol, f
    # Best threshold at mu / 2: advantage = 2 Phi(mu / 2) - 1.
    assert abs(r["advantage"] - (2 * norm.cdf(mu / 2) - 1)) < 5e-3
    assert r["balanced_accuracy"] == pytest.approx(0.5 + r["advantage"] / 2)
    assert r["num_nonmembers"] == n and r["fpr_support"]["1e-05"]["resolvable"] is True
    assert set(r["tpr_at_fpr"]) == {"0.01", "0.001", "0.0001", "1e-05"}


def _brute(s, y):
    """Every threshold t in the distinct scores (plus +inf): predict member iff s >= t."""
    ts = np.r_[np.inf, np.unique(s)[::-1]]
    tpr = np.array([(s[y] >= t).mean() for t in ts])
    fpr = np.array([(s[~y] >= t).mean() for t in ts])
    # AUC as P[s_in > s_out] + 0.5 P[s_in == s_out] over all pairs.
    d = s[y][:, None] - s[~y][None, :]
    auc = (d > 0).mean() + 0.5 * (d == 0).mean()
    return fpr, tpr, auc


def test_roc_matches_brute_force_with_ties():
    rng = np.random.default_rng(1)
    s = rng.integers(0, 6, 300).astype(float)  # heavy ties
    y = rng.random(300) < 0.4
    s[y] += rng.integers(0, 2, y.sum())
    fpr, tpr, thr = metrics.roc_curve(s, y)
    bf, bt, bauc = _brute(s, y)
    np.testing.assert_allclose(fpr, bf)
    np.testing.assert_allclose(tpr, bt)
    r = metrics.roc_metrics(s.reshape(3, 100), y.reshape(3, 100))
    assert r["auc"] == pytest.approx(bauc, abs=1e-12)
    assert r["advantage"] == pytest.approx(np.max(bt - bf))
    for f in (0.01, 0.1, 0.3):
        got = metrics.roc_metrics(s, y, fprs=(f,))["tpr_at_fpr"][repr(f)]
        assert got == pytest.approx(_randomized_tpr(s, y, f), abs=1e-12)
        # At least the deterministic point below, at most the one above.
        assert bt[bf <= f].max() <= got <= bt[bf > f].min()


def _randomized_tpr(s, y, f):
    """TPR of the randomized threshold with FPR exactly f, level by level (no ROC arrays)."""
    n_pos, n_neg = y.sum(), (~y).sum()
    tp = fp = 0.0
    for level in np.unique(s)[::-1]:
        at = s == level
        pos, neg = (at & y).sum(), (at & ~y).sum()
        if fp + neg > f * n_neg:  # this level would exceed the budget: take part of it
            return (tp + (f * n_neg - fp) / neg * pos) / n_pos
        tp, fp = tp + pos, fp + neg
    return tp / n_pos


def test_tied_scores_read_as_random_tie_breaks_on_average():
    # Discrete scores (as RMIA's counts): at a fixed FPR the tied level straddling the budget
    # is taken in part, which is what breaking the ties at random gives on average. The
    # deterministic point below would read low (it must leave the whole level out).
    rng = np.random.default_rng(4)
    n = 20_000
    y = rng.random(n) < 0.5
    s = np.floor(rng.normal(size=n) * 4 + 1.2 * y)  # about 30 levels, thousands tied on each
    f = 0.01
    got = metrics.roc_metrics(s, y, fprs=(f,))["tpr_at_fpr"][repr(f)]
    broken = [
        metrics.roc_metrics(s + rng.random(n) * 1e-3, y, fprs=(f,))["tpr_at_fpr"][repr(f)]
        for _ in range(40)
    ]
    assert got == pytest.approx(np.mean(broken), abs=3 * np.std(broken) / np.sqrt(40) + 1e-4)
    fpr, tpr, _ = metrics.roc_curve(s, y)
    assert tpr[fpr <= f].max() < got - 0.002  # the deterministic reading is visibly lower
    # The operating point flags the tied level in part and realises FPR f exactly.
    point = metrics.operating_point(s, y, f)
    w = metrics.flag_weights(s, point)
    assert (
        0 < point[1] < 1 and w[~y].mean() == pytest.approx(f) and w[y].mean() == pytest.approx(got)
    )
    assert metrics.threshold_at_fpr(s, y, f) > point[0]  # the deterministic point: one level up


def test_below_the_fpr_resolution_no_interpolation():
    # 100 non-members: FPR 0.001 allows 0.1 false positives; the value stays the TPR at zero
    # false positives (here 0: a non-member ties the top member score).
    s = np.r_[np.arange(100.0), 99.0, np.arange(99.0)]
    y = np.r_[np.zeros(100, bool), np.ones(100, bool)]
    r = metrics.roc_metrics(s, y, fprs=(0.001, 0.01))
    assert r["tpr_at_fpr"]["0.001"] == 0.0
    assert r["tpr_at_fpr"]["0.01"] == pytest.approx(0.01)  # the tied top level in full


def test_all_tied_scores_give_chance():
    r = metrics.roc_metrics(np.zeros(10), np.arange(10) < 5)
    assert r["auc"] == 0.5 and r["advantage"] == 0.0 and r["tpr_at_fpr"]["0.01"] == 0.0


def test_unresolvable_fpr_flagged():
    r = metrics.roc_metrics(np.arange(200.0), np.arange(200) >= 100)
    assert r["fpr_support"]["0.01"] == {"false_positives_allowed": 1.0, "resolvable": True}
    assert r["fpr_support"]["0.001"]["resolvable"] is False


def test_per_target_and_bootstrap():
    rng = np.random.default_rng(2)
    y = rng.random((4, 300)) < 0.5
    s = rng.normal(size=(4, 300)) + y
    pt = metrics.per_target_metrics(s, y)
    each = [metrics.roc_metrics(s[m], y[m])["auc"] for m in range(4)]
    assert pt["auc"]["mean"] == pytest.approx(np.mean(each))
    assert pt["auc"]["std"] == pytest.approx(np.std(each))
    b = metrics.bootstrap(s, y, num_samples=40, seed=3)
    auc = metrics.roc_metrics(s, y)["auc"]
    assert b["auc"]["low"] < auc < b["auc"]["high"] and len(b["auc"]["samples"]) == 40
    assert b["auc"]["samples"] == metrics.bootstrap(s, y, num_samples=40, seed=3)["auc"]["samples"]


def test_bad_input():
    with pytest.raises(DataError):
        metrics.roc_metrics(np.array([1.0, np.nan]), np.array([True, False]))
    with pytest.raises(DataError):
        metrics.roc_metrics(np.ones(3), np.ones(3, bool))
