"""Readable reports: one run as Markdown, several runs side by side in the paper's format."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from jaxsam import metrics
from jaxsam.report_text import (  # noqa: F401 (re-exported: the report API)
    HELDOUT_ACCURACY_LABEL,
    OUT_ACCURACY_LABEL,
    _fpr_label,
    _imported,
    _num,
    _pct,
    _table,
    dp_words,
    escape_markdown,
    heldout_accuracy,
    out_accuracy,
    recipe_line,
    tpr_at,
)


def _run_lines(report: dict, esc=escape_markdown) -> list[str]:
    """The bullets that say what was scored: run, sizes, accuracy, recipe, provenance, shadows.

    ``esc`` turns a name from the report into text (Markdown-escaped; ``str`` for HTML, which
    escapes the whole line).
    """
    acc = report.get("accuracy", {})
    run = report.get("run") or {}
    out = []
    if _imported(run):
        out.append("- run: imported logits (trained outside jaxsam; optimizer, model not recorded)")
    elif run.get("dataset") or run.get("model"):
        out.append(f"- run: dataset {esc(run.get('dataset'))}, model {esc(run.get('model'))}")
    out += [
        f"- models M = {report.get('models')}, examples N = {report.get('examples')}, "
        f"queries A = {report.get('queries')}",
        f"- accuracy (identity query): train {_pct(acc.get('train'))}% (pool points each model "
        f"trained on), OUT {_pct(out_accuracy(report))}% (pool points it did not train on), "
        f"held-out {_pct(heldout_accuracy(report))}% (the held-out split no model trained on)",
    ]
    if run.get("untrained_models"):
        out.append(
            f"- warning: models {run['untrained_models']} did not learn (training accuracy "
            "near chance, no NaN loss); they are scored like the others and distort every attack"
        )
    if recipe_line(run) and not _imported(run):
        out.append(f"- recipe: {recipe_line(run)}")
    prov = run.get("provenance")
    if _imported(run):
        dropped = len(prov.get("dropped_examples") or [])
        out.append(
            f"- provenance: imported ({prov.get('format')}) from {prov.get('source')}"
            + (f", epoch {prov['epoch']}" if "epoch" in prov else "")
            + (f"; {dropped} examples left out (too few IN or OUT models)" if dropped else "")
        )
    shadows = report.get("shadows")
    groups = report.get("reference_groups")
    has_rule = isinstance(groups, dict) and "rule" in groups
    if isinstance(shadows, dict) and "per_example" in shadows:
        out.append(_shadow_line(shadows, cut_sizes=not has_rule))
    if has_rule:
        out.append(reference_line(groups))
    if report.get("excluded_models"):
        out.append(f"- excluded models: {report['excluded_models']}")
    for name, why in report.get("skipped_attacks", {}).items():
        out.append(f"- {name} not scored: {why}")
    return out


def _with_ci(v: float | None, c: dict | None, fmt=None) -> str:
    fmt = fmt or _pct
    return fmt(v) + (f" [{fmt(c['low'])}, {fmt(c['high'])}]" if c else "")


def _exact(row: dict) -> str:
    """``(exact low-high)`` of an unsupported row (:func:`jaxsam.metrics.row_support`)."""
    ex = row.get("exact_interval")
    return f" (exact {_pct(ex['low'])}-{_pct(ex['high'])})" if ex else ""


def _zero_fp_cell(tpr: float | None, row: dict) -> str:
    """A TPR below the FPR resolution: the TPR at zero false positives, its exact interval."""
    return f"{_pct(tpr)} * at 0 FP{_exact(row)}"


def attack_table(report: dict) -> tuple[list[str], list[list[str]]]:
    """The attack table of a report: (header, rows), percentages with their intervals.

    Rows: one per attack (AUC, advantage, balanced accuracy, TPR at each FPR, per-target AUC).
    A TPR marked * (``0 FP``) allows fewer than one false positive: it is the TPR at zero
    false positives, shown with no bootstrap interval but its exact (Clopper-Pearson) interval
    conditional on the highest non-member score (:func:`jaxsam.metrics.row_support`). Cells
    are plain text.
    """
    attacks = report.get("attacks", {})
    if not attacks:
        return [], []
    keys = list(next(iter(attacks.values()))["tpr_at_fpr"])
    header = (
        ["attack", "AUC %", "advantage %", "bal. acc. %"]
        + [f"TPR@{_fpr_label(k)} %" for k in keys]
        + ["AUC per target (mean ± std) %"]
    )
    rows = []
    for name, e in attacks.items():
        ci = e.get("ci", {})
        support = metrics.row_support(e)
        tprs = [
            _with_ci(e["tpr_at_fpr"][k], ci.get(f"tpr@{k}"))
            if support.get(k, {}).get("supported", True)
            else _zero_fp_cell(e["tpr_at_fpr"][k], support[k])
            for k in keys
        ]
        pt = e.get("per_target", {}).get("auc")
        pts = f"{_pct(pt['mean'])} ± {_pct(pt['std'])}" if pt else "-"
        rows.append(
            [
                name,
                _with_ci(e["auc"], ci.get("auc")),
                _with_ci(e.get("advantage"), ci.get("advantage")),
                _pct(e.get("balanced_accuracy")),
                *tprs,
                pts,
            ]
        )
    return header, rows


def operating_table(report: dict) -> tuple[list[str], list[list[str]]]:
    """Each attack at each operating FPR (``operating_points``): (header, rows).

    Columns: attack, FPR, TPR %, advantage (TPR - FPR) %, lift (TPR / FPR) and the member
    (target, example) pairs flagged, each with its bootstrap interval where resolvable.
    """
    header = ["attack", "FPR", "TPR %", "advantage %", "lift", "members flagged"]
    rows = []
    for name, e in report.get("attacks", {}).items():
        for key, p in (e.get("operating_points") or {}).items():
            ci = p.get("ci", {})
            rows.append(
                [
                    name,
                    _fpr_label(key) + ("" if p.get("resolvable", True) else " *"),
                    _pct(p["tpr"]),
                    _with_ci(p["advantage"], ci.get("advantage")),
                    _with_ci(p["lift"], ci.get("lift"), lambda x: f"{x:.3g}"),
                    _with_ci(p["members_flagged"], ci.get("members_flagged"), lambda x: f"{x}"),
                ]
            )
    return header, rows


def render_markdown(report: dict, title: str) -> str:
    """One run's report (from :func:`jaxsam.scoring.score`) as Markdown.

    ``title`` is Markdown (escape a name in it with :func:`escape_markdown`); the run's
    dataset and model names (``report["run"]``) are escaped here.

    All percentages are of pooled (target, example) pairs over all M targets; intervals are
    bootstrap percentile intervals over examples where the report has them.
    """
    out = [f"# {title}", "", *_run_lines(report)]
    header, rows = attack_table(report)
    if rows:
        out += [
            "",
            "## Attacks (all targets pooled, leave-one-out)",
            "",
            _table(header, rows, True),
        ]
        nn = next(iter(report["attacks"].values())).get("num_nonmembers")
        if nn:
            out += ["", _support_note(nn)]
    header, rows = operating_table(report)
    if rows:
        out += ["", "## Operating points", "", _table(header, rows, True), "", _OPERATING_NOTE]
    extra = _extras(report)
    if extra:
        out += ["", "## Mechanism statistics", ""] + [f"- {k}: {_num(v)}" for k, v in extra]
    return "\n".join(out) + "\n"


_OPERATING_NOTE = (
    "At each FPR budget f the attack's pooled threshold flags a fraction TPR of the member "
    "(target, example) pairs: advantage = TPR - f, lift = TPR / f (1 = chance), members "
    "flagged = TPR × members pooled. RUN/examples.parquet says which examples they are."
)


def _support_note(nn: int) -> str:
    return (
        f"Non-members pooled: {nn}. A TPR at FPR f rests on f × {nn} allowed false "
        f"positives; values marked * (at 0 FP) allow fewer than one (lowest resolvable FPR "
        f"{1 / nn:.2g}): each is the TPR at zero false positives, the members scoring above "
        f"the single highest of the {nn} non-member scores. They are below the FPR resolution "
        "and get no bootstrap interval (a bootstrap of an extreme order statistic is not a "
        f"valid interval); {_EXACT_WORDS}"
    )


_EXACT_WORDS = (
    "(exact low-high) is the 95% Clopper-Pearson interval of the members above the highest "
    "non-member score, conditional on that threshold (it leaves out the threshold's own "
    "variability and treats pooled pairs as independent)."
)


def _shadow_line(shadows: dict, cut_sizes: bool = True) -> str:
    """One Markdown bullet: IN / OUT models per example and (``cut_sizes``, for reports without
    ``reference_groups``) LiRA's equal-group sizes."""
    pe, cut = shadows["per_example"], shadows.get("lira_equal_groups", {})

    def span(d: dict) -> str:
        return f"min {d['min']}, median {d['median']:g}"

    text = f"- shadow models per example: IN {span(pe['in'])}; OUT {span(pe['out'])} " + (
        "(exact k-of-M masks)" if shadows.get("exact") else "(masks not exact k-of-M)"
    )
    if cut and not shadows.get("exact") and cut_sizes:
        text += (
            f"; LiRA's equal groups keep per target IN {span(cut['in'])}, "
            f"OUT {span(cut['out'])} shadows"
        )
    return text


