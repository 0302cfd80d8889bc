"""LiRA's score pass as a compiled kernel (numba; global pooled variance, mean location).

Target m's score at example n averages a per-query term over the A queries of
``z = (x - mean') `` in each group, where ``mean'`` is the target's shadows' mean (the picked
candidate set's mean, down-dated by the target's own value where it is in that set:
``x - mean' = (x - mean) c / (c - 1)``). Online the term is ``(z_OUT^2 / var_OUT - z_IN^2 /
var_IN) / 2``, offline ``-log P[Z > z_OUT / sd_OUT]`` (one-sided) or ``z_OUT^2 / (2 var_OUT)``
(density), plus a per-target constant (the log-variance terms). The variances are per target
and query constants, known before this pass.

The kernel computes exactly the float32 operations of the XLA score pass
(:func:`jaxsam.attacks._lira_stream._score_tile`): ``d = (x - hi) - lo`` with the candidate's
float64 mean kept as a float32 pair, the same factor ``c / max(c - 1, 1)``, the same products;
only the float32 sum over the A queries of each (target, example) is taken in another order.
The one-sided test's ``-log P[Z > t]`` uses no libm call (numba has no vector libm here): a
float32 half scaled complementary error function (``erfcx / 2``, :func:`_half_erfcx`: a
degree-12 polynomial in ``q = (u - 2) / (u + 2)`` times ``1 / (u + 2)``, the one reciprocal
both need, within 2.7e-7 relative of the float64 value for 0 <= u <= 1.4e18, and u clamped
there: beyond, -log P is t^2 / 2 to float32 precision anyway), the range reduction and
polynomial of :mod:`jaxsam.attacks._fastmath`'s ``exp`` (with k rounded by adding a shift,
:func:`_exp_neg`) and its ``log``, so the per-value loop vectorises (78 vector instructions per
16 values on AVX-512, every operation counted: one division, the 1/2 in the polynomial, so that
``log 2`` is the logarithm's own exponent term, ``a = t / sqrt 2`` never formed):

* t >= 0: ``-log P = t^2 / 2 - log(erfcx(t / sqrt 2) / 2)`` (no underflow for any finite t);
* t < 0: ``-log(1 - q)`` with ``q = exp(-t^2 / 2) erfcx(|t| / sqrt 2) / 2``, as
  ``-log(w)`` (``w = 1 - q`` rounded) corrected by the rounding error of w (exact for small q).

Every value is then within a few float32 ulps of the float64 value (at the level of the float32
rounding of the signal itself). The arithmetic helpers are compiled without fast-math (the
``hi``/``lo`` split and the ``log1p`` form rely on the exact order of operations), except that
the one-sided loop (:func:`_one_sided`) may contract a multiply and an add into one fused
multiply-add (one rounding instead of two, nothing reordered: a third faster, and within the
same 3e-7 of float64, which the tests check on that loop itself); only the sum over queries may
be reassociated, which lets it vectorise: the quadratic scores (online,
density) sum an exactly ordered per-value function (which LLVM inlines with its own flags) in
one reassociating loop per (target, example), :func:`_quadratic_chunk`; the one-sided score
writes a block's values first and sums them in :func:`_row_sums`. Each score is computed by
one thread, so the scores do not depend on the number of threads.

A block's z values come from a scalar loop per example (its candidate, its factor, then its A
values) and its sums over queries from a reassociated loop per example, except where A is one
of jaxsam's query counts (:data:`VECTOR_QUERIES`) and the block is full (16 examples):

* its z values, where each example picks one of at most two candidate sets (exact masks), are
  16-lane vector code (:mod:`jaxsam.attacks._block_kernels`) with the same float32 operations
  (the same values to the bit);
* the logarithm of the one-sided test is taken once per example instead of once per value:
  each value is split into ``b - log(m)`` with m in [1, 2) (:func:`_neg_log_sf_parts`: the
  logarithm's argument's exponent moved into b; small values, t < -0.994, as b alone from a
  polynomial of q, to keep their relative accuracy), the block's 16 sums of b and products
  of m are folded by vector code, and a score is ``c + (sum b - log prod m) / A`` (the
  per-value loop a quarter faster, scores within a few float32 ulps of the per-value
  function's: the product rounds 17 times, the per-value sum 17 times too).

At 256 x 50,000 x 18 the one-sided score pass took 0.19 s instead of 0.26.
"""

