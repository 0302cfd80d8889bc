"""Markdown rendering and the side-by-side comparison table."""

import numpy as np
import pytest

from jaxsam.plots import plot_roc_compare
from jaxsam.report import compare_table, render_markdown
from jaxsam.scoring import score


def _runs():
    rng = np.random.default_rng(0)
    m, n, a, c = 8, 80, 1, 3
    y = rng.integers(0, c, n)
    keep = np.argsort(rng.random((m, n)), 0) < m // 2
    out = []
    for gap in (3.0, 0.5):
        logits = rng.normal(size=(m, n, a, c)).astype(np.float32)
        idx = (np.arange(m)[:, None], np.arange(n)[None], slice(None), y[None].repeat(m, 0))
        logits[idx] += 1.0 + gap * keep[..., None]
        out.append(score(logits, y, keep, attacks=["lira_online", "loss"], bootstrap=20))
    return out


def test_compare_table_content(tmp_path):
    sgd, sam = _runs()
    rs, rm = sgd.report, dict(sam.report)
    rm["memorization"] = {"mean": 0.125}
    rm["out_confidence_variance"] = {"median": 2.5}
    txt = compare_table([("SGD", rs), ("SAM", rm)])
    lines = txt.splitlines()
    assert "SGD" in lines[0] and "SAM" in lines[0] and "diff (last - first)" in lines[0]
    body = [ln for ln in lines[2:] if ln.strip()]
    assert body[0].startswith("OUT (pool non-member) accuracy %")
    assert body[1].startswith("lira_online AUC %")
    assert body[2].startswith("lira_online TPR@1% FPR %")
    assert body[3].startswith("lira_online TPR@0.1% FPR %")
    auc_row = body[1].split()
    assert auc_row[3] == f"{100 * rs['attacks']['lira_online']['auc']:.2f}"
    assert auc_row[4] == f"{100 * rm['attacks']['lira_online']['auc']:.2f}"
    d = 100 * (rm["attacks"]["lira_online"]["auc"] - rs["attacks"]["lira_online"]["auc"])
    assert auc_row[5] == f"{d:.2f}" and auc_row[6].startswith("[")  # paired interval
    assert any(ln.startswith("mean FZ memorization") and "0.125" in ln for ln in body)
    assert any(ln.startswith("median OUT conf. variance") and "2.5" in ln for ln in body)
    md = compare_table([("SGD", rs), ("SAM", rm)], markdown=True)
    assert md.startswith("| metric | SGD | SAM |")
    one = compare_table([("only", rs)])
    assert "diff" not in one.splitlines()[0]
    page = render_markdown(rm, "SAM run")
    assert page.startswith("# SAM run") and "lira_online" in page and "0.125" in page
    png = plot_roc_compare(
        {"SGD": sgd, "SAM": (sam.scores["lira_online"], sam.keep)}, tmp_path / "roc.png"
    )
    assert (tmp_path / "roc.png").stat().st_size > 1000 and png.endswith("roc.png")


def test_reports_written_before_the_accuracy_rename_still_read():
    """report.json of the previous version: accuracy.test (= OUT accuracy), held-out in run."""
    old = {"accuracy": {"train": 1.0, "test": 0.875}, "run": {"heldout_accuracy": 0.75}}
    new = {"accuracy": {"train": 1.0, "out": 0.5, "heldout": 0.625}}
    lines = compare_table([("old", old), ("new", new)]).splitlines()
    out_row = next(ln for ln in lines if ln.startswith("OUT (pool non-member) accuracy %"))
    held_row = next(ln for ln in lines if ln.startswith("held-out accuracy %"))
    assert out_row.split()[-3:] == ["87.50", "50.00", "-37.50"]
    assert held_row.split()[-3:] == ["75.00", "62.50", "-12.50"]
    page = render_markdown(old, "old run")
    assert "OUT 87.50%" in page and "held-out 75.00%" in page


def test_report_names_the_recipe_and_its_epsilon():
    from jaxsam.report import recipe_line

    run = {"optimizer": "sam", "rho": 0.05, "base": "adamw", "label_smoothing": 0.1}
    dp = {"epsilon": 7.654, "delta": 1e-5, "accountant": "pld", "sampling": "poisson"}
    line = recipe_line({**run, "dp": dp})
    assert line.startswith("SAM (rho 0.05) on AdamW, label smoothing 0.1, DP-SGD epsilon 7.65")
    assert "delta 1e-05" in line and "poisson" in line
    assert recipe_line({"optimizer": "sgd", "base": "sgd", "label_smoothing": 0.0}) == "SGD"
    assert recipe_line({"optimizer": "sam", "base": "sgd", "rho": 0.05}) == "SAM (rho 0.05) on SGD"
    assert recipe_line({"optimizer": None}) == ""  # an imported run: no recipe known
    md = render_markdown({"accuracy": {}, "run": {**run, "dp": dp}}, title="t")
    assert "- recipe: SAM (rho 0.05) on AdamW" in md
    imported = {"provenance": {"kind": "imported", "format": "npy", "source": "x"}}
    assert recipe_line({"optimizer": None, **imported}).startswith("imported logits")
    sizes = {"models": 4, "examples": 10, "queries": 1}
    md = render_markdown({**sizes, "accuracy": {}, "run": {"dataset": "imported", **imported}}, "t")
    assert "None" not in md and "- run: imported logits" in md


