"""The claim table's statistics and verdicts (experiments/claims.py)."""

from __future__ import annotations

import numpy as np
import pytest

from experiments import claims
from jaxsam import metrics


def _scores(seed=0, m=6, n=40, ties=False):
    rng = np.random.default_rng(seed)
    keep = rng.random((m, n)) < 0.5
    s = rng.normal(size=(m, n)) + 0.7 * keep
    if ties:
        s = np.round(s)  # a few distinct levels, as RMIA's counts have
    return s, keep


@pytest.mark.parametrize("ties", [False, True])
def test_weighted_auc_with_unit_weights_is_the_pooled_auc(ties):
    s, keep = _scores(ties=ties)
    got = claims.WeightedAUC(s, keep)(np.ones(s.shape[1]))
    assert got == pytest.approx(metrics.roc_metrics(s, keep)["auc"], abs=1e-12)


def test_weighted_auc_equals_the_auc_of_the_resampled_columns():
    s, keep = _scores(seed=1, ties=True)
    rng = np.random.default_rng(3)
    idx = rng.integers(0, s.shape[1], s.shape[1])
    counts = np.bincount(idx, minlength=s.shape[1])
    want = metrics.roc_metrics(s[:, idx], keep[:, idx])["auc"]
    assert claims.WeightedAUC(s, keep)(counts) == pytest.approx(want, abs=1e-12)


@pytest.mark.parametrize("ties", [False, True])
def test_weighted_tpr_is_the_reports_tpr_at_fpr_on_unit_and_resampled_weights(ties):
    s, keep = _scores(seed=2, m=8, n=300, ties=ties)
    auc = claims.WeightedAUC(s, keep)
    for fpr in (0.01, 0.05, 0.2):
        want = metrics.roc_metrics(s, keep, fprs=[fpr])["tpr_at_fpr"][metrics.fpr_key(fpr)]
        assert auc.tpr_at(np.ones(s.shape[1]), fpr) == pytest.approx(want, abs=1e-12)
    idx = np.random.default_rng(4).integers(0, s.shape[1], s.shape[1])
    counts = np.bincount(idx, minlength=s.shape[1])
    want = metrics.roc_metrics(s[:, idx], keep[:, idx], fprs=[0.05])["tpr_at_fpr"]["0.05"]
    assert auc.tpr_at(counts, 0.05) == pytest.approx(want, abs=1e-12)


def test_weighted_median_and_mean_repeat_values_by_their_counts():
    v = np.array([5.0, 1.0, np.nan, 3.0, 2.0])
    c = np.array([1, 3, 2, 0, 2])
    rep = np.repeat(v[[0, 1, 4]], c[[0, 1, 4]])  # NaN and zero-count entries drop out
    assert claims.weighted_median(v, c) == np.sort(rep)[(rep.size - 1) // 2]
    assert claims.weighted_mean(v, c) == pytest.approx(rep.mean())
    assert claims.weighted_mean(v, c, where=v > 1.5) == pytest.approx(rep[rep > 1.5].mean())


def test_top_fraction_has_the_exact_size_under_ties_and_is_seeded():
    v = np.array([0.0] * 90 + [0.5] * 5 + [1.0] * 5 + [np.nan] * 10)
    g = claims.top_fraction(v, 0.2, seed=0)
    assert g.sum() == 20 and not g[-10:].any()
    assert g[90:100].all()  # every value above the tie level is in
    assert np.array_equal(g, claims.top_fraction(v, 0.2, seed=0))
    assert not np.array_equal(g, claims.top_fraction(v, 0.2, seed=1))


def _fake_run(seed, shift=0.0, var_scale=1.0, n=300, m=8):
    rng = np.random.default_rng(seed)
    keep = np.zeros((m, n), bool)
    for j in range(n):  # exact half-of-M masks, the same for every "arm" of a seed
        keep[np.random.default_rng(j).permutation(m)[: m // 2], j] = True
    s = rng.normal(size=(m, n)) + (0.5 + shift) * keep
    correct = rng.random((m, n)) < 0.9
    return {
        "keep": keep,
        "auc": {a: claims.WeightedAUC(s, keep) for a in claims.ATTACKS},
        "out_correct": (correct & ~keep).sum(0),
        "out_count": (~keep).sum(0),
        "in_correct": (correct & keep).sum(0),
        "in_count": keep.sum(0),
        "memorization": np.clip(rng.normal(0.1, 0.1, n), 0, 1),
        "out_variance": var_scale * rng.gamma(2.0, 1.0, n),
    }


def test_identical_arms_give_zero_differences_and_no_verdict():
    pairs = [(_fake_run(s), _fake_run(s)) for s in range(2)]
    stats = claims.paired_bootstrap(pairs, num_samples=100)
    for s in stats.values():
        assert s["diff"] == 0 and s["low"] == 0 and s["high"] == 0
    assert {v["verdict"] for v in claims.decide(stats).values()} == {"not significant"}


def test_a_planted_leak_and_a_lower_variance_are_called():
    pairs = [(_fake_run(s), _fake_run(s, shift=0.6, var_scale=0.5)) for s in range(2)]
    verdict = claims.decide(claims.paired_bootstrap(pairs, num_samples=100))
    assert verdict["leaks_more"]["verdict"] == "holds"
    assert verdict["out_variance_lower"]["verdict"] == "holds"
    assert verdict["linear_theory"]["verdict"] == "holds"
    assert verdict["leaks_more"]["low"] > 0


def _stats(**signs):
    """Statistics whose intervals sit above (+1), below (-1) or around (0) zero."""
    keys = (
        "lira_online_auc",
        "lira_offline_auc",
        "out_accuracy",
        "memorization_atypical",
        "median_out_variance",
    )
    box = {1: (1.0, 0.5, 1.5), -1: (-1.0, -1.5, -0.5), 0: (0.1, -0.5, 0.7)}
    return {k: dict(zip(("diff", "low", "high"), box[signs.get(k, 0)], strict=True)) for k in keys}


def test_verdict_rules():
    v = claims.decide(_stats(lira_online_auc=1, out_accuracy=-1))
    assert v["leaks_more"]["verdict"] == "holds at lower accuracy"
    v = claims.decide(_stats(lira_online_auc=-1, median_out_variance=-1, lira_offline_auc=-1))
    assert v["leaks_more"]["verdict"] == "reverses"
    assert v["out_variance_lower"]["verdict"] == "holds"
    assert v["linear_theory"]["verdict"] == "reverses"
    v = claims.decide(_stats(median_out_variance=1, lira_offline_auc=1, memorization_atypical=-1))
    assert v["out_variance_lower"]["verdict"] == "reverses"
    assert v["linear_theory"]["verdict"] == "not significant"  # variance did not fall
    assert v["memorizes_atypical"]["verdict"] == "reverses"
    assert v["memorizes_atypical"]["low"] == -1.5


def test_a_collapsed_or_failed_model_is_named_for_exclusion():
    class Run:
        failed_models = [5]

        def read_json(self, name):
            assert name == "metrics.json"
            return {"train_accuracy": [0.99, 0.11, None, 0.98, 0.49, 0.97]}

    assert claims.collapsed_models(Run()) == [1, 4, 5]
    assert claims.collapsed_models(Run(), min_train_accuracy=0.1) == [5]