from __future__ import annotations

import numpy as np

from jaxsam.attacks import _block_kernels, _fastmath, _kernels

try:  # pragma: no cover - exercised where numba is installed
    from numba import njit
except ImportError:  # pragma: no cover
    njit = None

# Examples per block: the block's z values (BLOCK x A float32) stay in L1 between loops; one
# example per lane of the vector blocks (:mod:`jaxsam.attacks._block_kernels`).
BLOCK = _block_kernels.LANES
# Examples per chunk handed to a thread: the chunk's candidate means (hi and lo, 4 sets of
# 1024 x A float32 at most: 590 KB at A = 18) stay in L2 while every target sweeps them, and
# each target's row is read 72 KB at a time (256 examples, 18 KB at a time: the score pass
# ran a tenth slower from memory, 1024 to 2048 measured the same).
CHUNK = 1024
# The score pass reads each target's row in order and asks its values this many examples on.
AHEAD_EXAMPLES = 32
# Numbers of queries whose full blocks get the vector code of :mod:`jaxsam.attacks.
# _block_kernels`: jaxsam's own query augmentations; imported logits with another A take the
# scalar loops (the vector code is compiled for each literal A).
VECTOR_QUERIES = (1, 2, 18)

# Score kinds (the ``mode`` argument of the kernel).
ONLINE, ONE_SIDED, DENSITY = 0, 1, 2

_F = np.float32
# erfcx(a) (u + 2) / 2 (a = u / sqrt 2) as a polynomial in q = (u - 2) / (u + 2), highest power
# first: a Chebyshev least-squares fit of the float64 function over q in (-1, 1), reweighted
# toward the smallest largest relative error (7e-8), in monomial form. The factor (u + 2) is
# the denominator of q itself, so erfcx / 2 is the polynomial times the one reciprocal that q
# needs: one division per value. The shift 2 is a power of two: at u = 0, r = 1/2 and q = -1
# exactly (-log P[Z > 0] is log 2 to the float32 rounding).
_ERFCX = tuple(
    _F(c)
    for c in (
        5.88620287090e-06,
        -5.72739154450e-05,
        -1.61695264978e-04,
        1.12212139356e-04,
        8.43711721245e-04,
        8.41097964440e-04,
        -1.95191765670e-03,
        -6.74064783379e-03,
        -4.70327242510e-04,
        3.67202423513e-02,
        2.87974663079e-02,
        -3.31404507160e-01,
        6.72407984734e-01,
    )
)
# beyond u = 1.4e18: erfcx (u + 2) is sqrt(2 / pi) to float32 precision
_ERFCX_MAX = _F(1.4142135623730951e18)
_LOG2E = _F(1.4426950408889634)
# -log(1 - q) / q for 0 <= q <= 0.16 as a polynomial in q, highest power first (a Chebyshev
# least-squares fit reweighted toward the smallest largest relative error, 7e-9, in monomial
# form): the one-sided test's small values to a relative accuracy (:func:`_neg_log_sf_parts`).
_LOG1M = tuple(
    _F(c)
    for c in (2.47230885466e-01, 1.86177989556e-01, 2.51005658941e-01, 3.33303159501e-01)
    + (5.00000276022e-01, 9.99999999826e-01)
)
_LOG1M_MAX = _F(0.16)  # q = P[Z > |t|] below it: t < -0.994
_EXP_SHIFT = _F(1.5 * 2**23 + 127)  # adding it rounds to an integer, kept in the low bits
_EXP_LIMIT = _F(87.0)  # exp(-87) = 1.6e-38: below, 0


