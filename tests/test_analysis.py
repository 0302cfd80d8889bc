"""Mechanism analyses on synthetic inputs with known answers, and the analyze command."""

from __future__ import annotations

import importlib
import json
import sys
import types
import warnings
from pathlib import Path

import numpy as np
import pytest

from jaxsam import analysis, store
from jaxsam import memorization as memo
from jaxsam.commands import analyze as analyze_cmd
from jaxsam.errors import ConfigError, command_line
from jaxsam.pipeline.analyze import analyze_runs


def _reference_lsc(logits, labels):
    """Private reference logit-scaled confidence z_y - logsumexp_{y' != y} z_y' ([..., N, A])."""
    z = np.asarray(logits, np.float64)
    oh = np.eye(z.shape[-1], dtype=bool)[np.asarray(labels)][:, None, :]
    zy = np.where(oh, z, 0.0).sum(-1)
    rest = np.where(oh, -np.inf, z)
    mx = rest.max(-1, keepdims=True)
    return (zy - (mx[..., 0] + np.log(np.exp(rest - mx).sum(-1)))).astype(np.float32)


@pytest.fixture(autouse=True)
def _signals_module(monkeypatch):
    """Uses jaxsam.attacks.signals when present; else a private stand-in with the same function."""
    try:
        importlib.import_module("jaxsam.attacks.signals")
    except ImportError:
        fake = types.ModuleType("jaxsam.attacks.signals")
        fake.logit_scaled_confidence = _reference_lsc
        monkeypatch.setitem(sys.modules, "jaxsam.attacks.signals", fake)


def _masks(rng, m, n, pkeep=0.5):
    return np.argsort(rng.uniform(size=(m, n)), axis=0) < round(pkeep * m)


# ------------------------------------------------------------------------ influence entropy


def test_influence_entropy_known_values():
    infl = np.array(
        [
            [0.5, 0.2, -0.1, 0.0],
            [0.0, 0.2, -0.3, np.nan],
            [0.0, 0.2, 0.0, 0.0],
            [0.0, 0.2, 0.1, 0.0],
        ]
    )
    h = analysis.influence_entropy(infl)
    assert h[0] == pytest.approx(0.0)  # all influence on one training example
    assert h[1] == pytest.approx(np.log(4))  # spread evenly over four
    assert h[2] == pytest.approx(0.0)  # negatives ignored: one positive
    assert np.isnan(h[3])  # no positive influence
    h_thr = analysis.influence_entropy(infl, min_influence=0.3)
    assert h_thr[0] == pytest.approx(0.0) and np.isnan(h_thr[1])


def test_influence_entropy_streamed_equals_dense():
    rng = np.random.default_rng(0)
    keep = _masks(rng, 12, 23)
    test_correct = rng.uniform(size=(12, 7)) < 0.6
    dense = analysis.influence_entropy(memo.influence(test_correct, keep))
    streamed = analysis.influence_entropy_from_masks(test_correct, keep, block_size=5)
    np.testing.assert_allclose(streamed, dense, rtol=1e-6)


def test_entropy_buckets_quantile_and_uniform():
    e = np.array([0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0, np.nan])
    b, edges = analysis.entropy_buckets(e, 5)
    np.testing.assert_array_equal(b, [0, 0, 1, 1, 2, 2, 3, 3, 4, 4, -1])
    assert edges[0] == pytest.approx(0.1) and edges[-1] == pytest.approx(1.0)
    b, _ = analysis.entropy_buckets(np.array([0.0, 0.05, 0.9, 1.0]), 5, method="uniform")
    np.testing.assert_array_equal(b, [0, 0, 4, 4])


# ------------------------------------------------------------------------ subgroups and TPR


