"""Text helpers shared by the Markdown and HTML reports: number formats, names, recipes.

Everything here turns report values (:func:`jaxsam.scoring.score`'s dict, and the ``run``
entry :func:`jaxsam.pipeline.score.run_summary` adds) into short strings; nothing renders a
whole page.
"""

from __future__ import annotations

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


# Display names of the SAM variants and base optimizers; other (optax) names print as given.
_DISPLAY = {
    "sgd": "SGD",
    "nesterov": "Nesterov SGD",
    "adam": "Adam",
    "adamw": "AdamW",
    "lamb": "LAMB",
    "sam": "SAM",
    "asam": "ASAM",
    "gsam": "GSAM",
    "looksam": "LookSAM",
}


def _display(name: str) -> str:
    return _DISPLAY.get(name, name)


def _imported(run: dict) -> bool:
    prov = run.get("provenance")
    return isinstance(prov, dict) and prov.get("kind") == "imported"


def dp_words(dp: dict | None) -> str:
    """DP-SGD's guarantee in words ("" without one), e.g. ``DP-SGD epsilon 7.9 at delta 1e-05``."""
    if not dp or dp.get("epsilon") is None:
        return ""
    return (
        f"DP-SGD epsilon {dp['epsilon']:.3g} at delta {dp.get('delta')} "
        f"({dp.get('accountant')}, {dp.get('sampling')} batches)"
    )


def recipe_line(run: dict, *, short: bool = False) -> str:
    """The training recipe of a report's ``run`` entry in words ("" when it names none).

    E.g. ``SAM (rho 0.05) on AdamW, label smoothing 0.1, DP-SGD epsilon 7.9 at delta 1e-05``;
    plain SGD (no SAM variant) is ``SGD``; a run made by ``jaxsam import-logits`` is
    ``imported logits (...)``, since its recipe was never recorded. ``short`` (the compare
    table's ``recipe`` row) writes DP-SGD as ``DP-SGD ε 7.9, δ 1e-05``.
    """
    if _imported(run):
        return "imported logits" + (
            "" if short else " (trained outside jaxsam; recipe not recorded)"
        )
    if not run.get("optimizer"):
        return ""
    base = _display(run.get("base") or "sgd")
    if run["optimizer"] == "sgd":  # no SAM wrapper: the base optimizer alone
        parts = [base]
    else:
        rho = f" (rho {run['rho']})" if run.get("rho") is not None else ""
        parts = [f"{_display(run['optimizer'])}{rho} on {base}"]
    if run.get("label_smoothing"):
        parts.append(f"label smoothing {run['label_smoothing']}")
    dp = run.get("dp") or {}
    if short and dp.get("epsilon") is not None:
        parts.append(f"DP-SGD ε {dp['epsilon']:.3g}, δ {dp.get('delta')}")
    elif dp_words(dp):
        parts.append(dp_words(dp))
    return ", ".join(parts)


def tpr_at(report: dict, attack: str, fpr: float) -> float:
    """TPR of ``attack`` at FPR ``fpr`` from a report, without spelling its key.

    E.g. ``tpr_at(report, "lira_online", 1e-5)`` reads ``report["attacks"]["lira_online"]
    ["tpr_at_fpr"]["1e-05"]`` (:func:`jaxsam.metrics.tpr_key` gives the key).

    Raises:
      KeyError: naming the attacks or FPRs the report has, when it lacks one of them.
    """
    from jaxsam.metrics import tpr_key

    attacks = report.get("attacks", {})
    if attack not in attacks:
        raise KeyError(f"report has no attack {attack!r}; it has {', '.join(attacks) or 'none'}")
    tprs = attacks[attack]["tpr_at_fpr"]
    if tpr_key(fpr) not in tprs:
        raise KeyError(f"report has no TPR at FPR {fpr:g}; it has FPRs {', '.join(tprs)}")
    return float(tprs[tpr_key(fpr)])