def available() -> bool:
    """True when the compiled kernels can run (see :func:`jaxsam.attacks._kernels.available`)."""
    return njit is not None and _kernels.available()


if njit is not None:

    @njit(cache=True, error_model="numpy", inline="always")
    def _half_erfcx(u):
        """erfcx(u / sqrt 2) / 2 = exp(u^2 / 2) erfc(u / sqrt 2) / 2 for float32 u >= 0: the
        polynomial :data:`_ERFCX` in q = (u - 2) r times r = 1 / (u + 2). q as ``(u - 2) *
        r``, not ``1 - 4 r`` (one operation fewer): r's rounding error then moves q by |q|
        instead of 1 + |q| of it."""
        u = min(u, _ERFCX_MAX)
        r = _F(1.0) / (u + _F(2.0))
        q = (u - _F(2.0)) * r
        c0, c1, c2, c3, c4, c5, c6, c7, c8, c9, c10, c11, c12 = _ERFCX
        p = ((((c0 * q + c1) * q + c2) * q + c3) * q + c4) * q + c5
        p = ((((p * q + c6) * q + c7) * q + c8) * q + c9) * q + c10
        p = (p * q + c11) * q + c12
        return p * r

    @njit(cache=True, error_model="numpy", inline="always")
    def _exp_neg(h):
        """exp(-h) of a float32 h >= 0 (0 beyond h = 87, and for NaN): the range reduction of
        :func:`jaxsam.attacks._fastmath.exp_nonpositive` with k rounded by adding
        :data:`_EXP_SHIFT` (whose low mantissa bits then hold k + 127: shifted into the
        exponent field they are the scale 2^k). Three operations where the float-to-integer
        conversions took six; the sum and the difference with the shift must not be
        reassociated, so this is compiled without ``reassoc`` (its callers here contract at
        most)."""
        y = h * -_LOG2E + _EXP_SHIFT
        kf = y - _EXP_SHIFT  # k, the integer nearest -h log2(e), exactly
        r = (-(kf * _fastmath._LN2_HI) - h) - kf * _fastmath._LN2_LO
        scale = _fastmath._bits_to_float(_fastmath._float_to_bits(y) << np.int32(23))
        return _fastmath.exp_reduced(r) * scale if h <= _EXP_LIMIT else _F(0.0)

    @njit(cache=True, error_model="numpy", inline="always")
    def _tail(t):
        """(h, e, q, w) of float32 t: h = t^2 / 2, e = erfcx(|t| / sqrt 2) / 2, q = P[Z > |t|]
        = exp(-h) e and w = 1 - q rounded (see the module docstring)."""
        u = abs(t)
        h = _F(0.5) * (u * u)
        e = _half_erfcx(u)
        q = _exp_neg(h) * e  # P[Z > |t|]
        return h, e, q, _F(1.0) - q

    @njit(cache=True, error_model="numpy", inline="always")
    def _neg_log_sf(t):
        """-log P[Z > t] for a standard normal Z, float32 (see the module docstring)."""
        h, e, q, w = _tail(t)
        lg = _fastmath.log_positive(e if t >= _F(0.0) else w)
        # -log(1 - q) = -log(w) - c / w with c = (1 - w) - q (exact: the rounding error of w,
        # |c| <= 2^-25); 1 / w = 2 - w to (1 - w)^2 <= 1/4 of a term below 6e-8: no division.
        low = (q - (_F(1.0) - w)) * (_F(2.0) - w) - lg
        return h - lg if t >= _F(0.0) else low

    @njit(cache=True, error_model="numpy", inline="always")
    def _neg_log_sf_parts(t):
        """(m, b): -log P[Z > t] = b - log(m), m in [1, 2): :func:`_neg_log_sf` without its
        logarithm, whose argument v (e, or w for t < 0: a normal float32 in (0, 1]) is split
        into 2^k m by its bits, k log 2 moved into b (with the hi/lo parts of log 2); the
        logarithm of the product of an example's m's is then taken once (:func:`_block_scores`).
        Where t < -0.994 (q < 0.16) the value is below 0.17 and wanted to a relative accuracy,
        which a product of m's near 2 cannot give: there b = q p(q) (:data:`_LOG1M`, within
        1.2e-7 relative of -log(1 - q) in float32) and m = 1."""
        h, e, q, w = _tail(t)
        pos = t >= _F(0.0)
        v = e if pos else w
        b = h if pos else (q - (_F(1.0) - w)) * (_F(2.0) - w)
        bits = _fastmath._float_to_bits(v)
        kf = _F((bits >> np.int32(23)) - np.int32(127))
        m = _fastmath._bits_to_float((bits & np.int32(0x007FFFFF)) | np.int32(0x3F800000))
        b = (b - kf * _fastmath._LN2_HI) - kf * _fastmath._LN2_LO
        c0, c1, c2, c3, c4, c5 = _LOG1M
        small = q * (((((c0 * q + c1) * q + c2) * q + c3) * q + c4) * q + c5)
        tiny = not pos and q < _LOG1M_MAX
        return (_F(1.0) if tiny else m), (small if tiny else b)

    @njit(cache=True, inline="always")
    def _own_factor(f, inside):
        """The location factor of a target: ``f`` (its set's c / (c - 1)) where it is inside
        the set, else 1. The caller loads ``f`` whatever ``inside`` is, so that this is a
        select, not a branch: ``inside`` is about as often true as not in no order, and a
        mispredicted branch per (target, example) cost a third of the z values' time."""
        return f if inside else _F(1.0)

    # The loops below index the arrays element by element: a slice (a view) would change the
    # reference count of the shared input arrays, an atomic operation that the two threads
    # contend for at every example.

    @njit(cache=True, fastmath={"reassoc"})
    def _row_sums(q, a_all, count, sums):
        """sums[n] = the sum of q[n * A : (n + 1) * A] for n < count (float32, in any order:
        the only reassociated sums, which lets them vectorise)."""
        for n in range(count):
            s = _F(0.0)
            for a in range(a_all):
                s += q[n * a_all + a]
            sums[n] = s

    @njit(cache=True)
    def _z_block(x, hi, lo, fac, sets, pick, inside, m, b0, b1, z):
        """z = (x - mean') for target m at examples b0..b1 (float32 [(b1 - b0) * A])."""
        n_all, a_all = x.shape[1], x.shape[2]
        for n in range(b1 - b0):
            e = b0 + n
            if e + AHEAD_EXAMPLES < n_all:  # a few examples on
                _fastmath.prefetch_row_ends(x, m, e + AHEAD_EXAMPLES)
            s = sets[pick[m, e]]
            f = _own_factor(fac[s, e], inside[m, e])
            for a in range(a_all):
                z[n * a_all + a] = ((x[m, e, a] - hi[s, e, a]) - lo[s, e, a]) * f

    @njit(inline="always")
    def _z_full_block(x, hi, lo, fac, sets, pick, inside, m, b0, z):
        """:func:`_z_block` of the full block at b0 where there are at most two sets: by
        ``_block_kernels.z_rows`` where A is in :data:`VECTOR_QUERIES` (the rows two blocks on
        asked from memory meanwhile), else by the scalar loop."""
        n_all, a_all = x.shape[1], x.shape[2]
        if a_all != 1 and a_all != 2 and a_all != 18:  # VECTOR_QUERIES
            _z_block(x, hi, lo, fac, sets, pick, inside, m, b0, b0 + BLOCK, z)
            return
        s0 = sets[0]
        s1 = sets[1] if sets.size > 1 else s0
        xo = (m * n_all + b0) * a_all
        if b0 + 3 * BLOCK <= n_all:
            _fastmath.prefetch_span(x, xo + 2 * BLOCK * a_all, xo + 3 * BLOCK * a_all)
        f0, f1 = s0 * n_all + b0, s1 * n_all + b0  # fac[s, b0]; hi[s, b0, 0] is A times that
        po = m * n_all + b0
        rows = _block_kernels.z_rows
        if a_all == 18:
            rows(x, xo, hi, lo, f0 * 18, f1 * 18, fac, f0, f1, pick, inside, po, z, 18)
        elif a_all == 2:
            rows(x, xo, hi, lo, f0 * 2, f1 * 2, fac, f0, f1, pick, inside, po, z, 2)
        else:  # A = 1
            rows(x, xo, hi, lo, f0, f1, fac, f0, f1, pick, inside, po, z, 1)

    @njit(inline="always")
    def _full_block_folds(add, mant, sums, prods, at, a_all):
        """``_block_kernels.block_folds`` into sums[at:] and prods[at:], for A in
        :data:`VECTOR_QUERIES` (the caller checks)."""
        if a_all == 18:
            _block_kernels.block_folds(add, mant, sums, prods, at, 18)
        elif a_all == 2:
            _block_kernels.block_folds(add, mant, sums, prods, at, 2)
        else:  # A = 1
            _block_kernels.block_folds(add, mant, sums, prods, at, 1)

    @njit(cache=True, error_model="numpy", fastmath={"contract"})
    def _one_sided(z, isd, size, out):
        """out = -log P[Z > z / sd] of a block's ``size`` values (isd: 1 / sd, tiled), in
        vectors of up to 512 bits (``_fastmath.wide_vectors``: a quarter faster on AVX-512,
        the same values: every operation is the same, only more lanes run at once)."""
        _fastmath.wide_vectors()
        for i in range(size):
            out[i] = _neg_log_sf(z[i] * isd[i])

    @njit(cache=True, error_model="numpy", fastmath={"contract"})
    def _one_sided_parts(z, isd, size, mant, add):
        """mant[i], add[i] = :func:`_neg_log_sf_parts` of z[i] / sd: the loop of
        :func:`_one_sided` without the logarithm (a third fewer vector operations)."""
        _fastmath.wide_vectors()
        for i in range(size):
            mant[i], add[i] = _neg_log_sf_parts(z[i] * isd[i])

    @njit(cache=True, error_model="numpy", pipeline_class=_fastmath.DistinctArrays)
    def _block_scores(sums, prods, out, m, e0, count, c, count_a):
        """out[m, e0 + n] = c + (sums[n] - log(prods[n])) / A for n < count: each example's
        -log P summed over its queries, from the sums of the additive parts and the products
        of the mantissas (in [1, 2^A): no overflow for A < 128); one vectorised loop over a
        target's full blocks in the chunk (its arrays distinct: no overlap checks)."""
        _fastmath.wide_vectors()
        for n in range(count):
            out[m, e0 + n] = c + (sums[n] - _fastmath.log_positive(prods[n])) / count_a

    # The quadratic scores (online, density) sum a per-query term over the A queries of each
    # (target, example) in one loop. The term is its own function, compiled without fast-math:
    # LLVM inlines it, and its instructions keep their exact float32 order; only the loop's
    # sum (:func:`_quadratic_chunk`, ``reassoc``) is reassociated, which lets it vectorise.

    @njit(cache=True)
    def _online_term(xa, ho, lo_o, fo, wo, hi_, lo_i, fi, wi):
        """z_OUT^2 / var_OUT - z_IN^2 / var_IN of one value (``z = ((x - hi) - lo) f``)."""
        zo = ((xa - ho) - lo_o) * fo
        zi = ((xa - hi_) - lo_i) * fi
        return zo * zo * wo - zi * zi * wi

    @njit(cache=True)
    def _density_term(xa, ho, lo_o, fo, wo):
        """z_OUT^2 / var_OUT of one value."""
        zo = ((xa - ho) - lo_o) * fo
        return zo * zo * wo

    @njit(cache=True)
    def _finish(c, half, total, count_a):
        """A score from its per-target constant and its sum over queries (exact order)."""
        return c + (half * total) / count_a

    @njit(cache=True, fastmath={"reassoc"}, inline="always")
    def _quadratic_rows(
        x, hi, lo, fac, g_in, g_out, w_in, w_out, const, online, n0, n1, out, a_all
    ):
        """The body of :func:`_quadratic_chunk`, with the number of queries ``a_all`` passed in:
        a constant where the caller inlines it with one."""
        m_all, n_all, _ = x.shape
        sets_o, pick_o, in_o = g_out
        sets_i, pick_i, in_i = g_in
        half = _F(0.5)
        count_a = _F(a_all)
        for m in range(m_all):
            c = const[m]
            for e in range(n0, n1):
                if e + AHEAD_EXAMPLES < n_all:  # a few examples on
                    _fastmath.prefetch_row_ends(x, m, e + AHEAD_EXAMPLES)
                so = sets_o[pick_o[m, e]]
                fo = _own_factor(fac[so, e], in_o[m, e])
                total = _F(0.0)
                if online:
                    si = sets_i[pick_i[m, e]]
                    fi = _own_factor(fac[si, e], in_i[m, e])
                    for a in range(a_all):
                        total += _online_term(
                            x[m, e, a], hi[so, e, a], lo[so, e, a], fo, w_out[m, a],
                            hi[si, e, a], lo[si, e, a], fi, w_in[m, a],
                        )  # fmt: skip
                else:
                    for a in range(a_all):
                        t = _density_term(x[m, e, a], hi[so, e, a], lo[so, e, a], fo, w_out[m, a])
                        total += t
                out[m, e] = _finish(c, half, total, count_a)

    @njit(nogil=True, cache=True, fastmath={"reassoc"})
    def _quadratic_chunk(x, hi, lo, fac, g_in, g_out, w_in, w_out, const, online, n0, n1, out):
        """Online or density scores out[m, n0:n1] of every target; every arithmetic operation
        but the sum over queries is in the exactly ordered helpers above. The published LiRA
        study's A = 18 queries get a copy of the loops with that constant trip count (LLVM's
        vector loop for an unknown count starts above 18 values and leaves them to its
        remainder loops: a quarter slower); any other A runs the generic copy."""
        a_all = x.shape[2]
        if a_all == 18:
            _quadratic_rows(
                x, hi, lo, fac, g_in, g_out, w_in, w_out, const, online, n0, n1, out, 18
            )  # fmt: skip
        else:
            _quadratic_rows(
                x, hi, lo, fac, g_in, g_out, w_in, w_out, const, online, n0, n1, out, a_all
            )  # fmt: skip

    @njit(nogil=True, cache=True, error_model="numpy")
    def _one_sided_chunk(x, hi, lo, fac, g_out, w_out, const, n0, n1, out):
        """One-sided offline scores out[m, n0:n1] of every target (out C-contiguous), a block at
        a time: the block's z values, their -log P (one vectorised loop), then the sums over
        queries and the scores (see the module docstring for the vector blocks)."""
        m_all, n_all, a_all = x.shape
        lb = BLOCK * a_all
        z = np.empty(lb, np.float32)
        isd = np.empty(lb, np.float32)
        q = np.empty(lb, np.float32)
        mant = np.empty(lb, np.float32)
        sums = np.empty(BLOCK, np.float32)
        ex_sums = np.empty(n1 - n0, np.float32)  # per example of the chunk's full blocks
        ex_prods = np.empty(n1 - n0, np.float32)
        count_a = _F(a_all)
        sets, pick, inside = g_out
        vector = a_all == 1 or a_all == 2 or a_all == 18  # VECTOR_QUERIES
        two = vector and sets.size <= 2  # each example's set one of two: the vector z values
        n_full = (n1 - n0) // BLOCK * BLOCK if vector else 0  # examples in full vector blocks
        _fastmath.wide_vectors()  # the vector blocks' 16 lanes as one 512-bit register
        for m in range(m_all):
            for i in range(lb):  # 1 / sd tiled over a block's examples
                isd[i] = w_out[m, i % a_all]
            for b0 in range(n0, n1, BLOCK):
                b1 = min(n1, b0 + BLOCK)
                full = b1 - b0 == BLOCK
                if two and full:
                    _z_full_block(x, hi, lo, fac, sets, pick, inside, m, b0, z)
                else:
                    _z_block(x, hi, lo, fac, sets, pick, inside, m, b0, b1, z)
                if vector and full:  # q: the additive parts; the scores after the blocks
                    _one_sided_parts(z, isd, lb, mant, q)
                    _full_block_folds(q, mant, ex_sums, ex_prods, b0 - n0, a_all)
                    continue
                _one_sided(z, isd, (b1 - b0) * a_all, q)
                _row_sums(q, a_all, b1 - b0, sums)
                for n in range(b1 - b0):
                    out[m, b0 + n] = const[m] + sums[n] / count_a
            if n_full > 0:
                _block_scores(ex_sums, ex_prods, out, m, n0, n_full, const[m], count_a)


