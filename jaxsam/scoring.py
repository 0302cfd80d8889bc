"""Score a run's logits with every attack and summarise them in one JSON-ready report.

This module only needs arrays (logits [M, N, A, C], labels [N], keep [M, N]); ``jaxsam score``
loads them from a run directory and writes the report, plots and per-example scores.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any

import numpy as np

from jaxsam import metrics
from jaxsam.attacks import signals as sig
from jaxsam.attacks._checks import check_logits
from jaxsam.attacks._lira import lira_from_signal
from jaxsam.attacks._rmia import rmia_from_signal
from jaxsam.attacks.threshold import calibrated_loss_from_signal
from jaxsam.errors import ConfigError, DataError

ATTACKS = (
    "lira_online",
    "lira_offline",
    "loss",
    "confidence",
    "entropy",
    "modified_entropy",
    "rmia",
    "calibrated_loss",
)


@dataclasses.dataclass
class ScoreResult:
    """Result of :func:`score`.

    Attributes:
      report: JSON-serialisable dict (plain floats, ints, lists, dicts).
      scores: attack name -> numpy float32 [M', N] scores (higher = member), M' = models kept.
      keep: bool [M', N], the membership labels the scores are judged against.
      models: int indices [M'] of the models kept (after ``exclude_models``).
    """

    report: dict
    scores: dict[str, np.ndarray]
    keep: np.ndarray
    models: np.ndarray


class _Signals:
    """Signals computed on demand, once. lsc gives loss and confidence in closed form."""

    def __init__(self, logits, labels):
        self.logits, self.labels, self._cache = logits, labels, {}

    def get(self, name: str) -> np.ndarray:
        if name not in self._cache:
            if name == "lsc":
                v = sig.compute_chunked(sig.logit_scaled_confidence, self.logits, self.labels)
            elif name == "confidence":  # p = sigmoid(lsc)
                lsc = self.get("lsc").astype(np.float64)
                v = (1.0 / (1.0 + np.exp(-lsc))).astype(np.float32)
            elif name == "loss":  # -log p = softplus(-lsc)
                v = np.logaddexp(0.0, -self.get("lsc").astype(np.float64)).astype(np.float32)
            else:
                v = sig.compute_chunked(sig.SIGNALS[name], self.logits, self.labels)
            self._cache[name] = v
        return self._cache[name]


def _run_attack(name: str, s: _Signals, keep: np.ndarray, settings: dict) -> np.ndarray:
    q = settings.get("threshold_query", 0)
    if name == "lira_online":
        return lira_from_signal(s.get("lsc"), keep, online=True, **settings.get("lira", {}))
    if name == "lira_offline":
        return lira_from_signal(s.get("lsc"), keep, online=False, **settings.get("lira", {}))
    if name == "rmia":
        return rmia_from_signal(s.get("confidence"), keep, **settings.get("rmia", {}))
    if name == "calibrated_loss":
        return calibrated_loss_from_signal(s.get("loss"), keep)
    sign = {"loss": -1.0, "confidence": 1.0, "entropy": -1.0, "modified_entropy": -1.0}[name]
    v = s.get(name)
    v = v.mean(-1) if q is None else v[..., q]
    return (sign * v).astype(np.float32)


def _model_mask(exclude_models: Any, m: int) -> np.ndarray:
    use = np.ones(m, bool)
    if exclude_models is None:
        return use
    ex = np.asarray(exclude_models)
    if ex.dtype == bool:
        if ex.shape != (m,):
            raise DataError(f"exclude_models mask must be [M={m}], got {ex.shape}")
        return ~ex
    if ex.size and (ex.min() < 0 or ex.max() >= m):
        raise DataError(f"exclude_models indices must be in [0, {m}); got {ex.tolist()}")
    use[ex.astype(np.int64)] = False
    return use


def accuracy(logits: Any, labels: Any, keep: Any) -> dict:
    """Per-model accuracy on query 0 (identity) over IN points ("train") and OUT points ("test").

    Returns ``{"train": mean, "test": mean, "per_model": {"train": [M], "test": [M]}}``; a model
    with no OUT (or IN) point gets NaN there, which the means skip.
    """
    pred = np.stack([np.asarray(logits[i, :, 0, :]).argmax(-1) for i in range(logits.shape[0])])
    correct = pred == np.asarray(labels)[None]
    keep = np.asarray(keep, bool)
    with np.errstate(invalid="ignore"):
        tr = (correct & keep).sum(1) / keep.sum(1)
        te = (correct & ~keep).sum(1) / (~keep).sum(1)
    return {
        "train": float(np.nanmean(tr)),
        "test": float(np.nanmean(te)),
        "per_model": {"train": [float(x) for x in tr], "test": [float(x) for x in te]},
    }


def score(
    logits: Any,
    labels: Any,
    keep: Any,
    *,
    attacks: Sequence[str] | None = None,
    bootstrap: int = 200,
    seed: int = 0,
    exclude_models: Any = None,
    fprs: Sequence[float] = metrics.DEFAULT_FPRS,
    settings: dict | None = None,
) -> ScoreResult:
    """Run attacks on all targets (leave-one-out) and build the report.

    Args:
      logits: float [M, N, A, C] (query 0 must be the identity view).
      labels: int [N].
      keep: bool [M, N], True where model m trained on example n.
      attacks: names from :data:`ATTACKS` (default: all).
      bootstrap: number of bootstrap resamples for the intervals (0: none).
      seed: seed of the bootstrap.
      exclude_models: bool [M] (True = drop) or int indices of models to leave out entirely
        (e.g. diverged ones); they are neither targets nor shadows.
      fprs: FPRs at which TPR is reported.
      settings: optional overrides: ``{"lira": {...lira kwargs}, "rmia": {...},
        "threshold_query": 0 | None}``.

    Returns:
      :class:`ScoreResult`. ``report`` has ``attacks`` {name: roc_metrics + ``per_target`` +
      ``ci``}, ``accuracy`` {train, test, per_model}, ``models``, ``examples``, ``queries``,
      ``classes``, ``excluded_models``, ``fprs``, ``bootstrap``, ``settings``.
    """
    names = list(ATTACKS if attacks is None else attacks)
    unknown = [a for a in names if a not in ATTACKS]
    if unknown or not names:
        raise ConfigError(f"unknown attack(s) {unknown}; choose from {', '.join(ATTACKS)}")
    m0 = getattr(logits, "shape", (0,))[0]
    use = _model_mask(exclude_models, m0)
    idx = np.nonzero(use)[0]
    keep = np.asarray(keep)
    if not use.all():
        logits, keep = logits[idx], keep[idx]
    m, n, a, c = check_logits(logits, labels, keep)
    keep = keep.astype(bool)
    settings = dict(settings or {})
    s = _Signals(logits, labels)
    report: dict = {
        "attacks": {},
        "accuracy": accuracy(logits, labels, keep),
        "models": int(m),
        "examples": int(n),
        "queries": int(a),
        "classes": int(c),
        "excluded_models": [int(i) for i in np.nonzero(~use)[0]],
        "pooled": "all targets pooled, each scored leave-one-out against the other models",
        "fprs": [float(f) for f in fprs],
        "bootstrap": {"num_samples": int(bootstrap), "seed": int(seed), "unit": "examples"},
        "settings": {k: v for k, v in settings.items()},
    }
    scores: dict[str, np.ndarray] = {}
    for name in names:
        sc = _run_attack(name, s, keep, settings)
        scores[name] = sc
        entry = metrics.roc_metrics(sc, keep, fprs=fprs)
        entry["per_target"] = metrics.per_target_metrics(sc, keep, fprs=fprs)
        if bootstrap:
            entry["ci"] = metrics.bootstrap(sc, keep, fprs=fprs, num_samples=bootstrap, seed=seed)
        report["attacks"][name] = entry
    return ScoreResult(report=report, scores=scores, keep=keep, models=idx)
