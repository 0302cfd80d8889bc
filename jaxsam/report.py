"""Readable reports: one run as Markdown, several runs side by side in the paper's format."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

OUT_ACCURACY_LABEL = "OUT (pool non-member) accuracy %"
HELDOUT_ACCURACY_LABEL = "held-out accuracy %"
_FPR_LABEL = {"0.01": "1%", "0.001": "0.1%", "0.0001": "0.01%", "1e-05": "0.001%"}


# Characters that would start Markdown or HTML structure inside a line (emphasis, code, links,
# images, tables, headings' closing sequences, HTML tags and entities), escaped with a backslash.
_MARKDOWN_SPECIAL = frozenset("\\`*_{}[]<>()#!|~&")


def escape_markdown(name: object) -> str:
    """``name`` (a run, arm, dataset or model name) as literal text inside a Markdown line.

    Names come from the user (directory names, config values) and may hold anything: control
    characters (a newline would start a new block, e.g. a heading) become spaces, and every
    character that could start Markdown or HTML structure is backslash-escaped, so the name
    renders as written and cannot break a table or inject markup.
    """
    text = "".join(" " if ord(ch) < 32 or 127 <= ord(ch) < 160 else ch for ch in str(name))
    return "".join("\\" + ch if ch in _MARKDOWN_SPECIAL else ch for ch in text)


def _fpr_label(key: str) -> str:
    return _FPR_LABEL.get(key, f"{float(key) * 100:g}%")


def _pct(x: float | None) -> str:
    return "-" if x is None or not np.isfinite(x) else f"{100 * x:.2f}"


def _num(x: float | None) -> str:
    return "-" if x is None or not np.isfinite(x) else f"{x:.4g}"


def _table(header: list[str], rows: list[list[str]], markdown: bool) -> str:
    if markdown:
        lines = ["| " + " | ".join(header) + " |", "|" + "|".join(["---"] * len(header)) + "|"]
        lines += ["| " + " | ".join(r) + " |" for r in rows]
        return "\n".join(lines)
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    fmt = lambda r: "  ".join(
        c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths, strict=True))
    )
    return "\n".join([fmt(header), "  ".join("-" * w for w in widths)] + [fmt(r) for r in rows])


def out_accuracy(report: dict) -> float | None:
    """Mean OUT (pool non-member) accuracy of a report; also reads reports written before the
    rename, which called it ``accuracy.test``."""
    acc = report.get("accuracy") or {}
    v = acc.get("out", acc.get("test"))
    return None if v is None else float(v)


def heldout_accuracy(report: dict) -> float | None:
    """Mean accuracy on the held-out split (``accuracy.heldout``), None when the report has none.

    Reports written before the rename held it only under ``run.heldout_accuracy``.
    """
    v = (report.get("accuracy") or {}).get("heldout")
    if v is None:
        v = (report.get("run") or {}).get("heldout_accuracy")
    return None if v is None else float(v)


def recipe_line(run: dict) -> str:
    """The training recipe of a report's ``run`` entry in words ("" when it names none).

    E.g. ``sam (rho 0.05) on adamw, label smoothing 0.1, DP-SGD epsilon 7.9 at delta 1e-05``.
    """
    if not run.get("optimizer"):
        return ""
    parts = [run["optimizer"] + (f" (rho {run['rho']})" if run.get("rho") is not None else "")]
    if run.get("base"):
        parts[0] += f" on {run['base']}"
    if run.get("label_smoothing"):
        parts.append(f"label smoothing {run['label_smoothing']}")
    dp = run.get("dp") or {}
    if dp.get("epsilon") is not None:
        parts.append(
            f"DP-SGD epsilon {dp['epsilon']:.3g} at delta {dp.get('delta')} "
            f"({dp.get('accountant')}, {dp.get('sampling')} batches)"
        )
    return ", ".join(parts)


def render_markdown(report: dict, title: str) -> str:
    """One run's report (from :func:`jaxsam.scoring.score`) as Markdown.

    ``title`` is Markdown (escape a name in it with :func:`escape_markdown`); the run's
    optimizer, dataset and model names (``report["run"]``) are escaped here.

    All percentages are of pooled (target, example) pairs over all M targets; intervals are
    bootstrap percentile intervals over examples where the report has them.
    """
    acc = report.get("accuracy", {})
    out = [f"# {title}", ""]
    run = report.get("run") or {}
    if run.get("dataset") or run.get("model"):
        out.append(
            f"- run: optimizer {escape_markdown(run.get('optimizer'))}, dataset "
            f"{escape_markdown(run.get('dataset'))}, model {escape_markdown(run.get('model'))}"
        )
    out += [
        f"- models M = {report.get('models')}, examples N = {report.get('examples')}, "
        f"queries A = {report.get('queries')}",
        f"- accuracy (identity query): train {_pct(acc.get('train'))}% (pool points each model "
        f"trained on), OUT {_pct(out_accuracy(report))}% (pool points it did not train on), "
        f"held-out {_pct(heldout_accuracy(report))}% (the held-out split no model trained on)",
    ]
    recipe = recipe_line(report.get("run") or {})
    if recipe:
        out.append(f"- recipe: {recipe}")
    prov = (report.get("run") or {}).get("provenance")
    if isinstance(prov, dict) and prov.get("kind") == "imported":
        dropped = len(prov.get("dropped_examples") or [])
        out.append(
            f"- provenance: imported ({prov.get('format')}) from {prov.get('source')}"
            + (f", epoch {prov['epoch']}" if "epoch" in prov else "")
            + (f"; {dropped} examples left out (too few IN or OUT models)" if dropped else "")
        )
    shadows = report.get("shadows")
    if isinstance(shadows, dict) and "per_example" in shadows:
        out.append(_shadow_line(shadows))
    if report.get("excluded_models"):
        out.append(f"- excluded models: {report['excluded_models']}")
    for name, why in report.get("skipped_attacks", {}).items():
        out.append(f"- {name} not scored: {why}")
    attacks = report.get("attacks", {})
    if attacks:
        first = next(iter(attacks.values()))
        keys = list(first["tpr_at_fpr"])
        header = (
            ["attack", "AUC %", "advantage %", "bal. acc. %"]
            + [f"TPR@{_fpr_label(k)} %" for k in keys]
            + ["AUC per target (mean ± std) %"]
        )
        rows = []
        for name, e in attacks.items():
            ci = e.get("ci", {})

            def cell(v, cik, ci=ci):
                c = ci.get(cik)
                return _pct(v) + (f" [{_pct(c['low'])}, {_pct(c['high'])}]" if c else "")

            support = e.get("fpr_support", {})
            tprs = [
                cell(e["tpr_at_fpr"][k], f"tpr@{k}")
                + ("" if support.get(k, {}).get("resolvable", True) else " *")
                for k in keys
            ]
            pt = e.get("per_target", {}).get("auc")
            pts = f"{_pct(pt['mean'])} ± {_pct(pt['std'])}" if pt else "-"
            rows.append(
                [
                    name,
                    cell(e["auc"], "auc"),
                    cell(e["advantage"], "advantage"),
                    _pct(e["balanced_accuracy"]),
                    *tprs,
                    pts,
                ]
            )
        out += [
            "",
            "## Attacks (all targets pooled, leave-one-out)",
            "",
            _table(header, rows, True),
        ]
        nn = first.get("num_nonmembers")
        if nn:
            out += [
                "",
                f"Non-members pooled: {nn}. A TPR at FPR f rests on f × {nn} allowed false "
                f"positives; values marked * allow fewer than one (lowest resolvable FPR "
                f"{1 / nn:.2g}) and are the TPR at zero false positives.",
            ]
    extra = _extras(report)
    if extra:
        out += ["", "## Mechanism statistics", ""] + [f"- {k}: {_num(v)}" for k, v in extra]
    return "\n".join(out) + "\n"


def _shadow_line(shadows: dict) -> str:
    """One Markdown bullet: IN / OUT models per example and LiRA's equal-group sizes."""
    pe, cut = shadows["per_example"], shadows.get("lira_equal_groups", {})

    def span(d: dict) -> str:
        return f"min {d['min']}, median {d['median']:g}"

    text = f"- shadow models per example: IN {span(pe['in'])}; OUT {span(pe['out'])} " + (
        "(exact k-of-M masks)" if shadows.get("exact") else "(masks not exact k-of-M)"
    )
    if cut and not shadows.get("exact"):
        text += (
            f"; LiRA's equal groups keep per target IN {span(cut['in'])}, "
            f"OUT {span(cut['out'])} shadows"
        )
    return text


