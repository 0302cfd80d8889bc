"""RMIA (Zarifzadeh et al., ICML 2024) for all targets at once, leave-one-out.

For target model m, example x and a reference point z from a population:

    LR_m(x, z) = [p(x | theta_m) / p(x)] / [p(z | theta_m) / p(z)]
    score_m(x) = fraction of z with LR_m(x, z) >= gamma

where ``p(x | theta)`` is the softmax probability of the true label and ``p(x)`` the average of
``p(x | theta')`` over reference models theta' (all models but m). Online: all other models.
Offline (OUT models only): ``p(x) = ((1 + a) * p_OUT(x) + (1 - a)) / 2`` (the paper's linear
approximation of the IN+OUT average; ``a`` is tuned per dataset, 0.3 is a common value).
With several queries, the per-query ratios ``p(x | theta_m) / p(x)`` are averaged over the A
queries (our choice, as for LiRA).

Population: by default all pool examples serve as z (each with the same leave-one-out reference
as x). Pass ``population`` (indices into N) to use a subset, or ``population_prob`` (or
``population_logits``) for points no model trained on (the paper's setting).
"""

from __future__ import annotations

import functools
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from jaxsam.attacks import signals as _signals
from jaxsam.attacks._checks import check_logits, check_signal
from jaxsam.attacks._lira import auto_chunk, over_example_chunks
from jaxsam.errors import ConfigError, DataError

Array = Any


def _ratio(obs, kin, sum_all, sum_out, n_out, m, online, a):
    if online:
        ref = (sum_all[None] - obs) / (m - 1)
    else:
        r = (~kin).astype(obs.dtype)
        n1 = n_out[None] - r
        mean_out = (sum_out[None] - r[..., None] * obs) / jnp.maximum(n1, 1.0)[..., None]
        # No OUT shadow for an example: fall back to the target's mean OUT probability.
        has = (n1 > 0)[..., None]
        gmean = (
            jnp.sum(jnp.where(has, mean_out * n1[..., None], 0.0), axis=1)
            / jnp.maximum(jnp.sum(n1, axis=1), 1.0)[:, None]
        )
        mean_out = jnp.where(has, mean_out, gmean[:, None, :])
        ref = 0.5 * ((1.0 + a) * mean_out + (1.0 - a))
    return jnp.mean(obs / jnp.maximum(ref, 1e-30), axis=-1)


@functools.partial(jax.jit, static_argnames=("m", "online", "has_pop_prob"))
def _score_chunk(
    obs, kin, sum_all, sum_out, n_out, pop_idx, pobs, psum, *, m, online, a, gamma, has_pop_prob
):
    rx = _ratio(obs, kin, sum_all, sum_out, n_out, m, online, a)  # [B, N]
    if has_pop_prob:
        # External points: every model is OUT for them.
        rz = _ratio(
            pobs,
            jnp.zeros(pobs.shape[:2], bool),
            psum,
            psum,
            jnp.full(pobs.shape[1], float(m)),
            m,
            online,
            a,
        )
    else:
        rz = rx[:, pop_idx]
    rz = jnp.sort(rz, axis=1)
    count = jax.vmap(lambda s, q: jnp.searchsorted(s, q, side="right"))(rz, rx / gamma)
    return count.astype(jnp.float32) / rz.shape[1]


@jax.jit
def _sums_chunk(prob: jax.Array, keep: jax.Array) -> tuple[jax.Array, jax.Array, jax.Array]:
    """Sums over models of one chunk of examples: prob [M, n, A], keep [M, n] -> [n, A] x 2, [n]."""
    x = jnp.transpose(prob, (1, 2, 0))  # [n, A, M]: the model axis contiguous for the reduction
    out = (~keep).T.astype(prob.dtype)[:, None, :]  # [n, 1, M]
    return jnp.sum(x, axis=-1), jnp.sum(out * x, axis=-1), jnp.sum(out[:, 0], axis=-1)


