"""Compiled kernels of RMIA with the pool as the population (numba; optional).

:func:`ratios`: one read pass of the float32 probabilities [M, N, A] gives every target's
query-averaged ratio ``p(x | theta_m) / p(x)`` [M, N]. Each tile of all M models by
``tile`` examples (:func:`jaxsam.attacks._kernels.prefetch_tile`: about 300 KiB, 16
examples at M = 256, A = 18; it stays in the core's L2 cache, with the next tile, which the
second sweep asks for) is swept
twice: once for the candidate sets' float64 sums (the numbers of
:func:`jaxsam.attacks._reference.candidate_sums`: the root sets summed in model order, a set
that is another less one model as that down-date), once for each target's ratio from its
candidates' sums less its own value. The second sweep repeats the float32 operations of the JAX
tile pass (``_rmia._ratio_tile``) in the same order, so the ratios, and with them the ranks,
are the same to the bit (the tests check). No fast-math. Both sweeps are compiled with
:class:`jaxsam.attacks._fastmath.DistinctArrays` (none of their arrays overlaps another): the
pass ran a tenth faster without LLVM's run-time overlap checks, with the same values.

:func:`dominated`: the ranks, per target row an LSD radix sort of the ratios' order-preserving
integer keys less the row's smallest key, in as few passes of at most :data:`DIGIT_BITS` bits
as the row's key range needs (two for the ratios of a real study, not four bytes' worth).
"""

from __future__ import annotations

import numpy as np

from jaxsam.attacks import _fastmath, _mask_kernels
from jaxsam.attacks._kernels import _run, available, prefetch_tile  # noqa: F401

try:  # pragma: no cover - exercised where numba is installed
    import numba
    from numba import njit
except ImportError:  # pragma: no cover
    numba = None

# Examples per chunk handed to a thread.
CHUNK = 256
# The ratio pass's first sweep of a tile asks each model's rows this many models ahead.
AHEAD_MODELS = 2
# Widest radix digit: 2^13 int32 counters (32 KB) fit in L1.
DIGIT_BITS = 13

