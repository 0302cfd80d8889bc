"""Results people use: the per-example and per-class tables, operating points, the figures and
HTML page ``jaxsam score`` publishes, and ``score_run`` writing only when asked."""

import json
import shutil

import numpy as np
import pandas as pd
import pytest

import jaxsam
from jaxsam import cli, examples_table, metrics
from jaxsam.errors import RunDirError
from jaxsam.pipeline.score import score_run
from jaxsam.report import operating_table, tpr_at


def _study(seed=0, m=8, n=60):
    rng = np.random.default_rng(seed)
    keep = np.argsort(rng.random((m, n)), 0) < m // 2
    scores = rng.normal(size=(m, n))
    return rng, keep, scores


def test_examples_frame_counts_flags_against_the_pooled_threshold():
    rng, keep, scores = _study()
    scores[:, 7] = np.where(keep[:, 7], 50.0, -50.0)  # example 7: every IN target flags it
    labels = rng.integers(0, 3, keep.shape[1])
    mem = rng.random(keep.shape[1])
    canary = np.zeros(keep.shape[1], bool)
    canary[[1, 2]] = True
    frame = examples_table.examples_frame(
        scores={"lira_online": scores},
        keep=keep,
        labels=labels,
        ids=np.arange(keep.shape[1]) + 100,
        dataset="digits",
        split="train",
        memorization=mem,
        out_variance=mem * 2,
        canary=canary,
    )
    assert len(frame) == keep.shape[1]
    assert list(frame["index"][:2]) == [100, 101] and set(frame["dataset"]) == {"digits"}
    np.testing.assert_array_equal(frame["n_in"], keep.sum(0))
    np.testing.assert_array_equal(frame["n_out"], (~keep).sum(0))
    np.testing.assert_allclose(frame["lira_online_score"], scores.mean(0))
    thr = metrics.threshold_at_fpr(scores, keep, 1e-3)
    np.testing.assert_allclose(frame["lira_online_flagged_1e-3"], (scores >= thr).mean(0))
    assert frame.loc[7, "lira_online_flagged_in_1e-3"] == 1.0
    assert frame.loc[7, "lira_online_flagged_1e-3"] == 0.5  # its OUT targets do not flag it
    assert "lira_online_flagged_in_1e-4" in frame and list(frame["canary"][:3]) == [0, 1, 1]
    top = examples_table.most_exposed(frame, "lira_online", 1)
    assert int(top["pool_index"].iloc[0]) == 7
    assert examples_table.most_memorized(frame, 1)["memorization"].iloc[0] == mem.max()


