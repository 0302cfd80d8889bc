"""Compiled CPU kernels for the attacks' passes over the signal (numba; optional).

The streamed attacks read the float32 signal [M, N, A] a few times. XLA:CPU runs their
reductions (over models, over examples) element by element; these loops, compiled by numba,
sweep *tiles* of all M models by a few examples (the tile and its accumulators stay in the
core's cache), accumulate in float64 and read the signal as float32. The inner loops run over
a tile's values of one model, which are contiguous (the per-example weights are spread over the
A queries first), so they compile to vector code. No fast-math: every float64 sum is taken in a
fixed order, and the results do not depend on the number of threads.

Each kernel is serial and releases the GIL; :func:`_run` hands chunks of examples to one thread
per core (at most 2) as they free up (:mod:`jaxsam.attacks._pool`).

When numba is not installed (or ``JAXSAM_NO_NUMBA=1``) :func:`available` is False and the
attacks use their JAX passes instead (the same numbers to float32 rounding; the tests compare
the two).
"""

from __future__ import annotations

import os

import numpy as np

from jaxsam.attacks import _mask_kernels, _pool
from jaxsam.attacks._mask_kernels import (  # noqa: F401
    cut_sets,
    dependence_rows,
    shadow_sizes,
    size_summary,
    small_int,
)

try:  # pragma: no cover - exercised where numba is installed
    import numba
    from numba import njit
except ImportError:  # pragma: no cover
    numba = None

# Examples per tile: M x TILE x A float32 values (256 x 16 x 18: 295 KB) stay in a core's L2
# cache while a kernel sweeps them twice; a tile's accumulators (TILE x A float64) in L1.
TILE = 16
# Examples per chunk handed to a thread.
CHUNK = 512


def available() -> bool:
    """True when numba is importable and not switched off by ``JAXSAM_NO_NUMBA=1``."""
    return numba is not None and os.environ.get("JAXSAM_NO_NUMBA", "") in ("", "0")