def test_memorization_subgroups_by_rank_break_ties_by_seed_and_keep_sizes():
    mem = np.array([0.0] * 8 + [0.5, 0.9, np.nan])
    g, rule = analysis.split_by_memorization(mem, typical_quantile=0.5, atypical_quantile=0.8)
    assert not (g["typical"] & g["atypical"]).any() and g["all"].sum() == 10
    # Ranked: the bottom half is 5 of the 8 tied zeros (not all 8), the top 20% is [8, 9].
    assert g["typical"].sum() == 5 and (mem[g["typical"]] == 0).all()
    np.testing.assert_array_equal(np.flatnonzero(g["atypical"]), [8, 9])
    t = rule["typical"]
    assert (t["requested_n"], t["n"], t["boundary"]) == (5, 5, 0.0)
    assert (t["tied_at_boundary"], t["drawn_at_boundary"]) == (8, 5)
    again = analysis.memorization_subgroups(mem, typical_quantile=0.5, atypical_quantile=0.8)
    np.testing.assert_array_equal(again["typical"], g["typical"])  # seeded: reproducible
    picks = {
        tuple(
            np.flatnonzero(
                analysis.memorization_subgroups(mem, typical_quantile=0.5, seed=s)["typical"]
            )
        )
        for s in range(6)
    }
    assert len(picks) > 1  # the tie-break is the seed's, not the input order's
    # Kept together by value, the typical group would hold 8 of 10, not 5: refused, with sizes.
    with pytest.raises(
        ConfigError, match=r"holds 8 of 10 examples, not the requested 5.*ties=rank"
    ):
        analysis.split_by_memorization(
            mem, typical_quantile=0.5, atypical_quantile=0.8, ties="value"
        )
    with command_line(), pytest.raises(ConfigError, match=r"use --ties rank \(a seeded"):
        analysis.split_by_memorization(mem, atypical_quantile=0.8, ties="value")
    even = np.arange(10.0)  # no ties: both rules agree
    gv, _ = analysis.split_by_memorization(even, atypical_quantile=0.8, ties="value")
    gr, _ = analysis.split_by_memorization(even, atypical_quantile=0.8)
    for k in ("typical", "atypical"):
        np.testing.assert_array_equal(gv[k], gr[k])


def test_small_m_memorization_zero_up_to_its_0_9_quantile_still_gives_the_bottom_half():
    """With 16 models memorization is 0 for ~90% of examples: 'typical' is the bottom half."""
    rng = np.random.default_rng(0)
    n = 1437
    mem = np.where(rng.random(n) < 0.9, 0.0, rng.choice([0.125, 0.25, 0.5], n))
    g, rule = analysis.split_by_memorization(mem)
    assert g["typical"].sum() == rule["typical"]["requested_n"] == 719  # 718.5 up; not ~1290
    assert g["atypical"].sum() == rule["atypical"]["requested_n"] == 144
    assert rule["typical"]["tied_at_boundary"] > 1200


def test_subgroup_tpr_within_sets_the_threshold_inside_and_pooled_reports_its_real_fpr():
    rng = np.random.default_rng(7)
    keep = _masks(rng, 10, 200)
    hot = np.arange(200) < 40  # a subgroup whose non-members also score high
    scores = rng.normal(size=keep.shape) + 2.0 * keep + 1.5 * hot
    res = analysis.subgroup_tpr_at_fpr(scores, keep, {"all": np.ones(200, bool), "hot": hot})
    h = res["hot"]
    assert h["fpr"]["0.01"] > 0.03  # the pooled 1% threshold: several % FPR inside the group
    s, k = scores[:, hot], keep[:, hot]
    assert h["nonmembers"] == int((~k).sum()) and h["within_supported"]["0.01"]
    # Brute force: the lowest threshold (over the group's own scores) with in-group FPR <= 1%.
    t = min(c for c in np.r_[np.unique(s), np.inf] if np.mean(s[~k] >= c) <= 0.01)
    assert h["tpr_within"]["0.01"] == pytest.approx(np.mean(s[k] >= t))
    assert h["within_supported"]["0.001"] is False  # 200 non-member pairs: < 1 FP at 0.1%


def test_threshold_and_tpr_against_brute_force():
    rng = np.random.default_rng(1)
    keep = _masks(rng, 10, 40)
    scores = rng.normal(size=keep.shape) + 1.5 * keep
    groups = {"all": np.ones(40, bool), "first": np.arange(40) < 10}
    res = analysis.subgroup_tpr_at_fpr(scores, keep, groups, fprs=(0.05, 0.01))
    out = scores[~keep]
    for f in (0.05, 0.01):
        # Brute force: the lowest candidate threshold whose FPR is <= f.
        cands = np.sort(np.concatenate([out, [np.inf]]))
        t = next(c for c in cands if np.mean(out > c) <= f)
        for name, g in groups.items():
            ins = scores[:, g][keep[:, g]]
            assert res[name]["tpr"][str(f)] == pytest.approx(np.mean(ins > t))
        assert res["all"]["fpr"][str(f)] <= f


