"""RMIA (Zarifzadeh et al., ICML 2024) for all targets at once.

For target model m, example x and a reference point z from a population:

    LR_m(x, z) = [p(x | theta_m) / p(x)] / [p(z | theta_m) / p(z)]
    score_m(x) = fraction of z with LR_m(x, z) >= gamma

where ``p(x | theta)`` is the softmax probability of the true label and ``p(x)`` the average of
``p(x | theta')`` over reference models theta' (never m itself), chosen by the reference-group
rule every attack shares (:mod:`jaxsam.attacks._reference`, ``equal_groups``). Online: the IN
and OUT shadows together (on exact k-of-M masks k - 1 IN and M - k - 1 OUT for every target;
every other model on independent masks). Offline (OUT shadows only):
``p(x) = ((1 + a) * p_OUT(x) + (1 - a)) / 2`` (the paper's linear approximation of the IN+OUT
average; ``a`` is tuned per dataset, 0.3 is a common value).
With several queries, the per-query ratios ``p(x | theta_m) / p(x)`` are averaged over the A
queries (our choice, as for LiRA).

Population: by default all pool examples serve as z (each with the same leave-one-out reference
as x). Pass ``population`` (indices into N) to use a subset, or ``population_prob`` (or
``population_logits``) for points no model trained on (the paper's setting).
"""

from __future__ import annotations

import concurrent.futures
import functools
import os
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from jaxsam.attacks import _reference, _rmia_kernels, _tiles
from jaxsam.attacks import signals as _signals
from jaxsam.attacks._checks import check_finite, check_logits, check_signal
from jaxsam.attacks._lira import auto_chunk
from jaxsam.errors import ConfigError, DataError

Array = Any


def _shadow_sum(obs, family):
    """Count [B, N] and sum [B, N, A] of each target's shadows in one group, its own value
    removed: family = (count [J, N], sums [J, N, A], pick [B, N], inside [B, N])."""
    count, sums, pick, inside = family
    cols = jnp.arange(count.shape[1])[None, :]
    r = inside.astype(obs.dtype)
    return count[pick, cols] - r, sums[pick, cols] - r[..., None] * obs


def _ratio(obs, families, online, a):
    """p(x | theta_m) / p(x) averaged over queries [B, N]: obs [B, N, A]; families: the OUT
    group's (and online the IN group's) candidate sums and the targets' picks."""
    n_out, s_out = _shadow_sum(obs, families["out"])
    if online:
        n_in, s_in = _shadow_sum(obs, families["in"])
        ref = (s_in + s_out) / jnp.maximum(n_in + n_out, 1.0)[..., None]
    else:
        mean_out = s_out / jnp.maximum(n_out, 1.0)[..., None]
        # No OUT shadow for an example (only with equal_groups=False): fall back to the
        # target's mean OUT probability.
        has = (n_out > 0)[..., None]
        total = jnp.maximum(jnp.sum(n_out, axis=1), 1.0)[:, None]
        gmean = jnp.sum(jnp.where(has, s_out, 0.0), axis=1) / total
        mean_out = jnp.where(has, mean_out, gmean[:, None, :])
        ref = 0.5 * ((1.0 + a) * mean_out + (1.0 - a))
    return jnp.mean(obs / jnp.maximum(ref, 1e-30), axis=-1)


def _external_ratio(pobs, psum, m, online, a):
    """The ratio of external points [B, Z] (no model trained on them): every other model is an
    OUT reference. pobs [B, Z, A]; psum [Z, A], the sum over all M models."""
    mean = (psum[None] - pobs) / (m - 1)
    ref = mean if online else 0.5 * ((1.0 + a) * mean + (1.0 - a))
    return jnp.mean(pobs / jnp.maximum(ref, 1e-30), axis=-1)


@functools.partial(jax.jit, static_argnames=("m", "online", "has_pop_prob"))
def _score_chunk(obs, families, pop_idx, pobs, psum, *, m, online, a, gamma, has_pop_prob):
    rx = _ratio(obs, families, online, a)  # [B, N]
    rz = _external_ratio(pobs, psum, m, online, a) if has_pop_prob else rx[:, pop_idx]
    rz = jnp.sort(rz, axis=1)
    count = jax.vmap(lambda s, q: jnp.searchsorted(s, q, side="right"))(rz, rx / gamma)
    return count.astype(jnp.float32) / rz.shape[1]


