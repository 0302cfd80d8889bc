"""Log-log ROC plots (matplotlib, Agg backend: no display needed)."""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from jaxsam import metrics  # noqa: E402


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
    for label, (fpr, tpr) in curves.items():
        fpr, tpr = np.asarray(fpr), np.asarray(tpr)
        pos = fpr[fpr > 0]
        if pos.size:
            lo = min(lo, float(pos.min()))
        auc = metrics._auc(fpr, tpr)  # noqa: SLF001 (same package)
        ax.plot(fpr, tpr, label=f"{label} (AUC {auc:.3f})", lw=1.3)
    ax.plot([lo, 1], [lo, 1], ls="--", color="gray", lw=0.8, label="chance")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlim(lo, 1)
    ax.set_ylim(lo, 1)
    ax.set_xlabel("false positive rate")
    ax.set_ylabel("true positive rate")
    ax.set_title(title)
    ax.legend(loc="lower right", fontsize=8)
    ax.grid(True, which="major", alpha=0.3)
    fig.tight_layout()
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    fig.savefig(path)
    plt.close(fig)
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