def test_subgroup_accuracy_uses_out_entries():
    keep = np.array([[1, 0], [0, 1], [1, 0], [0, 1]], bool)
    correct = np.array([[1, 0], [0, 1], [1, 1], [1, 1]], bool)
    acc = analysis.subgroup_accuracy(correct, keep, {"a": np.array([True, False])})
    assert acc["a"] == {"out": 0.5, "train": 1.0}


# ------------------------------------------------------------------------ analyze_run


def _planted_run(rng, m=16, n=60, t=10, c=3):
    """Typical examples always right; 'atypical' ones (last 10) right only when trained on."""
    keep = _masks(rng, m, n)
    labels = rng.integers(0, c, size=n)
    right = np.ones((m, n), bool)
    right[:, -10:] = keep[:, -10:]
    pred = np.where(right, labels[None], (labels[None] + 1) % c)
    logits = rng.normal(scale=0.1, size=(m, n, 2, c)).astype(np.float32)
    logits += 3.0 * np.eye(c, dtype=np.float32)[pred][:, :, None, :]
    test_labels = rng.integers(0, c, size=t)
    test_logits = 3.0 * np.eye(c, dtype=np.float32)[np.broadcast_to(test_labels, (m, t))]
    # Test point 0 is right only when pool example n-1 is in.
    test_logits[:, 0] = (
        3.0
        * np.eye(c, dtype=np.float32)[
            np.where(keep[:, -1], test_labels[0], (test_labels[0] + 1) % c)
        ]
    )
    test_logits = np.repeat(test_logits[:, :, None], 2, axis=2)
    scores = rng.normal(size=(m, n)) + 2.0 * keep * (np.arange(n) >= n - 10)
    return keep, labels, logits, test_logits, test_labels, scores


def test_analyze_run_on_planted_memorizers():
    rng = np.random.default_rng(2)
    keep, labels, logits, test_logits, test_labels, scores = _planted_run(rng)
    s = analysis.analyze_run(
        logits, labels, keep, scores=scores, test_logits=test_logits, test_labels=test_labels
    )
    json.dumps(s, allow_nan=False)  # JSON-serialisable, no NaN
    assert s["memorization"]["mean"] == pytest.approx(10 / 60, abs=1e-6)
    sub = s["subgroups"]
    # By rank: the top 10% of 60 (6 of the 10 tied memorizers) and the bottom half (30 of 50).
    assert sub["atypical"]["n"] == sub["atypical"]["requested_n"] == 6
    assert sub["typical"]["n"] == sub["typical"]["requested_n"] == 30
    assert s["subgroup_rule"]["atypical"]["tied_at_boundary"] == 10
    assert set(s["tpr_rule"]) == {"tpr_at_fpr", "tpr_at_fpr_within"}
    assert sub["atypical"]["tpr_at_fpr_within"]["0.01"] is not None
    assert sub["atypical"]["memorization_mean"] == pytest.approx(1.0)
    assert sub["atypical"]["accuracy"]["out"] == 0.0 and sub["typical"]["accuracy"]["out"] == 1.0
    assert sub["atypical"]["accuracy"]["train"] == 1.0
    assert sub["atypical"]["tpr_at_fpr"]["0.01"] > sub["typical"]["tpr_at_fpr"]["0.01"]
    ent = s["influence_entropy"]
    assert sum(b["n"] for b in ent["buckets"]) + ent["n_undefined"] == 10
    # Test point 0 depends on exactly one pool example (influence 1; the others' influences are
    # mask-correlation noise below 1): entropy 0 once the noise is thresholded away.
    _, arrays = analysis.analyze_run_arrays(
        logits, labels, keep, test_logits=test_logits, test_labels=test_labels, min_influence=0.99
    )
    assert arrays["influence_entropy"][0] == pytest.approx(0.0)
    assert arrays["entropy_bucket"][0] == 0
    assert np.all(arrays["entropy_bucket"][1:] == -1)  # always right: no influence at all
    _, noisy = analysis.analyze_run_arrays(
        logits, labels, keep, test_logits=test_logits, test_labels=test_labels
    )
    assert noisy["influence_entropy"][0] > 0.0  # with few models, noise spreads the influence
    assert s["heldout_accuracy"] == pytest.approx(1 - 0.5 / 10)