if numba is not None:

    @njit(nogil=True, cache=True, error_model="numpy", pipeline_class=_fastmath.DistinctArrays)
    def _tile_sums(xf, roots, root_j, pair, t0, t1, a_all, acc):
        """Sums float64 [J + 1, tile * A] of the root sets at examples t0..t1 (into their
        candidates' rows), in model order; row J collects values of no root. ``pair``: the two
        roots are complements (the first root's mask decides)."""
        size = (t1 - t0) * a_all
        base = t0 * a_all
        other = root_j[1] if pair else acc.shape[0] - 1
        acc[:] = 0.0
        m_all, row = xf.shape
        for m in range(m_all):
            if m + AHEAD_MODELS < m_all:  # the tile comes from memory: ask a few models ahead
                at = (m + AHEAD_MODELS) * row + base
                _fastmath.prefetch_span(xf, at, at + size)
            xr = xf[m, base : base + size]
            for r in range(1 if pair else roots.shape[0]):
                mem = roots[r, m, t0:t1]
                j = root_j[r]
                for n in range(t1 - t0):
                    dst = acc[j if mem[n] else other, n * a_all : (n + 1) * a_all]
                    src = xr[n * a_all : (n + 1) * a_all]
                    for a in range(a_all):
                        dst[a] += src[a]

    @njit(nogil=True, cache=True, error_model="numpy")
    def _tile_children(xf, children, drop, t0, t1, a_all, acc):
        """Each child's sums: its parent's less the one model ``drop[c, n]`` (-1: none) that the
        parent holds beyond it (children int64 [C, 2] = (child, parent), parents first)."""
        size = (t1 - t0) * a_all
        for c in range(children.shape[0]):
            j, p = children[c, 0], children[c, 1]
            acc[j, :size] = acc[p, :size]
            for n in range(t1 - t0):
                d = drop[c, t0 + n]
                if d >= 0:
                    dst = acc[j, n * a_all : (n + 1) * a_all]
                    src = xf[d, (t0 + n) * a_all : (t0 + n + 1) * a_all]
                    for a in range(a_all):
                        dst[a] -= src[a]

    @njit(nogil=True, cache=True, error_model="numpy", pipeline_class=_fastmath.DistinctArrays)
    def _tile_ratios(x, sums, count, groups, j_out, coef, t0, t1, t2, rx, q):
        """rx[m, t0:t1] for every target m from float32 candidate sums [J, tile, A] and sizes
        [J, N]. groups = (pick_in, inside_in, pick_out, inside_out), [M, N] each; the OUT
        group's candidates start at row j_out. Online (j_out > 0): the IN candidates are rows
        0..j_out - 1; offline: only the OUT group, with coef = (1 + a, 1 - a) in float32.
        The tile is in L2 by now; each model's rows of the next tile (t1..t2) are asked
        meanwhile.

        The arrays are indexed element by element: a slice (a view) per example would change
        the reference count of the shared arrays, an atomic operation per example (and one
        that the two threads contend for), which cost half of this sweep's time.
        """
        pick_in, in_in, pick_out, in_out = groups
        online = j_out > 0
        a_all = x.shape[2]
        one, tiny, half = np.float32(1.0), np.float32(1e-30), np.float32(0.5)
        c0, c1 = np.float64(coef[0]), np.float64(coef[1])
        inv_a = one / np.float32(a_all)  # XLA divides by a constant as a product
        for m in range(x.shape[0]):
            _fastmath.prefetch_rows(x, m, t1, t2)
            for n in range(t1 - t0):
                e = t0 + n
                co = j_out + np.int64(pick_out[m, e])
                ro = one if in_out[m, e] else np.float32(0.0)
                n_out = count[co, e] - ro
                if online:
                    ci = np.int64(pick_in[m, e])
                    ri = one if in_in[m, e] else np.float32(0.0)
                    inv = one / max((count[ci, e] - ri) + n_out, one)
                    for a in range(a_all):
                        xa = x[m, e, a]
                        ref = ((sums[ci, n, a] - ri * xa) + (sums[co, n, a] - ro * xa)) * inv
                        q[a] = xa / max(ref, tiny)
                else:
                    inv = one / max(n_out, one)
                    for a in range(a_all):
                        xa = x[m, e, a]
                        mean = np.float64((sums[co, n, a] - ro * xa) * inv)
                        ref = np.float32(c0 * mean + c1)  # XLA's fused multiply-add
                        q[a] = xa / max(half * ref, tiny)
                tot = q[0]
                for a in range(1, a_all):
                    tot += q[a]
                rx[m, e] = tot * inv_a

    @njit(nogil=True, cache=True, error_model="numpy")
    def _ratio_chunk(x, plan, count, groups, j_out, coef, n0, n1, tile, rx):
        """:func:`ratios` at examples n0..n1, one tile of ``tile`` examples at a time; plan =
        (roots bool [R, M, N], root_j, pair, children, drop) (:func:`_plan`)."""
        roots, root_j, pair, children, drop = plan
        m_all, n_all, a_all = x.shape
        xf = x.reshape(m_all, n_all * a_all)
        j_all = count.shape[0]
        acc = np.empty((j_all + 1, tile * a_all))
        sums = np.empty((j_all, tile * a_all), np.float32)
        sums3 = sums.reshape(j_all, tile, a_all)  # the same values, indexed per example
        q = np.empty(a_all, np.float32)
        finite = True
        for t0 in range(n0, n1, tile):
            t1 = min(n1, t0 + tile)
            _tile_sums(xf, roots, root_j, pair, t0, t1, a_all, acc)
            for j in range(j_all + 1):  # every value is in some row: NaN or inf shows in a sum
                for i in range(tile * a_all):
                    finite &= np.isfinite(acc[j, i])
            _tile_children(xf, children, drop, t0, t1, a_all, acc)
            for j in range(j_all):
                sj, aj = sums[j], acc[j]
                for i in range(sj.size):
                    sj[i] = np.float32(aj[i])
            t2 = min(n1, t1 + tile)
            _tile_ratios(x, sums3, count, groups, j_out, coef, t0, t1, t2, rx, q)
        return finite

    @njit(nogil=True, cache=True)
    def _rank_row(row, keys, buf, hist, out):
        """out[i] = (number of values of ``row`` at or below row[i]) / N, float32."""
        n = row.size
        bits = row.view(np.uint32)
        lo, hi = np.uint32(0xFFFFFFFF), np.uint32(0)
        for i in range(n):  # float32 bits -> unsigned keys in the same order; -0.0 ties 0.0
            b = np.uint32(0) if row[i] == 0 else bits[i]
            b = ~b if b & np.uint32(0x80000000) else b | np.uint32(0x80000000)
            keys[i] = b
            lo, hi = min(lo, b), max(hi, b)
        width = 0
        while width < 32 and ((hi - lo) >> np.uint32(width)) > 0:
            width += 1
        passes = (width + DIGIT_BITS - 1) // DIGIT_BITS
        digit = (width + passes - 1) // passes if passes else 0
        mask = np.uint64((1 << digit) - 1)
        hist[:, : 1 << digit] = 0
        for i in range(n):  # the key less the smallest in the high half, the index in the low
            k = keys[i] - np.uint64(lo)
            keys[i] = (k << np.uint64(32)) | np.uint64(i)
            for p in range(passes):
                hist[p, (k >> np.uint64(p * digit)) & mask] += 1
        src, dst = keys, buf
        for p in range(passes):  # stable passes, lowest digit first
            h = hist[p]
            total = 0
            for d in range(1 << digit):
                c = h[d]
                h[d] = total
                total += c
            sh = np.uint64(32 + p * digit)
            for i in range(n):
                v = src[i]
                d = (v >> sh) & mask
                dst[h[d]] = v
                h[d] += 1
            src, dst = dst, src
        end = n  # a value's count: one past the end of its run of equal keys
        for i in range(n - 1, -1, -1):
            v = src[i]
            if i < n - 1 and (v >> np.uint64(32)) != (src[i + 1] >> np.uint64(32)):
                end = i + 1
            out[v & np.uint64(0xFFFFFFFF)] = np.float32(end / n)

    @njit(nogil=True, cache=True)
    def _rank_rows(rx, r0, r1, out):
        n = rx.shape[1]
        keys = np.empty(n, np.uint64)
        buf = np.empty(n, np.uint64)
        hist = np.empty((3, 1 << DIGIT_BITS), np.int32)
        for r in range(r0, r1):
            _rank_row(rx[r], keys, buf, hist, out[r])


