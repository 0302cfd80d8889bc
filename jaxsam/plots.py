"""Every figure jaxsam draws (matplotlib, Agg backend: no display needed).

* membership ROC curves on log-log axes: :func:`plot_roc` (``jaxsam score``'s ``plots/roc.png``
  and the ``compare`` / ``demo`` comparison), :func:`plot_roc_compare`;
* the mechanism figures of ``jaxsam analyze`` (``plots/*.png`` next to ``analysis.json``):
  :func:`plot_memorization_histograms`, :func:`plot_out_variance`, :func:`plot_subgroup_bars`
  and :func:`plot_entropy_buckets`;
* an experiment's privacy-utility figure (``privacy_utility.png`` of ``experiments.run``):
  :func:`plot_privacy_utility`.

The functions take arrays or summaries already computed (by :mod:`jaxsam.metrics` and
:mod:`jaxsam.analysis`) and only draw; each writes one PNG and returns its path.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from jaxsam import metrics  # noqa: E402

SUBGROUPS = ("all", "typical", "atypical")


def _save(fig, path: str | os.PathLike) -> Path:
    """Lays out, writes (PNG, 120 dpi, parent directories created) and closes ``fig``."""
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def _overlaid_histograms(ax, series: Mapping[str, np.ndarray], bins, label: Callable) -> None:
    """One step histogram per run on ``ax``; ``label(name, values)`` names its legend entry."""
    for name, values in series.items():
        ax.hist(values, bins=bins, histtype="step", lw=1.5, label=label(name, values))
    ax.set_ylabel("examples")
    ax.legend()


def _grouped_bars(ax, series: Mapping[str, Sequence[float | None]], ticks: Sequence[str]) -> None:
    """One bar per run at each tick, side by side; None is drawn as a gap."""
    x = np.arange(len(ticks))
    width = 0.8 / max(len(series), 1)
    for r, (name, values) in enumerate(series.items()):
        vals = [np.nan if v is None else v for v in values]
        ax.bar(x + (r - (len(series) - 1) / 2) * width, vals, width, label=name)
    ax.set_xticks(x, list(ticks))
    ax.legend()


# --------------------------------------------------------------------------- ROC


def coinciding_curves(curves: Mapping[str, tuple[np.ndarray, np.ndarray]]) -> dict[str, str]:
    """Curves that repeat an earlier one exactly: label -> the first label with the same ROC.

    Threshold attacks on loss, confidence and entropy-like signals of the same query are
    monotone transforms of one another on many runs (e.g. the loss is -log of the confidence),
    so they rank the (target, example) pairs alike and give the same ROC and AUC.
    """
    out: dict[str, str] = {}
    seen: list[tuple[str, np.ndarray, np.ndarray]] = []
    for label, (fpr, tpr) in curves.items():
        fpr, tpr = np.asarray(fpr), np.asarray(tpr)
        for first, f0, t0 in seen:
            if f0.shape == fpr.shape and np.allclose(f0, fpr) and np.allclose(t0, tpr):
                out[label] = first
                break
        else:
            seen.append((label, fpr, tpr))
    return out


def plot_roc(
    curves: Mapping[str, tuple[np.ndarray, np.ndarray]], path: str | os.PathLike, title: str
) -> str:
    """Write a log-log ROC plot (PNG) of several curves.

    Args:
      curves: label -> (fpr, tpr), float arrays as from :func:`jaxsam.metrics.roc_curve`.
      path: output file (.png); parent directories are created.
      title: plot title.

    Returns:
      The path written, as a string.
    """
    fig, ax = plt.subplots(figsize=(4.5, 4.5), dpi=120)
    lo = 1.0
    same = coinciding_curves(curves)
    for label, (fpr, tpr) in curves.items():
        fpr, tpr = np.asarray(fpr), np.asarray(tpr)
        pos = fpr[fpr > 0]
        if pos.size:
            lo = min(lo, float(pos.min()))
        auc = metrics._auc(fpr, tpr)  # noqa: SLF001 (same package)
        text = f"{label} (AUC {auc:.3f})"
        if label in same:  # drawn dashed on top of the curve it repeats
            text += f" = {same[label]}: same ROC (a monotone transform of it)"
        ax.plot(fpr, tpr, label=text, lw=1.3, ls="--" if label in same else "-")
    ax.plot([lo, 1], [lo, 1], ls="--", color="gray", lw=0.8, label="chance")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlim(lo, 1)
    ax.set_ylim(lo, 1)
    ax.set_xlabel("false positive rate")
    ax.set_ylabel("true positive rate")
    ax.set_title(title)
    # Below the axes, not inside: at FPR 1e-3 .. 1e-2, the range that matters for membership
    # inference, a legend inside would hide the curves once there are a few of them.
    ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.16), fontsize=7, frameon=False)
    ax.grid(True, which="major", alpha=0.3)
    fig.set_figheight(4.5 + 0.22 * (len(curves) + 1))
    if same:
        fig.set_figwidth(6.5)
    _save(fig, path)
    return str(path)


def plot_roc_compare(
    runs: Mapping[str, Any],
    path: str | os.PathLike,
    *,
    attack: str = "lira_online",
    title: str | None = None,
) -> str:
    """Compare one attack across runs (e.g. SGD vs SAM) on a log-log ROC plot.

    Args:
      runs: run label -> either a :class:`jaxsam.scoring.ScoreResult` (its ``scores[attack]``
        and ``keep`` are used) or a tuple ``(scores [M, N], is_member [M, N])``. Reports alone
        cannot be plotted: they hold summaries, not curves.
      path: output PNG.
      attack: which attack's scores to take from a ScoreResult.
      title: plot title (default: "<attack>: all targets pooled").

    Returns:
      The path written.
    """
    curves = {}
    for label, run in runs.items():
        if hasattr(run, "scores") and hasattr(run, "keep"):
            scores, member = run.scores[attack], run.keep
        else:
            scores, member = run
        fpr, tpr, _ = metrics.roc_curve(scores, member)
        curves[label] = (fpr, tpr)
    return plot_roc(curves, path, title or f"{attack}: all targets pooled")


# --------------------------------------------------------------------------- mechanism figures


def plot_memorization_histograms(mems: Mapping[str, np.ndarray], path: str | Path) -> Path:
    """Overlaid histograms of memorization scores ``[N]``, one per run (e.g. SAM vs SGD)."""
    fig, ax = plt.subplots(figsize=(6, 4))
    finite = {k: np.asarray(m)[np.isfinite(m)] for k, m in mems.items()}
    _overlaid_histograms(
        ax, finite, np.linspace(-1, 1, 41), lambda name, m: f"{name} (mean {m.mean():.3f})"
    )
    ax.set_yscale("log")
    ax.set_xlabel("Feldman-Zhang memorization  P[correct | in] - P[correct | out]")
    return _save(fig, path)


def plot_out_variance(variances: Mapping[str, np.ndarray], path: str | Path) -> Path:
    """Overlaid distributions of log10 OUT variance ``[N]`` of the logit-scaled confidence."""
    fig, ax = plt.subplots(figsize=(6, 4))
    logs = {
        k: np.log10(np.asarray(v)[np.isfinite(v) & (np.asarray(v) > 0)])
        for k, v in variances.items()
    }
    finite = [x for x in logs.values() if x.size]
    if finite:
        lo = min(x.min() for x in finite)
        hi = max(x.max() for x in finite)

        def label(name, x):
            med = np.median(x) if x.size else float("nan")
            return f"{name} (median 10^{med:.2f})"

        _overlaid_histograms(ax, logs, np.linspace(lo, hi if hi > lo else lo + 1, 41), label)
    else:
        ax.set_ylabel("examples")
        ax.legend()
    ax.set_xlabel("log10 variance of logit-scaled confidence across OUT models")
    return _save(fig, path)


def plot_subgroup_bars(summaries: Mapping[str, dict], path: str | Path) -> Path:
    """Grouped bars per subgroup (all / typical / atypical): OUT accuracy and attack TPR.

    ``summaries``: run name -> :func:`jaxsam.analysis.analyze_run` summary. With attack scores
    two more panels: the TPR at the first FPR with the threshold set inside each subgroup
    (``tpr_at_fpr_within``: the subgroup's FPR is the one named), and the FPR measured inside
    each subgroup at the attack's pooled threshold for that FPR (``fpr_realised``, a dashed line
    at the FPR named). The ticks give each group's size.
    """
    with_tpr = [s for s in summaries.values() if s["subgroups"]["all"].get("tpr_at_fpr_within")]
    ncols = 3 if with_tpr else 1
    fig, axes = plt.subplots(1, ncols, figsize=(5 * ncols, 4), squeeze=False)

    def tick(g: str) -> str:
        sizes = {s["subgroups"][g]["n"] for s in summaries.values()}
        return f"{g}\n(n = {sizes.pop()})" if len(sizes) == 1 else f"{g}\n(n differs)"

    ticks = [tick(g) for g in SUBGROUPS]

    def bars(ax, getter, ylabel):
        series = {n: [getter(s["subgroups"][g]) for g in SUBGROUPS] for n, s in summaries.items()}
        _grouped_bars(ax, series, ticks)
        ax.set_ylabel(ylabel)

    bars(axes[0, 0], lambda g: g["accuracy"]["out"], "OUT (pool non-member) accuracy")
    if with_tpr:
        key = next(iter(with_tpr[0]["subgroups"]["all"]["tpr_at_fpr_within"]))
        pct = f"{100 * float(key):g}%"
        bars(
            axes[0, 1],
            lambda g: (g.get("tpr_at_fpr_within") or {}).get(key),
            f"attack TPR at FPR {pct}\n(threshold set inside each subgroup)",
        )
        # Hatched: the subgroup's non-members allow fewer than one false positive at that FPR.
        hatched = False
        for container, s in zip(axes[0, 1].containers, summaries.values(), strict=True):
            for patch, g in zip(container.patches, SUBGROUPS, strict=True):
                if not (s["subgroups"][g].get("within_supported") or {}).get(key, True):
                    patch.set_hatch("//")
                    hatched = True
        if hatched:
            axes[0, 1].set_title(
                f"hatched: < 1 false positive allowed at {pct} (TPR at zero FP)", fontsize=8
            )
        bars(
            axes[0, 2],
            lambda g: (g.get("fpr_realised") or {}).get(key),
            f"FPR measured inside each subgroup\nat the pooled {pct}-FPR threshold",
        )
        axes[0, 2].axhline(float(key), ls="--", c="k", lw=1)
    return _save(fig, path)


def plot_entropy_buckets(summaries: Mapping[str, dict], path: str | Path) -> Path | None:
    """Held-out accuracy per influence-entropy bucket, one bar group per run; None without data."""
    series = {
        name: [b["heldout_accuracy"] for b in s["influence_entropy"]["buckets"]]
        for name, s in summaries.items()
        if s.get("influence_entropy")
    }
    if not series:
        return None
    fig, ax = plt.subplots(figsize=(6, 4))
    _grouped_bars(ax, series, [str(b) for b in range(len(next(iter(series.values()))))])
    ax.set_xlabel("influence-entropy bucket (0 = most concentrated influence)")
    ax.set_ylabel("held-out accuracy")
    return _save(fig, path)


# --------------------------------------------------------------------------- privacy-utility


def _epsilon_note(epsilon: float | None, lower: float | None) -> str:
    """``eps 3.21, audited >= 0.45``: the accountant's epsilon beside the audited bound."""
    parts = []
    if epsilon is not None and np.isfinite(epsilon):
        parts.append(f"eps {epsilon:.2f}")
    if lower is not None and np.isfinite(lower):
        parts.append(f"audited >= {lower:.2f}")
    return ", ".join(parts)


