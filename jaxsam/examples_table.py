"""Per-example and per-class tables of a scored run, as pandas DataFrames.

``jaxsam score`` writes them as ``RUN/examples.parquet`` (:func:`examples_frame`, one row per
pool example) and ``RUN/by_class.csv`` (:func:`by_class_frame` and :func:`by_class_csv`, one
row per class and attack). Everything here is a pure function of arrays the scoring already
holds: the kept models' scores ``[M', N]`` (higher = member), their masks ``keep [M', N]``,
the pool labels ``[N]`` and the per-example mechanism arrays ``[N]``.

Flags: an attack *flags* a (target, example) pair when its score passes the operating point of
FPR ``f`` pooled over all targets (:func:`jaxsam.metrics.operating_point`), the same point as
the report's ``tpr_at_fpr``: above the threshold fully, at a tied threshold with the point's
weight (:func:`jaxsam.metrics.flag_weights`). ``flagged`` averages over every target,
``flagged_in`` over the targets that trained on the example (its own TPR at that point).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd

from jaxsam import metrics
from jaxsam.errors import DataError

# The FPRs of the per-example flag columns and of the per-class table.
EXAMPLE_FPRS = metrics.OPERATING_FPRS
CLASS_FPRS = metrics.HEADLINE_FPRS


def fpr_column(f: float) -> str:
    """The short FPR label used in column names: 1e-3 -> ``1e-3``, 0.01 -> ``1e-2``."""
    return np.format_float_scientific(float(f), trim="-", exp_digits=1)


def flag_column(attack: str, f: float, *, among_in: bool = False) -> str:
    """Column of ``examples.parquet`` with the fraction of targets flagging an example.

    E.g. ``flag_column("lira_online", 1e-3)`` -> ``lira_online_flagged_1e-3`` (over all
    targets); ``among_in=True`` -> ``lira_online_flagged_in_1e-3`` (over its IN targets).
    """
    return f"{attack}_flagged{'_in' if among_in else ''}_{fpr_column(f)}"


def score_column(attack: str) -> str:
    """Column of ``examples.parquet`` with an attack's mean score over targets."""
    return f"{attack}_score"


def _attack_columns(name: str, s: np.ndarray, keep: np.ndarray, fprs) -> dict[str, np.ndarray]:
    cols = {score_column(name): s.mean(0)}
    n_in = keep.sum(0)
    for f in fprs:
        flagged = metrics.flag_weights(s, metrics.operating_point(s, keep, f))
        cols[flag_column(name, f)] = flagged.mean(0)
        with np.errstate(invalid="ignore", divide="ignore"):
            cols[flag_column(name, f, among_in=True)] = (flagged * keep).sum(0) / n_in
    return cols


def examples_frame(
    *,
    scores: Mapping[str, np.ndarray],
    keep: np.ndarray,
    labels: np.ndarray,
    ids: np.ndarray,
    dataset: str,
    split: str,
    memorization: np.ndarray,
    out_variance: np.ndarray,
    canary: np.ndarray | None = None,
    fprs: Sequence[float] = EXAMPLE_FPRS,
) -> pd.DataFrame:
    """One row per pool example: where it comes from, its label, shadows and exposure.

    Args:
      scores: attack -> float [M', N] scores of the kept models (higher = member).
      keep: bool [M', N] masks of the same models.
      labels: int [N]; ids: int [N] index of each example in its source split.
      dataset, split: the pool's source (``run.json``'s pool origin).
      memorization: float [N] Feldman-Zhang memorization (NaN where undefined).
      out_variance: float [N] variance of the logit-scaled confidence over OUT models.
      canary: optional bool [N] (True for inserted canaries).
      fprs: FPRs of the flag columns.

    Returns:
      Columns ``pool_index``, ``dataset``, ``split``, ``index``, ``label``, ``n_in``, ``n_out``,
      ``memorization``, ``out_confidence_variance``, [``canary``], then per attack
      ``{attack}_score`` (mean over targets) and, per FPR, ``{attack}_flagged_{fpr}`` and
      ``{attack}_flagged_in_{fpr}`` (:func:`flag_column`).
    """
    keep = np.asarray(keep, bool)
    n = keep.shape[1]
    for what, a in (("labels", labels), ("ids", ids), ("memorization", memorization)):
        if np.shape(a) != (n,):
            raise DataError(f"{what} must be [N={n}], got {np.shape(a)}; pass the pool's arrays")
    cols: dict[str, object] = {
        "pool_index": np.arange(n, dtype=np.int64),
        "dataset": pd.Categorical([dataset] * n),
        "split": pd.Categorical([split] * n),
        "index": np.asarray(ids, np.int64),
        "label": np.asarray(labels, np.int64),
        "n_in": keep.sum(0).astype(np.int64),
        "n_out": (~keep).sum(0).astype(np.int64),
        "memorization": np.asarray(memorization, np.float64),
        "out_confidence_variance": np.asarray(out_variance, np.float64),
    }
    if canary is not None:
        cols["canary"] = np.asarray(canary, bool)
    for name, s in scores.items():
        cols.update(_attack_columns(name, np.asarray(s, np.float64), keep, fprs))
    return pd.DataFrame(cols)


