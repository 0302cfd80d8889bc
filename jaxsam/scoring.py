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
from jaxsam.attacks._lira_groups import shadow_counts
from jaxsam.attacks._reference import check_equal_groups, resolve
from jaxsam.attacks._rmia import rmia_from_signal
from jaxsam.attacks.threshold import (
    THRESHOLD_SIGNALS,
    calibrated_loss_from_signal,
    threshold_scores,
)
from jaxsam.errors import ConfigError, DataError, TooFewModelsError

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


# attack -> the signals it needs ([M, N, A] each, from signals.compute_signals)
_NEEDS = {
    "lira_online": ("logit_scaled_confidence",),
    "lira_offline": ("logit_scaled_confidence",),
    "rmia": ("confidence",),
    "calibrated_loss": ("loss",),
    **{name: (sig_name,) for name, (sig_name, _) in THRESHOLD_SIGNALS.items()},
}


def _signals_for(names: Sequence[str], logits, labels) -> dict[str, np.ndarray]:
    """Every signal the attacks ``names`` need, in one float64 pass over the logits."""
    wanted = list(dict.fromkeys(s for a in names for s in _NEEDS[a]))
    return sig.compute_signals(wanted, logits, labels)


def _run_attack(name: str, s: dict[str, np.ndarray], keep: np.ndarray, settings: dict):
    """Scores of attack ``name``; ``settings["equal_groups"]`` is the reference-group rule of
    every attack that has one, unless its own settings name another."""
    eg = {"equal_groups": settings.get("equal_groups", "auto")}
    if name in ("lira_online", "lira_offline"):
        lsc = s["logit_scaled_confidence"]
        kw = eg | settings.get("lira", {})
        return lira_from_signal(lsc, keep, online=name == "lira_online", **kw)
    if name == "rmia":
        return rmia_from_signal(s["confidence"], keep, **(eg | settings.get("rmia", {})))
    if name == "calibrated_loss":
        return calibrated_loss_from_signal(s["loss"], keep, **eg)
    q = settings.get("threshold_query", 0)
    return threshold_scores(name, s[THRESHOLD_SIGNALS[name][0]], q)


def _attack_entry(sc: np.ndarray, keep: np.ndarray, fprs, bootstrap: int, seed: int) -> dict:
    """One attack's report entry: pooled ROC metrics, per-target metrics, intervals and
    operating points."""
    entry = metrics.roc_metrics(sc, keep, fprs=fprs)
    entry["per_target"] = metrics.per_target_metrics(sc, keep, fprs=fprs)
    if bootstrap:
        entry["ci"] = metrics.bootstrap(sc, keep, fprs=fprs, num_samples=bootstrap, seed=seed)
    metrics.mark_support(entry)  # rows below the FPR resolution: no bootstrap, exact interval
    ops = [f for f in metrics.OPERATING_FPRS if metrics.fpr_key(f) in entry["tpr_at_fpr"]]
    entry["operating_points"] = metrics.operating_points(entry, ops)
    return entry


def kept_models(exclude_models: Any, m: int) -> np.ndarray:
    """Bool [M]: the models that are scored, i.e. not in ``exclude_models``.

    The one rule that ``score``, ``jaxsam score``, ``compare``/``demo`` plots and ``analyze``
    use to drop failed models.

    Args:
      exclude_models: None, bool [M] (True = drop) or int indices in [0, M).
      m: number of models M.
    """
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


def _mean_of_defined(values: np.ndarray) -> float:
    """Mean of the non-NaN ``values``; NaN (with no RuntimeWarning) when there is none, e.g.
    the OUT accuracy of masks in which every model trains on every example."""
    defined = values[~np.isnan(values)]
    return float(defined.mean()) if defined.size else float("nan")


def accuracy(logits: Any, labels: Any, keep: Any) -> dict:
    """Per-model accuracy on query 0 (identity) over IN points and OUT (pool non-member) points.

    Returns ``{"train": mean, "out": mean, "per_model": {"train": [M], "out": [M]}}``: "train"
    over the pool points each model trained on, "out" over the pool points it did not train on
    (not the held-out split: see ``heldout`` in ``jaxsam score``'s report). A model with no OUT
    (or IN) point gets NaN there, which the means skip. ``test`` (and ``per_model.test``) repeat
    "out" under the name used before, for readers of older reports; it will be removed.
    """
    correct = metrics.correct_predictions(logits, labels)
    keep = np.asarray(keep, bool)
    tr = metrics.accuracy_per_model(correct, keep)
    te = metrics.accuracy_per_model(correct, ~keep)
    out = {
        "train": _mean_of_defined(tr),
        "out": _mean_of_defined(te),
        "per_model": {"train": [float(x) for x in tr], "out": [float(x) for x in te]},
    }
    out["test"] = out["out"]  # deprecated alias, kept one version
    out["per_model"]["test"] = out["per_model"]["out"]
    out["deprecated"] = {"test": "renamed 'out' (OUT pool non-member accuracy)"}
    return out