def test_out_variance_in_summary_matches_direct():
    rng = np.random.default_rng(3)
    keep, labels, logits, *_ = _planted_run(rng)
    s, arrays = analysis.analyze_run_arrays(logits, labels, keep)
    lsc = _reference_lsc(logits, labels).mean(-1)
    direct = [np.var(lsc[~keep[:, i], i], ddof=1) for i in range(keep.shape[1])]
    np.testing.assert_allclose(arrays["out_variance"], direct, rtol=1e-4, atol=1e-6)
    assert s["out_variance"]["median"] == pytest.approx(np.median(direct), rel=1e-4)
    assert s["influence_entropy"] is None and s["heldout_accuracy"] is None


# ------------------------------------------------------------------------ the command


class _FakeRun:
    def __init__(self, path: Path, name: str, rng, with_test: bool):
        keep, labels, logits, test_logits, test_labels, scores = _planted_run(rng)
        self.path, self.name = path, name
        self.keep, self.labels, self.logits = keep, labels, logits
        self.test_logits = test_logits if with_test else None
        self.test_labels = test_labels if with_test else None
        self.scores = scores
        self.config = {}

    def read_json(self, name):
        return None


def test_analyze_runs_writes_json_and_plots(tmp_path):
    runs = [
        _FakeRun(tmp_path / "sgd", "sgd", np.random.default_rng(4), with_test=True),
        _FakeRun(tmp_path / "sam", "sam", np.random.default_rng(4), with_test=False),
    ]
    runs[1].logits = runs[1].logits * 2.0  # same pool and masks, different confidences
    res = analyze_runs(runs, tmp_path / "out")
    data = json.loads((tmp_path / "out" / "analysis.json").read_text())
    assert set(data) == {"sgd", "sam", "_plots"}
    assert data["sgd"]["subgroup_rule"]["reference"] == "shared reference"
    assert data["sgd"]["influence_entropy"] is not None and data["sam"]["influence_entropy"] is None
    for p in data["_plots"]:
        f = tmp_path / "out" / p
        assert f.stat().st_size > 1000 and f.read_bytes()[:4] == b"\x89PNG"
    assert "plots/entropy_buckets.png" in data["_plots"]
    assert res["sgd"]["memorization"]["mean"] == data["sgd"]["memorization"]["mean"]


def test_analyze_command_uses_store(tmp_path, monkeypatch, capsys):
    import argparse

    rng = np.random.default_rng(5)
    fakes = {}
    for n in ("a", "b"):
        (tmp_path / n).mkdir()
        # a run directory to the lock and to analyze's out check (load_run is faked)
        (tmp_path / n / "run.json").write_text(json.dumps({"format": store.RUN_FORMAT}))
        fakes[str(tmp_path / n)] = _FakeRun(tmp_path / n, "sgd", rng, with_test=False)
    monkeypatch.setattr(analyze_cmd.store, "load_run", lambda p, verify=True: fakes[str(p)])
    parser = argparse.ArgumentParser()
    analyze_cmd.add_parser(parser.add_subparsers())
    args = parser.parse_args(["analyze", str(tmp_path / "a"), str(tmp_path / "b")])
    assert args.func(args) == 0
    data = json.loads((tmp_path / "a" / "analysis.json").read_text())
    assert {"a", "b"} <= set(data)  # duplicate run names disambiguated by their directories
    out = capsys.readouterr().out
    assert "mean memorization" in out
    assert "examples (typical)" in out and "30 (asked 30)" in out
    assert "TPR@1% atypical, own thr." in out and "pooled 1% thr." in out
    assert "threshold set inside the subgroup" in out
    atyp = next(ln for ln in out.splitlines() if ln.startswith("TPR@1% atypical, own thr."))
    assert atyp.rstrip().endswith("*") and "* fewer than one false positive" in out
    text = parser._subparsers._group_actions[0].choices["analyze"].format_help()
    assert "--ties" in text and "seeded" in text and "lowest" in text
    assert "FPR measured inside the subgroup" in " ".join(text.split())