def test_by_class_judges_each_class_alone_and_says_which_fprs_it_resolves():
    rng = np.random.default_rng(1)
    m, n = 10, 400
    keep = np.argsort(rng.random((m, n)), 0) < m // 2
    labels = np.repeat([0, 1], n // 2)
    scores = rng.normal(size=(m, n)) + 3.0 * keep * (labels == 0)  # only class 0 leaks
    mem = np.where(labels == 0, 0.5, 0.0)
    frame = examples_table.by_class_frame(
        scores={"loss": scores},
        keep=keep,
        labels=labels,
        memorization=mem,
        out_variance=np.ones(n),
        bootstrap=20,
    )
    c0, c1 = frame.iloc[0], frame.iloc[1]
    assert (c0["class"], c1["class"], c0["n"], c0["n_nonmembers"]) == (0, 1, 200, 1000)
    assert c0["auc"] > 0.9 and abs(c1["auc"] - 0.5) < 0.1
    assert c0["auc_low"] <= c0["auc"] <= c0["auc_high"]
    assert c0["memorization"] == 0.5 and c1["memorization"] == 0.0
    # 1000 non-member pairs: 1% (10 false positives) is resolvable, 0.1% (1) just is
    assert c0["tpr@1e-2_low"] <= c0["tpr@1e-2"] <= c0["tpr@1e-2_high"]
    text = examples_table.by_class_csv(frame)
    first = text.splitlines()[0]
    assert first.startswith("#") and "class 0 (1000 non-members): 1%, 0.1%" in first
    few = frame.assign(n_nonmembers=50)
    assert "class 0 (50 non-members): none" in examples_table.resolvable_note(few)


def test_operating_points_follow_from_the_tpr():
    entry = {
        "tpr_at_fpr": {"0.001": 0.05, "0.0001": 0.01},
        "num_members": 2000,
        "num_nonmembers": 5000,
        "ci": {"tpr@0.001": {"low": 0.04, "high": 0.06}, "tpr@0.0001": {"low": 0, "high": 0.1}},
    }
    ops = metrics.operating_points(entry)
    p = ops[metrics.tpr_key(1e-3)]
    assert p["advantage"] == pytest.approx(0.049) and p["lift"] == pytest.approx(50.0)
    assert p["members_flagged"] == 100 and p["resolvable"]
    assert p["ci"]["members_flagged"] == {"low": 80, "high": 120}
    assert p["ci"]["lift"]["low"] == pytest.approx(40.0)
    q = ops["0.0001"]
    assert not q["resolvable"] and "ci" not in q  # 0.5 false positives allowed: no interval
    header, rows = operating_table({"attacks": {"rmia": {**entry, "operating_points": ops}}})
    assert header[:3] == ["attack", "FPR", "TPR %"] and rows[0][:2] == ["rmia", "0.1%"]
    assert rows[1][1] == "0.01% *"


def test_tpr_at_reads_a_report_without_spelling_the_key():
    rep = {"attacks": {"lira_online": {"tpr_at_fpr": {"0.01": 0.2, "1e-05": 0.03}}}}
    assert metrics.tpr_key(1e-5) == "1e-05"
    assert tpr_at(rep, "lira_online", 1e-5) == 0.03 and tpr_at(rep, "lira_online", 0.01) == 0.2
    with pytest.raises(KeyError, match="no TPR at FPR 0.001"):
        tpr_at(rep, "lira_online", 1e-3)
    with pytest.raises(KeyError, match="no attack 'rmia'"):
        tpr_at(rep, "rmia", 1e-5)


def test_roc_legend_marks_curves_that_coincide():
    from jaxsam.plots import coinciding_curves

    rng, keep, scores = _study(2)
    curves = {}
    for name, s in (("loss", scores), ("confidence", np.exp(scores)), ("rmia", -scores)):
        curves[name] = metrics.roc_curve(s, keep)[:2]
    assert coinciding_curves(curves) == {"confidence": "loss"}  # exp is monotone


def _files(path):
    return {p.relative_to(path).as_posix(): p.stat().st_mtime_ns for p in path.rglob("*")}


def test_score_publishes_tables_figures_and_page(tiny_run, tmp_path, capsys):
    run_dir = tmp_path / "run"
    shutil.copytree(tiny_run.path, run_dir)
    (run_dir / "examples.parquet").unlink(missing_ok=True)  # another test may have scored it
    before = _files(run_dir)
    rep = score_run(jaxsam.load_run(run_dir), ["lira_online", "loss"], bootstrap=0)
    assert _files(run_dir) == before  # looking at the numbers writes nothing
    assert "operating_points" in rep["attacks"]["loss"]
    with pytest.raises(RunDirError, match="jaxsam score"):
        jaxsam.load_run(run_dir).examples()

    assert cli.main(["score", str(run_dir), "--bootstrap", "10", "--csv"]) == 0
    frame = jaxsam.load_run(run_dir).examples()
    assert isinstance(frame, pd.DataFrame) and len(frame) == tiny_run.keep.shape[1]
    assert {"label", "memorization", "lira_online_score", "lira_online_flagged_1e-3"} <= set(
        frame.columns
    )
    np.testing.assert_array_equal(frame["label"], tiny_run.labels)
    np.testing.assert_array_equal(frame["index"], tiny_run.ids)
    pd.testing.assert_frame_equal(
        pd.read_csv(run_dir / "examples.csv"), frame, check_dtype=False, check_categorical=False
    )
    report = json.loads((run_dir / "report.json").read_text())
    ops = report["attacks"]["lira_online"]["operating_points"]
    assert set(ops) == {"0.001", "0.0001"} and "members_flagged" in ops["0.001"]
    assert "## Operating points" in (run_dir / "report.md").read_text()

    by_class = (run_dir / "by_class.csv").read_text()
    assert by_class.startswith("# FPRs resolvable")
    table = pd.read_csv(run_dir / "by_class.csv", comment="#")
    assert set(table["class"]) == set(np.unique(tiny_run.labels)) and "auc_low" in table

    import matplotlib.image

    exposed = matplotlib.image.imread(run_dir / "plots" / "exposed.png")
    assert exposed.shape[1] > 800 and exposed[..., :3].std() > 0.1  # digits drawn, not blank
    assert (run_dir / "plots" / "by_class.png").stat().st_size > 1000

    page = (run_dir / "report.html").read_text()
    assert '<table id="attacks">' in page and "<td>lira_online</td>" in page
    assert page.count("data:image/png;base64,") == 3
    assert "http://" not in page and "https://" not in page and "<script" not in page

    cmp = tmp_path / "out" / "compare.html"
    assert cli.main(["compare", str(run_dir), str(tiny_run.path), "--html", str(cmp)]) == 0
    page = cmp.read_text()
    assert '<table id="compare">' in page and "<td>recipe</td>" in page and "<td>SGD</td>" in page
    assert page.count("data:image/png;base64,") == 1 and "https://" not in page

    assert cli.main(["score", str(run_dir), "--bootstrap", "0"]) == 0  # no --csv: CSV removed
    assert not (run_dir / "examples.csv").exists()


def test_compare_names_recipes_and_diffs_every_run_against_the_first(tmp_path):
    from jaxsam.report import compare_table
    from jaxsam.report_html import render_compare_html

    base = {
        "accuracy": {"out": 0.9},
        "attacks": {"loss": {"auc": 0.6, "tpr_at_fpr": {"0.01": 0.02}}},
        "run": {"optimizer": "sgd", "base": "sgd"},
    }
    sam = json.loads(json.dumps(base))
    sam["run"] = {"optimizer": "sam", "base": "sgd", "rho": 0.05, "label_smoothing": 0.1}
    sam["attacks"]["loss"]["auc"] = 0.65
    dp = json.loads(json.dumps(base))
    dp["run"]["dp"] = {"epsilon": 7.9, "delta": 1e-5}
    dp["attacks"]["loss"]["auc"] = 0.55
    named = [("sgd", base), ("sam", sam), ("dp", dp)]
    lines = compare_table(named).splitlines()
    assert lines[0].rstrip().endswith("diff (sam - first)  diff (dp - first)")
    recipe = next(ln for ln in lines if ln.startswith("recipe"))
    assert "SAM (rho 0.05) on SGD, label smoothing 0.1" in recipe and "DP-SGD ε 7.9" in recipe
    eps = next(ln for ln in lines if ln.startswith("DP epsilon"))
    assert eps.split()[-5:] == ["-", "-", "7.9", "-", "-"]
    auc = next(ln for ln in lines if ln.startswith("loss AUC"))
    assert auc.split()[-2:] == ["+5.00", "-5.00"]
    page = render_compare_html(named, "cmp", None)
    assert '<table id="compare">' in page and "SAM (rho 0.05) on SGD" in page


def test_exposed_figure_draws_images_feature_rows_and_missing_inputs(tmp_path):
    import matplotlib.image

    from jaxsam.plots_examples import plot_exposed

    rng = np.random.default_rng(3)
    rows = {
        "images": [("#0 label 1", rng.integers(0, 255, (8, 8, 3), dtype=np.uint8))] * 3,
        "features": [("#1 label 0", rng.normal(size=13))] * 2,
        "missing": [("#2 label 2", None)],
    }
    path = plot_exposed(rows, tmp_path / "exposed.png")
    pixels = matplotlib.image.imread(path)
    assert pixels.shape[0] > 300 and pixels[..., :3].std() > 0.05


def test_html_page_escapes_names_and_loads_nothing():
    from jaxsam.report_html import render_run_html

    rep = {
        "models": 4,
        "examples": 10,
        "queries": 1,
        "accuracy": {"out": 0.5},
        "run": {"dataset": "<script>alert(1)</script>", "model": "mlp"},
    }
    page = render_run_html(rep, "run <b>x</b>", figures={"roc": b"\x89PNG fake"})
    assert "<script" not in page and "&lt;script&gt;" in page and "&lt;b&gt;x" in page
    assert "data:image/png;base64,iVBORyBmYWtl" in page and 'src="http' not in page