def _report_header(shape, acc: dict, keep: np.ndarray, use: np.ndarray, fprs, settings) -> dict:
    """The report's entries that describe the study ([M, N, A, C] ``shape``, kept models)."""
    m, n, a, c = shape
    return {
        "attacks": {},
        "accuracy": acc,
        "models": int(m),
        "examples": int(n),
        "queries": int(a),
        "classes": int(c),
        "excluded_models": [int(i) for i in np.nonzero(~use)[0]],
        "pooled": "all targets pooled, each scored leave-one-out against the other models",
        "fprs": [float(f) for f in fprs],
        "settings": {k: v for k, v in settings.items()},
        "shadows": shadow_counts(keep),
        "reference_groups": resolve(settings.get("equal_groups", "auto"), keep).report(keep),
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
    equal_groups: str | bool = "auto",
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
      equal_groups: the reference-group rule of LiRA, RMIA and the calibrated loss
        (:mod:`jaxsam.attacks._reference`): ``"auto"`` (default: from the masks), True (cut
        the groups to sizes that do not depend on the target's membership) or False
        (leave-one-out). ``settings["lira"]`` or ``["rmia"]`` may still name their own.

    Returns:
      :class:`ScoreResult`. ``report`` has ``attacks`` {name: roc_metrics + ``per_target`` +
      ``ci`` (no ``tpr@<f>`` interval on a row below the FPR resolution) + ``fpr_support``
      (:func:`jaxsam.metrics.row_support`: ``supported`` per FPR, and for an unsupported row
      what it reads and its exact interval) + ``operating_points``
      (:func:`jaxsam.metrics.operating_points`, at the FPRs of
      :data:`jaxsam.metrics.OPERATING_FPRS` among ``fprs``)}, ``accuracy`` {train, out,
      per_model} (see :func:`accuracy`), ``models``, ``examples``, ``queries``,
      ``classes``, ``excluded_models``, ``shadows`` (IN / OUT models per example and the sizes
      of the cut groups, :func:`jaxsam.attacks._lira_groups.shadow_counts`),
      ``reference_groups`` (the rule used: ``equal_groups`` as asked, ``rule`` ``"cut"`` or
      ``"leave_one_out"``, the mask ``design`` found and the shadows per target and example,
      :meth:`jaxsam.attacks._reference.Rule.report`), ``fprs``,
      ``bootstrap``, ``settings``, and
      ``skipped_attacks`` {name: why} when scoring all attacks and the study is too small for
      some (LiRA's equal shadow groups need 2 IN and 2 OUT models per example).

    Raises:
      TooFewModelsError: an attack named in ``attacks`` needs more models than the study has.
    """
    names = list(ATTACKS if attacks is None else attacks)
    unknown = [a for a in names if a not in ATTACKS]
    if unknown or not names:
        raise ConfigError(f"unknown attack(s) {unknown}; choose from {', '.join(ATTACKS)}")
    m0 = getattr(logits, "shape", (0,))[0]
    use = kept_models(exclude_models, m0)
    idx = np.nonzero(use)[0]
    keep = np.asarray(keep)
    if not use.all():
        logits, keep = logits[idx], keep[idx]
    shape = check_logits(logits, labels, keep)
    keep = keep.astype(bool)
    check_equal_groups(equal_groups)
    settings = {"equal_groups": equal_groups, **dict(settings or {})}
    s = _signals_for(names, logits, labels)
    report = _report_header(shape, accuracy(logits, labels, keep), keep, use, fprs, settings)
    report["bootstrap"] = {"num_samples": int(bootstrap), "seed": int(seed), "unit": "examples"}
    scores: dict[str, np.ndarray] = {}
    for name in names:
        try:
            sc = _run_attack(name, s, keep, settings)
        except TooFewModelsError as e:
            if attacks is not None:  # asked for by name: say why it cannot run
                raise
            # Scoring every attack: one that the study is too small for is left out, saying why
            # (e.g. LiRA with 3 kept models, one of 4 having failed).
            report.setdefault("skipped_attacks", {})[name] = str(e)
            continue
        scores[name] = sc
        report["attacks"][name] = _attack_entry(sc, keep, fprs, bootstrap, seed)
    return ScoreResult(report=report, scores=scores, keep=keep, models=idx)
