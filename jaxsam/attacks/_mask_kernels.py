"""Compiled kernels over the [M, N] membership masks (numba; optional): the reference-group
rule's cut sets, their sizes and the membership-dependence rows.

The kernels over the float32 signal live in :mod:`jaxsam.attacks._kernels` (which re-exports
these); both switch off together (:func:`jaxsam.attacks._kernels.available`).
"""

from __future__ import annotations

import numpy as np

try:  # pragma: no cover - exercised where numba is installed
    import numba
    from numba import njit
except ImportError:  # pragma: no cover
    numba = None

if numba is not None:

    @njit(nogil=True, cache=True)
    def _smallest_others(member, counts):
        """t [M]: min over examples of the group's size without model m."""
        m_all, n_all = member.shape
        out = np.empty(m_all, np.int64)
        for m in range(m_all):
            best = np.int64(1) << 62
            row = member[m]
            for n in range(n_all):
                best = min(best, counts[n] - np.int64(row[n]))
            out[m] = best
        return out

    @njit(nogil=True, cache=True)
    def _prefix_lengths(member, t):
        """inside [M, N] (model m is among the first t[m] + 1 of the group at n) and the
        shortest prefix length base [N] = min over m of t[m] + inside[m, n]."""
        m_all, n_all = member.shape
        rank = np.zeros(n_all, np.int64)
        inside = np.empty((m_all, n_all), np.bool_)
        base = np.full(n_all, np.int64(1) << 62)
        for m in range(m_all):
            row, ins = member[m], inside[m]
            tm = t[m]
            for n in range(n_all):
                here = row[n] & (rank[n] <= tm)
                ins[n] = here
                base[n] = min(base[n], tm + np.int64(here))
                rank[n] += np.int64(row[n])
        return inside, base, rank

    @njit(nogil=True, cache=True)
    def _prefix_offsets(inside, t, base, off):
        """off [M, N] = t[m] + inside - base[n] (written in place); which values occur."""
        m_all, n_all = inside.shape
        seen = np.zeros(m_all + 2, np.bool_)
        one = np.uint64(1)
        for m in range(m_all):
            ins, o = inside[m], off[m]
            tm = t[m]
            bits, top = np.uint64(0), np.int64(0)
            for n in range(n_all):  # the offsets below 63 as bits: no store per value
                v = tm + np.int64(ins[n]) - base[n]
                o[n] = v
                bits |= one << np.uint64(min(v, 63))
                top = max(top, v)
            for v in range(min(63, seen.size)):
                seen[v] |= (bits >> np.uint64(v)) & one == one
            if top >= 63:  # rare: many distinct offsets
                for n in range(n_all):
                    seen[o[n]] = True
        return seen

    @njit(nogil=True, cache=True)
    def _prefix_masks(member, base, used):
        """The candidate masks [J, M, N]: the first base[n] + used[j] models of the group."""
        m_all, n_all = member.shape
        masks = np.empty((used.size, m_all, n_all), np.bool_)
        rank = np.zeros(n_all, np.int32)  # models of the group before model m, per example
        b32 = base.astype(np.int32)
        for m in range(m_all):
            row = member[m].view(np.uint8)
            for j in range(used.size):
                mr = masks[j, m].view(np.uint8)
                u = np.int32(used[j])
                for n in range(n_all):
                    mr[n] = row[n] & np.uint8(rank[n] < b32[n] + u)
            for n in range(n_all):
                rank[n] += np.int32(row[n])
        return masks

    @njit(nogil=True, cache=True)
    def _prefix_sizes(pick, inside, counts, base, used, sizes):
        """Every target's number of shadows [M, N] (written in place): its candidate's size,
        less itself."""
        m_all, n_all = pick.shape
        c32 = counts.astype(np.int32)
        b32 = base.astype(np.int32)
        contiguous = True
        for j in range(used.size):
            contiguous = contiguous and used[j] == j
        for m in range(m_all):
            pk, sz, ins = pick[m], sizes[m], inside[m].view(np.uint8)
            if contiguous:  # used[k] = k: no lookup
                for n in range(n_all):
                    sz[n] = min(c32[n], b32[n] + pk[n]) - np.int32(ins[n])
            else:
                for n in range(n_all):
                    sz[n] = min(c32[n], b32[n] + np.int32(used[pk[n]])) - np.int32(ins[n])

    @njit(nogil=True, cache=True)
    def _dependence_rows(keep, counts):
        """Per target: IN examples, OUT examples, sum of counts over IN and over OUT examples."""
        m_all, n_all = keep.shape
        out = np.zeros((m_all, 4), np.int64)
        for m in range(m_all):
            row = keep[m]
            n_in = 0
            s_in = 0
            s_all = 0
            for n in range(n_all):
                c = counts[n]
                s_all += c
                if row[n]:
                    n_in += 1
                    s_in += c
            out[m, 0] = n_in
            out[m, 1] = n_all - n_in
            out[m, 2] = s_in
            out[m, 3] = s_all - s_in
        return out


def small_int(m: int):
    """The narrowest signed integer dtype holding 0..m (int16 below 32,768 models)."""
    return np.int16 if m < 2**15 else np.int32


def cut_sets(member: np.ndarray):
    """:func:`jaxsam.attacks._lira_groups.cut_to_smallest` of bool [M, N] ``member`` in a few
    compiled sweeps of the masks: ``(masks [J, M, N], pick [M, N], inside [M, N], sizes
    [M, N])``, the same sets in the same order; pick and sizes int16 below 32,768 models."""
    member = np.ascontiguousarray(member, np.bool_)
    m, n = member.shape
    counts = member.sum(axis=0, dtype=np.int64)
    t = _smallest_others(member, counts)
    inside, base, _ = _prefix_lengths(member, t)
    off = np.empty((m, n), small_int(m + 1))
    hist = _prefix_offsets(inside, t, base, off)
    used = np.flatnonzero(hist).astype(np.int64)  # the offsets that occur, ascending
    if used[-1] == used.size - 1:
        pick = off  # offsets 0 .. J-1: the offset is the candidate
    else:
        lookup = np.zeros(hist.size, off.dtype)
        lookup[used] = np.arange(used.size)
        pick = lookup[off]
    masks = _prefix_masks(member, base, used)
    sizes = np.empty((m, n), small_int(m))
    _prefix_sizes(pick, inside, counts, base, used, sizes)
    return masks, pick, inside, sizes


def dependence_rows(keep: np.ndarray) -> np.ndarray:
    """int64 [M, 4] per target: IN examples, OUT examples, and the sums of the examples'
    IN counts over its IN and over its OUT examples (one sweep of the masks)."""
    keep = np.ascontiguousarray(keep, np.bool_)
    return _dependence_rows(keep, keep.sum(axis=0, dtype=np.int64))
