"""Feldman-Zhang memorization and influence from shadow-model masks, and mechanism statistics.

Everything here is a pure function of two kinds of arrays that a run directory already holds:

* ``keep``: bool ``[M, N]``; ``keep[m, i]`` is True when model ``m`` trained on pool example ``i``.
* a per-model, per-example quantity ``[M, N]`` (or ``[M, T]`` for held-out test points): whether
  the model classifies the example correctly, or a membership signal such as the logit-scaled
  confidence.

Estimator (Feldman & Zhang 2020, "What neural networks memorize and why")::

    mem(i)     = P[correct_i | i in S] - P[correct_i | i not in S]
    infl(i, j) = P[correct_j | i in S] - P[correct_j | i not in S]

where the probabilities are over the random training subset ``S`` (and training randomness). The
shadow-model estimate replaces each probability by the mean over the models where ``i`` is IN
(resp. OUT). With masks drawn at inclusion rate ``pkeep`` each model trains on about
``pkeep * N`` examples, so the estimate targets the *subset-size-m* variant ``mem_m`` with
``m = pkeep * N``: LiRA-style half masks (pkeep = 0.5) estimate ``mem_{N/2}``; Feldman and Zhang
used pkeep = 0.7 (``mem_{0.7 N}``), which these functions support unchanged.

Undefined examples: an example with no IN model or no OUT model has no estimate; its
memorization (and every influence in its row) is NaN. :func:`count_undefined` counts them. With
the project's exact-count masks (every example IN in ``round(pkeep * M)`` models, ``M >= 2``,
``0 < pkeep < 1``) there are none.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from jaxsam.errors import DataError
from jaxsam.metrics import ACCURACY_QUERY, correct_predictions

Array = jax.Array


def _check_pair(values: np.ndarray | Array, keep: np.ndarray | Array, what: str) -> None:
    """Raises DataError unless ``values`` and ``keep`` are both [M, N] with the same shape."""
    if np.ndim(keep) != 2:
        raise DataError(
            f"keep must be a bool [M, N] mask, got shape {np.shape(keep)}; "
            "pass the run's masks (one row per model)."
        )
    if np.shape(values) != np.shape(keep):
        raise DataError(
            f"{what} has shape {np.shape(values)} but keep has shape {np.shape(keep)}; "
            f"pass {what} as [M, N] for the same models and pool examples as the masks."
        )


def _in_out_counts(keep: Array) -> tuple[Array, Array]:
    k = keep.astype(jnp.float32)
    n_in = k.sum(axis=0)
    return n_in, k.shape[0] - n_in


@jax.jit
def _memorization(correct: Array, keep: Array) -> Array:
    c = correct.astype(jnp.float32)
    k = keep.astype(jnp.float32)
    n_in, n_out = _in_out_counts(keep)
    # One expression: mean over IN models minus mean over OUT models, NaN where either is empty.
    return jnp.where(
        (n_in > 0) & (n_out > 0),
        (k * c).sum(0) / jnp.maximum(n_in, 1.0) - ((1.0 - k) * c).sum(0) / jnp.maximum(n_out, 1.0),
        jnp.nan,
    )


def memorization(correct: np.ndarray | Array, keep: np.ndarray | Array) -> Array:
    """Feldman-Zhang memorization score of every pool example.

    Args:
      correct: bool or float ``[M, N]``; 1/True when model ``m`` classifies pool example ``n``
        correctly (a float in [0, 1], e.g. a probability of the label, also works and gives the
        "soft" variant).
      keep: bool ``[M, N]`` membership masks.

    Returns:
      float32 ``[N]``: ``mean(correct | IN) - mean(correct | OUT)``, in [-1, 1] for 0/1 inputs.
      Higher = the example is classified correctly only when trained on (memorized). NaN for an
      example with no IN or no OUT model (see :func:`count_undefined`).

    Example:
      >>> keep = np.array([[1, 0], [0, 1]], bool)
      >>> np.asarray(memorization(keep, keep))  # right exactly when trained on
      array([1., 1.], dtype=float32)
    """
    _check_pair(correct, keep, "correct")
    return _memorization(jnp.asarray(correct), jnp.asarray(keep, bool))


def undefined_mask(keep: np.ndarray | Array) -> np.ndarray:
    """Bool ``[N]``: True where an example has no IN model or no OUT model (estimate is NaN)."""
    k = np.asarray(keep, bool)
    if k.ndim != 2:
        raise DataError(f"keep must be a bool [M, N] mask, got shape {k.shape}; pass the masks.")
    n_in = k.sum(0)
    return (n_in == 0) | (n_in == k.shape[0])


def count_undefined(keep: np.ndarray | Array) -> int:
    """Number of pool examples whose memorization / influence is NaN (no IN or no OUT model)."""
    return int(undefined_mask(keep).sum())


@jax.jit
def _influence_block(test_correct: Array, keep_block: Array) -> Array:
    c = test_correct.astype(jnp.float32)  # [M, T]
    k = keep_block.astype(jnp.float32)  # [M, B]
    n_in, n_out = _in_out_counts(keep_block)
    mean_in = (k.T @ c) / jnp.maximum(n_in, 1.0)[:, None]  # [B, T]
    mean_out = ((1.0 - k).T @ c) / jnp.maximum(n_out, 1.0)[:, None]
    ok = ((n_in > 0) & (n_out > 0))[:, None]
    return jnp.where(ok, mean_in - mean_out, jnp.nan)


def influence(
    test_correct: np.ndarray | Array,
    keep: np.ndarray | Array,
    *,
    block_size: int = 4096,
) -> np.ndarray:
    """Feldman-Zhang influence of every pool example on every test point.

    Computed in blocks of ``block_size`` pool examples (two ``[B, M] @ [M, T]`` matmuls per
    block), so the peak device memory is ``O(M * T + block_size * T)``; the result is assembled
    on the host because ``N x T`` can exceed device memory (50k x 10k float32 = 2 GB).

    Args:
      test_correct: bool or float ``[M, T]``; model ``m`` classifies test point ``t`` correctly.
      keep: bool ``[M, N]`` membership masks of the same ``M`` models.
      block_size: pool examples per block (>= 1).

    Returns:
      float32 numpy ``[N, T]``: ``infl[i, j] = mean(correct_j | i IN) - mean(correct_j | i OUT)``;
      positive = training on ``i`` helps test point ``j``. Rows of undefined examples are NaN.
    """
    keep = np.asarray(keep, bool)
    if keep.ndim != 2 or np.ndim(test_correct) != 2 or np.shape(test_correct)[0] != keep.shape[0]:
        raise DataError(
            f"test_correct {np.shape(test_correct)} and keep {keep.shape} must be [M, T] and "
            "[M, N] over the same M models; pass test-set correctness from the same run."
        )
    if block_size < 1:
        raise DataError(f"block_size must be >= 1, got {block_size}; pass a positive block size.")
    c = jnp.asarray(test_correct)
    n = keep.shape[1]
    out = np.empty((n, c.shape[1]), np.float32)
    for start in range(0, n, block_size):
        stop = min(start + block_size, n)
        block = keep[:, start:stop]
        if stop - start < block_size and n > block_size:
            # Pad the last block to the common shape so it reuses the compiled kernel.
            block = np.pad(block, ((0, 0), (0, block_size - (stop - start))))
        out[start:stop] = np.asarray(_influence_block(c, jnp.asarray(block)))[: stop - start]
    return out


@jax.jit
def _out_variance(signal: Array, keep: Array) -> Array:
    s = signal.astype(jnp.float32)
    out = (~keep).astype(jnp.float32)
    n_out = out.sum(0)
    mean = (out * s).sum(0) / jnp.maximum(n_out, 1.0)
    ss = (out * (s - mean) ** 2).sum(0)
    return jnp.where(n_out >= 2, ss / jnp.maximum(n_out - 1.0, 1.0), jnp.nan)


def out_confidence_variance(signal: np.ndarray | Array, keep: np.ndarray | Array) -> Array:
    """Variance across OUT models of a per-model signal, per example.

    Args:
      signal: float ``[M, N]``, e.g. the logit-scaled confidence ``log p_y - log(1 - p_y)``
        averaged over query augmentations.
      keep: bool ``[M, N]`` membership masks.

    Returns:
      float32 ``[N]``: unbiased (ddof = 1) variance of ``signal[m, i]`` over the models ``m`` with
      ``keep[m, i]`` False, in the signal's units squared. NaN with fewer than two OUT models.
      The paper's mechanism claim: SAM has lower OUT variance than SGD.
    """
    _check_pair(signal, keep, "signal")
    return _out_variance(jnp.asarray(signal), jnp.asarray(keep, bool))


@jax.jit
def _in_out_gap(signal: Array, keep: Array) -> Array:
    return _memorization(signal.astype(jnp.float32), keep)


def in_out_gap(signal: np.ndarray | Array, keep: np.ndarray | Array) -> Array:
    """IN mean minus OUT mean of a per-model signal, per example.

    Args:
      signal: float ``[M, N]`` (higher = more member-like, e.g. logit-scaled confidence).
      keep: bool ``[M, N]`` membership masks.

    Returns:
      float32 ``[N]``: ``mean(signal | IN) - mean(signal | OUT)``; NaN with no IN or no OUT model.
      Memorization is this gap for the 0/1 correctness signal.
    """
    _check_pair(signal, keep, "signal")
    return _in_out_gap(jnp.asarray(signal), jnp.asarray(keep, bool))


def correct_from_logits(
    logits: np.ndarray | Array, labels: np.ndarray | Array, *, query: int | None = None
) -> np.ndarray:
    """Per-model correctness from saved logits (:func:`jaxsam.metrics.correct_predictions`).

    Args:
      logits: float ``[M, N, A, C]`` (A query augmentations, C classes).
      labels: int ``[N]``.
      query: which augmentation to classify from; None (default) averages the logits over the
        A queries first (with one query both are the same).

    Returns:
      bool ``[M, N]``: argmax prediction equals the label.
    """
    return correct_predictions(logits, labels, query=query)


# The query view whose correctness defines memorization everywhere (report, analyze): the
# identity view, the same view every accuracy in metrics.json and report.json is measured on.
MEMORIZATION_QUERY = ACCURACY_QUERY


def memorization_from_logits(
    logits: np.ndarray | Array, labels: np.ndarray | Array, keep: np.ndarray | Array
) -> Array:
    """Feldman-Zhang memorization from saved logits: the one rule ``score`` and ``analyze`` use.

    Correctness is the arg-max of the identity view (query :data:`MEMORIZATION_QUERY` = 0), not
    an average over the query augmentations: memorization is then exactly the IN minus OUT gap
    of the per-example accuracy that the report's train and OUT accuracies average.

    Args:
      logits: float ``[M, N, A, C]`` of the models to use (drop failed models first).
      labels: int ``[N]``.
      keep: bool ``[M, N]`` masks of the same models.

    Returns:
      float32 ``[N]`` (see :func:`memorization`).
    """
    return memorization(correct_from_logits(logits, labels, query=MEMORIZATION_QUERY), keep)
