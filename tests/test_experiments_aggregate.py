"""Seed aggregation, the noise rule and the table, on synthetic reports (no training)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from experiments import aggregate as agg


def _report(acc, auc, tpr1, tpr01, mem, var, attack="lira_online"):
    return {
        "accuracy": {"test": acc, "train": 1.0},
        "attacks": {
            attack: {"auc": auc, "advantage": 0.0, "tpr_at_fpr": {"0.01": tpr1, "0.001": tpr01}}
        },
        "memorization": {"mean": mem},
        "out_confidence_variance": {"median": var},
    }


def test_t_critical_known_values():
    assert agg.t_critical(1) == math.inf
    assert agg.t_critical(2) == pytest.approx(12.7062, abs=1e-3)
    assert agg.t_critical(3) == pytest.approx(4.3027, abs=1e-3)
    assert agg.t_critical(10_000) == pytest.approx(1.96, abs=1e-2)


def test_paired_difference_against_hand_computation():
    a = {0: 1.0, 1: 2.0, 2: 3.0}
    b = {0: 2.0, 1: 4.0, 2: 4.5}
    d = agg.paired_difference(a, b)
    diffs = np.array([1.0, 2.0, 1.5])
    se = diffs.std(ddof=1) / np.sqrt(3)
    assert d["mean"] == pytest.approx(1.5)
    assert d["se"] == pytest.approx(se)
    assert d["half_width"] == pytest.approx(4.302653 * se, rel=1e-5)
    assert d["exceeds_noise"]  # 1.5 > 4.30 * 0.289 = 1.24


def test_noise_rule_does_not_call_noisy_or_single_seed_differences():
    noisy = agg.paired_difference({0: 0.0, 1: 0.0, 2: 0.0}, {0: 1.0, 1: -0.5, 2: 2.0})
    assert not noisy["exceeds_noise"]  # mean 0.83, half width 3.1
    # The same mean difference with an unpaired-looking but paired-consistent shift is called.
    steady = agg.paired_difference({0: 0.0, 1: 5.0, 2: -3.0}, {0: 0.8, 1: 5.9, 2: -2.2})
    assert steady["exceeds_noise"]
    one = agg.paired_difference({0: 0.0}, {0: 10.0})
    assert one["n"] == 1 and one["se"] is None and not one["exceeds_noise"]


def test_paired_difference_uses_only_common_finite_seeds():
    d = agg.paired_difference({0: 1.0, 1: 2.0, 3: 9.0}, {0: 2.0, 1: 3.0, 2: 7.0})
    assert d["seeds"] == [0, 1] and d["mean"] == pytest.approx(1.0)
    assert d["se"] == pytest.approx(0.0) and d["exceeds_noise"]  # identical shifts: no noise
    d = agg.paired_difference({0: 1.0, 1: float("nan")}, {0: 2.0, 1: 3.0})
    assert d["n"] == 1


def test_extract_metrics_reads_report_and_marks_missing():
    rep = _report(0.9, 0.6, 0.05, 0.01, 0.2, 0.3)
    m = agg.extract_metrics(rep, ["lira_online", "rmia"])
    assert m["out_accuracy"] == 0.9  # a report written before the rename (accuracy.test)
    new = dict(rep, accuracy={"out": 0.8, "test": 0.8, "train": 1.0})
    assert agg.extract_metrics(new, ["lira_online"])["out_accuracy"] == 0.8
    assert m["lira_online/auc"] == 0.6
    assert m["lira_online/tpr@0.01"] == 0.05 and m["lira_online/tpr@0.001"] == 0.01
    assert m["rmia/auc"] is None
    assert m["memorization_mean"] == 0.2 and m["out_variance_median"] == 0.3
    assert list(m) == agg.metric_keys(["lira_online", "rmia"])


def _synthetic():
    rng = np.random.default_rng(0)
    per_seed = {"SGD": {}, "SAM": {}}
    for s in range(4):
        base = rng.normal(size=6) * 0.001
        per_seed["SGD"][s] = _report(0.90 + base[0], 0.60 + base[1], 0.05, 0.01, 0.20, 0.30)
        # SAM: AUC clearly higher (+0.05 >> noise), accuracy equal up to noise.
        per_seed["SAM"][s] = _report(
            0.90 + base[2] + rng.normal() * 0.01, 0.65 + base[1], 0.05, 0.01, 0.25, 0.20
        )
    return per_seed


def test_aggregate_summary_diff_and_verdicts():
    per_seed = _synthetic()
    res = agg.aggregate(per_seed, ["lira_online"], "SGD")
    aucs = [per_seed["SAM"][s]["attacks"]["lira_online"]["auc"] for s in range(4)]
    s = res["summary"]["SAM"]["lira_online/auc"]
    assert s["mean"] == pytest.approx(np.mean(aucs)) and s["std"] == pytest.approx(
        np.std(aucs, ddof=1)
    )
    assert s["n"] == 4
    assert "SGD" not in res["diff"]
    v = agg.verdicts(res, "SAM")
    assert v["lira_online/auc"] == "higher"
    assert v["out_variance_median"] == "lower"
    assert v["memorization_mean"] == "higher"
    assert v["lira_online/tpr@0.01"] == "no call"  # identical: zero difference is not a difference


def test_aggregate_rejects_missing_baseline():
    with pytest.raises(KeyError):
        agg.aggregate({"SAM": {0: _report(0.9, 0.6, 0.0, 0.0, 0.1, 0.1)}}, ["lira_online"], "SGD")


def test_render_table_rows_columns_and_markers():
    res = agg.aggregate(_synthetic(), ["lira_online"], "SGD")
    text = agg.render_table(res)
    lines = text.splitlines()
    assert lines[0] == "| metric | SGD | SAM | SAM - SGD |"
    rows = {ln.split(" | ")[0].lstrip("| "): ln for ln in lines[2:] if ln.startswith("|")}
    assert list(rows) == [
        "OUT (pool non-member) accuracy %",
        "lira_online AUC %",
        "lira_online TPR@1% FPR %",
        "lira_online TPR@0.1% FPR %",
        "mean FZ memorization",
        "median OUT conf. variance",
    ]
    auc_row = rows["lira_online AUC %"]
    assert "+5.00" in auc_row and auc_row.rstrip(" |").endswith("*")
    assert rows["lira_online TPR@1% FPR %"].rstrip(" |").endswith("~")
    assert "-0.1000 ± 0.0000 *" in rows["median OUT conf. variance"]
    plain = agg.render_table(res, markdown=False)
    assert "SAM - SGD" in plain and "|" not in plain.splitlines()[0]


def test_heldout_and_epsilon_rows_appear_only_when_a_run_has_them():
    per_seed = _synthetic()
    plain = agg.aggregate(per_seed, ["lira_online"], "SGD")
    assert "heldout_accuracy" not in plain["metrics"] and "dp_epsilon" not in plain["metrics"]
    for s, rep in per_seed["SAM"].items():
        rep["accuracy"]["heldout"] = 0.8 + 0.01 * s
        rep["run"] = {"dp": {"epsilon": 2.0 + s, "delta": 1e-5}}
    res = agg.aggregate(per_seed, ["lira_online"], "SGD")
    assert res["metrics"][:2] == ["out_accuracy", "heldout_accuracy"]
    assert res["metrics"][-1] == "dp_epsilon"
    eps = res["summary"]["SAM"]["dp_epsilon"]
    assert eps["mean"] == pytest.approx(3.5) and eps["n"] == 4
    assert res["summary"]["SGD"]["dp_epsilon"]["n"] == 0
    rows = [r for r in agg.render_table(res).splitlines() if r.startswith("| DP-SGD epsilon")]
    assert rows and "3.50 ±" in rows[0]  # plain number, not a percentage


def test_privacy_utility_points_and_plot(tmp_path):
    from jaxsam import plots

    per_seed = _synthetic()
    per_seed["SAM"][0]["accuracy"]["heldout"] = 0.7
    res = agg.aggregate(per_seed, ["lira_online"], "SGD")
    pts = agg.privacy_utility_points(res)
    assert pts["SAM"]["y_key"] == "heldout_accuracy" and pts["SAM"]["y"] == pytest.approx(0.7)
    assert pts["SGD"]["y_key"] == "out_accuracy"
    assert pts["SGD"]["x"] == pytest.approx(0.01) and pts["SGD"]["x_std"] == pytest.approx(0.0)
    pts["DP"] = {"x": 0.0, "x_std": 0.0, "y": 0.5, "y_std": 0.01}  # TPR 0: drawn at the floor
    path = plots.plot_privacy_utility(pts, tmp_path / "pu.png", "t")
    assert path.is_file() and path.stat().st_size > 1000


def test_a_tpr_row_below_the_fpr_resolution_is_never_called_a_difference():
    def rep(tpr, supported):
        row = {"supported": supported, "resolvable": supported}
        return {
            "accuracy": {"out": 0.9},
            "attacks": {
                "lira_online": {
                    "auc": 0.6,
                    "tpr_at_fpr": {"0.01": tpr, "0.001": tpr},
                    "fpr_support": {"0.01": {"supported": True}, "0.001": row},
                }
            },
        }

    per_seed = {
        "A": {s: rep(0.01, False) for s in range(3)},
        "B": {s: rep(0.05 + 0.001 * s, False) for s in range(3)},
    }
    res = agg.aggregate(per_seed, ["lira_online"], "A")
    assert res["unsupported"] == ["lira_online/tpr@0.001"]
    assert res["diff"]["B"]["lira_online/tpr@0.01"]["exceeds_noise"]  # supported: called
    assert not res["diff"]["B"]["lira_online/tpr@0.001"]["exceeds_noise"]
    table = agg.render_table(res)
    row = next(ln for ln in table.splitlines() if "TPR@0.1%" in ln)
    assert "0 FP: no call" in row and "*" not in row and "±" not in row.split("|")[-2]