_RULE_WORDS = {
    "cut": "cut to sizes that do not depend on the target's membership",
    "leave_one_out": "leave-one-out (every other model)",
}


def reference_line(groups: dict) -> str:
    """One Markdown bullet: the reference-group rule LiRA, RMIA and calibrated loss used."""
    design = groups.get("design") or {}
    sizes = groups.get("sizes") or {}
    eg = groups.get("equal_groups")
    asked = {True: "on", False: "off"}.get(eg, eg) if isinstance(eg, bool | str) else "?"
    text = (
        f"- reference groups: {_RULE_WORDS.get(groups['rule'], groups['rule'])} "
        f"(equal groups {asked}; masks {design.get('design', '?')}"
    )
    if "dependence" in design:
        text += f", dependence {design['dependence']:.2f}"
    text += ")"
    if sizes:
        text += "; shadows per target and example: " + ", ".join(
            f"{g.upper()} min {d['min']}, median {d['median']:g}" for g, d in sizes.items()
        )
    return text


def _extras(report: dict) -> list[tuple[str, float]]:
    out = []
    mem = report.get("memorization")
    if isinstance(mem, dict) and "mean" in mem:
        out.append(("mean FZ memorization", float(mem["mean"])))
    ocv = report.get("out_confidence_variance")
    if isinstance(ocv, dict) and "median" in ocv:
        out.append(
            ("median OUT confidence variance (scale set by the recipe)", float(ocv["median"]))
        )
        if ocv.get("relative_to_gap") is not None:
            out.append((_RELATIVE_LABEL + " (scale-free)", float(ocv["relative_to_gap"])))
    return out