def _model_sums(prob: np.ndarray, keep: np.ndarray, chunk_examples: int | None = None):
    """sum over all models, sum over OUT models [N, A] and OUT count [N], a chunk at a time."""
    return over_example_chunks(_sums_chunk, prob, keep, chunk_examples)


def rmia_from_signal(
    prob: Array,
    keep: Array,
    *,
    online: bool = True,
    a: float = 0.3,
    gamma: float = 1.0,
    population: Array | None = None,
    population_prob: Array | None = None,
    chunk_size: int | None = None,
) -> np.ndarray:
    """RMIA scores from true-label probabilities.

    Args:
      prob: float [M, N, A], p(x | theta_m) = softmax probability of the true label.
      keep: bool [M, N].
      online: reference p(x) from all other models; False: offline from OUT models with ``a``.
      a: offline interpolation parameter in [0, 1] (ignored online).
      gamma: likelihood-ratio threshold (>= 1 in the paper; 1 by default).
      population: int indices into N of the pool points used as z (default: all N).
      population_prob: float [M, Z, A] probabilities of external points (no model trained on
        them) used as z instead.
      chunk_size: targets per jitted call.

    Returns:
      numpy float32 [M, N] in [0, 1]: the fraction of z that x dominates; higher = member.
    """
    prob, keep = check_signal(prob, keep)
    m, n, na = prob.shape
    if not 0.0 <= a <= 1.0:
        raise ConfigError(f"RMIA a={a} is outside [0, 1]; pass a value such as 0.3")
    if gamma <= 0:
        raise ConfigError(f"RMIA gamma={gamma} must be positive; pass 1.0 or 2.0")
    pop_idx = np.arange(n) if population is None else np.asarray(population, np.int64)
    if pop_idx.ndim != 1 or pop_idx.size == 0 or pop_idx.min() < 0 or pop_idx.max() >= n:
        raise DataError(f"population must be non-empty indices into N={n}; pass e.g. np.arange(N)")
    sum_all, sum_out, n_out = _model_sums(prob, keep)
    has_pp = population_prob is not None
    if has_pp:
        pp = np.asarray(population_prob, np.float32)
        if pp.ndim != 3 or pp.shape[0] != m or pp.shape[2] != na:
            raise DataError(f"population_prob must be [M={m}, Z, A={na}], got {pp.shape}")
        pp = jnp.asarray(pp)
        psum = jnp.sum(pp, axis=0)
    step = chunk_size or auto_chunk(n, na)
    out = np.empty((m, n), np.float32)
    for s0 in range(0, m, step):
        sl = slice(s0, s0 + step)
        out[sl] = np.asarray(
            _score_chunk(
                jnp.asarray(prob[sl]),
                jnp.asarray(keep[sl]),
                sum_all,
                sum_out,
                n_out,
                jnp.asarray(pop_idx),
                pp[sl] if has_pp else None,
                psum if has_pp else None,
                m=m,
                online=online,
                a=a,
                gamma=gamma,
                has_pop_prob=has_pp,
            )
        )
    return out


def rmia(
    logits: Array,
    labels: Array,
    keep: Array,
    *,
    population_logits: Array | None = None,
    population_labels: Array | None = None,
    **options: Any,
) -> np.ndarray:
    """RMIA scores [M, N] (numpy float32, higher = member) from logits [M, N, A, C].

    ``options`` are :func:`rmia_from_signal`'s keywords (``online``, ``a``, ``gamma``,
    ``population``, ``chunk_size``); ``population_logits`` [M, Z, A, C] with
    ``population_labels`` [Z] are external reference points no model trained on.
    """
    check_logits(logits, labels, keep)
    if "population_prob" in options:
        raise TypeError("rmia takes population_logits/population_labels, not population_prob")
    prob = _signals.compute_chunked(_signals.confidence, logits, labels)
    pprob = None
    if population_logits is not None:
        if population_labels is None:
            raise DataError("population_logits needs population_labels [Z]; pass both")
        pprob = _signals.compute_chunked(_signals.confidence, population_logits, population_labels)
    return rmia_from_signal(prob, keep, population_prob=pprob, **options)
