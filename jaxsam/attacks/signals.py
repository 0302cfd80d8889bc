"""Per-example membership signals computed from logits, with exact rankings.

Every function takes ``logits`` of shape ``[..., N, A, C]`` (any float dtype; numpy or jax) and
integer ``labels`` of shape ``[N]`` and returns float32 ``[..., N, A]`` of the same array kind
(numpy in, numpy out; jax in, jax out).

Precision. Numpy input is computed in float64 and rounded once to float32 at the end; jax input
is computed in its own dtype (float32 unless ``jax_enable_x64``). Every signal is built from
pieces that carry full *relative* precision even for confident predictions:

* ``t`` = the arg-max class, ``d_i = z_i - z_t <= 0`` and ``S = sum_{i != t} exp(d_i)`` (from
  ``log S`` = a logsumexp over the non-top classes, so it never underflows to a wrong value);
* ``-log p_i = log1p(S) - d_i`` (never ``log(softmax)``, which rounds ``p_t`` to 1 and the
  loss to 0 once ``S`` drops below the float epsilon);
* ``log(1 - p_i) = log1p(-p_i)`` for ``p_i <= 1/2`` and ``log S - log1p(S)`` for the top class
  when ``p_t > 1/2`` (``1 - p_t = S / (1 + S)``, no cancellation).

The loss, entropy and modified entropy are sums of non-negative terms of these pieces, so they
keep their relative precision (the tests hold the modified entropy to 1e-6 of a float64
reference) and stay distinct and ordered for logits such as ``[z, 0]`` with z = 15 ... 40,
where the float32 softmax has long rounded ``p_y`` to 1. ``confidence`` is ``p_y`` itself and
does saturate to 1.0 in float32 above a logit-scaled confidence of about 17: the confidence
attack therefore ranks by :func:`logit_scaled_confidence`, a strictly increasing function of
``p_y`` (``p_y = sigmoid(lsc)``) with the same ROC.

Sign conventions: ``logit_scaled_confidence``, ``hinge`` and ``confidence`` are higher for
members; ``loss``, ``entropy`` and ``modified_entropy`` are lower for members (the threshold
attacks negate them).
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from jaxsam.attacks import _signal_kernels, _tiles

Array = Any

# Elements of one logits chunk in :func:`compute_signals` (float64: 32 MiB per temporary).
_CHUNK_ELEMENTS = 1 << 22
# ... when only the fused float32 logit-scaled confidence is asked for (256 MiB of float32:
# XLA spreads a large block over the cores; small blocks pay per-call costs).
_FUSED_CHUNK_ELEMENTS = 1 << 26


class _Parts:
    """Log-space pieces of one logits block, computed on first use with array module ``xp``.

    ``z``: float ``[..., N, A, C]``; ``y``: int ``[N]``. Works with numpy and inside ``jax.jit``.
    """

    def __init__(self, xp, z, y):
        self.xp, self.z, self.y = xp, z, y

    @functools.cached_property
    def is_y(self):  # bool [N, 1, C]
        xp = self.xp
        return xp.arange(self.z.shape[-1]) == self.y[:, None, None]

    @functools.cached_property
    def is_top(self):  # bool [..., N, A, C]
        xp = self.xp
        return xp.arange(self.z.shape[-1]) == xp.argmax(self.z, axis=-1)[..., None]

    @functools.cached_property
    def d(self):  # z_i - z_t <= 0
        return self.z - self.xp.max(self.z, axis=-1, keepdims=True)

    @functools.cached_property
    def log_s(self):  # log S = logsumexp over the non-top classes of d, [..., N, A, 1]
        return _logsumexp_where(self.xp, self.d, ~self.is_top)

    @functools.cached_property
    def log1p_s(self):
        return self.xp.log1p(self.xp.exp(self.log_s))

    @functools.cached_property
    def neg_logp(self):  # -log p_i >= 0, relative-accurate
        return self.log1p_s - self.d

    @functools.cached_property
    def p(self):
        return self.xp.exp(-self.neg_logp)

    @functools.cached_property
    def log1m_p(self):  # log(1 - p_i) <= 0, relative-accurate
        xp = self.xp
        top_big = self.is_top & (self.log_s < 0)  # p_t > 1/2
        small = xp.log1p(-xp.where(top_big, 0.0, self.p))  # p <= 1/2 where used
        return xp.where(top_big, self.log_s - self.log1p_s, small)

    def at_y(self, x):
        """``x[..., n, a, y_n]``: the true-class entry of a per-class array."""
        return self.xp.sum(self.xp.where(self.is_y, x, 0.0), axis=-1)


def _logsumexp_where(xp, x, where):
    """logsumexp over the last axis of the entries where ``where``; -inf when there are none."""
    masked = xp.where(where, x, -xp.inf)
    m = xp.max(masked, axis=-1, keepdims=True)
    m = xp.where(xp.isfinite(m), m, 0.0)
    return m + xp.log(xp.sum(xp.where(where, xp.exp(masked - m), 0.0), axis=-1, keepdims=True))


def _lsc(P: _Parts):
    zy = P.at_y(P.z)
    return zy - _logsumexp_where(P.xp, P.z, ~P.is_y)[..., 0]


def _hinge(P: _Parts):
    zy = P.at_y(P.z)
    return zy - P.xp.max(P.xp.where(P.is_y, -P.xp.inf, P.z), axis=-1)


def _loss(P: _Parts):
    return P.at_y(P.neg_logp)


def _confidence(P: _Parts):
    return P.xp.exp(-_loss(P))


def _entropy(P: _Parts):
    # sum_i p_i (-log p_i): non-negative terms; p_i = 0 terms are 0 even where -log p_i = inf.
    # (Tested as p == 0, not p > 0, so that a NaN logit gives a NaN entropy, not 0.)
    xp = P.xp
    return xp.sum(xp.where(P.p == 0, 0.0, P.p * P.neg_logp), axis=-1)


def _mentr(P: _Parts):
    # (1 - p_y)(-log p_y) + sum_{i != y} p_i (-log(1 - p_i)): non-negative terms.
    xp = P.xp
    term_y = xp.exp(P.at_y(P.log1m_p)) * _loss(P)
    rest = xp.where(P.is_y | (P.p == 0), 0.0, -P.p * P.log1m_p)
    return term_y + xp.sum(rest, axis=-1)


_FORMULAS: dict[str, Callable[[_Parts], Any]] = {
    "logit_scaled_confidence": _lsc,
    "hinge": _hinge,
    "loss": _loss,
    "confidence": _confidence,
    "entropy": _entropy,
    "modified_entropy": _mentr,
}


@functools.partial(jax.jit, static_argnames="names")
def _jax_signals(z: jax.Array, y: jax.Array, names: tuple[str, ...]) -> tuple[jax.Array, ...]:
    P = _Parts(jnp, z, y)
    return tuple(_FORMULAS[n](P).astype(jnp.float32) for n in names)


# Classes up to which the logit-scaled confidence runs as one fused elementwise pass.
_FUSED_MAX_CLASSES = 64


@jax.jit
def _lsc_fused(z: jax.Array, y: jax.Array) -> jax.Array:
    """Logit-scaled confidence of float ``[..., N, A, C]`` logits in one fused pass, float32.

    The same stable form as :func:`_lsc` (``z_y - m - log sum_{i != y} exp(z_i - m)`` with
    ``m`` the largest non-label logit), with the class axis unrolled into C elementwise terms:
    XLA on CPUs reduces a short minor axis element by element, so the plain reduction costs
    about 100 read passes over the logits and this form about 5. Float32 arithmetic: every
    term carries full relative precision, so the result is within a few float32 ulps of
    ``max(|z_y|, |m|)`` of the float64 value.
    """
    z = z.astype(jnp.float32)
    is_y = [y[:, None] == i for i in range(z.shape[-1])]
    cols = [z[..., i] for i in range(z.shape[-1])]
    zy = cols[0] * 0.0
    top = jnp.full_like(zy, -jnp.inf)
    for col, here in zip(cols, is_y, strict=True):
        zy = jnp.where(here, col, zy)
        top = jnp.maximum(top, jnp.where(here, -jnp.inf, col))
    top = jnp.where(jnp.isfinite(top), top, 0.0)  # every other logit -inf: log(0) = -inf below
    total = sum(
        jnp.where(here, 0.0, jnp.exp(col - top)) for col, here in zip(cols, is_y, strict=True)
    )
    return zy - (top + jnp.log(total))


def _on_device(block: np.ndarray, staging: dict) -> jax.Array:
    """``block`` as a jax array, without a copy where the CPU backend can share its memory.

    A C-contiguous, writable float32 block on a 64-byte boundary is shared through DLPack (no
    copy); any other block is copied into a staging buffer reused from block to block (its
    pages are touched once, not once per block as a fresh copy's would be). The caller must
    finish with the result before the next block overwrites the staging buffer.
    """
    if jax.default_backend() == "cpu":
        shared = _tiles.device_view(block)
        if shared is not None:
            return shared
        buf = staging.get(block.shape)
        if buf is None:
            buf = staging[block.shape] = _tiles.aligned_empty(block.shape)
        np.copyto(buf, block, casting="unsafe")
        return jax.dlpack.from_dlpack(buf)
    return jnp.asarray(block, jnp.float32)


def _fused_lsc_numpy(
    z: np.ndarray, y: np.ndarray, staging: dict | None = None, out: np.ndarray | None = None
) -> np.ndarray:
    """:func:`_lsc_fused` of a numpy block; numpy float32 out (computed before returning).

    The compiled kernel (:mod:`jaxsam.attacks._signal_kernels`, the same float32 form) runs
    where numba is available and every logit is finite, writing into ``out`` when that is a
    C-contiguous float32 array of the result's shape; XLA's fused pass otherwise.
    """
    if _signal_kernels.available():
        usable = out is not None and out.dtype == np.float32 and out.flags.c_contiguous
        got = _signal_kernels.logit_scaled_confidence(z, y, out if usable else None)
        if got is not None:
            return got
    out = _lsc_fused(_on_device(z, {} if staging is None else staging), jnp.asarray(y, jnp.int32))
    return np.asarray(out)


def _numpy_signals(z: np.ndarray, y: np.ndarray, names: Sequence[str]) -> list[np.ndarray]:
    P = _Parts(np, np.asarray(z, np.float64), np.asarray(y, np.int64))
    with np.errstate(divide="ignore", invalid="ignore", over="ignore", under="ignore"):
        return [np.asarray(_FORMULAS[n](P), np.float64).astype(np.float32) for n in names]


def _check(logits: Array, labels: Array) -> None:
    shape = np.shape(logits)
    if len(shape) < 3:
        raise ValueError(f"logits must be [..., N, A, C], got shape {shape}; add a query axis")
    if np.shape(labels) != (shape[-3],):
        raise ValueError(f"labels must be [N={shape[-3]}], got shape {np.shape(labels)}")
    if shape[-1] < 2:
        raise ValueError(f"logits need at least 2 classes, got C={shape[-1]}")


def _signal(name: str, logits: Array, labels: Array) -> Array:
    _check(logits, labels)
    if isinstance(logits, jax.Array):
        z = logits if logits.dtype in (jnp.float32, jnp.float64) else logits.astype(jnp.float32)
        y = jnp.asarray(labels).astype(jnp.int32)
        if name == "logit_scaled_confidence" and z.shape[-1] <= _FUSED_MAX_CLASSES:
            return _lsc_fused(z, y)
        return _jax_signals(z, y, (name,))[0]
    return _numpy_signals(np.asarray(logits), np.asarray(labels), [name])[0]


def logit_scaled_confidence(logits: Array, labels: Array) -> Array:
    """LiRA's logit-scaled confidence ``log p_y - log sum_{y' != y} p_y'``.

    Computed as ``z_y - logsumexp_{y' != y} z_y'`` (exact and stable; ``= logit(p_y)``).

    Args:
      logits: float ``[..., N, A, C]``.
      labels: int ``[N]``.

    Returns:
      float32 ``[..., N, A]``; higher = more confident on the true label (members).
    """
    return _signal("logit_scaled_confidence", logits, labels)


def hinge(logits: Array, labels: Array) -> Array:
    """Hinge signal ``z_y - max_{y' != y} z_y'``: float32 ``[..., N, A]``, higher = member."""
    return _signal("hinge", logits, labels)


def loss(logits: Array, labels: Array) -> Array:
    """Cross-entropy ``-log p_y`` (nats): float32 ``[..., N, A]``, lower = member.

    ``log1p(S) - d_y`` (see the module docstring): a confident correct prediction gets its true,
    tiny loss (about ``exp(-lsc)``), not 0.
    """
    return _signal("loss", logits, labels)


def confidence(logits: Array, labels: Array) -> Array:
    """Softmax probability of the true label ``p_y``: float32 ``[..., N, A]``, higher = member.

    Saturates to 1.0 in float32 once ``p_y > 1 - 6e-8`` (logit-scaled confidence above about
    17); rank by :func:`logit_scaled_confidence` instead (same order, never saturates).
    """
    return _signal("confidence", logits, labels)


def entropy(logits: Array, labels: Array) -> Array:
    """Prediction entropy ``-sum_i p_i log p_i`` (nats): float32 ``[..., N, A]``, lower = member.

    ``labels`` is only checked for shape; the entropy ignores it.
    """
    return _signal("entropy", logits, labels)


def modified_entropy(logits: Array, labels: Array) -> Array:
    """Song & Mittal (2021) modified entropy, float32 ``[..., N, A]``, lower = member.

    ``Mentr = -(1 - p_y) log p_y - sum_{i != y} p_i log(1 - p_i)``. It is 0 for a confident
    correct prediction and grows without bound for a confident wrong one. Every term is
    non-negative and computed in log space, so the result keeps its relative precision.

    References:
      Song & Mittal, "Systematic Evaluation of Privacy Risks of Machine Learning Models",
      USENIX Security 2021.
    """
    return _signal("modified_entropy", logits, labels)


SIGNALS = {
    "logit_scaled_confidence": logit_scaled_confidence,
    "hinge": hinge,
    "loss": loss,
    "confidence": confidence,
    "entropy": entropy,
    "modified_entropy": modified_entropy,
}


def _chunks(m: int, n: int, per_model: int, budget: int):
    """(model slice, example slice) blocks of at most ~``budget`` elements, row-major."""
    if per_model * n <= budget:
        step = max(1, budget // max(per_model * n, 1))
        for s in range(0, m, step):
            yield slice(s, min(s + step, m)), slice(0, n)
        return
    step_n = max(1, budget // max(per_model, 1))
    for i in range(m):
        for s in range(0, n, step_n):
            yield slice(i, i + 1), slice(s, min(s + step_n, n))


def compute_signals(
    names: Sequence[str],
    logits: Array,
    labels: Array,
    *,
    chunk_elements: int = _CHUNK_ELEMENTS,
    out: dict[str, np.ndarray] | None = None,
) -> dict[str, np.ndarray]:
    """Several signals of ``[M, N, A, C]`` logits in one float64 pass, a block at a time.

    Each block (at most about ``chunk_elements`` logits, split over models and then examples) is
    widened to float64 once; the shared log-space pieces are computed once for all ``names``.
    The logit-scaled confidence (LiRA's and RMIA's signal) runs instead as one fused float32
    pass (:func:`_lsc_fused`, C <= 64): its stable form keeps full relative precision in
    float32, and the fused pass costs a few read passes over the logits instead of ~100.
    Works on float16 / bfloat16 arrays and memory maps without a full float copy.

    Args:
      names: keys of :data:`SIGNALS`.
      logits: float ``[M, N, A, C]``.
      labels: int ``[N]``.
      chunk_elements: block size in logits.
      out: optional {name: writable numpy float32 ``[M, N, A]``} to write the signals into
        (for example a slice of a larger array that a caller fills a chunk of models at a time,
        or a memory map); names not in it get new arrays.

    Returns:
      {name: numpy float32 ``[M, N, A]``} (the arrays of ``out`` where given).
    """
    unknown = [n for n in names if n not in _FORMULAS]
    if unknown:
        raise ValueError(f"unknown signal(s) {unknown}; choose from {', '.join(_FORMULAS)}")
    if np.ndim(logits) != 4:
        raise ValueError(f"logits must be [M, N, A, C], got shape {np.shape(logits)}")
    _check(logits, labels)
    m, n, a, c = logits.shape
    y = np.asarray(labels)
    out = {k: _output(out, k, (m, n, a)) for k in names}
    slow = [k for k in names if k != "logit_scaled_confidence" or c > _FUSED_MAX_CLASSES]
    fast = [k for k in names if k not in slow]
    staging: dict = {}
    for ms, ns in _chunks(m, n, a * c, _FUSED_CHUNK_ELEMENTS if not slow else chunk_elements):
        block = np.asarray(logits[ms, ns])
        for k in fast:
            dest = out[k][ms, ns]
            got = _fused_lsc_numpy(block, y[ns], staging, dest)
            if got is not dest:
                dest[...] = got
        if slow:
            for k, v in zip(slow, _numpy_signals(block, y[ns], slow), strict=True):
                out[k][ms, ns] = v
    return out


def _output(given: dict[str, np.ndarray] | None, name: str, shape: tuple) -> np.ndarray:
    """``given[name]`` checked to be a writable float32 array of ``shape``, or a new one."""
    if given is None or name not in given:
        return np.empty(shape, np.float32)
    dest = given[name]
    if not isinstance(dest, np.ndarray) or dest.shape != shape or dest.dtype != np.float32:
        got = f"{type(dest).__name__} {getattr(dest, 'dtype', '')}{list(np.shape(dest))}"
        raise ValueError(f"out[{name!r}] must be a numpy float32 array {list(shape)}, got {got}")
    if not dest.flags.writeable:
        raise ValueError(f"out[{name!r}] is read-only; pass a writable array (or no out)")
    return dest


def compute_chunked(fn, logits: Array, labels: Array, *, chunk_models: int = 8) -> np.ndarray:
    """Apply one signal function of :data:`SIGNALS` to ``[M, N, A, C]`` logits in blocks.

    The blocks go through the numpy (float64) path, at most ``chunk_models`` models and about
    4M logits at a time, so a float16/bfloat16 array or a memory map is never widened whole.
    Returns numpy float32 ``[M, N, A]``.
    """
    m, n, a, c = logits.shape
    budget = min(_CHUNK_ELEMENTS, max(chunk_models, 1) * n * a * c)
    out = np.empty((m, n, a), np.float32)
    y = np.asarray(labels)
    for ms, ns in _chunks(m, n, a * c, budget):
        out[ms, ns] = np.asarray(fn(np.asarray(logits[ms, ns]), y[ns]))
    return out
