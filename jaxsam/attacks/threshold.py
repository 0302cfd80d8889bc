"""Global-threshold attacks and the difficulty-calibrated loss attack.

Global-threshold attacks (Yeom et al. 2018; Song & Mittal 2021) score each (target, example)
with one signal of the target model alone; a single threshold shared by all examples turns the
scores into decisions, which is what the pooled ROC measures. Signals that are lower for
members (loss, entropy, modified entropy) are negated, so higher score = member everywhere.

The difficulty-calibrated loss attack (Watson et al., ICLR 2022) subtracts each example's mean
loss under reference models that did not train on it: ``score = mean_OUT_loss(x) - loss_m(x)``.
Here the references are other models that have x OUT, chosen by the reference-group rule every
attack shares (:mod:`jaxsam.attacks._reference`): on exact k-of-M masks each target's OUT group
is cut to M - k - 1 models, whether the target is a member or not.

Every signal comes from :func:`jaxsam.attacks.signals.compute_signals` (log space, float64), so
the rankings are exact: see the module docstring there.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from jaxsam.attacks import _reference
from jaxsam.attacks import signals as _signals
from jaxsam.attacks._checks import check_finite, check_keep, check_logits

Array = Any


# attack -> (signal it ranks by, sign that makes higher = member)
THRESHOLD_SIGNALS: dict[str, tuple[str, float]] = {
    "loss": ("loss", -1.0),
    "confidence": ("logit_scaled_confidence", 1.0),
    "entropy": ("entropy", -1.0),
    "modified_entropy": ("modified_entropy", -1.0),
}


def _logit_of_mean_probability(lsc: np.ndarray) -> np.ndarray:
    """``logit(mean_a p_a)`` for ``p_a = sigmoid(lsc_a)``, in log space: [..., A] -> [...].

    ``log mean p = logsumexp_a(log p_a) - log A`` and ``log p_a = -softplus(-lsc_a)``; the
    ``log A`` terms cancel in the logit. Never saturates, unlike ``mean p`` in float32.
    """
    lsc = np.asarray(lsc, np.float64)
    log_p = -np.logaddexp(0.0, -lsc)
    log_q = -np.logaddexp(0.0, lsc)  # log(1 - p)
    return np.logaddexp.reduce(log_p, axis=-1) - np.logaddexp.reduce(log_q, axis=-1)


def threshold_scores(attack: str, signal: Array, query: int | None = 0) -> np.ndarray:
    """Scores [M, N] of a threshold attack from its signal [M, N, A] (higher = member).

    Args:
      attack: a key of :data:`THRESHOLD_SIGNALS`.
      signal: float [M, N, A], the signal ``THRESHOLD_SIGNALS[attack][0]`` (for ``confidence``
        this is the logit-scaled confidence, see :func:`confidence_attack`).
      query: which query to use; None averages over the A queries (for ``confidence`` the
        probabilities are averaged, and the score is the logit of that mean).

    Returns:
      numpy float32 [M, N].
    """
    if attack not in THRESHOLD_SIGNALS:
        raise ValueError(
            f"unknown threshold attack {attack!r}; choose from {list(THRESHOLD_SIGNALS)}"
        )
    sign = THRESHOLD_SIGNALS[attack][1]
    sig = np.asarray(signal)
    check_finite(sig)  # NaN would rank anywhere: the logits are damaged, whichever query is read
    if query is None:
        if attack == "confidence":
            return _logit_of_mean_probability(sig).astype(np.float32)
        sel = sig.astype(np.float64).mean(axis=-1)
    else:
        sel = sig[..., query]
    return (sign * sel).astype(np.float32)


def _threshold(attack, logits, labels, keep, query):
    if keep is None:
        keep = np.ones(logits.shape[:2], bool)
    check_logits(logits, labels, keep)
    name = THRESHOLD_SIGNALS[attack][0]
    sig = _signals.compute_signals([name], logits, labels)[name]
    return threshold_scores(attack, sig, query)


def loss_attack(logits: Array, labels: Array, keep: Array | None = None, *, query: int | None = 0):
    """Loss threshold: scores ``-loss`` [M, N], higher = member.

    The loss is computed in log space (float64, then float32), so a confident member's tiny loss
    is kept (``exp(-lsc)``, e.g. 4e-18 at lsc = 40) instead of rounding to 0.

    Args:
      logits: float [M, N, A, C]. labels: int [N]. keep: unused (shape-checked if given).
      query: which query augmentation to use (0 = identity); None averages over all A.
    """
    return _threshold("loss", logits, labels, keep, query)


def confidence_attack(logits, labels, keep=None, *, query: int | None = 0) -> np.ndarray:
    """Confidence threshold, scored as ``logit(p_y)`` [M, N], higher = member.

    ``logit(p_y)`` is the logit-scaled confidence ``z_y - logsumexp_{y' != y} z_y'``: a strictly
    increasing function of ``p_y``, so the ROC is that of thresholding ``p_y``, but it never
    saturates (``p_y`` is exactly 1.0 in float32 for every lsc above about 17). With
    ``query=None`` the score is the logit of the mean of ``p_y`` over the queries. See
    :func:`loss_attack` for the arguments.
    """
    return _threshold("confidence", logits, labels, keep, query)


def entropy_attack(logits, labels, keep=None, *, query: int | None = 0) -> np.ndarray:
    """Entropy threshold: scores ``-entropy`` [M, N], higher = member."""
    return _threshold("entropy", logits, labels, keep, query)


def modified_entropy_attack(logits, labels, keep=None, *, query: int | None = 0) -> np.ndarray:
    """Song & Mittal modified-entropy threshold: scores ``-Mentr`` [M, N], higher = member."""
    return _threshold("modified_entropy", logits, labels, keep, query)


def calibrated_loss_from_signal(
    loss: Array, keep: Array, *, equal_groups: str | bool = "auto", chunk_size: int | None = None
) -> np.ndarray:
    """Difficulty-calibrated loss from per-query losses.

    Args:
      loss: float [M, N, A] cross-entropy of every model on every example and query.
      keep: bool [M, N].
      equal_groups: the reference-group rule (:mod:`jaxsam.attacks._reference`): ``"auto"``
        (default: from the masks), True (each target's OUT group cut to one size, k - 1 fewer
        than M with exact k-of-M masks) or False (every other OUT model).
      chunk_size: targets per step (None: about 8M values).

    Returns:
      numpy float32 [M, N]: mean over queries of ``mean_OUT_loss - loss_m``, the OUT mean over
      the target's OUT shadows (never model m itself). Higher = member.

    Raises:
      TooFewModelsError: a target has no OUT shadow at some example (not with
        ``equal_groups=False``, where the target's mean OUT loss over all examples, same query,
        is used there instead); the message names the smallest M that works.
    """
    loss = np.asarray(loss, np.float64)
    m, n, a = loss.shape
    keep = check_keep(keep, m, n)
    check_finite(loss)
    rule = _reference.resolve(equal_groups, keep)
    sets = rule.sets(keep, "out")
    _reference.check_sizes(keep, {"out": sets}, rule, "the calibrated loss attack", {"out": 1})
    count, sums = _reference.candidate_sums(loss, sets.masks)
    step = chunk_size or max(1, (1 << 23) // (n * a))
    res = np.empty((m, n), np.float32)
    for s0 in range(0, m, step):
        sl = slice(s0, s0 + step)
        obs = loss[sl]
        n1, s1 = _reference.target_sums(obs, count, sums, sets, sl)
        mean = s1 / np.maximum(n1, 1.0)[..., None]
        has = (n1 > 0)[..., None]
        gmean = np.where(has, s1, 0.0).sum(1) / np.maximum(n1.sum(1), 1.0)[:, None]
        mean = np.where(has, mean, gmean[:, None, :])
        res[sl] = (mean - obs).mean(-1)
    return res


def calibrated_loss_attack(
    logits: Array,
    labels: Array,
    keep: Array,
    *,
    equal_groups: str | bool = "auto",
    chunk_size: int | None = None,
) -> np.ndarray:
    """Watson et al. (2022) difficulty-calibrated loss: scores [M, N], higher = member.

    logits float [M, N, A, C], labels int [N], keep bool [M, N]; ``equal_groups`` is the
    reference-group rule (see :func:`calibrated_loss_from_signal`)."""
    check_logits(logits, labels, keep)
    sig = _signals.compute_signals(["loss"], logits, labels)["loss"]
    return calibrated_loss_from_signal(sig, keep, equal_groups=equal_groups, chunk_size=chunk_size)
