"""Global-threshold attacks and the difficulty-calibrated loss attack.

Global-threshold attacks (Yeom et al. 2018; Song & Mittal 2021) score each (target, example)
with one signal of the target model alone; a single threshold shared by all examples turns the
scores into decisions, which is what the pooled ROC measures. Signals that are lower for
members (loss, entropy, modified entropy) are negated, so higher score = member everywhere.

The difficulty-calibrated loss attack (Watson et al., ICLR 2022) subtracts each example's mean
loss under reference models that did not train on it: ``score = mean_OUT_loss(x) - loss_m(x)``.
Here the references are the other models that have x OUT (leave-one-out).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from jaxsam.attacks import signals as _signals
from jaxsam.attacks._checks import check_keep, check_logits

Array = Any


def _select(sig: np.ndarray, query: int | None) -> np.ndarray:
    if query is None:
        return sig.mean(axis=-1)
    return sig[..., query]


def _threshold(fn, logits, labels, keep, query, sign):
    if keep is None:
        keep = np.ones(logits.shape[:2], bool)
    check_logits(logits, labels, keep)
    sig = _signals.compute_chunked(fn, logits, labels)
    return (sign * _select(sig, query)).astype(np.float32)


def loss_attack(logits: Array, labels: Array, keep: Array | None = None, *, query: int | None = 0):
    """Loss threshold: scores ``-loss`` [M, N], higher = member.

    Args:
      logits: float [M, N, A, C]. labels: int [N]. keep: unused (shape-checked if given).
      query: which query augmentation to use (0 = identity); None averages over all A.
    """
    return _threshold(_signals.loss, logits, labels, keep, query, -1.0)


def confidence_attack(logits, labels, keep=None, *, query: int | None = 0) -> np.ndarray:
    """Confidence threshold: scores ``p_y`` [M, N], higher = member. See :func:`loss_attack`."""
    return _threshold(_signals.confidence, logits, labels, keep, query, 1.0)


def entropy_attack(logits, labels, keep=None, *, query: int | None = 0) -> np.ndarray:
    """Entropy threshold: scores ``-entropy`` [M, N], higher = member."""
    return _threshold(_signals.entropy, logits, labels, keep, query, -1.0)


def modified_entropy_attack(logits, labels, keep=None, *, query: int | None = 0) -> np.ndarray:
    """Song & Mittal modified-entropy threshold: scores ``-Mentr`` [M, N], higher = member."""
    return _threshold(_signals.modified_entropy, logits, labels, keep, query, -1.0)


def calibrated_loss_from_signal(
    loss: Array, keep: Array, *, chunk_size: int | None = None
) -> np.ndarray:
    """Difficulty-calibrated loss from per-query losses.

    Args:
      loss: float [M, N, A] cross-entropy of every model on every example and query.
      keep: bool [M, N].

    Returns:
      numpy float32 [M, N]: mean over queries of ``mean_OUT_loss - loss_m``, where the OUT mean
      excludes model m. Where no other model has x OUT, the target's mean OUT loss over all
      examples (same query) is used instead. Higher = member.
    """
    loss = np.asarray(loss, np.float64)
    m, n, a = loss.shape
    keep = check_keep(keep, m, n)
    out = ~keep
    n_out = out.sum(0).astype(np.float64)  # [N]
    s_out = np.einsum("mn,mna->na", out.astype(np.float64), loss)
    step = chunk_size or max(1, (1 << 23) // (n * a))
    res = np.empty((m, n), np.float32)
    for s0 in range(0, m, step):
        obs = loss[s0 : s0 + step]
        r = out[s0 : s0 + step].astype(np.float64)
        n1 = n_out[None] - r
        mean = (s_out[None] - r[..., None] * obs) / np.maximum(n1, 1.0)[..., None]
        has = (n1 > 0)[..., None]
        gmean = (np.where(has, mean, 0.0) * n1[..., None]).sum(1) / np.maximum(n1.sum(1), 1.0)[
            :, None
        ]
        mean = np.where(has, mean, gmean[:, None, :])
        res[s0 : s0 + step] = (mean - obs).mean(-1)
    return res


def calibrated_loss_attack(
    logits: Array, labels: Array, keep: Array, *, chunk_size: int | None = None
) -> np.ndarray:
    """Watson et al. (2022) difficulty-calibrated loss, leave-one-out: scores [M, N], higher =
    member. logits float [M, N, A, C], labels int [N], keep bool [M, N]."""
    check_logits(logits, labels, keep)
    sig = _signals.compute_chunked(_signals.loss, logits, labels)
    return calibrated_loss_from_signal(sig, keep, chunk_size=chunk_size)