_RELATIVE_LABEL = "median OUT conf. variance / mean IN-OUT gap²"
# The compare table's mark of a statistic whose scale the recipe sets, and its note.
_SCALE_MARK = " §"
_SCALE_NOTE = (
    "§ recipe-scale-bound: the OUT confidence variance is in units of the logit-scaled "
    "confidence squared, and the recipe sets that scale (label smoothing caps the confidence, "
    "shrinking the signal and its variance together), so runs of different recipes are not "
    f"comparable on it; compare '{_RELATIVE_LABEL}' instead, which cancels a rescaling of the "
    "signal (docs/memorization.md, 'Comparing across recipes')."
)
_PKEEP_NOTE = (
    "§ on mean FZ memorization: the runs differ in pkeep ({}), and memorization estimates "
    "memorization at training-subset size pkeep × N: different pkeep, different quantities."
)


def _pkeep(report: dict) -> float | None:
    """A report's inclusion rate: median IN models per example / models (None if unknown)."""
    inn = (((report.get("shadows") or {}).get("per_example") or {}).get("in") or {}).get("median")
    models = report.get("models")
    return None if inn is None or not models else round(float(inn) / models, 3)


def _mechanism_rows(t: _Rows) -> list[str]:
    """Memorization and OUT-variance rows (those the reports have); returns their notes."""
    notes = []
    pkeeps = {p for p in (_pkeep(r) for r in t.reps) if p is not None}
    mem_mark = _SCALE_MARK if len(pkeeps) > 1 else ""
    rows = (
        ("mean FZ memorization" + mem_mark, lambda r: (r.get("memorization") or {}).get("mean")),
        (
            "median OUT conf. variance" + _SCALE_MARK,
            lambda r: (r.get("out_confidence_variance") or {}).get("median"),
        ),
        (
            _RELATIVE_LABEL,
            lambda r: (r.get("out_confidence_variance") or {}).get("relative_to_gap"),
        ),
    )
    for label, getter in rows:
        vals = [getter(r) for r in t.reps]
        if any(v is not None for v in vals):
            t.add(label, [None if v is None else float(v) for v in vals], _num)
            if label.endswith(_SCALE_MARK) and label.startswith("median OUT"):
                notes.append(_SCALE_NOTE)
            elif label.endswith(_SCALE_MARK):
                notes.append(_PKEEP_NOTE.format(", ".join(f"{p:g}" for p in sorted(pkeeps))))
    return notes


