"""Figures of single examples and classes: ``plots/exposed.png`` and ``plots/by_class.png``.

:func:`plot_exposed` draws pool examples in a grid, one row per ranking (the most exposed, the
most memorized), each panel titled with its label and score: images as images, feature rows
(tabular pools) as a strip of their values, and a blank panel that says so where the pool's
inputs are not available (a run scored without its dataset). :func:`plot_by_class` draws one
attack's per-class AUC and TPR with their bootstrap intervals (hatched grey where the class has
too few non-members to resolve the FPR).
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from jaxsam.plots import _save, plt

# One panel: (title, input or None). Input: [H, W, C] / [H, W] image or [D] feature row.
Panel = tuple[str, "np.ndarray | None"]


def _draw_input(ax, x: np.ndarray | None) -> None:
    ax.set_xticks([])
    ax.set_yticks([])
    if x is None:
        ax.text(0.5, 0.5, "input not\navailable", ha="center", va="center", fontsize=7)
        return
    x = np.asarray(x)
    if x.ndim == 1:  # a feature row: one coloured cell per feature, wrapped into a square
        side = int(np.ceil(np.sqrt(x.size)))
        grid = np.full(side * side, np.nan)
        grid[: x.size] = x
        ax.imshow(grid.reshape(side, side), cmap="viridis", interpolation="nearest")
        return
    if x.ndim == 3 and x.shape[-1] == 1:
        x = x[..., 0]
    ax.imshow(x, cmap="gray" if x.ndim == 2 else None, interpolation="nearest")


def plot_exposed(rows: Mapping[str, Sequence[Panel]], path: str | os.PathLike) -> Path:
    """A grid of examples: one row of panels per ranking, e.g. ``{"most exposed": [...]}``.

    Args:
      rows: row title -> panels ``(title, input)``; input is an image ``[H, W, C]`` (uint8 or
        floats in [0, 1]), ``[H, W]``, a feature row ``[D]``, or None (not available).
      path: output PNG.

    Returns:
      The path written.
    """
    ncols = max((len(p) for p in rows.values()), default=1) or 1
    nrows = max(len(rows), 1)
    fig, axes = plt.subplots(nrows, ncols, figsize=(1.7 * ncols, 2.0 * nrows + 0.3), squeeze=False)
    for r, (row_title, panels) in enumerate(rows.items()):
        for c in range(ncols):
            ax = axes[r, c]
            if c >= len(panels):
                ax.axis("off")
                continue
            title, x = panels[c]
            _draw_input(ax, x)
            ax.set_title(title, fontsize=7)
        axes[r, 0].set_ylabel(row_title, fontsize=8)
    return _save(fig, path)


def plot_by_class(frame: pd.DataFrame, attack: str, path: str | os.PathLike) -> Path:
    """Per-class bars of ``attack``'s AUC and TPR at each FPR of ``frame``, with intervals.

    Args:
      frame: :func:`jaxsam.examples_table.by_class_frame`.
      attack: which attack's rows to draw.
      path: output PNG.
    """
    g = frame[frame["attack"] == attack].sort_values("class")
    metric_cols = ["auc"] + [
        c for c in g.columns if c.startswith("tpr@") and not c.endswith(("_low", "_high"))
    ]
    fig, axes = plt.subplots(
        1, len(metric_cols), figsize=(3.6 * len(metric_cols), 3.4), squeeze=False
    )
    x = np.arange(len(g))
    for ax, col in zip(axes[0], metric_cols, strict=True):
        v = g[col].to_numpy(np.float64)
        lo = g.get(f"{col}_low", pd.Series(np.nan, index=g.index)).to_numpy(np.float64)
        hi = g.get(f"{col}_high", pd.Series(np.nan, index=g.index)).to_numpy(np.float64)
        err = np.nan_to_num(np.stack([v - lo, hi - v]), nan=0.0).clip(min=0)
        bars = ax.bar(x, v, yerr=err, capsize=2, color="tab:blue")
        ax.set_xticks(x, [str(c) for c in g["class"]])
        ax.set_xlabel("class")
        if col == "auc":
            ax.set_title(f"{attack} AUC")
            ax.axhline(0.5, color="gray", ls="--", lw=0.8)
            continue
        f = float(col.split("@", 1)[1])
        unresolved = (f * g["n_nonmembers"].to_numpy()) < 1
        for bar, hatch in zip(bars, unresolved, strict=True):
            if hatch:  # fewer than one false positive allowed: the TPR at zero false positives
                bar.set(hatch="//", facecolor="lightgray", edgecolor="gray")
        note = "\n(hatched: under 1 false positive allowed)" if unresolved.any() else ""
        ax.set_title(f"{attack} TPR at {100 * f:g}% FPR{note}", fontsize=9)
    return _save(fig, path)