@functools.partial(jax.jit, static_argnames=("rows", "step", "online"))
def _ratio_tile(src, at, start, families, *, rows, step, online, a):
    """p(x | theta_m) / p(x) averaged over queries, float32 [rows, step], on one tile: families
    per group (count [J, N], sums [J, N, A], pick int8 [M, N] or None, inside [M, N])."""
    t0, n0 = start
    x = _tiles.cut(src, at, (rows, step))  # [rows, step, A]

    def shadow(family):
        count, sums, pick, inside = family
        p = None if pick is None else _tiles.cut(pick, (t0, n0), (rows, step))
        n = lax.dynamic_slice_in_dim(count[0], n0, step, 0)[None]
        s = lax.dynamic_slice_in_dim(sums[0], n0, step, 0)[None]
        for j in range(1, count.shape[0]):
            sel = p == j
            n = jnp.where(sel, lax.dynamic_slice_in_dim(count[j], n0, step, 0)[None], n)
            s = jnp.where(sel[..., None], lax.dynamic_slice_in_dim(sums[j], n0, step, 0)[None], s)
        r = _tiles.cut(inside, (t0, n0), (rows, step)).astype(jnp.float32)
        return n - r, s - r[..., None] * x

    n_out, s_out = shadow(families["out"])
    if online:
        n_in, s_in = shadow(families["in"])
        ref = (s_in + s_out) / jnp.maximum(n_in + n_out, 1.0)[..., None]
    else:  # every target has an OUT shadow everywhere (the fallback takes the general path)
        ref = 0.5 * ((1.0 + a) * (s_out / jnp.maximum(n_out, 1.0)[..., None]) + (1.0 - a))
    return _tiles.sum_minor(x / jnp.maximum(ref, 1e-30)) / x.shape[-1]


def _dominated(rx: np.ndarray, gamma: float) -> np.ndarray:
    """Fraction of each row's own values z with z <= x / gamma, for every x of the row: float32
    [B, N] (the population is the pool itself). Rows are sorted by NumPy, a block of rows per
    core (NumPy's sorts release the GIL)."""
    out = np.empty(rx.shape, np.float32)
    blocks = [slice(r, r + 16) for r in range(0, rx.shape[0], 16)]  # small temporaries

    def run(rows):
        out[rows] = _dominated_rows(rx[rows], gamma)

    with concurrent.futures.ThreadPoolExecutor(min(2, os.cpu_count() or 1)) as pool:
        list(pool.map(run, blocks))
    return out


def _dominated_rows(rx: np.ndarray, gamma: float) -> np.ndarray:
    order = np.argsort(rx, axis=1)  # ties in any order: counts are taken per run of equal values
    srt = np.take_along_axis(rx, order, axis=1)
    if gamma == 1.0:
        # Each sorted value's count is one past the last position of its run of equal values.
        n = srt.shape[1]
        ends = np.ones(srt.shape, bool)
        ends[:, :-1] = srt[:, 1:] != srt[:, :-1]
        pos = np.where(ends, np.arange(n)[None, :], n)
        sorted_counts = np.minimum.accumulate(pos[:, ::-1], axis=1)[:, ::-1] + 1
    else:
        sorted_counts = np.stack([np.searchsorted(row, row / gamma, side="right") for row in srt])
    counts = np.empty(rx.shape, np.int64)
    np.put_along_axis(counts, order, sorted_counts, axis=1)
    return (counts / rx.shape[1]).astype(np.float32)