def _assert_no_interval_below_resolution(lines):
    starred = [ln for ln in lines if " * " in ln or ln.rstrip().endswith(" *")]
    assert starred
    for ln in starred:
        assert "[" not in ln, ln  # no bootstrap interval on a row below the FPR resolution
    return starred


def test_rows_below_the_fpr_resolution_carry_no_bootstrap_interval():
    import copy

    from scipy.stats import binomtest

    from jaxsam.report_html import render_compare_html

    sgd, sam = _runs()  # 8 models x 80 examples: 320 non-member pairs, so 0.1% is unresolved
    e = sgd.report["attacks"]["loss"]
    row = e["fpr_support"]["0.001"]
    assert e["fpr_support"]["0.01"]["supported"] is True and row["supported"] is False
    assert row["reads"] == "TPR at zero false positives" and row["nonmember_scores"] == 320
    assert "tpr@0.001" not in e["ci"] and "tpr@0.01" in e["ci"]  # report.json: no bootstrap
    k = row["members_above_highest_nonmember"]
    assert k == round(e["tpr_at_fpr"]["0.001"] * e["num_members"])
    ci = binomtest(k, e["num_members"]).proportion_ci(0.95, method="exact")
    assert (row["exact_interval"]["low"], row["exact_interval"]["high"]) == pytest.approx(
        (ci.low, ci.high)
    )
    assert not e["operating_points"]["0.001"]["supported"]

    # A report written before `supported` existed still carries the bootstrap samples of the
    # unresolved TPR: the tables must ignore them too.
    old = copy.deepcopy(sam.report)
    for a in old["attacks"].values():
        a["fpr_support"] = {
            k: {
                "false_positives_allowed": v["false_positives_allowed"],
                "resolvable": v["resolvable"],
            }
            for k, v in a["fpr_support"].items()
        }
        a["ci"]["tpr@0.001"] = copy.deepcopy(a["ci"]["tpr@0.01"])
    for named in ([("SGD", sgd.report), ("SAM", sam.report)], [("SGD", sgd.report), ("old", old)]):
        for md in (False, True):
            lines = compare_table(named, markdown=md).splitlines()
            starred = _assert_no_interval_below_resolution([ln for ln in lines if "TPR@" in ln])
            assert all("no call (0 FP)" in ln and "at 0 FP (exact " in ln for ln in starred)
            note = next(ln for ln in lines if ln.startswith("* below the FPR resolution"))
            assert "TPR at zero false positives" in note and "320" in note
            assert "Clopper-Pearson" in note
            tpr1 = next(ln for ln in lines if "loss TPR@1% FPR" in ln)
            assert "[" in tpr1  # a resolvable row keeps its paired interval
        page = render_compare_html(named, "cmp", None)
        for tr in page.split("</tr>"):
            tr = tr.rsplit("<tr>", 1)[-1]
            if "FPR % *" in tr:
                assert "[" not in tr and "no call (0 FP)" in tr
    md = render_markdown(old, "old")
    table = [ln for ln in md.splitlines() if ln.startswith("| loss")]
    cells = table[0].split(" | ")
    assert "[" in cells[4] and "[" not in cells[5] and "at 0 FP (exact" in cells[5]
    assert "the single highest of the 320 non-member scores" in md


def test_compare_marks_recipe_scale_bound_statistics_and_gives_the_scale_free_one():
    def rep(median, rel, mem, pkeep_in):
        return {
            "accuracy": {"out": 0.9},
            "models": 16,
            "shadows": {
                "per_example": {
                    "in": {"min": pkeep_in, "median": pkeep_in},
                    "out": {"min": 16 - pkeep_in, "median": 16 - pkeep_in},
                },
                "exact": True,
            },
            "memorization": {"mean": mem},
            "out_confidence_variance": {"median": median, "relative_to_gap": rel},
        }

    sgd, smooth = rep(3.138, 0.41, 0.05, 8), rep(0.125, 0.39, 0.04, 8)
    lines = compare_table([("sgd", sgd), ("ls0.1", smooth)]).splitlines()
    var = next(ln for ln in lines if ln.startswith("median OUT conf. variance §"))
    assert "3.138" in var and "0.125" in var
    rel = next(ln for ln in lines if ln.startswith("median OUT conf. variance / mean IN-OUT gap²"))
    assert rel.split()[-3:] == ["0.41", "0.39", "-0.02"]
    note = next(ln for ln in lines if ln.startswith("§ recipe-scale-bound"))
    assert "label smoothing" in note and "docs/memorization.md" in note
    mem = next(ln for ln in lines if ln.startswith("mean FZ memorization"))
    assert "§" not in mem  # same pkeep: the same quantity
    other = rep(0.2, 0.3, 0.07, 11)  # pkeep 0.688 vs 0.5
    lines = compare_table([("sgd", sgd), ("fz", other)]).splitlines()
    assert any(ln.startswith("mean FZ memorization §") for ln in lines)
    assert any(ln.startswith("§ on mean FZ memorization") and "0.5, 0.688" in ln for ln in lines)
    page = render_markdown(smooth, "ls")
    assert "median OUT confidence variance (scale set by the recipe): 0.125" in page
    assert "gap² (scale-free): 0.39" in page