def plot_privacy_utility(
    points: Mapping[str, Mapping[str, float]],
    path: str | os.PathLike,
    title: str,
    *,
    x_label: str = "LiRA online TPR at 0.1% FPR",
    y_label: str = "held-out accuracy",
    floor: float = 1e-4,
) -> Path:
    """One point per recipe: utility (y, linear) against leakage (x, log axis), seed error bars.

    Args:
      points: recipe -> {"x", "x_std", "y", "y_std"} (fractions; std over seeds, 0 for one),
        optionally ``epsilon`` (the accountant's, DP-SGD) and ``epsilon_lower`` (the audited
        lower bound, ``jaxsam audit``), written side by side in the point's legend entry.
        A recipe whose ``x`` is missing (None or NaN) is left out.
      path: output PNG.
      title: plot title.
      x_label, y_label: axis labels.
      floor: leakage values below it (a TPR of 0 at this FPR, e.g. strong DP-SGD) are drawn at
        ``floor`` with an open marker, since a log axis has no 0.

    Returns:
      The path written.
    """
    fig, ax = plt.subplots(figsize=(5.5, 4.2), dpi=120)
    for name, p in points.items():
        x, y = p.get("x"), p.get("y")
        if x is None or y is None or not (np.isfinite(x) and np.isfinite(y)):
            continue
        at_floor = x < floor
        xerr = (
            None if at_floor else [[min(p.get("x_std") or 0.0, x - floor)], [p.get("x_std") or 0.0]]
        )
        eps = _epsilon_note(p.get("epsilon"), p.get("epsilon_lower"))
        ax.errorbar(
            max(x, floor),
            y,
            xerr=xerr,
            yerr=p.get("y_std") or 0.0,
            fmt="o",
            mfc="none" if at_floor else None,
            capsize=3,
            label=name + (f" (TPR < {floor:g})" if at_floor else "") + (f"; {eps}" if eps else ""),
        )
    ax.set_xscale("log")
    ax.set_xlabel(x_label + " (log)")
    ax.set_ylabel(y_label)
    ax.set_title(title)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(loc="center left", bbox_to_anchor=(1.02, 0.5), fontsize=8)
    return _save(fig, path)
