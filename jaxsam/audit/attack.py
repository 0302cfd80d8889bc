"""The audit's attack: each target's canary scores from the references alone.

An audit's bound needs guesses that depend on the targets' outputs and on nothing that knows a
target's canary memberships. References never train on a canary and are independent of the
targets' coins, so any statistic of the references is fair; the targets' masks, and the other
targets, are not used. Attacks (:data:`ATTACKS`; higher score = member):

- ``lira`` (default): offline LiRA (Carlini et al. 2022). The reference models' logit-scaled
  confidences of a canary give its OUT mean; one variance per query view, the references'
  within-canary variance pooled over the canaries (with few references a per-canary variance
  is noise). The score is the one-sided ``-log P[Z > s]`` of the target's confidence ``s``
  under that OUT Gaussian, averaged over the query views.
- ``rmia``: offline RMIA (Zarifzadeh et al. 2024): ``p(x) = ((1 + a) p_OUT(x) + (1 - a)) / 2``
  from the references' true-label probabilities (``a = 0.3``); the score is the fraction of
  population points ``z`` with ``[p_t(x) / p(x)] / [p_t(z) / p(z)] >= 1``. The population is
  the held-out split (no model trains on it), or, without one, the non-canary pool examples.
- ``loss``: the target's negative cross-entropy on the canary (uses no reference).

Failed (diverged) models are neither targets nor references.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import scipy.special

from jaxsam.attacks import signals
from jaxsam.errors import ConfigError, option

ATTACKS = ("lira", "rmia", "loss")
RMIA_A = 0.3
VAR_FLOOR = 1e-6


@dataclasses.dataclass(frozen=True)
class CanaryScores:
    """The audit's trials.

    Attributes:
      scores: float64 [C, T]: the attack's score of canary c on target t (higher = member).
      member: bool [C, T]: whether target t trained on canary c.
      canaries: int64 [C] pool indices; targets: int64 [T] and references: int64 [R] model
        indices (failed models dropped).
      attack: the attack's name.
    """

    scores: np.ndarray
    member: np.ndarray
    canaries: np.ndarray
    targets: np.ndarray
    references: np.ndarray
    attack: str


def _lira(target_sig: np.ndarray, ref_sig: np.ndarray) -> np.ndarray:
    """target_sig [T, C, A], ref_sig [R, C, A] -> scores [C, T]."""
    mean = ref_sig.mean(axis=0)  # [C, A]
    var = np.maximum(((ref_sig - mean) ** 2).mean(axis=(0, 1)), VAR_FLOOR)  # [A]
    z = (target_sig - mean) / np.sqrt(var)  # [T, C, A]
    return (-scipy.special.log_ndtr(-z)).mean(axis=-1).T


def _rmia(target_p, ref_p, pop_target_p, pop_ref_p) -> np.ndarray:
    """Offline RMIA: probabilities [T, C, A], [R, C, A]; population [T, Z, A], [R, Z, A]."""

    def ratio(pt, pr):
        ref = 0.5 * ((1.0 + RMIA_A) * pr.mean(axis=0) + (1.0 - RMIA_A))
        return (pt / np.maximum(ref, 1e-30)).mean(axis=-1)  # [T, X]

    rx, rz = ratio(target_p, ref_p), ratio(pop_target_p, pop_ref_p)  # [T, C], [T, Z]
    rz = np.sort(rz, axis=1)
    frac = np.stack([np.searchsorted(rz[t], rx[t], side="right") for t in range(rx.shape[0])])
    return (frac / rz.shape[1]).T


def canary_scores(run, attack: str = "lira") -> CanaryScores:
    """Scores every canary on every target of an audited run with ``attack``.

    Args:
      run: a :class:`jaxsam.store.Run` whose config has ``audit.canaries > 0``.
      attack: one of :data:`ATTACKS`.

    Raises:
      ConfigError: the run has no canaries, an unknown attack, or too few references.
    """
    if attack not in ATTACKS:
        raise ConfigError(f"audit attack {attack!r} is unknown; use one of {list(ATTACKS)}")
    canaries, targets = run.canaries, run.targets
    if canaries is None or targets is None or canaries.size == 0:
        raise ConfigError(
            f"{run.path} has no canaries, so there is nothing to audit; train it with "
            "audit.canaries > 0 (e.g. audit.canaries = 100; docs/audit.md)"
        )
    m = run.keep.shape[0]
    failed = set(run.failed_models)
    targets = np.array([t for t in targets if t not in failed], np.int64)
    refs = np.array([r for r in range(m) if r not in set(run.targets) | failed], np.int64)
    if targets.size == 0:
        raise ConfigError(f"{run.path}: every target model failed; retrain the run")
    if attack != "loss" and refs.size < 2:
        raise ConfigError(
            f"{run.path} has {refs.size} usable reference model(s); the {attack} attack needs at "
            f"least 2: use {option('attack', 'loss')}, or retrain with more masks.models than "
            "audit.targets"
        )
    member = run.keep[np.ix_(targets, canaries)].T  # [C, T]
    logits, labels = run.logits, run.labels
    lc = logits[:, canaries]  # [M, C, A, K]
    yc = labels[canaries]
    if attack == "loss":
        scores = -signals.compute_signals(["loss"], lc[targets], yc)["loss"].mean(axis=-1).T
    elif attack == "lira":
        sig = signals.compute_signals(["logit_scaled_confidence"], lc, yc)
        s = sig["logit_scaled_confidence"]
        scores = _lira(s[targets], s[refs])
    else:
        p = signals.compute_signals(["confidence"], lc, yc)["confidence"]
        if run.test_logits.shape[1]:
            pl, py = run.test_logits, run.test_labels
        else:
            rest = np.setdiff1d(np.arange(run.keep.shape[1]), canaries)
            pl, py = logits[:, rest], labels[rest]
        pp = signals.compute_signals(["confidence"], pl, py)["confidence"]
        scores = _rmia(p[targets], p[refs], pp[targets], pp[refs])
    return CanaryScores(
        scores=np.asarray(scores, np.float64),
        member=np.asarray(member, bool),
        canaries=np.asarray(canaries, np.int64),
        targets=targets,
        references=refs,
        attack=attack,
    )
