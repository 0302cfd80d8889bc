"""LLVM IR for LiRA's one-sided score blocks: 16 examples of one target as 16-lane vectors.

The one-sided score pass (:mod:`jaxsam.attacks._lira_kernels`) works on blocks of 16 examples
of one target: the block's 16 A z values in a row (example by example, query by query), their
``-log P`` in one vectorised loop, then each example's sum over its A queries. Two steps of it
loop over examples with A = 18 (1 or 2) values each, which LLVM cannot vectorise well (a
16-lane vector and a remainder per example, with the example's look-ups and index arithmetic
between): here they are written as explicit 16-lane vector code instead, for a literal A.

* :func:`z_rows`: the block's z values as A vectors; lane i of vector j is value 16 j + i of
  the block, example (16 j + i) // A, so each vector's per-example factors and set choices are
  the 16 examples' ones spread over the lanes by a constant shuffle.
* :func:`block_folds`: per example the sum of one array's A values and the product of
  another's, by a transposing tree (16 row vectors folded pairwise: lane n ends up holding
  example n's result): the one-sided test's additive terms and the mantissas whose logarithm
  it takes once per example instead of once per value.

The IR is target independent (``shufflevector``, ``select`` and plain float operations, no
x86 intrinsic): LLVM lowers it to AVX-512 permutes and masks where the kernel is compiled with
512-bit vectors (:func:`jaxsam.attacks._fastmath.wide_vectors`), to two 256-bit halves on
AVX2, to NEON on ARM. z values are the same float32 operations as the scalar loop (the same
values to the bit).
"""

from __future__ import annotations

try:  # pragma: no cover - exercised where numba is installed
    from llvmlite import ir
    from numba import types
    from numba.extending import intrinsic
except ImportError:  # pragma: no cover
    intrinsic = None

# Examples per block: one per lane of a 512-bit float32 vector.
LANES = 16


def _arrays_ok(arrays, floats) -> bool:
    """Every one a C-contiguous numba array type, the ``floats`` ones of float32."""
    if any(not isinstance(t, types.Array) or t.layout != "C" for t in arrays):
        return False
    return all(t.dtype == types.float32 for t in floats)


def fold_patterns(lanes: int = LANES) -> list:
    """The shuffle patterns of :func:`_fold`'s transposing tree, level by level: for two
    vectors whose lanes hold blocks of 2g partial sums (one block per example, g halving from
    lanes / 2 to 1), the lanes to add (``low``, ``high``: indices into the pair's 2 x lanes
    lanes) so that the sum holds blocks of g, the first vector's examples before the second's.
    """
    out = []
    g = lanes // 2
    while g >= 1:
        low, high = [], []
        for src in (0, lanes):
            for base in range(0, lanes, 2 * g):
                low += [src + base + j for j in range(g)]
                high += [src + base + g + j for j in range(g)]
        out.append((low, high))
        g //= 2
    return out