def test_subgroup_plot_axes_say_where_the_threshold_is(tmp_path, monkeypatch):
    from jaxsam import plots

    seen = []
    real = plots._save
    monkeypatch.setattr(plots, "_save", lambda fig, path: seen.append(fig) or real(fig, path))
    runs = [_FakeRun(tmp_path / "sgd", "sgd", np.random.default_rng(4), with_test=False)]
    analyze_runs(runs, tmp_path / "out")
    fig = next(f for f in seen if len(f.axes) == 3)  # subgroups.png with attack scores
    labels = [ax.get_ylabel() for ax in fig.axes]
    assert "threshold set inside each subgroup" in labels[1] and "FPR 1%" in labels[1]
    assert "FPR measured inside each subgroup" in labels[2]
    # atypical: 6 examples x 8 OUT models = 48 non-member pairs, < 1 false positive at 1%
    hatched = [p for p in fig.axes[1].patches if p.get_hatch() == "//"]
    assert len(hatched) == 1 and "zero FP" in fig.axes[1].get_title()
    ticks = [t.get_text() for t in fig.axes[0].get_xticklabels()]
    assert ticks[1] == "typical\n(n = 30)" and ticks[2] == "atypical\n(n = 6)"


def test_out_variance_relative_to_gap_is_scale_free_and_in_the_report_stats():
    rng = np.random.default_rng(8)
    keep, labels, logits, *_ = _planted_run(rng)
    signal = analysis.confidence_signal(logits, labels) + 2.0 * keep  # members stand out
    ratios, medians = [], []
    for c in (1.0, 0.1):  # e.g. label smoothing shrinking the confidence tenfold
        var = np.asarray(memo.out_confidence_variance(c * signal, keep), np.float64)
        gap = np.asarray(memo.in_out_gap(c * signal, keep), np.float64)
        ratios.append(analysis.variance_relative_to_gap(var, gap))
        medians.append(np.nanmedian(var))
    assert medians[1] == pytest.approx(0.01 * medians[0], rel=1e-4)  # scale-bound
    assert ratios[1] == pytest.approx(ratios[0], rel=1e-4)  # scale-free
    assert ratios[0] == pytest.approx(medians[0] / np.nanmean(gap / 0.1) ** 2, rel=1e-4)
    stats = analysis.mechanism_stats(logits, labels, keep)["out_confidence_variance"]
    mech = analysis.mechanism_arrays(logits, labels, keep)
    want = np.nanmedian(mech["out_variance"]) / np.nanmean(mech["in_out_gap"]) ** 2
    assert stats["relative_to_gap"] == pytest.approx(want)
    assert "recipe" in stats["scale"]
    s = analysis.analyze_run(logits, labels, keep)
    assert s["out_variance_relative_to_gap"] == pytest.approx(want)
    assert analysis.variance_relative_to_gap(np.full(3, np.nan), np.ones(3)) is None


def test_mechanism_stats_of_undefined_variances_are_nan_without_numpy_warnings():
    # As in a run of two models: no example has two OUT models, every OUT variance is NaN.
    nan, mem = np.full(5, np.nan), np.array([0.0, 0.5, np.nan, 1.0, 0.5])
    arrays = {"memorization": mem, "out_variance": nan, "in_out_gap": nan}
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # NumPy's "All-NaN slice" would raise here
        stats = analysis.mechanism_stats(None, None, None, arrays=arrays)
    ocv = stats["out_confidence_variance"]
    assert np.isnan(ocv["median"]) and np.isnan(ocv["mean"]) and "relative_to_gap" not in ocv
    assert stats["memorization"]["mean"] == pytest.approx(0.5)
    assert stats["memorization"]["median"] == pytest.approx(0.5)
