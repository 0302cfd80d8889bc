"""``jaxsam audit RUN``: an audited run -> ``RUN/audit.json`` and the audit section of report.md.

:func:`audit_run` scores the canaries on every target with a reference-only attack
(:func:`jaxsam.audit.attack.canary_scores`) and computes each method's lower bound with the
chosen threshold strategy (:func:`jaxsam.audit.strategies.audit_bound`). :func:`write_audit`
publishes the result. Nothing is trained: the run directory alone is read.
"""

from __future__ import annotations

import math
from pathlib import Path

from jaxsam import store
from jaxsam.audit import attack as attack_lib
from jaxsam.audit import strategies
from jaxsam.report_audit import AUDIT_FILE, _num, audit_markdown, bound_cells, splice_markdown
from jaxsam.report_text import _table, escape_markdown
from jaxsam.store import paths

DEFAULT_DELTA = 1e-5  # a run without DP-SGD: the delta of the (epsilon, delta) claims refuted


def _accountant(run: store.Run) -> tuple[float | None, float, dict | None]:
    """(accountant epsilon or None, delta, run.json's dp record or None)."""
    dp = run.info.get("dp")
    if not isinstance(dp, dict):
        return None, DEFAULT_DELTA, None
    eps = dp.get("epsilon")
    ok = isinstance(eps, int | float) and math.isfinite(eps)
    return (float(eps) if ok else None), float(dp.get("delta", DEFAULT_DELTA)), dp


def audit_run(
    run: store.Run,
    *,
    attack: str = "lira",
    significance: float = 0.05,
    threshold: str = "split",
    seed: int = 0,
) -> dict:
    """The audit of an audited run (``audit.canaries > 0``), as ``audit.json`` holds it.

    Args:
      run: the finished run.
      attack: one of :data:`jaxsam.audit.attack.ATTACKS` (references only).
      significance: each bound holds with probability at least ``1 - significance``.
      threshold: the threshold strategy, one of :data:`jaxsam.audit.strategies.STRATEGIES`.
      seed: seed of the strategy's splits.

    Returns:
      ``epsilon_accountant`` (run.json's, None for a run without DP-SGD or without noise),
      ``delta`` (the run's DP delta, else 1e-5), ``bounds`` (one record per method of
      :data:`jaxsam.audit.strategies.METHODS`, see :func:`~jaxsam.audit.strategies.audit_bound`),
      ``ceiling`` (method -> a perfect attack's bound under the same strategy), and what was
      audited: ``attack``, ``kind``, ``canaries``, ``targets``, ``references``, ``trials``.

    Raises:
      ConfigError: the run has no canaries, an unknown attack or strategy, a bad level or
        seed.
    """
    strategies.check_seed(seed)  # before the scoring, which may take a while
    cs = attack_lib.canary_scores(run, attack)
    eps_acc, delta, dp = _accountant(run)
    gaussian = dp is not None and float(dp.get("noise_multiplier") or 0.0) > 0.0
    records = []
    for method in strategies.METHODS:
        rec = strategies.audit_bound(
            method,
            cs.scores,
            cs.member,
            significance=significance,
            delta=delta,
            strategy=threshold,
            seed=seed,
        )
        if method == "fdp":
            rec["applies"] = gaussian
            rec["assumption"] = (
                "the mechanism's privacy is a Gaussian trade-off curve (mu-GDP): a lower bound "
                "on epsilon for DP-SGD's Gaussian noise, a refuted Gaussian guarantee otherwise"
            )
        if method == "clopper_pearson" and rec.get("canary_row") is not None:
            rec["canary"] = int(cs.canaries[rec.pop("canary_row")])
        if eps_acc is not None:
            rec["below_accountant"] = bool(rec["epsilon_lower"] <= eps_acc)
        records.append(rec)
    audit = run.info.get("audit") or {}
    return {
        "run": run.name,
        "attack": attack,
        "threshold": threshold,
        "significance": float(significance),
        "epsilon_accountant": eps_acc,
        "delta": delta,
        "guarantee": None if dp is None else dp.get("guarantee"),
        "bounds": records,
        "ceiling": {r["method"]: r["ceiling"] for r in records},
        "kind": audit.get("kind"),
        "canaries": int(cs.canaries.size),
        "targets": cs.targets.tolist(),
        "references": cs.references.tolist(),
        "trials": int(cs.member.size),
        "members": int(cs.member.sum()),
        "seed": int(seed),
    }


def read_audit(run_dir: str | Path) -> dict | None:
    """``RUN/audit.json``, or None when the run has not been audited."""
    path = Path(run_dir) / AUDIT_FILE
    return store.read_json(path, "audit") if path.is_file() else None


def write_audit(run: store.Run, audit: dict) -> Path:
    """Writes ``RUN/audit.json`` and the audit section of ``RUN/report.md``.

    report.md is created (with a title) when the run has not been scored yet; ``jaxsam score``
    keeps the section when it rewrites report.md. Holds the run's lock.
    """
    path = run.path
    with store.run_lock(path, "audit", create=False):
        with store.write_errors(path / AUDIT_FILE, "the audit"):
            out = run.write_json(AUDIT_FILE, audit)
            paths.check_no_links(path, "report.md")
            md = path / "report.md"
            text = (
                md.read_text()
                if md.is_file()
                else f"# jaxsam report: {escape_markdown(run.name)}\n"
            )
            store.write_text_atomic(md, splice_markdown(text, audit_markdown(audit)))
    return out


def summary_lines(audit: dict) -> list[str]:
    """The audit as plain text for the terminal."""
    eps = audit.get("epsilon_accountant")
    head = ["method", "eps_lower", "ceiling", "trials", "guesses", "correct"]
    rows = [[r["method"], *bound_cells(r)] for r in audit["bounds"]]
    return [
        f"{audit['canaries']} canaries x {len(audit['targets'])} targets, "
        f"{len(audit['references'])} references; attack {audit['attack']}, threshold "
        f"{audit['threshold']}; accountant epsilon {_num(eps) if eps is not None else 'none'} "
        f"(delta {audit['delta']:g})",
        _table(head, rows, markdown=False),
    ]
