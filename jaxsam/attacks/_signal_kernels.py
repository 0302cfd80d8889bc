"""The logit-scaled confidence of float32 logits, compiled (numba; optional).

``lsc = z_y - log sum_{i != y} exp(z_i)``, in float32 like
:func:`jaxsam.attacks.signals._lsc_fused` and within a few float32 ulps of ``max |z|`` of it
(the exponential and logarithm are those of :mod:`jaxsam.attacks._fastmath`).

Why a kernel: the logits' class axis is the minor one (C = 10 float32 values per query), so a
pass over the class axis reads with a stride of C. XLA:CPU runs that pass at about 15 read
passes over the logits. This kernel works on blocks of a few hundred queries that stay in the
L1 cache, in one of two ways:

* **No shift** (every logit of the block within +-80, i.e. almost always): one vector pass
  takes ``exp`` of every logit as it lies in memory (``e^80`` summed over 64 classes is still
  finite, ``e^-80`` still a normal float32, so nothing overflows or loses relative precision),
  the label's entry is set aside, each query's C values are summed, and one vector pass takes
  the logarithms.
* **Shifted** by the largest non-label logit ``m`` (``z_y - m - log sum exp(z_i - m)``, the
  XLA pass's form) for a block with larger logits: the block is copied into a transposed buffer
  ``[C, rows]``, and every later loop runs over contiguous rows in vector code.

Two things keep the kernel near the arithmetic's own cost when the logits come from memory (a
chunk of models' logits is hundreds of MB, far beyond the caches): each block asks the lines of
the block :data:`AHEAD` blocks on into the level-2 cache (``_fastmath.prefetch``), since the
exponentials leave the hardware prefetcher too few outstanding reads (the kernel ran 2.5x
slower on such data than on cached data without it: 2.5 against 1.0 ns per logit per core).
The hints go out one example's lines at a time in the block's scalar loop over its labels, not
all 360 lines at the block's start, where they waited for free line-fill buffers (5-10 %
slower on N(0, 1) logits; the values are the same either way); and the kernel is compiled for
512-bit vectors where the CPU has them (``_fastmath.wide_vectors``: a third faster
exponentials on AVX-512). C = 10 gets its own inlined copy of the block, so that the class
sums unroll.

Rows whose logits are not all finite (NaN, +-inf) are not this kernel's to handle: it reports
them and the caller recomputes the block with the XLA pass, which keeps IEEE semantics there.
"""

from __future__ import annotations

import numpy as np

from jaxsam.attacks import _kernels
from jaxsam.attacks._kernels import numba

# Queries per transposed block: C x ROWS float32 (10 x 576 x 4 B = 23 KB) stays in L1.
ROWS = 576
# The block whose lines are asked into the level-2 cache while a block is computed: this many
# blocks ahead (1 to 12 measured within noise of each other; none: 2.5x slower).
AHEAD = 2
# Example rows per chunk handed to a thread.
CHUNK = 4096
# Blocks whose logits all lie in [-MODERATE, MODERATE] need no shift: exp(z) stays a normal
# float32 (e^-80 = 1.8e-35) and a sum of up to 64 of them stays finite (64 e^80 = 3.6e36).
MODERATE = np.float32(80.0)