def _diff_ci(a: dict, b: dict, key: str):
    ca, cb = a.get("ci", {}).get(key), b.get("ci", {}).get(key)
    if not ca or not cb or "samples" not in ca or "samples" not in cb:
        return None
    sa, sb = np.asarray(ca["samples"]), np.asarray(cb["samples"])
    if sa.size != sb.size:
        return None
    d = sb - sa
    level = a.get("ci", {}).get("level", 0.95)
    lo, hi = np.percentile(d, [100 * (1 - level) / 2, 100 * (1 + level) / 2])
    return float(lo), float(hi)


def _diff_cell(a, b, fmt, ci) -> str:
    if a is None or b is None:
        return "-"
    d = f"{'+' if b - a >= 0 else ''}{fmt(b - a)}"
    return d + (f" [{fmt(ci[0])}, {fmt(ci[1])}]" if ci is not None else "")


# The diff cell of a row below the FPR resolution: no difference is called there.
_NO_CALL = "no call (0 FP)"


class _Rows:
    """The rows of :func:`compare_table`: each value row gets one diff per later run."""

    def __init__(self, reps: Sequence[dict]):
        self.reps = reps
        self.rows: list[list[str]] = []
        self.paired = all(
            r.get("examples") == reps[0].get("examples")
            and r.get("models") == reps[0].get("models")
            for r in reps
        )

    def text(self, label: str, cells: Sequence[str]) -> None:
        self.rows.append([label, *cells, *["-"] * (len(self.reps) - 1)])

    def zero_fp(self, label: str, vals: Sequence, rows: Sequence[dict | None]) -> None:
        """A row below the FPR resolution in some run: values (the TPR at zero false positives
        with its exact interval where unsupported), and no difference called."""
        cells = [
            _pct(v) + (f" at 0 FP{_exact(r)}" if r and not r.get("supported", True) else "")
            for v, r in zip(vals, rows, strict=True)
        ]
        self.rows.append([label, *cells, *[_NO_CALL] * (len(vals) - 1)])

    def add(self, label: str, vals: Sequence, fmt, entries=None, ci_key=None) -> None:
        diffs = []
        for j in range(1, len(vals)):
            ci = None
            if ci_key and self.paired and entries[0] and entries[j]:
                ci = _diff_ci(entries[0], entries[j], ci_key)
            diffs.append(_diff_cell(vals[0], vals[j], fmt, ci))
        self.rows.append([label, *[fmt(v) for v in vals], *diffs])


def _epsilon(r: dict) -> float | None:
    dp = (r.get("run") or {}).get("dp") or {}
    return None if dp.get("epsilon") is None else float(dp["epsilon"])


def _recipe_rows(t: _Rows, markdown: bool) -> None:
    """The ``recipe`` row (when a report names its run) and the DP epsilon row (when one has it)."""
    runs = [r.get("run") or {} for r in t.reps]
    if any(recipe_line(run) for run in runs):
        cells = [recipe_line(run, short=True) or "-" for run in runs]
        t.text("recipe", [escape_markdown(c) if markdown else c for c in cells])
    eps = [_epsilon(r) for r in t.reps]
    if any(e is not None for e in eps):
        delta = next(((run.get("dp") or {}).get("delta") for run in runs if run.get("dp")), None)
        t.add(f"DP epsilon (delta {delta})", eps, _num)


def _attack_rows(t: _Rows) -> None:
    """AUC and TPR at each FPR of every attack any report has, with paired diff intervals."""
    names: list[str] = []
    for r in t.reps:
        names += [a for a in r.get("attacks", {}) if a not in names]
    for att in names:
        entries = [r.get("attacks", {}).get(att) for r in t.reps]
        have = [e for e in entries if e]
        support = [metrics.row_support(e) if e else None for e in entries]
        t.add(f"{att} AUC %", [e["auc"] if e else None for e in entries], _pct, entries, "auc")
        for k in have[0]["tpr_at_fpr"]:
            rows = [s.get(k) if s else None for s in support]
            label = f"{att} TPR@{_fpr_label(k)} FPR %"
            vals = [e["tpr_at_fpr"].get(k) if e else None for e in entries]
            if any(r and not r.get("supported", True) for r in rows):
                t.zero_fp(label + " *", vals, rows)
            else:
                t.add(label, vals, _pct, entries, f"tpr@{k}")


