"""Compiled kernels over the [M, N] membership masks (numba; optional): the reference-group
rule's cut sets, their sizes and the membership-dependence rows.

The kernels over the float32 signal live in :mod:`jaxsam.attacks._kernels` (which re-exports
these); both switch off together (:func:`jaxsam.attacks._kernels.available`).
"""

from __future__ import annotations

import numpy as np

from jaxsam.attacks import _pool

# Examples per chunk of the cut sets' sweeps: M x CHUNK bytes per mask (2 MiB at M = 256).
CHUNK = 8192

try:  # pragma: no cover - exercised where numba is installed
    import numba
    from numba import njit
except ImportError:  # pragma: no cover
    numba = None

if numba is not None:

    @njit(nogil=True, cache=True)
    def _column_counts(member):
        """int64 [N]: how many models of ``member`` [M, N] are set at each example."""
        out = np.zeros(member.shape[1], np.int32)
        for m in range(member.shape[0]):
            row = member[m].view(np.uint8)
            for n in range(out.size):  # int32 sums of bytes: the loop vectorises
                out[n] += np.int32(row[n])
        return out.astype(np.int64)

    # The cut sets' sweeps run over chunks of examples (columns of the [M, N] masks), one
    # chunk per thread: every quantity but t (a minimum over examples) and the offsets that
    # occur (a union) is per example. Rows are sliced once per model, not per value.

    @njit(nogil=True, cache=True)
    def _counts_smallest(member, n0, n1, counts):
        """counts[n0:n1] (models set at each example) and, per model m, the chunk's minimum
        of the group's size without m (int64 [M]; t is the minimum over the chunks)."""
        m_all = member.shape[0]
        w = n1 - n0
        c = np.zeros(w, np.int32)
        for m in range(m_all):
            row = member[m, n0:n1]
            for n in range(w):  # int32 sums of bytes: the loop vectorises
                c[n] += np.int32(row[n])
        best = np.empty(m_all, np.int64)
        for m in range(m_all):
            row = member[m, n0:n1]
            low = np.int32(1 << 30)
            for n in range(w):
                low = min(low, c[n] - np.int32(row[n]))
            best[m] = low
        for n in range(w):
            counts[n0 + n] = c[n]
        return best

    @njit(nogil=True, cache=True)
    def _prefix_lengths(member, t, n0, n1, inside, base):
        """inside[:, n0:n1] (model m is among the first t[m] + 1 of the group at n) and the
        shortest prefix length base[n0:n1] = min over m of t[m] + inside[m, n]."""
        m_all = member.shape[0]
        w = n1 - n0
        rank = np.zeros(w, np.int32)  # int32: twice the values per vector of int64
        low = np.full(w, np.int32(1 << 30))
        for m in range(m_all):
            row, ins = member[m, n0:n1], inside[m, n0:n1]
            tm = np.int32(t[m])
            for n in range(w):
                here = row[n] & (rank[n] <= tm)
                ins[n] = here
                low[n] = min(low[n], tm + np.int32(here))
                rank[n] += np.int32(row[n])
        for n in range(w):
            base[n0 + n] = low[n]

    @njit(nogil=True, cache=True)
    def _prefix_offsets(inside, t, base, n0, n1, off):
        """off[:, n0:n1] = t[m] + inside - base[n] (written in place); which values occur."""
        m_all = inside.shape[0]
        w = n1 - n0
        seen = np.zeros(m_all + 2, np.bool_)
        one = np.uint32(1)
        bs = base[n0:n1].astype(np.int32)  # int32 lanes: twice as many per vector as int64
        for m in range(m_all):
            ins, o = inside[m, n0:n1], off[m, n0:n1]
            tm = np.int32(t[m])
            bits, top = np.uint32(0), np.int32(0)
            for n in range(w):  # the offsets below 31 as bits: no store per value
                v = tm + np.int32(ins[n]) - bs[n]
                o[n] = v
                bits |= one << np.uint32(min(v, np.int32(31)))
                top = max(top, v)
            for v in range(min(31, seen.size)):
                seen[v] |= (bits >> np.uint32(v)) & one == one
            if top >= 31:  # rare: many distinct offsets
                for n in range(w):
                    seen[o[n]] = True
        return seen

    @njit(nogil=True, cache=True)
    def _prefix_masks(member, base, used, n0, n1, masks):
        """The candidate masks [J, M, n0:n1]: the first base[n] + used[j] models of the group."""
        m_all = member.shape[0]
        w = n1 - n0
        rank = np.zeros(w, np.int32)  # models of the group before model m, per example
        b32 = base[n0:n1].astype(np.int32)
        for m in range(m_all):
            row = member[m, n0:n1]
            for j in range(used.size):
                mr = masks[j, m, n0:n1]
                u = np.int32(used[j])
                for n in range(w):
                    mr[n] = row[n] & (rank[n] < b32[n] + u)
            for n in range(w):
                rank[n] += np.int32(row[n])

    @njit(nogil=True, cache=True)
    def _exact_masks(member, t, n0, n1, masks, pick):
        """Exact k-of-M masks, examples n0:n1: masks[0] the group's first t models, masks[1]
        the group itself and pick the membership (its integer dtype), in one read of ``member``."""
        m_all = member.shape[0]
        w = n1 - n0
        rank = np.zeros(w, np.int32)  # models of the group before model m, per example
        first, whole = masks[0], masks[1]
        for m in range(m_all):
            row = member[m, n0:n1]
            fr, wr, pr = first[m, n0:n1], whole[m, n0:n1], pick[m, n0:n1]
            for n in range(w):
                fr[n] = row[n] & (rank[n] < t)
                wr[n] = row[n]
                pr[n] = row[n]
                rank[n] += np.int32(row[n])

    @njit(nogil=True, cache=True)
    def _shadow_row(counts, pick, inside, m, row):
        """row[n] = counts[pick[m, n], n] - inside[m, n]: target m's shadows at every example
        (the candidate it picks, less itself; counts int32 [J, N]). One or two candidates
        select without a gather, so the loop vectorises."""
        c0 = counts[0]
        c1 = counts[min(1, counts.shape[0] - 1)]
        pk, ins = pick[m], inside[m]
        if counts.shape[0] == 1:  # pick is 0 everywhere: not read
            for n in range(row.size):
                row[n] = c0[n] - np.int32(ins[n])
        elif counts.shape[0] == 2:
            for n in range(row.size):
                row[n] = (c1[n] if pk[n] else c0[n]) - np.int32(ins[n])
        else:
            for n in range(row.size):
                row[n] = counts[pk[n], n] - np.int32(ins[n])

    @njit(nogil=True, cache=True)
    def _shadow_rows(counts, pick, inside, m0, m1, out):
        """out[m0:m1] = every target's shadows at every example (see :func:`_shadow_row`)."""
        row = np.empty(pick.shape[1], np.int32)
        for m in range(m0, m1):
            _shadow_row(counts, pick, inside, m, row)
            o = out[m]
            for n in range(row.size):
                o[n] = row[n]

    @njit(nogil=True, cache=True)
    def _summary_rows(counts, pick, inside, m0, m1, out):
        """out[m0:m1] = per target the fewest, the most and the sum of its shadows over the
        examples (int64 [M, 3]), without writing the [M, N] sizes."""
        row = np.empty(pick.shape[1], np.int32)
        for m in range(m0, m1):
            _shadow_row(counts, pick, inside, m, row)
            low = np.int32(1 << 30)
            high = np.int32(-1)
            total = np.int64(0)
            for n in range(row.size):
                v = row[n]
                low = min(low, v)
                high = max(high, v)
                total += np.int64(v)
            out[m, 0] = low
            out[m, 1] = high
            out[m, 2] = total

    @njit(nogil=True, cache=True)
    def _words_test(a, b, mode):
        """For bool arrays of one C-contiguous shape, compared 8 bytes at a time with an exit
        at the first block of 32 KiB that fails: mode 0, a == b; 1, a == ~b; 2, no value set
        in both."""
        av = a.reshape(-1).view(np.uint8)
        bv = b.reshape(-1).view(np.uint8)
        words = av.size // 8
        aw = av[: words * 8].view(np.uint64)
        bw = bv[: words * 8].view(np.uint64)
        x = np.uint64(0x0101010101010101) if mode == 1 else np.uint64(0)
        for s0 in range(0, words, 4096):
            s1 = min(words, s0 + 4096)
            ab, bb = aw[s0:s1], bw[s0:s1]
            bad = np.uint64(0)
            if mode == 2:
                for i in range(s1 - s0):
                    bad |= ab[i] & bb[i]
            else:
                for i in range(s1 - s0):
                    bad |= ab[i] ^ bb[i] ^ x
            if bad:
                return False
        for i in range(words * 8, av.size):  # the last bytes of a size not a multiple of 8
            if mode == 2:
                if av[i] & bv[i]:
                    return False
            elif (av[i] ^ bv[i]) != np.uint8(mode):
                return False
        return True

    @njit(nogil=True, cache=True)
    def masks_equal(a, b, flip):
        """a == b (flip False) or a == ~b (flip True), 8 bytes at a time with an early exit."""
        return _words_test(a, b, 1 if flip else 0)

    @njit(nogil=True, cache=True)
    def masks_disjoint(a, b):
        """True when no value is set in both bool arrays, 8 bytes at a time with an early exit."""
        return _words_test(a, b, 2)

    @njit(nogil=True, cache=True)
    def one_less(parent, child, drop):
        """True when bool [M, N] ``child`` is a subset of ``parent``; drop[n] = the first model
        of the parent not in the child at example n (-1: none). Stops after the first model
        with a child example outside the parent."""
        drop[:] = -1
        for m in range(parent.shape[0]):
            p, c = parent[m].view(np.uint8), child[m].view(np.uint8)
            outside = np.uint8(0)
            for n in range(drop.size):  # no branch in the loop: it vectorises
                outside |= c[n] & ~p[n]
                drop[n] = np.int32(m) if p[n] > c[n] and drop[n] < 0 else drop[n]
            if outside:
                return False
        return True

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