if numba is not None:
    from jaxsam.attacks._fastmath import (
        FAST,
        exp_moderate,
        exp_nonpositive,
        log_positive,
        prefetch_span,
        wide_vectors,
    )

    @numba.njit(nogil=True, fastmath=FAST, boundscheck=False, inline="always")
    def _block_moderate(flat, y, a_all, c_all, ex, zy, sums, res, whole, ahead):  # pragma: no cover
        """One block without a shift (every |logit| <= MODERATE): res = z_y - log(sum of
        exp(z_i), i != y). flat [rows * C] of ``len(y)`` examples; ex, zy, sums scratch. False
        (res not written) if some logit is outside the range or not finite. Inlined with a
        constant ``c_all`` where the caller passes one, so that the class sums unroll. The
        logits ``whole.flat[ahead:]`` of as many examples (a later block) are asked into L2 one
        example's lines at a time, in the scalar loop over the block's labels."""
        rows = y.size * a_all
        bad = np.int32(0)
        for i in range(rows * c_all):  # one vector pass: exponentials and the range check
            v = flat[i]
            bad += np.int32(0) if abs(v) <= MODERATE else np.int32(1)  # NaN is not <=
            ex[i] = exp_moderate(v)
        if bad:
            return False
        per = a_all * c_all
        for e in range(y.size):  # the label's entry: kept aside, then out of the sum
            at = y[e]
            lo = min(ahead + e * per, whole.size)
            prefetch_span(whole, lo, min(lo + per, whole.size))
            for q in range(a_all):
                j = (e * a_all + q) * c_all + at
                zy[e * a_all + q] = flat[j]
                ex[j] = np.float32(0.0)
        for r in range(rows):  # indices, not row views (a view costs more than C additions)
            acc = np.float32(0.0)
            for c in range(c_all):
                acc += ex[r * c_all + c]
            sums[r] = acc
        for r in range(rows):
            res[r] = zy[r] - log_positive(sums[r])
        return True

    @numba.njit(nogil=True, fastmath=FAST, boundscheck=False, inline="always")
    def _block_shifted(flat, y, a_all, c_all, tr, zy, top, res):  # pragma: no cover - compiled
        """One block shifted by the largest non-label logit, through a transposed copy ``tr``
        [C, rows] (any finite logits). Returns 0 for finite logits, NaN otherwise."""
        rows = y.size * a_all
        nonfinite = np.float32(0.0)  # v * 0 is 0 for finite v, NaN for NaN and +-inf
        for i in range(rows * c_all):
            nonfinite += flat[i] * np.float32(0.0)
        block = flat.reshape((rows, c_all))
        for r in range(rows):
            for c in range(c_all):
                tr[c, r] = block[r, c]
        for e in range(y.size):  # the label's row: kept aside, then out of the maximum and sum
            lab = tr[y[e], e * a_all : (e + 1) * a_all]
            keep = zy[e * a_all : (e + 1) * a_all]
            for q in range(a_all):
                keep[q] = lab[q]
                lab[q] = -np.inf
        first = tr[0]
        for r in range(rows):
            top[r] = first[r]
        for c in range(1, c_all):
            col = tr[c]
            for r in range(rows):
                top[r] = max(top[r], col[r])
        for r in range(rows):
            res[r] = np.float32(0.0)
        for c in range(c_all):
            col = tr[c]
            for r in range(rows):
                res[r] += exp_nonpositive(col[r] - top[r])
        for r in range(rows):
            res[r] = zy[r] - (top[r] + log_positive(res[r]))
        return nonfinite

    @numba.njit(nogil=True, fastmath=FAST, boundscheck=False, cache=True)
    def _lsc_rows(z, y, out):  # pragma: no cover - compiled
        """out[e, a] = lsc of z[e, a, :] with label y[e]; z [E, A, C] float32 C-contiguous,
        y [E] int32, out [E, A] float32. Returns False if any logit is not finite."""
        wide_vectors()
        e_all, a_all, c_all = z.shape
        per = max(1, ROWS // a_all)
        ex = np.empty(per * a_all * c_all, np.float32)
        tr = ex.reshape((c_all, per * a_all))
        zy = np.empty(per * a_all, np.float32)
        top = np.empty(per * a_all, np.float32)
        whole = z.reshape(z.size)
        nonfinite = np.float32(0.0)
        for e0 in range(0, e_all, per):
            ne = min(per, e_all - e0)
            ahead = (e0 + AHEAD * per) * a_all * c_all
            flat = z[e0 : e0 + ne].reshape(ne * a_all * c_all)
            res = out[e0 : e0 + ne].reshape(ne * a_all)
            yb = y[e0 : e0 + ne]
            if c_all == 10:  # the common case, with the class sums unrolled
                done = _block_moderate(flat, yb, a_all, 10, ex, zy, top, res, whole, ahead)
            else:
                done = _block_moderate(flat, yb, a_all, c_all, ex, zy, top, res, whole, ahead)
            if not done:
                nonfinite += _block_shifted(flat, yb, a_all, c_all, tr, zy, top, res)
        return nonfinite == 0.0


def available() -> bool:
    """True when the compiled kernels may run (see :func:`jaxsam.attacks._kernels.available`)."""
    return _kernels.available()


def logit_scaled_confidence(
    z: np.ndarray, y: np.ndarray, out: np.ndarray | None = None
) -> np.ndarray | None:
    """The logit-scaled confidence of finite float logits ``z`` [..., N, A, C] with labels ``y``
    [N]: float32 [..., N, A] (written into ``out`` when given: a C-contiguous float32 array of
    that shape), or None when some logit is not finite or some label is outside ``[0, C)`` (the
    caller then uses the XLA pass). Both cores take chunks of examples as they free up."""
    *lead, n, a, c = z.shape
    y = np.asarray(y)
    if y.size and (y.min() < 0 or y.max() >= c):
        return None
    rows = int(np.prod(lead, dtype=np.int64)) * n
    flat = np.ascontiguousarray(z, np.float32).reshape(rows, a, c)
    labels = np.tile(np.asarray(y, np.int32), rows // max(n, 1))
    if out is None:
        out = np.empty((*lead, n, a), np.float32)
    if out.shape != (*lead, n, a) or out.dtype != np.float32 or not out.flags.c_contiguous:
        raise ValueError(f"out must be C-contiguous float32 {(*lead, n, a)}, got {out.shape}")
    res = out.reshape(rows, a)

    def one(e0: int, e1: int) -> bool:
        return bool(_lsc_rows(flat[e0:e1], labels[e0:e1], res[e0:e1]))

    if not all(_kernels._run(one, rows, CHUNK)):
        return None
    return out
