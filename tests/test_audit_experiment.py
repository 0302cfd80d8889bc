"""The audit in an experiment: table rows and the privacy-utility plot's epsilon labels."""

from __future__ import annotations

import pytest

from experiments import aggregate as agg
from jaxsam import plots


def _report(seed: int, dp: bool) -> dict:
    rep = {
        "accuracy": {"out": 0.9, "heldout": 0.85 + 0.01 * seed},
        "attacks": {"lira_online": {"auc": 0.6, "tpr_at_fpr": {"0.01": 0.05, "0.001": 0.01}}},
        "memorization": {"mean": 0.1},
        "out_confidence_variance": {"median": 0.2},
        "audit": {
            "bounds": [
                {"method": "one_run", "epsilon_lower": 0.5 + seed, "ceiling": 4.0},
                {"method": "clopper_pearson", "epsilon_lower": 0.0, "ceiling": 0.0},
                {"method": "fdp", "epsilon_lower": 1.0, "ceiling": 8.0},
            ]
        },
    }
    if dp:
        rep["run"] = {"dp": {"epsilon": 9.0, "delta": 1e-5}}
    return rep


def test_audit_rows_and_privacy_utility_labels(tmp_path, monkeypatch):
    per_seed = {
        "SGD": {0: _report(0, False), 1: _report(1, False)},
        "DP-SGD": {0: _report(0, True), 1: _report(1, True)},
    }
    res = agg.aggregate(per_seed, ["lira_online"], "SGD")
    assert "audit/one_run" in res["metrics"] and "audit_ceiling/fdp" in res["metrics"]
    assert res["summary"]["SGD"]["audit/one_run"]["mean"] == pytest.approx(1.0)
    table = agg.render_table(res)
    row = next(r for r in table.splitlines() if r.startswith("| audit one_run epsilon"))
    assert "1.00 ±" in row  # a plain epsilon, not a percentage
    pts = agg.privacy_utility_points(res)
    assert pts["DP-SGD"]["epsilon"] == pytest.approx(9.0)
    assert pts["DP-SGD"]["epsilon_lower"] == pytest.approx(1.0)
    assert pts["SGD"]["epsilon"] is None

    drawn = {}
    save = plots._save

    def capture(fig, path):
        drawn["legend"] = [t.get_text() for t in fig.axes[0].get_legend().get_texts()]
        return save(fig, path)

    monkeypatch.setattr(plots, "_save", capture)
    path = plots.plot_privacy_utility(pts, tmp_path / "pu.png", "audit")
    assert path.is_file()
    legend = dict(t.split("; ", 1) for t in drawn["legend"])
    assert legend == {"DP-SGD": "eps 9.00, audited >= 1.00", "SGD": "audited >= 1.00"}


def test_no_audit_no_rows():
    rep = _report(0, False)
    del rep["audit"]
    res = agg.aggregate({"SGD": {0: rep}}, ["lira_online"], "SGD")
    assert not any(k.startswith("audit") for k in res["metrics"])
