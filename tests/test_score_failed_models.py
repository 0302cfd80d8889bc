"""Scoring a run with failed (excluded) models, and the atomic publication of its report."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from jaxsam import cli, store
from jaxsam.memorization import memorization_from_logits
from jaxsam.scoring import score


@pytest.fixture
def failed_run(tiny_run, tmp_path):
    """A copy of the tiny run in which model 1 diverged and was excluded (as training writes it:
    NaN logits and ``failed_models`` in run.json)."""
    path = tmp_path / "with_failed"
    shutil.copytree(tiny_run.path, path)
    for name in ("report.json", "report.md", "scores"):
        p = path / name
        shutil.rmtree(p) if p.is_dir() else p.unlink(missing_ok=True)
    arrays = store.load_arrays(path / "logits", "logits")
    arrays["logits"][1] = np.nan
    arrays["test_logits"][1] = np.nan
    store.save_arrays(path / "logits", arrays)
    store.update_run_info(path, failed_models=[1])
    store.write_digests(path)  # as a run that finished this way records them
    return store.load_run(path)


def test_score_cli_on_a_run_with_failed_models(failed_run, capsys):
    path = failed_run.path
    assert cli.main(["score", str(path), "--bootstrap", "0"]) == 0
    assert "excluded models [1]" in capsys.readouterr().out
    rep = json.loads((path / "report.json").read_text())
    kept = [0, 2, 3]
    assert rep["models"] == 3 and rep["excluded_models"] == [1]
    assert rep["run"]["failed_models"] == [1]
    # Every attack equals scoring the kept models alone.
    alone = score(failed_run.logits[kept], failed_run.labels, failed_run.keep[kept], bootstrap=0)
    saved = store.load_arrays(path / "scores", "scores")
    for name, entry in rep["attacks"].items():
        assert entry["auc"] == pytest.approx(alone.report["attacks"][name]["auc"]), name
        assert saved[name].shape == failed_run.keep.shape  # [M, N], row 1 NaN
        assert np.isnan(saved[name][1]).all() and np.isfinite(saved[name][kept]).all()
        np.testing.assert_array_equal(saved[name][kept], alone.scores[name])
    # Accuracies and memorization come from the kept models only.
    assert rep["accuracy"]["out"] == pytest.approx(alone.report["accuracy"]["out"])
    mem = memorization_from_logits(
        failed_run.logits[kept], failed_run.labels, failed_run.keep[kept]
    )
    assert rep["memorization"]["mean"] == pytest.approx(float(np.nanmean(mem)))
    held = (failed_run.test_logits[kept, :, 0].argmax(-1) == failed_run.test_labels).mean()
    assert rep["accuracy"]["heldout"] == pytest.approx(held)
    assert (path / "report.md").read_text().count("excluded models: [1]") == 1
    assert (path / "plots" / "roc.png").stat().st_size > 1000
    assert not list(path.glob(".report-staging-*"))

    # analyze and compare skip the same model.
    capsys.readouterr()
    assert cli.main(["analyze", str(path)]) == 0
    analysis = json.loads((path / "analysis.json").read_text())[path.name]
    assert analysis["n_models"] == 3
    assert analysis["memorization"]["mean"] == pytest.approx(rep["memorization"]["mean"])
    assert analysis["heldout_accuracy"] == pytest.approx(held)
    assert analysis["subgroups"]["all"]["tpr_at_fpr"] is not None  # scores/ were used
    assert cli.main(["compare", str(path)]) == 0


def _fail(*args, **kwargs):
    raise RuntimeError("planted failure while scoring")


@pytest.mark.parametrize("where", ["mechanism", "plot"])
def test_failure_mid_scoring_publishes_nothing(failed_run, monkeypatch, where):
    from jaxsam import analysis, plots

    path = failed_run.path
    target = (analysis, "mechanism_stats") if where == "mechanism" else (plots, "plot_roc")
    monkeypatch.setattr(*target, _fail)
    with pytest.raises(RuntimeError, match="planted failure"):
        cli.main(["score", str(path), "--bootstrap", "0"])
    for name in ("report.json", "report.md", "scores"):
        assert not (path / name).exists(), name
    assert not list(path.glob(".report-staging-*"))


def test_failure_while_rescoring_keeps_the_previous_report(failed_run, monkeypatch):
    from jaxsam import plots

    path = failed_run.path
    assert cli.main(["score", str(path), "--bootstrap", "0", "--attacks", "loss"]) == 0
    before = {n: (path / n).read_bytes() for n in ("report.json", "report.md")}
    scores_before = store.load_arrays(path / "scores", "scores")
    monkeypatch.setattr(plots, "plot_roc", _fail)
    with pytest.raises(RuntimeError, match="planted failure"):
        cli.main(["score", str(path), "--bootstrap", "0"])
    assert {n: (path / n).read_bytes() for n in before} == before
    assert set(store.load_arrays(path / "scores", "scores")) == set(scores_before) == {"loss"}
    monkeypatch.undo()
    assert cli.main(["score", str(path), "--bootstrap", "0"]) == 0  # and a rescore replaces all
    assert len(json.loads((path / "report.json").read_text())["attacks"]) > 1
    assert len(store.load_arrays(path / "scores", "scores")) > 1