def rmia_from_signal(
    prob: Array,
    keep: Array,
    *,
    online: bool = True,
    a: float = 0.3,
    gamma: float = 1.0,
    population: Array | None = None,
    population_prob: Array | None = None,
    equal_groups: str | bool = "auto",
    chunk_size: int | None = None,
) -> np.ndarray:
    """RMIA scores from true-label probabilities.

    Args:
      prob: float [M, N, A], p(x | theta_m) = softmax probability of the true label.
      keep: bool [M, N].
      online: reference p(x) from the IN and OUT shadows together; False: offline from the OUT
        shadows with ``a``.
      a: offline interpolation parameter in [0, 1] (ignored online).
      gamma: likelihood-ratio threshold (>= 1 in the paper; 1 by default).
      population: int indices into N of the pool points used as z (default: all N).
      population_prob: float [M, Z, A] probabilities of external points (no model trained on
        them) used as z instead.
      equal_groups: the reference-group rule (:mod:`jaxsam.attacks._reference`): ``"auto"``
        (default: from the masks), True (each target's IN and OUT shadows cut to sizes that do
        not depend on its membership: k - 1 and M - k - 1 with exact k-of-M masks) or False
        (every other model).
      chunk_size: targets per jitted call.

    Returns:
      numpy float32 [M, N] in [0, 1]: the fraction of z that x dominates; higher = member.

    Raises:
      TooFewModelsError: a target has no shadow (offline: no OUT shadow) at some example, not
        with ``equal_groups=False``; the message names the smallest M that works.
    """
    compiled = population is None and population_prob is None and _rmia_kernels.available()
    prob, keep = check_signal(prob, keep, finite=not compiled)  # the compiled pass checks
    m, n, na = prob.shape
    if not 0.0 <= a <= 1.0:
        raise ConfigError(f"RMIA a={a} is outside [0, 1]; pass a value such as 0.3")
    if gamma <= 0:
        raise ConfigError(f"RMIA gamma={gamma} must be positive; pass 1.0 or 2.0")
    pop_idx = np.arange(n) if population is None else np.asarray(population, np.int64)
    if pop_idx.ndim != 1 or pop_idx.size == 0 or pop_idx.min() < 0 or pop_idx.max() >= n:
        raise DataError(f"population must be non-empty indices into N={n}; pass e.g. np.arange(N)")
    rule = _reference.resolve(equal_groups, keep)
    groups = ("in", "out") if online else ("out",)
    sets = {g: rule.sets(keep, g) for g in groups}
    what = f"RMIA ({'online' if online else 'offline'})"
    _reference.check_sizes(keep, sets, rule, what, {"any": 1} if online else {"out": 1})
    fast = (
        population is None
        and population_prob is None
        and not ((not online) and sets["out"].size_summary()[:, 0].min() == 0)
    )
    if fast and compiled:  # one compiled read pass (which checks the signal), then the ranks
        rx, finite = _rmia_kernels.ratios(np.ascontiguousarray(prob), sets, online, a)
        check_finite(prob, finite)
        return _rmia_kernels.dominated(rx) if gamma == 1.0 else _dominated(rx, gamma)
    if compiled:
        check_finite(prob)
    sums = _float32_sums(prob, sets)
    if fast:
        return _rmia_streamed(prob, sums, sets, online, a, gamma, chunk_size)
    return _rmia_chunked(prob, sums, sets, pop_idx, population_prob, online, a, gamma, chunk_size)


def _float32_sums(prob, sets):
    """Each group's candidate counts and sums as float32 jax arrays (one pass over the signal
    for the candidate sets of every group)."""
    count, total = _reference.candidate_sums(
        prob, np.concatenate([st.masks for st in sets.values()])
    )
    sums, j = {}, 0
    for g, st in sets.items():
        sl = slice(j, j + st.masks.shape[0])
        sums[g] = (jnp.asarray(count[sl], jnp.float32), jnp.asarray(total[sl], jnp.float32))
        j = sl.stop
    return sums


def _rmia_chunked(prob, sums, sets, pop_idx, population_prob, online, a, gamma, chunk_size):
    """RMIA with a subset or external population (or offline with the OUT fallback): the
    targets scored in chunks."""
    m, n, na = prob.shape
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
        families = {
            g: (*sums[g], jnp.asarray(st.pick[sl]), jnp.asarray(st.inside[sl]))
            for g, st in sets.items()
        }
        out[sl] = np.asarray(
            _score_chunk(
                jnp.asarray(prob[sl]),
                families,
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


def _rmia_streamed(prob, sums, sets, online, a, gamma, chunk_size):
    """RMIA with the pool as the population (the JAX path): the ratios in one tiled pass over
    ``prob`` (float32 [M, N, A]), then every target's ranks from one sort of its row."""
    return _dominated(_streamed_ratios(prob, sums, sets, online, a, chunk_size), gamma)


def _streamed_ratios(prob, sums, sets, online, a, chunk_size):
    """Every target's query-averaged ratio float32 [M, N] from the candidate sums
    (:func:`jaxsam.attacks._rmia_kernels.ratios` computes the same numbers)."""
    m, n, na = prob.shape
    prob = np.asarray(prob, np.float32)
    rows, step = _tiles.tile_shape(m, n, na, chunk_size)
    families = {
        g: (
            *sums[g],
            None if st.masks.shape[0] == 1 else jnp.asarray(st.pick.astype(np.int8)),
            jnp.asarray(st.inside),
        )
        for g, st in sets.items()
    }
    rx = np.empty((m, n), np.float32)

    def one(t):
        got = np.asarray(
            _ratio_tile(t.load(), t.at, t.start, families, rows=rows, step=step, online=online, a=a)
        )
        (r0, s0), (rs, ss) = t.start, t.skip
        rx[r0 + rs : r0 + rows, s0 + ss : s0 + step] = got[rs:, ss:]

    _tiles.map_tiles(one, _tiles.tiles(prob, rows, step, _tiles.device_view(prob)))
    return rx