def _plan(masks: list[np.ndarray], count: np.ndarray):
    """Which candidate sets are summed (roots) and which are another less one model: roots
    [R] and (children int64 [C, 2] = (child, parent) with parents first, drop int32 [C, N]).
    The parent of set j is the first other set that holds it plus one model at some examples
    and at most one at any (:func:`jaxsam.attacks._reference._parents`' choice)."""
    n = count.shape[1]
    parent: dict[int, tuple[int, np.ndarray]] = {}
    for j, mj in enumerate(masks):
        for p, mp in enumerate(masks):
            d = count[p] - count[j]
            if p == j or d.min() < 0 or d.max() != 1:
                continue
            drop = np.empty(n, np.int32)
            if _mask_kernels.one_less(mp, mj, drop):
                parent[j] = (p, drop)
                break
    roots = [j for j in range(len(masks)) if j not in parent]
    order, done = [], set(roots)
    while len(done) < len(masks):
        for j, (p, _) in parent.items():
            if j not in done and p in done:
                order.append(j)
                done.add(j)
    children = np.array([(j, parent[j][0]) for j in order], np.int64).reshape(-1, 2)
    drop = np.stack([parent[j][1] for j in order]) if order else np.empty((0, n), np.int32)
    return roots, children, drop


def ratios(prob: np.ndarray, sets: dict, online: bool, a: float) -> tuple[np.ndarray, bool]:
    """Every target's query-averaged ratio p(x | theta_m) / p(x), float32 [M, N], and whether
    every value of ``prob`` is finite (NaN and infinity show in the sums over models).

    Args:
      prob: float32 [M, N, A] (C-contiguous); sets: ``{"in": ShadowSets, "out": ShadowSets}``
        (offline: ``"out"`` only, and every target has an OUT shadow everywhere); online: the
        reference is the IN and OUT shadows' mean, offline ``((1 + a) mean_OUT + 1 - a) / 2``.
    """
    m, n, _ = prob.shape
    groups = ("in", "out") if online else ("out",)
    masks = [np.ascontiguousarray(mk) for g in groups for mk in sets[g].masks]
    count = np.stack([_mask_kernels._column_counts(mk) for mk in masks])
    roots, children, drop = _plan(masks, count)
    pair = (
        len(roots) == 2
        and bool((count[roots[0]] + count[roots[1]] == m).all())
        and _mask_kernels.masks_disjoint(masks[roots[0]], masks[roots[1]])
    )
    root_masks = masks[roots[0]][None] if pair else np.stack([masks[j] for j in roots])
    plan = (root_masks, np.array(roots, np.int64), pair, children, drop)
    gin, gout = sets["in" if online else "out"], sets["out"]
    arrays = (gin.pick, gin.inside, gout.pick, gout.inside)
    arrays = tuple(np.ascontiguousarray(v) for v in arrays)
    j_out = sets["in"].masks.shape[0] if online else 0
    af = np.float32(a)
    coef = np.array([np.float32(1.0) + af, np.float32(1.0) - af], np.float32)
    rx = np.empty((m, n), np.float32)
    c32 = count.astype(np.float32)
    tile = prefetch_tile(m, prob.shape[2])

    def one(n0, n1):
        return _ratio_chunk(prob, plan, c32, arrays, j_out, coef, n0, n1, tile, rx)

    done = _run(one, n, CHUNK)
    return rx, all(done)


def dominated(rx: np.ndarray) -> np.ndarray:
    """Fraction of each row's values z with z <= x, for every x of the row: float32 [B, N].

    Equal values count each other (a value's count is one past the end of its run of ties).
    """
    rx = np.ascontiguousarray(rx, np.float32)
    out = np.empty(rx.shape, np.float32)
    _run(lambda r0, r1: _rank_rows(rx, r0, r1, out), rx.shape[0], 8)
    return out
