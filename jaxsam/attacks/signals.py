"""Per-example membership signals computed from logits.

Every function takes ``logits`` of shape ``[..., N, A, C]`` (any float dtype; numpy or jax) and
integer ``labels`` of shape ``[N]`` and returns float32 ``[..., N, A]`` of the same array kind
(numpy in, numpy out; jax in, jax out). All forms are computed from log-softmax / logsumexp so
that confident predictions (p_y -> 1) do not round to infinities.

Sign conventions: ``logit_scaled_confidence``, ``hinge`` and ``confidence`` are higher for
members; ``loss``, ``entropy`` and ``modified_entropy`` are lower for members (the threshold
attacks negate them).
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

Array = Any


def _prepare(logits: Array, labels: Array) -> tuple[jax.Array, jax.Array, bool]:
    is_numpy = not isinstance(logits, jax.Array)
    z = jnp.asarray(logits)
    if z.ndim < 3:
        raise ValueError(f"logits must be [..., N, A, C], got shape {z.shape}; add a query axis")
    y = jnp.asarray(labels).astype(jnp.int32)
    if y.shape != (z.shape[-3],):
        raise ValueError(f"labels must be [N={z.shape[-3]}], got shape {y.shape}")
    if z.dtype not in (jnp.float32, jnp.float64):
        z = z.astype(jnp.float32)
    return z, y, is_numpy


def _finish(x: jax.Array, is_numpy: bool) -> Array:
    x = x.astype(jnp.float32)
    return np.asarray(x) if is_numpy else x


def _onehot(z: jax.Array, y: jax.Array) -> jax.Array:
    # [N, 1, C] broadcast against [..., N, A, C]
    return jax.nn.one_hot(y, z.shape[-1], dtype=bool)[:, None, :]


@jax.jit
def _lsc(z: jax.Array, y: jax.Array) -> jax.Array:
    oh = _onehot(z, y)
    zy = jnp.sum(jnp.where(oh, z, 0.0), axis=-1)
    rest = jax.nn.logsumexp(jnp.where(oh, -jnp.inf, z), axis=-1)
    return zy - rest


@jax.jit
def _hinge(z: jax.Array, y: jax.Array) -> jax.Array:
    oh = _onehot(z, y)
    zy = jnp.sum(jnp.where(oh, z, 0.0), axis=-1)
    return zy - jnp.max(jnp.where(oh, -jnp.inf, z), axis=-1)


@jax.jit
def _loss(z: jax.Array, y: jax.Array) -> jax.Array:
    logp = jax.nn.log_softmax(z, axis=-1)
    return -jnp.sum(jnp.where(_onehot(z, y), logp, 0.0), axis=-1)


@jax.jit
def _entropy(z: jax.Array, y: jax.Array) -> jax.Array:
    del y
    logp = jax.nn.log_softmax(z, axis=-1)
    p = jnp.exp(logp)
    return -jnp.sum(jnp.where(p > 0, p * logp, 0.0), axis=-1)


def _log1m_softmax(z: jax.Array) -> jax.Array:
    """log(1 - p_i) for every class, stable also for the dominant class."""
    logp = jax.nn.log_softmax(z, axis=-1)
    p = jnp.exp(logp)
    # For every class but the arg-max, p_i <= 1/2 and log1p(-p_i) is exact.
    top = jnp.argmax(z, axis=-1)
    is_top = jax.nn.one_hot(top, z.shape[-1], dtype=bool)
    lse = jax.nn.logsumexp(z, axis=-1, keepdims=True)
    top_rest = jax.nn.logsumexp(jnp.where(is_top, -jnp.inf, z), axis=-1, keepdims=True) - lse
    return jnp.where(is_top, top_rest, jnp.log1p(-jnp.minimum(p, 0.5)))


@jax.jit
def _mentr(z: jax.Array, y: jax.Array) -> jax.Array:
    oh = _onehot(z, y)
    logp = jax.nn.log_softmax(z, axis=-1)
    p = jnp.exp(logp)
    log1m = _log1m_softmax(z)
    # -(1 - p_y) log p_y  -  sum_{i != y} p_i log(1 - p_i)
    term_y = -jnp.exp(jnp.sum(jnp.where(oh, log1m, 0.0), axis=-1)) * jnp.sum(
        jnp.where(oh, logp, 0.0), axis=-1
    )
    term_rest = -jnp.sum(jnp.where(oh, 0.0, p * log1m), axis=-1)
    return term_y + term_rest


def logit_scaled_confidence(logits: Array, labels: Array) -> Array:
    """LiRA's logit-scaled confidence ``log p_y - log sum_{y' != y} p_y'``.

    Computed as ``z_y - logsumexp_{y' != y} z_y'`` (exact and stable).

    Args:
      logits: float ``[..., N, A, C]``.
      labels: int ``[N]``.

    Returns:
      float32 ``[..., N, A]``; higher = more confident on the true label (members).
    """
    z, y, is_np = _prepare(logits, labels)
    return _finish(_lsc(z, y), is_np)


def hinge(logits: Array, labels: Array) -> Array:
    """Hinge signal ``z_y - max_{y' != y} z_y'``: float32 ``[..., N, A]``, higher = member."""
    z, y, is_np = _prepare(logits, labels)
    return _finish(_hinge(z, y), is_np)


def loss(logits: Array, labels: Array) -> Array:
    """Cross-entropy ``-log p_y`` (nats): float32 ``[..., N, A]``, lower = member."""
    z, y, is_np = _prepare(logits, labels)
    return _finish(_loss(z, y), is_np)


def confidence(logits: Array, labels: Array) -> Array:
    """Softmax probability of the true label ``p_y``: float32 ``[..., N, A]``, higher = member."""
    z, y, is_np = _prepare(logits, labels)
    return _finish(jnp.exp(-_loss(z, y)), is_np)


def entropy(logits: Array, labels: Array) -> Array:
    """Prediction entropy ``-sum_i p_i log p_i`` (nats): float32 ``[..., N, A]``, lower = member.

    ``labels`` is only checked for shape; the entropy ignores it.
    """
    z, y, is_np = _prepare(logits, labels)
    return _finish(_entropy(z, y), is_np)


def modified_entropy(logits: Array, labels: Array) -> Array:
    """Song & Mittal (2021) modified entropy, float32 ``[..., N, A]``, lower = member.

    ``Mentr = -(1 - p_y) log p_y - sum_{i != y} p_i log(1 - p_i)``. It is 0 for a confident
    correct prediction and grows without bound for a confident wrong one.

    References:
      Song & Mittal, "Systematic Evaluation of Privacy Risks of Machine Learning Models",
      USENIX Security 2021.
    """
    z, y, is_np = _prepare(logits, labels)
    return _finish(_mentr(z, y), is_np)


SIGNALS = {
    "logit_scaled_confidence": logit_scaled_confidence,
    "hinge": hinge,
    "loss": loss,
    "confidence": confidence,
    "entropy": entropy,
    "modified_entropy": modified_entropy,
}


def compute_chunked(fn, logits: Array, labels: Array, *, chunk_models: int = 8) -> np.ndarray:
    """Apply a signal to ``[M, N, A, C]`` logits a few models at a time.

    Keeps the float32 copy of the logits bounded (``chunk_models * N * A * C`` values) when the
    stored logits are float16/bfloat16 or a memory map. Returns numpy float32 ``[M, N, A]``.
    """
    m = logits.shape[0]
    out = np.empty(logits.shape[:-1], np.float32)
    for start in range(0, m, chunk_models):
        out[start : start + chunk_models] = np.asarray(
            fn(jnp.asarray(np.asarray(logits[start : start + chunk_models])), labels)
        )
    return out