if njit is not None:

    @njit(nogil=True, cache=True)
    def _split(x, hi, lo, i0, i1):
        """hi[i] = float32(x[i]), lo[i] = float32(x[i] - hi[i]) for i0 <= i < i1."""
        for i in range(i0, i1):
            h = np.float32(x[i])
            hi[i] = h
            lo[i] = np.float32(x[i] - np.float64(h))


def _mode(opts) -> int:
    if opts.online:
        return ONLINE
    return ONE_SIDED if opts.offline_test == "one_sided" else DENSITY


def split_float64(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """float64 ``x`` as two float32 arrays of its shape: ``hi`` (x rounded to float32) and
    ``lo`` (``x - hi`` rounded), as ``x.astype(float32)`` and ``(x - hi).astype(float32)``
    give them, in one compiled pass on both cores."""
    flat = np.ascontiguousarray(x, np.float64).reshape(-1)
    hi = np.empty(flat.size, np.float32)
    lo = np.empty(flat.size, np.float32)
    _kernels._run(lambda i0, i1: _split(flat, hi, lo, i0, i1), flat.size, 1 << 18)
    return hi.reshape(x.shape), lo.reshape(x.shape)


def score_pass(signal, mean, count, loc, weights, const, opts) -> np.ndarray:
    """Scores float32 [M, N], one compiled pass over the signal.

    Args:
      signal: float32 [M, N, A] (C-contiguous); mean: float64 [S, N, A] and count [S, N] of the
        distinct candidate sets; loc: per group ("in", "out"), ``(ShadowSets, idx)`` of its
        location family (idx: its candidates' rows in ``mean``); weights: per group float32
        [M, A], 1 / var (1 / sd for the one-sided test); const: float32 [M]; opts: the
        :class:`jaxsam.attacks._lira_options.LiraOptions`.
    """
    m, n, a = signal.shape
    hi, lo = split_float64(mean)
    c = np.asarray(count, np.float32)
    fac = c / np.maximum(c - _F(1.0), _F(1.0))  # float32, as the XLA pass computes it
    groups = {}
    for g, (sets, idx) in loc.items():
        pick = np.ascontiguousarray(sets.pick)
        groups[g] = (np.asarray(idx, np.int64), pick, np.ascontiguousarray(sets.inside))
    g_out = groups["out"]
    g_in = groups.get("in", g_out)
    w_out = np.ascontiguousarray(weights["out"], np.float32)
    w_in = np.ascontiguousarray(weights.get("in", weights["out"]), np.float32)
    const = np.ascontiguousarray(const, np.float32)
    out = np.empty((m, n), np.float32)
    mode = _mode(opts)

    def one(n0, n1):
        if mode == ONE_SIDED:
            _one_sided_chunk(signal, hi, lo, fac, g_out, w_out, const, n0, n1, out)
        else:
            on = mode == ONLINE
            _quadratic_chunk(signal, hi, lo, fac, g_in, g_out, w_in, w_out, const, on, n0, n1, out)

    _kernels._run(one, n, CHUNK)
    return out
