"""Seed aggregation of scored runs, the "difference exceeds noise" rule, and the paper's table.

Everything here is plain Python over report dicts (``RUN/report.json`` as written by
:func:`jaxsam.pipeline.score.score_run`); nothing trains or reads arrays.

The rule. Arms of one experiment share every seed (same pool, same masks, same initial keys for
a given seed), so arm B is compared with the baseline arm A through the paired per-seed
differences ``d_s = B_s - A_s`` over the n seeds both have. With mean ``d``, sample standard
deviation ``sd`` (ddof = 1) and standard error ``se = sd / sqrt(n)``, a difference is *called*
only when

    |d| > t_{0.975, n-1} * se        and n >= 2,

i.e. when the two-sided 95% paired-t confidence interval of the mean difference excludes 0.
(t_{0.975, n-1} = 12.71, 4.30, 3.18, 2.78 for n = 2, 3, 4, 5; it tends to 1.96, so for many seeds
this is the familiar "more than two standard errors".) With one seed nothing is called.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import numpy as np

from jaxsam.report import OUT_ACCURACY_LABEL, escape_markdown, heldout_accuracy, out_accuracy

# FPR keys as the scoring report writes them (str(float)).
TPR_FPRS: tuple[tuple[str, str], ...] = (("0.01", "1%"), ("0.001", "0.1%"))

# Metrics shown as percentages (x100); the mechanism statistics and DP-SGD's epsilon are shown
# as they are.
_MECHANISM = ("memorization_mean", "out_variance_median")
# The audit's lower bounds on epsilon (``jaxsam audit``; arms with canaries), per method.
AUDIT_METHODS = ("one_run", "clopper_pearson", "fdp")
_AUDIT = tuple(f"audit/{m}" for m in AUDIT_METHODS) + tuple(
    f"audit_ceiling/{m}" for m in AUDIT_METHODS
)
# Rows left out when no run has them.
_OPTIONAL = ("heldout_accuracy", "dp_epsilon", *_AUDIT)


def t_critical(n: int, level: float = 0.95) -> float:
    """Two-sided Student-t critical value for ``n`` paired observations (``n - 1`` dof).

    Returns ``inf`` for ``n < 2`` (no noise estimate: nothing can be called a difference).
    """
    if n < 2:
        return math.inf
    from scipy import stats

    return float(stats.t.ppf(0.5 + level / 2.0, n - 1))


UNSUPPORTED = "_unsupported"  # extract_metrics: the TPR rows below the run's FPR resolution


def metric_keys(attacks: Sequence[str]) -> list[str]:
    """Row keys in table order: OUT and held-out accuracy, per attack AUC and TPRs, the
    mechanism stats, then DP-SGD's epsilon (rows no arm has a value for are dropped by
    :func:`aggregate`)."""
    keys = ["out_accuracy", "heldout_accuracy"]
    for a in attacks:
        keys.append(f"{a}/auc")
        keys += [f"{a}/tpr@{k}" for k, _ in TPR_FPRS]
    return keys + list(_MECHANISM) + ["dp_epsilon", *_AUDIT]


def metric_label(key: str) -> str:
    """Human-readable row label of a metric key."""
    if key == "out_accuracy":
        return OUT_ACCURACY_LABEL
    if key == "heldout_accuracy":
        return "held-out accuracy %"
    if key == "dp_epsilon":
        return "DP-SGD epsilon"
    if key.startswith(("audit/", "audit_ceiling/")):
        what, method = key.split("/")
        return f"audit {method} {'ceiling' if what == 'audit_ceiling' else 'epsilon lower bound'}"
    if key == "memorization_mean":
        return "mean FZ memorization"
    if key == "out_variance_median":
        return "median OUT conf. variance"
    attack, what = key.split("/")
    if what == "auc":
        return f"{attack} AUC %"
    fpr = what.removeprefix("tpr@")
    return f"{attack} TPR@{dict(TPR_FPRS).get(fpr, fpr)} FPR %"


def extract_metrics(report: Mapping, attacks: Sequence[str]) -> dict[str, float | None]:
    """The table's numbers from one report; a value the report lacks is ``None``.

    Args:
      report: a ``report.json`` dict: ``accuracy.out`` (accuracy on each model's OUT pool
        points, a fraction; reports written before the rename call it ``accuracy.test``),
        ``attacks[name].auc`` and ``.tpr_at_fpr["0.01" | "0.001"]`` (fractions),
        ``memorization.mean``, ``out_confidence_variance.median``, ``accuracy.heldout``,
        ``run.dp.epsilon`` (DP-SGD runs), and ``audit`` (``RUN/audit.json`` of a run with
        canaries, which :mod:`experiments.run` adds): each method's ``epsilon_lower`` and
        ``ceiling``.
      attacks: attack names to take.

    Returns:
      {metric key: float or None}, keys as in :func:`metric_keys`, plus :data:`UNSUPPORTED`
      (a list of the TPR keys the report marks ``supported: false``) where there are any.
    """

    def num(v) -> float | None:
        return None if v is None else float(v)

    out: dict[str, float | None] = {
        "out_accuracy": out_accuracy(report),
        "heldout_accuracy": num(heldout_accuracy(report)),
    }
    for a in attacks:
        e = (report.get("attacks") or {}).get(a) or {}
        out[f"{a}/auc"] = num(e.get("auc"))
        tprs = e.get("tpr_at_fpr") or {}
        support = e.get("fpr_support") or {}
        for k, _ in TPR_FPRS:
            out[f"{a}/tpr@{k}"] = num(tprs.get(k))
            if (support.get(k) or {}).get("supported") is False:
                out.setdefault(UNSUPPORTED, []).append(f"{a}/tpr@{k}")
    out["memorization_mean"] = num((report.get("memorization") or {}).get("mean"))
    out["out_variance_median"] = num((report.get("out_confidence_variance") or {}).get("median"))
    out["dp_epsilon"] = num(((report.get("run") or {}).get("dp") or {}).get("epsilon"))
    bounds = {b["method"]: b for b in (report.get("audit") or {}).get("bounds", [])}
    for what, field in (("audit", "epsilon_lower"), ("audit_ceiling", "ceiling")):
        for m in AUDIT_METHODS:
            out[f"{what}/{m}"] = num((bounds.get(m) or {}).get(field))
    return out


def summarize(values: Sequence[float]) -> dict:
    """Mean, sample std (ddof = 1; 0 for one value) and count of finite ``values``."""
    v = np.asarray([x for x in values if x is not None and np.isfinite(x)], np.float64)
    if v.size == 0:
        return {"mean": None, "std": None, "n": 0, "values": []}
    return {
        "mean": float(v.mean()),
        "std": float(v.std(ddof=1)) if v.size > 1 else 0.0,
        "n": int(v.size),
        "values": [float(x) for x in v],
    }


def paired_difference(a: Mapping[int, float], b: Mapping[int, float], level: float = 0.95) -> dict:
    """``b - a`` over the seeds both have, with its standard error and the noise rule.

    Args:
      a, b: {seed: value} of the baseline arm and the compared arm (None values are skipped).
      level: confidence level of the paired-t interval.

    Returns:
      {"mean", "std", "se", "n", "t", "half_width", "exceeds_noise", "seeds"}; ``exceeds_noise``
      is True when ``|mean| > t * se`` with ``n >= 2`` (see the module docstring).
    """
    seeds = sorted(
        s
        for s in set(a) & set(b)
        if a[s] is not None and b[s] is not None and np.isfinite(a[s]) and np.isfinite(b[s])
    )
    d = np.asarray([b[s] - a[s] for s in seeds], np.float64)
    n = int(d.size)
    if n == 0:
        return {
            "mean": None,
            "std": None,
            "se": None,
            "n": 0,
            "t": math.inf,
            "half_width": None,
            "exceeds_noise": False,
            "seeds": [],
        }
    mean = float(d.mean())
    std = float(d.std(ddof=1)) if n > 1 else None
    se = std / math.sqrt(n) if std is not None else None
    t = t_critical(n, level)
    half = t * se if se is not None else None
    exceeds = bool(n >= 2 and half is not None and abs(mean) > half)
    return {
        "mean": mean,
        "std": std,
        "se": se,
        "n": n,
        "t": t,
        "half_width": half,
        "exceeds_noise": exceeds,
        "seeds": seeds,
    }


def aggregate(
    per_seed: Mapping[str, Mapping[int, Mapping]],
    attacks: Sequence[str],
    baseline: str,
    level: float = 0.95,
) -> dict:
    """Aggregates per-seed reports of several arms.

    Args:
      per_seed: {arm: {seed: report dict}}; arms in display order, ``baseline`` among them.
      attacks: attack names for the table rows.
      baseline: the arm every other arm is compared with (e.g. ``"SGD"``).
      level: confidence level of the paired-t rule.

    Returns:
      {"arms": [...], "baseline", "metrics": [keys], "summary": {arm: {key: summarize()}},
      "diff": {arm: {key: paired_difference()}} for arms other than the baseline,
      "seeds": {arm: [seeds]}, "level"}.
    """
    if baseline not in per_seed:
        raise KeyError(f"baseline arm {baseline!r} has no runs; arms: {list(per_seed)}")
    values = {
        arm: {s: extract_metrics(rep, attacks) for s, rep in reps.items()}
        for arm, reps in per_seed.items()
    }
    keys = [  # a row no arm has a value for (no held-out split, no DP arm) is left out
        k
        for k in metric_keys(attacks)
        if k not in _OPTIONAL or any(m[k] is not None for v in values.values() for m in v.values())
    ]
    summary = {
        arm: {k: summarize([m[k] for m in vals.values()]) for k in keys}
        for arm, vals in values.items()
    }
    # A TPR row that some run cannot resolve (fewer than one false positive allowed: the TPR at
    # zero false positives) is shown but never called a difference.
    unsupported = sorted(
        {k for v in values.values() for m in v.values() for k in m.get(UNSUPPORTED, [])}
    )
    diff = {}
    for arm, vals in values.items():
        if arm == baseline:
            continue
        base = values[baseline]
        diff[arm] = {
            k: paired_difference(
                {s: m[k] for s, m in base.items()}, {s: m[k] for s, m in vals.items()}, level
            )
            for k in keys
        }
        for k in unsupported:
            if k in diff[arm]:
                diff[arm][k]["exceeds_noise"] = False
                diff[arm][k]["unsupported"] = True
    return {
        "arms": list(per_seed),
        "baseline": baseline,
        "metrics": keys,
        "unsupported": unsupported,
        "summary": summary,
        "diff": diff,
        "seeds": {arm: sorted(reps) for arm, reps in per_seed.items()},
        "level": level,
    }


def _fmt(key: str, v: float | None) -> str:
    if v is None or not np.isfinite(v):
        return "-"
    if key == "dp_epsilon" or key in _AUDIT:
        return f"{v:.2f}"
    if key in _MECHANISM:
        return f"{v:.4f}"
    return f"{100 * v:.2f}"


def _fmt_signed(key: str, v: float | None) -> str:
    s = _fmt(key, v)
    return s if s == "-" or s.startswith("-") else "+" + s


def render_table(agg: Mapping, markdown: bool = True) -> str:
    """The paper's table from :func:`aggregate`: rows = metrics, columns = arms, then differences.

    Arm cells read ``mean ± std`` over seeds (std omitted for one seed). Difference cells read
    ``mean ± se`` of the paired per-seed differences, followed by ``*`` when the difference
    exceeds the noise (paired-t rule of the module docstring) and ``~`` when it does not; a TPR
    row below some run's FPR resolution (the TPR at zero false positives) reads
    ``(0 FP: no call)`` instead.
    Percentages for accuracy, AUC and TPR; the mechanism statistics as they are. In Markdown the
    arm names are escaped (:func:`jaxsam.report.escape_markdown`).
    """
    arms, base = list(agg["arms"]), agg["baseline"]
    others = [a for a in arms if a != base]
    shown = {a: escape_markdown(a) if markdown else a for a in arms}  # arm names are user input
    header = ["metric", *[shown[a] for a in arms]] + [f"{shown[a]} - {shown[base]}" for a in others]
    rows = []
    for key in agg["metrics"]:
        row = [metric_label(key)]
        for arm in arms:
            s = agg["summary"][arm][key]
            cell = _fmt(key, s["mean"])
            if s["n"] > 1 and cell != "-":
                cell += f" ± {_fmt(key, s['std'])}"
            row.append(cell)
        for arm in others:
            d = agg["diff"][arm][key]
            cell = _fmt_signed(key, d["mean"])
            if cell != "-" and d.get("unsupported"):
                cell += " (0 FP: no call)"
            elif cell != "-":
                if d["se"] is not None:
                    cell += f" ± {_fmt(key, d['se'])}"
                cell += " *" if d["exceeds_noise"] else " ~"
            row.append(cell)
        rows.append(row)
    if markdown:
        lines = ["| " + " | ".join(header) + " |", "|" + "|".join(["---"] * len(header)) + "|"]
        lines += ["| " + " | ".join(r) + " |" for r in rows]
        table = "\n".join(lines)
    else:
        widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]

        def fmt(r):
            return "  ".join(
                c.ljust(w) if i == 0 else c.rjust(w)
                for i, (c, w) in enumerate(zip(r, widths, strict=True))
            )

        table = "\n".join(
            [fmt(header), "  ".join("-" * w for w in widths)] + [fmt(r) for r in rows]
        )
    n_seeds = {a: len(agg["seeds"][a]) for a in arms}
    notes = [
        f"seeds per arm: {', '.join(f'{shown[a]} {n}' for a, n in n_seeds.items())}; "
        "arm cells: mean ± std over seeds.",
        f"difference cells: mean ± standard error of the paired per-seed differences; "
        f"* = exceeds the noise (|mean| > t_{{{agg['level']:.3g}, n-1}} x se, n >= 2), "
        "~ = within the noise.",
    ]
    return table + "\n\n" + "\n".join(notes) + "\n"


def verdicts(agg: Mapping, arm: str) -> dict[str, str]:
    """For ``arm`` vs the baseline: metric key -> ``higher`` / ``lower`` / ``no call``."""
    out = {}
    for key, d in agg["diff"][arm].items():
        if not d["exceeds_noise"]:
            out[key] = "no call"
        else:
            out[key] = "higher" if d["mean"] > 0 else "lower"
    return out


def privacy_utility_points(agg: Mapping, attack: str = "lira_online") -> dict[str, dict]:
    """Per arm: leakage ``x`` = ``attack``'s TPR at 0.1% FPR, utility ``y`` = held-out accuracy
    (OUT accuracy when the runs have no held-out split), each with its std over seeds.

    Returns:
      {arm: {"x", "x_std", "y", "y_std", "y_key", "epsilon", "epsilon_lower"}} (fractions;
      None where missing): ``epsilon`` is the mean accountant epsilon of a DP-SGD arm,
      ``epsilon_lower`` the mean audited one-run lower bound of an arm with canaries.
    """
    points = {}
    for arm in agg["arms"]:
        s = agg["summary"][arm]
        y_key = "heldout_accuracy" if s.get("heldout_accuracy", {}).get("n") else "out_accuracy"
        x = s.get(f"{attack}/tpr@0.001") or {}
        points[arm] = {
            "x": x.get("mean"),
            "x_std": x.get("std"),
            "y": s[y_key]["mean"],
            "y_std": s[y_key]["std"],
            "y_key": y_key,
            "epsilon": (s.get("dp_epsilon") or {}).get("mean"),
            "epsilon_lower": (s.get("audit/one_run") or {}).get("mean"),
        }
    return points