if intrinsic is not None:

    @intrinsic(prefer_literal=True)
    def z_rows(typingctx, x, xo, hi, lo, h0, h1, fac, f0, f1, pick, inside, po, z, queries):
        """``_lira_kernels._z_block`` of one full block (LANES = 16 examples) where each
        example's set is one of two (s0 or s1, picked 0 or 1), as A vectors of 16 lanes and
        no per-example index arithmetic: lane i of vector j is value 16 j + i of the block,
        example (16 j + i) // A, so each vector's factors and set choices are the block's 16
        per-example ones permuted by a constant pattern (one shuffle), and its means a
        lane-wise select of the two sets' contiguous rows. The same float32 operations as the
        scalar loop: the same values to the bit.

        Flat indices into C-contiguous arrays: ``xo`` of x[m, b0, 0]; ``h0``, ``h1`` of
        hi[s0, b0, 0] and hi[s1, b0, 0] (lo alike); ``f0``, ``f1`` of fac[s0, b0] and
        fac[s1, b0]; ``po`` of pick[m, b0] and inside[m, b0]. ``queries``: A, a literal
        (the shuffle patterns are constants). Writes z[:16 A]."""
        if not isinstance(queries, types.IntegerLiteral):
            return None
        a_all = queries.literal_value
        if not _arrays_ok((x, hi, lo, fac, pick, inside, z), (x, hi, lo, fac, z)):
            return None
        lanes = LANES

        def codegen(context, builder, sig, args):
            def data(k):
                return context.make_array(sig.args[k])(context, builder, args[k]).data

            px, phi, plo, pfac, ppick, pins, pz = (data(k) for k in (0, 2, 3, 6, 9, 10, 12))
            pxo, ph0, ph1, pf0, pf1, ppo = (args[k] for k in (1, 4, 5, 7, 8, 11))
            i32 = ir.IntType(32)
            vf = ir.VectorType(ir.FloatType(), lanes)
            vi = ir.VectorType(i32, lanes)

            def load(ptr, at, ty):
                p = builder.bitcast(builder.gep(ptr, [at]), ty.as_pointer())
                return builder.load(p, align=1)

            def nonzero(v):
                return builder.icmp_unsigned("!=", v, ir.Constant(v.type, None))

            chosen = nonzero(load(ppick, ppo, ir.VectorType(ppick.type.pointee, lanes)))
            own = nonzero(load(pins, ppo, ir.VectorType(pins.type.pointee, lanes)))
            f = builder.select(chosen, load(pfac, pf1, vf), load(pfac, pf0, vf))
            f = builder.select(own, f, ir.Constant(vf, [1.0] * lanes))  # _own_factor
            chosen = builder.zext(chosen, vi)
            for j in range(a_all):
                pattern = ir.Constant(vi, [(lanes * j + i) // a_all for i in range(lanes)])
                fj = builder.shuffle_vector(f, ir.Constant(vf, ir.Undefined), pattern)
                cj = nonzero(builder.shuffle_vector(chosen, ir.Constant(vi, ir.Undefined), pattern))
                off = ir.Constant(pxo.type, lanes * j)
                xj = load(px, builder.add(pxo, off), vf)
                h = builder.select(
                    cj, load(phi, builder.add(ph1, off), vf), load(phi, builder.add(ph0, off), vf)
                )
                lo_j = builder.select(
                    cj, load(plo, builder.add(ph1, off), vf), load(plo, builder.add(ph0, off), vf)
                )
                zj = builder.fmul(builder.fsub(builder.fsub(xj, h), lo_j), fj)
                builder.store(zj, builder.bitcast(builder.gep(pz, [off]), vf.as_pointer()), align=1)
            return context.get_dummy_value()

        sig = types.void(x, xo, hi, lo, h0, h1, fac, f0, f1, pick, inside, po, z, queries)
        return sig, codegen

    def _fold(builder, ptr, a_all, op, neutral):
        """One 16-lane vector whose lane n is ``op`` over the A values q[n A : (n + 1) A] of
        float32 ``ptr`` (example n of a block; op ``fadd`` or ``fmul``, ``neutral`` its
        identity). Each example's values are loaded as row vectors, 16 values at a time (a last
        partial chunk as the 16 values that end there, the lanes outside it set to neutral:
        no load leaves the block), combined chunk-wise, then the 16 row vectors are folded
        pairwise by :func:`fold_patterns` (4 levels of two shuffles and one op)."""
        i32, i64 = ir.IntType(32), ir.IntType(64)
        vf = ir.VectorType(ir.FloatType(), LANES)
        vi, vb = ir.VectorType(i32, LANES), ir.VectorType(ir.IntType(1), LANES)
        fill = ir.Constant(vf, [neutral] * LANES)

        def part(start, keep):  # ptr[start : start + 16], neutral where not keep(i)
            p = builder.bitcast(builder.gep(ptr, [ir.Constant(i64, start)]), vf.as_pointer())
            v = builder.load(p, align=1)
            mask = [keep(i) for i in range(LANES)]
            return v if all(mask) else builder.select(ir.Constant(vb, mask), v, fill)

        end = LANES * a_all
        if a_all == 1:
            return part(0, lambda i: True)
        rows = []
        for n in range(LANES):
            row = None
            for k in range(0, a_all, LANES):
                w, at = min(LANES, a_all - k), a_all * n + k
                if w == LANES:
                    v = part(at, lambda i: True)
                elif at + LANES <= end:  # the chunk's w values, then lanes past them
                    v = part(at, lambda i, w=w: i < w)
                else:  # the 16 values ending with the chunk's last: its w top lanes
                    v = part(at + w - LANES, lambda i, w=w: i >= LANES - w)
                row = v if row is None else op(row, v)
            rows.append(row)
        for low, high in fold_patterns():
            lo_i, hi_i = ir.Constant(vi, low), ir.Constant(vi, high)
            rows = [
                op(builder.shuffle_vector(a, b, lo_i), builder.shuffle_vector(a, b, hi_i))
                for a, b in zip(rows[0::2], rows[1::2], strict=True)
            ]
        return rows[0]

    @intrinsic(prefer_literal=True)
    def block_folds(typingctx, add, mant, sums, prods, at, queries):
        """sums[at + n] = the sum of add[n A : (n + 1) A] and prods[at + n] = the product of
        mant[n A : (n + 1) A] for the 16 examples n of a block (float32, in example order;
        ``queries``: A, a literal): :func:`_fold` of each, 2 x 48 vector operations for A = 18
        where 16 horizontal sums of the scalar loop took about 180."""
        arrays = (add, mant, sums, prods)
        if not isinstance(queries, types.IntegerLiteral) or not _arrays_ok(arrays, arrays):
            return None
        a_all = queries.literal_value

        def codegen(context, builder, sig, args):
            def data(k):
                return context.make_array(sig.args[k])(context, builder, args[k]).data

            vf = ir.VectorType(ir.FloatType(), LANES)
            for src, dst, op, neutral in ((0, 2, builder.fadd, 0.0), (1, 3, builder.fmul, 1.0)):
                folded = _fold(builder, data(src), a_all, op, neutral)
                ptr = builder.bitcast(builder.gep(data(dst), [args[4]]), vf.as_pointer())
                builder.store(folded, ptr, align=1)
            return context.get_dummy_value()

        return types.void(add, mant, sums, prods, at, queries), codegen
