"""The logit-scaled confidence of float32 logits, compiled (numba; optional).

``lsc = z_y - m - log sum_{i != y} exp(z_i - m)`` with ``m`` the largest non-label logit: the
same stable float32 form as :func:`jaxsam.attacks.signals._lsc_fused`, within a few float32 ulps
of it (both round every term; the exponential and logarithm here are those of
:mod:`jaxsam.attacks._fastmath`).

Why a kernel: the logits' class axis is the minor one (C = 10 float32 values per query), so a
pass over the class axis reads with a stride of C. XLA:CPU runs that pass at about 15 read
passes over the logits; this kernel copies a block of a few hundred queries into a transposed
buffer ``[C, rows]`` that stays in the L1 cache, and every later loop then runs over contiguous
rows in vector code: a maximum, C exponentials, a logarithm.

Rows whose logits are not all finite (NaN, +-inf) are not this kernel's to handle: it reports
them and the caller recomputes the block with the XLA pass, which keeps IEEE semantics there.
"""

from __future__ import annotations

import numpy as np

from jaxsam.attacks import _kernels
from jaxsam.attacks._kernels import numba

# Queries per transposed block: C x ROWS float32 (10 x 576 x 4 B = 23 KB) stays in L1.
ROWS = 576
# Example rows per chunk handed to a thread.
CHUNK = 4096

if numba is not None:
    from jaxsam.attacks._fastmath import FAST, exp_nonpositive, log_positive

    @numba.njit(nogil=True, fastmath=FAST, boundscheck=False, cache=True)
    def _lsc_rows(z, y, out):  # pragma: no cover - compiled
        """out[e, a] = lsc of z[e, a, :] with label y[e]; z [E, A, C] float32 C-contiguous,
        y [E] int32, out [E, A] float32. Returns False if any logit is not finite."""
        e_all, a_all, c_all = z.shape
        per = max(1, ROWS // a_all)
        tr = np.empty((c_all, per * a_all), np.float32)
        top = np.empty(per * a_all, np.float32)
        zy = np.empty(per * a_all, np.float32)
        tot = np.empty(per * a_all, np.float32)
        nonfinite = np.float32(0.0)  # v * 0 is 0 for finite v, NaN for NaN and +-inf
        for e0 in range(0, e_all, per):
            ne = min(per, e_all - e0)
            rows = ne * a_all
            flat = z[e0 : e0 + ne].reshape(rows * c_all)
            for i in range(rows * c_all):
                nonfinite += flat[i] * np.float32(0.0)
            block = flat.reshape((rows, c_all))
            for r in range(rows):
                for c in range(c_all):
                    tr[c, r] = block[r, c]
            for e in range(ne):  # the label's row: kept aside, then out of the maximum and sum
                lab = tr[y[e0 + e], e * a_all : (e + 1) * a_all]
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
                tot[r] = np.float32(0.0)
            for c in range(c_all):
                col = tr[c]
                for r in range(rows):
                    tot[r] += exp_nonpositive(col[r] - top[r])
            res = out[e0 : e0 + ne].reshape(rows)
            for r in range(rows):
                res[r] = zy[r] - (top[r] + log_positive(tot[r]))
        return nonfinite == 0.0


def available() -> bool:
    """True when the compiled kernels may run (see :func:`jaxsam.attacks._kernels.available`)."""
    return _kernels.available()


def logit_scaled_confidence(z: np.ndarray, y: np.ndarray) -> np.ndarray | None:
    """The logit-scaled confidence of finite float logits ``z`` [..., N, A, C] with labels ``y``
    [N]: float32 [..., N, A], or None when some logit is not finite or some label is outside
    ``[0, C)`` (the caller then uses the XLA pass). Both cores take chunks of examples as they
    free up."""
    *lead, n, a, c = z.shape
    y = np.asarray(y)
    if y.size and (y.min() < 0 or y.max() >= c):
        return None
    rows = int(np.prod(lead, dtype=np.int64)) * n
    flat = np.ascontiguousarray(z, np.float32).reshape(rows, a, c)
    labels = np.tile(np.asarray(y, np.int32), rows // max(n, 1))
    out = np.empty((rows, a), np.float32)

    def one(e0: int, e1: int) -> bool:
        return bool(_lsc_rows(flat[e0:e1], labels[e0:e1], out[e0:e1]))

    if not all(_kernels._run(one, rows, CHUNK)):
        return None
    return out.reshape(*lead, n, a)
