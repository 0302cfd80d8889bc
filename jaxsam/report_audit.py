"""The audit section of report.md, from ``RUN/audit.json`` (written by ``jaxsam audit``).

Plain text functions of the audit dict (:func:`jaxsam.audit.report.audit_run`), so that
``jaxsam score`` can keep the section when it rewrites report.md without importing the audit.
"""

from __future__ import annotations

from jaxsam.report_text import _table, escape_markdown

AUDIT_FILE = "audit.json"
_BEGIN, _END = "<!-- jaxsam audit -->", "<!-- /jaxsam audit -->"
METHOD_NAMES = {
    "one_run": "one-run (Steinke et al. 2023), pooled over targets",
    "clopper_pearson": "multi-run Clopper-Pearson per canary over targets (Nasr et al. 2021)",
    "fdp": "one-run f-DP, Gaussian trade-off (Mahloujifar et al. 2024)",
}


def _num(x: float | None) -> str:
    return "-" if x is None else f"{x:.3f}"


def bound_cells(r: dict) -> list[str]:
    """A bound record's cells after its method: bound, ceiling, trials, guesses, correct."""
    return [
        _num(r["epsilon_lower"]),
        _num(r["ceiling"]),
        str(r["canaries"]),
        str(r["guesses"]),
        str(r["correct"]),
    ]


def audit_markdown(audit: dict) -> str:
    """The audit section of report.md (between marker comments, so it can be replaced)."""
    eps = audit.get("epsilon_accountant")
    lines = [
        _BEGIN,
        "## Audit: lower bounds on epsilon from canaries",
        "",
        f"{audit['canaries']} {escape_markdown(audit.get('kind') or '')} canaries x "
        f"{len(audit['targets'])} targets ({audit['trials']} trials, {audit['members']} "
        f"members), {len(audit['references'])} references; attack "
        f"{escape_markdown(audit['attack'])} (references only), threshold strategy "
        f"{escape_markdown(audit['threshold'])}, confidence "
        f"{100 * (1 - audit['significance']):g}%, delta {audit['delta']:g}.",
        "",
        "accountant epsilon: "
        + (f"{eps:.3f}" if eps is not None else "none (no DP-SGD guarantee)")
        + (f" ({escape_markdown(audit['guarantee'])})" if audit.get("guarantee") else ""),
        "",
    ]
    header = ["method", "epsilon lower bound", "ceiling", "trials", "guesses", "correct"]
    rows = [
        [
            METHOD_NAMES.get(r["method"], r["method"])
            + ("" if r.get("applies", True) else " (assumes Gaussian noise)"),
            *bound_cells(r),
        ]
        for r in audit["bounds"]
    ]
    lines += [_table(header, rows, markdown=True), ""]
    if eps is not None:
        above = [r["method"] for r in audit["bounds"] if r["epsilon_lower"] > eps]
        lines.append(
            "Every bound is at most the accountant's epsilon."
            if not above
            else f"**{', '.join(above)} exceed(s) the accountant's epsilon**: the guarantee is "
            "refuted at this confidence (a bug, or an assumption of the accountant that the "
            "training breaks)."
        )
        lines.append("")
    lines += [
        "The ceiling is the bound a perfect attack would reach with the same canaries, targets "
        "and strategy: a bound far below it means a weak attack, a small ceiling an audit too "
        "small to show more (docs/audit.md).",
        _END,
    ]
    return "\n".join(lines) + "\n"


def splice_markdown(text: str, section: str) -> str:
    """``text`` with its audit section replaced by ``section`` (appended when it has none)."""
    if _BEGIN in text and _END in text:
        head, rest = text.split(_BEGIN, 1)
        tail = rest.split(_END, 1)[1].lstrip("\n")
        text = head.rstrip("\n") + "\n\n" + tail if tail else head
    return text.rstrip("\n") + "\n\n" + section