def _extras(report: dict) -> list[tuple[str, float]]:
    out = []
    mem = report.get("memorization")
    if isinstance(mem, dict) and "mean" in mem:
        out.append(("mean FZ memorization", float(mem["mean"])))
    ocv = report.get("out_confidence_variance")
    if isinstance(ocv, dict) and "median" in ocv:
        out.append(("median OUT confidence variance", float(ocv["median"])))
    return out


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


def compare_table(named_reports: Sequence[tuple[str, dict]], markdown: bool = False) -> str:
    """Runs side by side in the paper's format.

    Rows: OUT (pool non-member) accuracy (each model on the pool points it did not train on),
    held-out accuracy (the held-out split, when a report has it); for each attack its AUC and
    TPR at each reported FPR; then, when the reports hold them, mean Feldman-Zhang memorization
    (``report["memorization"]["mean"]``) and median OUT-confidence variance
    (``report["out_confidence_variance"]["median"]``).
    Columns: one per run, then the difference last - first with a 95% bootstrap interval when
    both reports carry bootstrap samples (paired when both used the same pool, masks and seed,
    as ``jaxsam demo`` does). Values are percentages except the mechanism statistics. A TPR
    marked * rests on fewer than one allowed false positive.

    Args:
      named_reports: [(run name, report dict)], at least one.
      markdown: pipe table instead of aligned plain text (run names escaped,
        :func:`escape_markdown`).
    """
    if not named_reports:
        return ""
    names = [escape_markdown(n) if markdown else str(n) for n, _ in named_reports]
    reps = [r for _, r in named_reports]
    two = len(reps) >= 2
    header = ["metric", *names] + (["diff (last - first)"] if two else [])
    rows: list[list[str]] = []

    def add(label, vals, fmt, diff_ci=None):
        row = [label, *[fmt(v) for v in vals]]
        if two:
            a, b = vals[0], vals[-1]
            if a is None or b is None:
                row.append("-")
            else:
                d = f"{'+' if b - a >= 0 else ''}{fmt(b - a)}"
                if diff_ci is not None:
                    d += f" [{fmt(diff_ci[0])}, {fmt(diff_ci[1])}]"
                row.append(d)
        rows.append(row)

    add(OUT_ACCURACY_LABEL, [out_accuracy(r) for r in reps], _pct)
    held = [heldout_accuracy(r) for r in reps]
    if any(v is not None for v in held):
        add(HELDOUT_ACCURACY_LABEL, held, _pct)
    attack_names: list[str] = []
    for r in reps:
        attack_names += [a for a in r.get("attacks", {}) if a not in attack_names]
    paired_ok = all(
        r.get("examples") == reps[0].get("examples") and r.get("models") == reps[0].get("models")
        for r in reps
    )
    for att in attack_names:
        entries = [r.get("attacks", {}).get(att) for r in reps]
        have = [e for e in entries if e]
        ci = (
            _diff_ci(entries[0], entries[-1], "auc")
            if two and paired_ok and entries[0] and entries[-1]
            else None
        )
        add(f"{att} AUC %", [e["auc"] if e else None for e in entries], _pct, ci)
        for k in have[0]["tpr_at_fpr"]:
            ci = (
                _diff_ci(entries[0], entries[-1], f"tpr@{k}")
                if two and paired_ok and entries[0] and entries[-1]
                else None
            )
            unres = any(
                not e.get("fpr_support", {}).get(k, {}).get("resolvable", True) for e in have
            )
            add(
                f"{att} TPR@{_fpr_label(k)} FPR %" + (" *" if unres else ""),
                [e["tpr_at_fpr"].get(k) if e else None for e in entries],
                _pct,
                ci,
            )
    for label, getter in (
        ("mean FZ memorization", lambda r: (r.get("memorization") or {}).get("mean")),
        (
            "median OUT conf. variance",
            lambda r: (r.get("out_confidence_variance") or {}).get("median"),
        ),
    ):
        vals = [getter(r) for r in reps]
        if any(v is not None for v in vals):
            add(label, [None if v is None else float(v) for v in vals], _num)
    text = _table(header, rows, markdown)
    notes = []
    if any("*" in r[0] for r in rows):
        notes.append("* fewer than one false positive allowed at this FPR in at least one run.")
    if two:
        notes.append(
            "diff: last minus first; [low, high] = 95% paired bootstrap interval over examples."
        )
    return text + ("\n\n" + "\n".join(notes) if notes else "") + "\n"
