"""Accuracy of the shadow models, from their saved logits.

Every accuracy jaxsam reports (``metrics.json``, ``report.json``, ``analysis.json``) is built
from :func:`correct_predictions` (arg-max of the identity view, query 0) and averaged by
:func:`accuracy_per_model` or :func:`pooled_accuracy`.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from jaxsam.errors import DataError

# The query view every accuracy (and memorization) is measured on: the identity view.
ACCURACY_QUERY = 0

# A model "did not learn" when its training accuracy stays below chance plus this fraction of
# the way from chance to 100 % (C = 10: below 32.5 %; C = 2: below 62.5 %).
UNTRAINED_MARGIN = 0.25


def correct_predictions(
    logits: Any, labels: Any, *, query: int | None = ACCURACY_QUERY
) -> np.ndarray:
    """Per-model correctness from saved logits, one model at a time (bounded host memory).

    Args:
      logits: float ``[M, N, A, C]`` (A query views, C classes); may be memory-mapped.
      labels: int ``[N]``.
      query: the view to classify from (default: the identity view); None averages the logits
        over the A views first.

    Returns:
      bool ``[M, N]``: the arg-max prediction equals the label.
    """
    labels = np.asarray(labels)
    if np.ndim(logits) != 4 or labels.shape != (np.shape(logits)[1],):
        raise DataError(
            f"logits {np.shape(logits)} and labels {labels.shape} must be [M, N, A, C] and [N]; "
            "pass the run's logits and labels."
        )
    out = np.empty(np.shape(logits)[:2], bool)
    for m in range(out.shape[0]):
        z = np.asarray(logits[m], np.float32)
        z = z.mean(axis=1) if query is None else z[:, query]
        out[m] = z.argmax(-1) == labels
    return out


def accuracy_per_model(correct: Any, where: Any = None) -> np.ndarray:
    """Accuracy of each model over the points ``where`` selects (all points by default).

    Args:
      correct: bool ``[M, K]`` from :func:`correct_predictions`.
      where: optional bool ``[M, K]``: e.g. ``keep`` (train accuracy) or ``~keep`` (OUT, pool
        non-member accuracy).

    Returns:
      float64 ``[M]`` fractions; NaN for a model with no selected point.
    """
    correct = np.asarray(correct, bool)
    where = np.ones_like(correct) if where is None else np.asarray(where, bool)
    with np.errstate(invalid="ignore", divide="ignore"):
        return (correct & where).sum(1) / where.sum(1)


def pooled_accuracy(correct: Any, where: Any = None) -> float | None:
    """Accuracy over all (model, point) entries ``where`` selects, pooled; None if none is."""
    correct = np.asarray(correct, bool)
    picked = correct if where is None else correct[np.asarray(where, bool)]
    return float(picked.mean()) if picked.size else None


def untrained_models(train_accuracy: Any, num_classes: int) -> list[int]:
    """Models that did not learn their own training set (collapsed to about chance).

    A model whose loss never went NaN can still end at chance, e.g. a ReLU net that died early
    at too high a learning rate. Such a model is not marked failed, but its scores distort every
    attack (its IN and OUT confidences are alike), so jaxsam names it.

    Args:
      train_accuracy: ``[M]`` training (IN) accuracy in [0, 1] per model; None (or NaN) for a
        model that failed and is already excluded.
      num_classes: C, the number of classes (chance accuracy is 1 / C).

    Returns:
      Indices of the models whose training accuracy is below
      ``1/C + UNTRAINED_MARGIN * (1 - 1/C)``, ascending.
    """
    if num_classes < 1:
        raise DataError(f"num_classes is {num_classes}; pass the number of classes C >= 1.")
    chance = 1.0 / num_classes
    cut = chance + UNTRAINED_MARGIN * (1.0 - chance)
    acc = np.asarray([np.nan if a is None else a for a in train_accuracy], float)
    return [int(i) for i in np.flatnonzero(np.isfinite(acc) & (acc < cut))]