def cut_sets(member: np.ndarray, chunk: int = CHUNK):
    """:func:`jaxsam.attacks._lira_groups.cut_to_smallest` of bool [M, N] ``member`` in a few
    compiled sweeps of the masks, each over chunks of ``chunk`` examples on both cores:
    ``(masks [J, M, N], pick [M, N], inside [M, N], sizes int64 [J, N], t int64 [M])``: the
    same sets in the same order, pick int16 below 32,768 models, each candidate's size per
    example, and each target's cut size (its number of shadows at every example)."""
    member = np.ascontiguousarray(member, np.bool_)
    m, n = member.shape
    counts = np.empty(n, np.int64)
    parts = _pool.run(lambda n0, n1: _counts_smallest(member, n0, n1, counts), n, chunk)
    t = np.min(parts, axis=0)
    exact = _exact_cut(member, counts, t, chunk)
    if exact is not None:
        return exact
    inside = np.empty((m, n), np.bool_)
    base = np.empty(n, np.int64)
    off = np.empty((m, n), small_int(m + 1))

    def lengths(n0, n1):
        _prefix_lengths(member, t, n0, n1, inside, base)
        return _prefix_offsets(inside, t, base, n0, n1, off)

    hist = np.any(_pool.run(lengths, n, chunk), axis=0)
    used = np.flatnonzero(hist).astype(np.int64)  # the offsets that occur, ascending
    if used[-1] == used.size - 1:
        pick = off  # offsets 0 .. J-1: the offset is the candidate
    else:
        lookup = np.zeros(hist.size, off.dtype)
        lookup[used] = np.arange(used.size)
        pick = lookup[off]
    masks = np.empty((used.size, m, n), np.bool_)
    _pool.run(lambda n0, n1: _prefix_masks(member, base, used, n0, n1, masks), n, chunk)
    # candidate j holds the first base[n] + used[j] models of the group (all of it, at most)
    sizes = np.minimum(counts[None, :], base[None, :] + used[:, None])
    return masks, pick, inside, sizes, t