def primary_attack(names: Sequence[str]) -> str:
    """The attack pictures and summaries rank by: LiRA online when scored, else the first."""
    return "lira_online" if "lira_online" in names else names[0]


def most_exposed(frame: pd.DataFrame, attack: str, k: int, f: float = EXAMPLE_FPRS[0]):
    """The ``k`` rows most often flagged among their IN targets at FPR ``f`` (ties: by score)."""
    return frame.sort_values(
        [flag_column(attack, f, among_in=True), score_column(attack)], ascending=False
    ).head(k)


def most_memorized(frame: pd.DataFrame, k: int) -> pd.DataFrame:
    """The ``k`` rows with the highest Feldman-Zhang memorization (undefined ones last)."""
    return frame.sort_values("memorization", ascending=False, na_position="last").head(k)


def _class_metrics(s, y, fprs, bootstrap: int, seed: int) -> dict:
    """AUC and TPRs (with intervals) of one class's [M', n_c] scores; NaN without both kinds."""
    row: dict = {"n_members": int(y.sum()), "n_nonmembers": int((~y).sum())}
    keys = ["auc"] + [f"tpr@{fpr_column(f)}" for f in fprs]
    row.update({k: np.nan for k in keys})
    row.update({f"{k}_{b}": np.nan for k in keys for b in ("low", "high")})
    if not y.any() or y.all():
        return row
    m = metrics.roc_metrics(s, y, fprs=fprs)
    row["auc"] = m["auc"]
    for f in fprs:
        row[f"tpr@{fpr_column(f)}"] = m["tpr_at_fpr"][metrics.fpr_key(f)]
    if bootstrap:
        ci = metrics.bootstrap(s, y, fprs=fprs, num_samples=bootstrap, seed=seed)
        for f in fprs:  # no interval where the class's non-members cannot resolve the FPR
            if f * row["n_nonmembers"] >= 1:
                c = ci[f"tpr@{metrics.fpr_key(f)}"]
                row[f"tpr@{fpr_column(f)}_low"], row[f"tpr@{fpr_column(f)}_high"] = (
                    c["low"],
                    c["high"],
                )
        row["auc_low"], row["auc_high"] = ci["auc"]["low"], ci["auc"]["high"]
    return row


def by_class_frame(
    *,
    scores: Mapping[str, np.ndarray],
    keep: np.ndarray,
    labels: np.ndarray,
    memorization: np.ndarray,
    out_variance: np.ndarray,
    fprs: Sequence[float] = CLASS_FPRS,
    bootstrap: int = 200,
    seed: int = 0,
) -> pd.DataFrame:
    """One row per (class, attack): the attack judged on that class's examples alone.

    Columns: ``class``, ``attack``, ``n`` (pool examples of the class), ``n_members`` and
    ``n_nonmembers`` (pooled (target, example) pairs), ``auc``, ``tpr@1e-2``, ``tpr@1e-3``
    (each with ``_low`` / ``_high``: the bootstrap percentile interval over the class's
    examples, left empty where fewer than one false positive is allowed), ``memorization``
    (mean FZ memorization of the class) and ``out_confidence_variance`` (its mean).
    """
    keep = np.asarray(keep, bool)
    labels = np.asarray(labels)
    rows = []
    for c in np.unique(labels):
        cols = labels == c
        base = {
            "class": int(c),
            "n": int(cols.sum()),
            "memorization": float(np.nanmean(memorization[cols]))
            if np.isfinite(memorization[cols]).any()
            else np.nan,
            "out_confidence_variance": float(np.nanmean(out_variance[cols]))
            if np.isfinite(out_variance[cols]).any()
            else np.nan,
        }
        for name, s in scores.items():
            sc = np.asarray(s, np.float64)[:, cols]
            rows.append(
                {
                    "class": base["class"],
                    "attack": name,
                    "n": base["n"],
                    **_class_metrics(sc, keep[:, cols], fprs, bootstrap, seed),
                    "memorization": base["memorization"],
                    "out_confidence_variance": base["out_confidence_variance"],
                }
            )
    return pd.DataFrame(rows)


def resolvable_note(frame: pd.DataFrame, fprs: Sequence[float] = CLASS_FPRS) -> str:
    """One comment line: which FPRs each class's non-member count can resolve.

    An FPR ``f`` is resolvable with ``n`` non-member pairs when ``f * n >= 1`` (at least one
    false positive allowed); below that a TPR is the TPR at zero false positives.
    """
    parts = []
    for c, g in frame.groupby("class", sort=True):
        n_neg = int(g["n_nonmembers"].iloc[0])
        ok = [f"{100 * f:g}%" for f in fprs if f * n_neg >= 1] or ["none"]
        parts.append(f"class {c} ({n_neg} non-members): {', '.join(ok)}")
    return "# FPRs resolvable (at least one false positive allowed): " + "; ".join(parts)


def by_class_csv(frame: pd.DataFrame, fprs: Sequence[float] = CLASS_FPRS) -> str:
    """``by_class.csv``'s text: the :func:`resolvable_note` comment line, then the table.

    Read it back with ``pandas.read_csv(path, comment="#")``.
    """
    return resolvable_note(frame, fprs) + "\n" + frame.to_csv(index=False)