def prefetch_tile(m: int, a: int) -> int:
    """Examples per tile for the sweeps that read each tile twice with little work per value
    (LiRA's fused statistics, RMIA's ratios) and prefetch the next tile during the second:
    M x tile x A float32 values of about 300 KiB (8 to 64 examples; 16 at M = 256, A = 18),
    so that the tile and the next one stay in a core's L2 cache together (16 to 20 examples
    measured fastest at that size; 56, the 1 MiB tile these sweeps used before they
    prefetched, was a fifth slower)."""
    return int(min(64, max(8, (300 << 10) // (4 * max(m, 1) * max(a, 1)))))


def _run(fn, n: int, chunk: int = CHUNK) -> list:
    """``[fn(n0, n1) for each chunk of examples]`` on one thread per core (at most 2)."""
    return _pool.run(fn, n, chunk)


def same_masks(a: np.ndarray, b: np.ndarray, complement: bool = False) -> bool:
    """``a == b`` (``complement``: ``a == ~b``) everywhere, for bool masks of one shape (a
    compiled sweep that stops at the first difference where the kernels are available)."""
    if a.shape != b.shape:
        return False
    if available():
        return bool(
            _mask_kernels.masks_equal(np.ascontiguousarray(a), np.ascontiguousarray(b), complement)
        )
    return bool(np.array_equal(a, ~b if complement else b))


def column_counts(mask: np.ndarray) -> np.ndarray:
    """How many models of bool [M, N] ``mask`` are set at each example: int64 [N]."""
    if available():
        return _mask_kernels._column_counts(np.ascontiguousarray(mask))
    return mask.sum(axis=0, dtype=np.int64)


def one_more(a: np.ndarray, b: np.ndarray) -> np.ndarray | None:
    """Where bool [M, N] mask ``a`` is a subset of ``b``: per example the first model in b but
    not in a (0 where none), int [N]; None where a is not a subset of b."""
    if available():
        drop = np.empty(a.shape[1], np.int32)
        ok = _mask_kernels.one_less(np.ascontiguousarray(b), np.ascontiguousarray(a), drop)
        return np.maximum(drop, 0) if ok else None
    if (a > b).any():
        return None
    return (b > a).argmax(axis=0)


if numba is not None:
    # Inner loops index arrays from 0 up to a length (slices first): an index that numba cannot
    # prove non-negative gets a wrap-around test per access, which keeps LLVM from vectorising.

    @njit(nogil=True, cache=True)
    def _spread(flags, a_all, out):
        """out[n * A + a] = flags[n] (1.0 or 0.0) for every n of ``flags``."""
        for n in range(flags.size):
            v = 1.0 if flags[n] else 0.0
            o = out[n * a_all : (n + 1) * a_all]
            for a in range(a_all):
                o[a] = v

    @njit(nogil=True, cache=True)
    def _top_exponent(bits):
        """The largest exponent field (bits & 0x7F800000) of float32 values (as uint32)."""
        acc = np.uint32(0)
        for i in range(bits.size):
            acc = max(acc, bits[i] & np.uint32(0x7F800000))
        return acc

    @njit(nogil=True, cache=True)
    def _stats_chunk(x, masks, count, n0, n1, tile, mean, ss):
        """mean and SS [S, N * A] of every set at examples n0..n1, two sweeps of each tile."""
        m_all, n_all, a_all = x.shape
        s_all = masks.shape[0]
        xf = x.reshape(m_all, n_all * a_all)
        lt = tile * a_all
        s1 = np.empty((s_all, lt))
        s2 = np.empty((s_all, lt))
        w = np.empty(lt)
        y = np.empty(lt)
        for t0 in range(n0, n1, tile):
            t1 = min(n1, t0 + tile)
            size = (t1 - t0) * a_all
            base = t0 * a_all
            s1[:] = 0.0
            s2[:] = 0.0
            for m in range(m_all):
                xr = xf[m, base : base + size]
                for i in range(size):
                    y[i] = xr[i]
                for s in range(s_all):
                    _spread(masks[s, m, t0:t1], a_all, w)
                    acc = s1[s]
                    for i in range(size):
                        acc[i] += w[i] * y[i]
            for s in range(s_all):
                cs = count[s, t0:t1]
                for n in range(cs.size):
                    inv = 1.0 / cs[n] if cs[n] > 0 else 0.0
                    mu = s1[s, n * a_all : (n + 1) * a_all]
                    for a in range(a_all):
                        mu[a] *= inv
            for m in range(m_all):
                xr = xf[m, base : base + size]
                for s in range(s_all):
                    _spread(masks[s, m, t0:t1], a_all, w)
                    mu = s1[s]
                    acc = s2[s]
                    for i in range(size):
                        d = xr[i] - mu[i]
                        acc[i] += w[i] * (d * d)
            for s in range(s_all):
                mean[s, base : base + size] = s1[s, :size]
                ss[s, base : base + size] = s2[s, :size]

    @njit(nogil=True, cache=True)
    def _pair_chunk(x, member, count, n0, n1, tile, mean, ss):
        """:func:`_stats_chunk` of a set and its complement (rows 0 and 1 of mean and SS):
        the sums of all models and of the set, one weight spread per model and sweep."""
        m_all, n_all, a_all = x.shape
        xf = x.reshape(m_all, n_all * a_all)
        lt = tile * a_all
        tot = np.empty(lt)
        s_in = np.empty(lt)
        w = np.empty(lt)
        for t0 in range(n0, n1, tile):
            t1 = min(n1, t0 + tile)
            size = (t1 - t0) * a_all
            base = t0 * a_all
            tot[:] = 0.0
            s_in[:] = 0.0
            for m in range(m_all):
                xr = xf[m, base : base + size]
                _spread(member[m, t0:t1], a_all, w)
                for i in range(size):
                    v = np.float64(xr[i])
                    tot[i] += v
                    s_in[i] += w[i] * v
            mu_in = mean[0, base : base + size]
            mu_out = mean[1, base : base + size]
            for n in range(t1 - t0):
                c_in, c_out = count[0, t0 + n], count[1, t0 + n]
                i_in = 1.0 / c_in if c_in > 0 else 0.0
                i_out = 1.0 / c_out if c_out > 0 else 0.0
                b = n * a_all
                mi = mu_in[b : b + a_all]
                mo = mu_out[b : b + a_all]
                ti = tot[b : b + a_all]
                si = s_in[b : b + a_all]
                for a in range(a_all):
                    mi[a] = si[a] * i_in
                    mo[a] = (ti[a] - si[a]) * i_out
            tot[:] = 0.0
            s_in[:] = 0.0
            for m in range(m_all):
                xr = xf[m, base : base + size]
                _spread(member[m, t0:t1], a_all, w)
                for i in range(size):  # d from the mean of the set the model is in
                    d = xr[i] - (mu_out[i] + w[i] * (mu_in[i] - mu_out[i]))
                    wd2 = w[i] * (d * d)
                    s_in[i] += wd2
                    tot[i] += d * d - wd2  # the complement's, summed apart: no cancellation
            ss[0, base : base + size] = s_in[:size]
            ss[1, base : base + size] = tot[:size]

    @njit(nogil=True, cache=True)
    def _sums_chunk(x, masks, n0, n1, tile, sums, pair):
        """Sums [S, N * A] of every set at examples n0..n1 (float64, one sweep of each tile).
        ``pair``: the two sets are complements; the second is the total less the first."""
        m_all, n_all, a_all = x.shape
        s_all = masks.shape[0]
        xf = x.reshape(m_all, n_all * a_all)
        lt = tile * a_all
        acc = np.empty((s_all, lt))
        w = np.empty(lt)
        for t0 in range(n0, n1, tile):
            t1 = min(n1, t0 + tile)
            size = (t1 - t0) * a_all
            base = t0 * a_all
            acc[:] = 0.0
            for m in range(m_all):
                xr = xf[m, base : base + size]
                if pair:
                    _spread(masks[0, m, t0:t1], a_all, w)
                    a0, a1 = acc[0], acc[1]
                    for i in range(size):
                        v = np.float64(xr[i])
                        a0[i] += w[i] * v
                        a1[i] += v - w[i] * v
                else:
                    for s in range(s_all):
                        _spread(masks[s, m, t0:t1], a_all, w)
                        ac = acc[s]
                        for i in range(size):
                            ac[i] += w[i] * xr[i]
            for s in range(s_all):
                sums[s, base : base + size] = acc[s, :size]

    @njit(nogil=True, cache=True)
    def _downdate(x, model, r, count_b, mean_b, ss_b, mean_a, ss_a):
        """Statistics [N, A] of a set that is set b less ``model[n]`` where ``r[n]``: an exact
        float64 down-date (count_b: b's sizes); ss_b and ss_a of no rows: the mean alone.
        Elements are indexed one by one: a row view per example would update the reference
        count of the arrays (five views per example cost more than the arithmetic)."""
        n_all, a_all = mean_b.shape
        with_ss = ss_a.shape[0] > 0
        for n in range(n_all):
            c = count_b[n]
            if not r[n]:
                for a in range(a_all):
                    mean_a[n, a] = mean_b[n, a]
                    if with_ss:
                        ss_a[n, a] = ss_b[n, a]
            elif c <= 1:
                for a in range(a_all):
                    mean_a[n, a] = 0.0
                    if with_ss:
                        ss_a[n, a] = 0.0
            else:
                k = model[n]
                fac = c / (c - 1.0)
                for a in range(a_all):
                    d = x[k, n, a] - mean_b[n, a]
                    mean_a[n, a] = mean_b[n, a] - d / (c - 1.0)
                    if with_ss:
                        ss_a[n, a] = max(ss_b[n, a] - d * d * fac, 0.0)

    @njit(nogil=True, cache=True)
    def _variance_chunk(x, mean, ss, count, inside, n0, n1, tile):
        """sum_n SS' [F, M, A] over examples n0..n1 of F sets (each target's candidate in
        each): SS where the target has shadows, less c / (c - 1) d^2 where it is in the set."""
        m_all, n_all, a_all = x.shape
        f_all = mean.shape[0]
        xf = x.reshape(m_all, n_all * a_all)
        lt = tile * a_all
        out = np.zeros((f_all, m_all, a_all))
        acc = np.empty((f_all, lt))
        has = np.empty((f_all, lt))
        wd = np.empty((f_all, lt))
        for m in range(m_all):
            acc[:] = 0.0
            for t0 in range(n0, n1, tile):
                t1 = min(n1, t0 + tile)
                size = (t1 - t0) * a_all
                base = t0 * a_all
                xr = xf[m, base : base + size]
                for f in range(f_all):
                    cs = count[f, t0:t1]
                    ins = inside[f, m, t0:t1]
                    for n in range(cs.size):
                        c = cs[n]
                        r = ins[n]
                        h = 1.0 if c - r > 0 else 0.0
                        wt = c / (c - 1.0) if (r and c > 1) else 0.0
                        hf = has[f, n * a_all : (n + 1) * a_all]
                        wf = wd[f, n * a_all : (n + 1) * a_all]
                        for a in range(a_all):
                            hf[a] = h
                            wf[a] = wt
                    mr = mean[f, base : base + size]
                    sr = ss[f, base : base + size]
                    af, hf, wf = acc[f], has[f], wd[f]
                    for i in range(size):
                        d = xr[i] - mr[i]
                        af[i] += hf[i] * sr[i] - wf[i] * (d * d)
            for f in range(f_all):
                af = acc[f]
                o = out[f, m]
                for n in range(tile):
                    part = af[n * a_all : (n + 1) * a_all]
                    for a in range(a_all):
                        o[a] += part[a]
        return out


def all_finite(x: np.ndarray) -> bool:
    """True when every value of the float32 array ``x`` is finite (one pass: no value has
    the all-ones exponent of NaN and infinity)."""
    bits = np.ascontiguousarray(x, np.float32).reshape(-1).view(np.uint32)
    tops = _run(lambda lo, hi: _top_exponent(bits[lo:hi]), bits.size, 1 << 22)
    return all(int(t) != 0x7F800000 for t in tops)


def set_stats(signal: np.ndarray, masks, count: np.ndarray):
    """Mean and SS float64 [S, N, A] of S sets of models at every example (one read pass).

    Args:
      signal: float32 [M, N, A] (C-contiguous); masks: the S sets (bool [S, M, N], or a
        sequence of bool [M, N]); count: float64 [S, N], the sets' sizes.

    Returns:
      ``mean`` (0 for an empty set) and ``SS`` (squared deviations from the mean, summed),
      each two sweeps of a cache-resident tile: the sums, then the deviations from the mean.
    """
    m, n, a = signal.shape
    s = len(masks)
    mean = np.empty((s, n * a))
    ss = np.empty((s, n * a))
    if _is_pair(masks, count):
        # a set and its complement (LiRA's IN and OUT groups): one weighted sum per sweep
        first = np.ascontiguousarray(masks[0], np.bool_)
        _run(lambda n0, n1: _pair_chunk(signal, first, count, n0, n1, TILE, mean, ss), n)
    else:
        stack = np.ascontiguousarray(np.stack(list(masks)), np.bool_)
        _run(lambda n0, n1: _stats_chunk(signal, stack, count, n0, n1, TILE, mean, ss), n)
    return mean.reshape(s, n, a), ss.reshape(s, n, a)


def _is_pair(masks, count: np.ndarray) -> bool:
    """Two sets that are each other's complement (LiRA's and RMIA's IN and OUT groups)."""
    if len(masks) != 2 or not (count.sum(axis=0) == masks[0].shape[0]).all():
        return False
    return not (masks[0] & masks[1]).any()


def set_sums(signal: np.ndarray, masks: np.ndarray, count: np.ndarray) -> np.ndarray:
    """Sums float64 [S, N, A] of S sets of models (bool [S, M, N], sizes ``count`` [S, N])
    at every example: one read pass of float32 ``signal`` [M, N, A]."""
    m, n, a = signal.shape
    s = masks.shape[0]
    sums = np.empty((s, n * a))
    pair = _is_pair(masks, count)
    _run(lambda n0, n1: _sums_chunk(signal, masks, n0, n1, TILE, sums, pair), n)
    return sums.reshape(s, n, a)


def downdate(signal, model, r, count_b, mean_b, ss_b, out=None):
    """Mean and SS float64 [N, A] of set b less model ``model[n]`` at the examples where
    ``r[n]`` (see :func:`jaxsam.attacks._lira_stats_kernels.stats_tree`), written into ``out``
    (two float64 [N, A] arrays) when given. ``ss_b`` None: the mean alone (SS None)."""
    mean_a = out[0] if out is not None else np.empty_like(mean_b)
    none = np.empty((0, 0))  # no rows: the kernel writes no SS
    ss_a = none if ss_b is None else out[1] if out is not None else np.empty_like(ss_b)
    r = np.ascontiguousarray(r, np.bool_)
    model = np.ascontiguousarray(model, np.int64)
    _downdate(signal, model, r, count_b, mean_b, none if ss_b is None else ss_b, mean_a, ss_a)
    return mean_a, None if ss_b is None else ss_a


def variance_sums(signal, mean, ss, count, inside) -> np.ndarray:
    """Every target's ``sum_n SS'`` float64 [F, M, A] in F sets (one read pass for all).

    ``SS'`` is the set's SS with the target's own value removed where it is in the set
    (``SS - c / (c - 1) d^2``, d its value less the set's mean); examples where the target
    has no shadow (c - inside = 0) add nothing.

    Args:
      signal: float32 [M, N, A]; mean, ss: float64 [F, N, A] of the sets; count float64
        [F, N]; inside: bool [F, M, N], the target is in the set.
    """
    f, n = mean.shape[0], signal.shape[1]
    mf, sf = mean.reshape(f, -1), ss.reshape(f, -1)
    inside = np.ascontiguousarray(inside, np.bool_)
    count = np.ascontiguousarray(count, np.float64)

    def one(n0, n1):
        return _variance_chunk(signal, mf, sf, count, inside, n0, n1, TILE)

    return np.sum(_run(one, n), axis=0)