def _exact_cut(member: np.ndarray, counts: np.ndarray, t: np.ndarray, chunk: int):
    """:func:`cut_sets` where the group has the same size c at every example (0 < c < M)
    and every model is in it somewhere (t = c - 1 for every target: exact k-of-M masks), else
    None. Then a target inside the group keeps the whole group less itself and a target outside
    it the group's first c - 1 models: the candidates are those first c - 1 models (offset 0)
    and the whole group (offset 1), the offset is the membership itself, and the sweep that
    finds the prefix lengths and offsets (a third of the cut sets' time) is not needed."""
    m, n = member.shape
    c = int(counts[0])
    if not (0 < c < m and (counts == c).all() and (t == c - 1).all()):
        return None
    masks = np.empty((2, m, n), np.bool_)
    pick = np.empty((m, n), small_int(m + 1))
    _pool.run(lambda n0, n1: _exact_masks(member, np.int32(c - 1), n0, n1, masks, pick), n, chunk)
    base = np.full(n, c - 1, np.int64)
    sizes = np.stack([base, base + 1])
    return masks, pick, member, sizes, t


# Targets per chunk of the sizes' sweeps over the [M, N] masks.
ROWS = 16


def shadow_sizes(counts: np.ndarray, pick: np.ndarray, inside: np.ndarray) -> np.ndarray:
    """Every target's number of shadows, [M, N] (int16 below 32,768 models): the size of the
    candidate it picks (``counts`` int64 [J, N], ``pick`` [M, N]) less itself (``inside``)."""
    m = pick.shape[0]
    out = np.empty(pick.shape, small_int(max(m, int(counts.max(initial=0)))))
    args = (np.ascontiguousarray(counts, np.int32), np.ascontiguousarray(pick))
    inside = np.ascontiguousarray(inside, np.bool_)
    _pool.run(lambda m0, m1: _shadow_rows(*args, inside, m0, m1, out), m, ROWS)
    return out


def size_summary(counts: np.ndarray, pick: np.ndarray, inside: np.ndarray) -> np.ndarray:
    """Per target the fewest, the most and the total of its shadows over the examples, int64
    [M, 3] (the sizes of :func:`shadow_sizes`, never written: one sweep of pick and inside)."""
    m = pick.shape[0]
    out = np.empty((m, 3), np.int64)
    args = (np.ascontiguousarray(counts, np.int32), np.ascontiguousarray(pick))
    inside = np.ascontiguousarray(inside, np.bool_)
    _pool.run(lambda m0, m1: _summary_rows(*args, inside, m0, m1, out), m, ROWS)
    return out


def dependence_rows(keep: np.ndarray) -> np.ndarray:
    """int64 [M, 4] per target: IN examples, OUT examples, and the sums of the examples'
    IN counts over its IN and over its OUT examples (one sweep of the masks)."""
    keep = np.ascontiguousarray(keep, np.bool_)
    return _dependence_rows(keep, _column_counts(keep))