def _zero_fp_note(named_reports: Sequence[tuple[str, dict]], markdown: bool) -> str:
    """The compare table's note on rows below the FPR resolution, with each run's count."""
    counts = []
    for name, r in named_reports:
        nn = {e.get("num_nonmembers") for e in (r.get("attacks") or {}).values()} - {None}
        if nn:
            shown = escape_markdown(name) if markdown else str(name)
            counts.append(f"{shown} {', '.join(str(n) for n in sorted(nn))}")
    pooled = f" (non-member scores pooled: {'; '.join(counts)})" if counts else ""
    return (
        "* below the FPR resolution in at least one run: fewer than one false positive allowed "
        "(FPR × non-member scores < 1), so the value is the TPR at zero false positives, "
        f"resting on the single highest non-member score{pooled}. Such a row gets no bootstrap "
        f'interval and no difference is called on it ("{_NO_CALL}"). ' + _EXACT_WORDS
    )


def compare_rows(
    named_reports: Sequence[tuple[str, dict]], markdown: bool = False
) -> tuple[list[str], list[list[str]], list[str]]:
    """:func:`compare_table`'s content: (header, rows, notes), cells as plain text."""
    names = [escape_markdown(n) if markdown else str(n) for n, _ in named_reports]
    reps = [r for _, r in named_reports]
    if len(reps) == 2:
        diffs = ["diff (last - first)"]
    else:
        diffs = [f"diff ({n} - first)" for n in names[1:]]
    t = _Rows(reps)
    _recipe_rows(t, markdown)
    t.add(OUT_ACCURACY_LABEL, [out_accuracy(r) for r in reps], _pct)
    held = [heldout_accuracy(r) for r in reps]
    if any(v is not None for v in held):
        t.add(HELDOUT_ACCURACY_LABEL, held, _pct)
    _attack_rows(t)
    scale_notes = _mechanism_rows(t)
    notes = []
    if any(r[0].endswith(" *") for r in t.rows):
        notes.append(_zero_fp_note(named_reports, markdown))
    notes += scale_notes
    if len(reps) >= 2:
        notes.append(
            "diff: each run minus the first; [low, high] = 95% paired bootstrap interval over "
            "examples."
        )
    return ["metric", *names, *diffs], t.rows, notes


def compare_table(named_reports: Sequence[tuple[str, dict]], markdown: bool = False) -> str:
    """Runs side by side in the paper's format.

    Rows: ``recipe`` (each run's recipe in words, :func:`recipe_line`, when a report names its
    run) and DP epsilon (when a run has one); OUT (pool non-member) accuracy (each model on the
    pool points it did not train on), held-out accuracy (the held-out split, when a report has
    it); for each attack its AUC and TPR at each reported FPR; then, when the reports hold
    them, mean Feldman-Zhang memorization (``report["memorization"]["mean"]``, marked § when
    the runs' pkeep differ), median OUT-confidence variance
    (``report["out_confidence_variance"]["median"]``, always marked §: its scale is set by the
    recipe) and its scale-free version, the median OUT variance over the squared mean IN-OUT
    gap (``relative_to_gap``, :func:`jaxsam.analysis.variance_relative_to_gap`).
    Columns: one per run, then for every other run its difference from the first (with two
    runs the one column is called ``diff (last - first)``), with a 95% bootstrap interval when
    both reports carry bootstrap samples (paired when both used the same pool, masks and seed,
    as ``jaxsam demo`` does). Values are percentages except the mechanism statistics and
    epsilon. A TPR row marked * is below the FPR resolution in at least one run (fewer than one
    false positive allowed): its values are the TPR at zero false positives, with their exact
    (Clopper-Pearson) interval where unsupported, and it carries no bootstrap interval and no
    difference (``no call (0 FP)``).

    Args:
      named_reports: [(run name, report dict)], at least one.
      markdown: pipe table instead of aligned plain text (run names escaped,
        :func:`escape_markdown`).
    """
    if not named_reports:
        return ""
    header, rows, notes = compare_rows(named_reports, markdown)
    text = _table(header, rows, markdown)
    return text + ("\n\n" + "\n".join(notes) if notes else "") + "\n"
