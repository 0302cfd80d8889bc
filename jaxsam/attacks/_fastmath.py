"""Vectorisable float32 ``exp`` and ``log`` for numba kernels (optional; numba only).

Numba compiles ``math.exp`` and ``math.log`` to calls into the C library unless Intel's SVML is
installed, so a loop over them runs one value at a time (about 1.3 ns per exponential here).
These two functions are plain float32 arithmetic plus a bit reinterpretation (an LLVM
``bitcast``, exposed through ``numba.extending.intrinsic``), which LLVM turns into vector code
inside the caller's loop: about 0.2 ns per exponential on one core of the project's machine.

Both use the classic range reduction of the Cephes library's single-precision routines:

* :func:`exp_nonpositive` (``x <= 0``): ``x = k ln 2 + r`` with ``|r| <= ln(2) / 2`` (``ln 2``
  split in two constants so that ``k ln 2`` is exact), a degree-7 polynomial for ``exp(r)`` and
  ``2^k`` built in the exponent bits. Relative error about 1.2e-7 (two float32 ulps); inputs
  below -87.3 (where the result would be subnormal, < 1.2e-38) give exactly 0.
  :func:`exp_moderate` is the same for ``|x| <= 87`` without the range test.
* :func:`log_positive` (finite, normal ``x > 0``): ``x = 2^e m`` with ``m`` in
  ``[sqrt(1/2), sqrt(2))`` from the bits, and a degree-11 polynomial in ``m - 1``. Absolute
  error about 2.5e-7 for ``x`` in ``[1, 64]``.

Callers pass numba's ``fastmath`` flags :data:`FAST` (reassociation and contraction, so that
reductions vectorise) but never ``nnan``/``ninf``: NaN and infinity keep their IEEE meaning in
comparisons.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np

from jaxsam.attacks._kernels import numba

# fastmath flags for kernels built on these functions: reassociate (vector reductions) and
# contract (fused multiply-add); no flag that assumes finite values.
FAST = {"reassoc", "nsz", "contract"}

_F = np.float32
_LOG2E = _F(1.4426950408889634)
_LN2_HI = _F(0.693359375)  # ln 2 = _LN2_HI + _LN2_LO; k * _LN2_HI is exact for |k| < 2^9
_LN2_LO = _F(-2.12194440e-4)
_EXP_POLY = tuple(
    _F(v)
    for v in (1.9875691500e-4, 1.3981999507e-3, 8.3334519073e-3, 4.1665795894e-2)
    + (1.6666665459e-1, 5.0000001201e-1)
)
_LOG_POLY = tuple(
    _F(v)
    for v in (7.0376836292e-2, -1.1514610310e-1, 1.1676998740e-1, -1.2420140846e-1)
    + (1.4249322787e-1, -1.6668057665e-1, 2.0000714765e-1, -2.4999993993e-1, 3.3333331174e-1)
)
_SQRT_HALF = _F(0.70710678118654752)
_EXP_MIN = _F(-87.0)


def clear_stale_kernels(cache_dir: Path | None = None) -> bool:
    """Deletes numba's on-disk kernels in ``cache_dir`` (default: this package's
    ``__pycache__``) when the source of any kernel module changed since they were compiled.

    Kernels inline functions and read constants from other modules (these ``exp``/``log``,
    ``_kernels.TILE``), and numba keys a cached kernel on its own source file only: after a
    ``git pull`` that changes one of those modules alone, an editable install would keep
    loading kernels built from the old code. A stamp named by the digest of every kernel
    module (``_fastmath.py``, ``_*kernels.py``) marks the cache as current. Returns True when
    it deleted.
    """
    here = Path(__file__)
    cache = here.parent / "__pycache__" if cache_dir is None else Path(cache_dir)
    sources = [here, *sorted(here.parent.glob("_*kernels.py"))]
    digest = hashlib.sha256(b"".join(p.read_bytes() for p in sources)).hexdigest()[:16]
    stamp = cache / f"_fastmath.{digest}.stamp"
    try:
        if stamp.exists() or not cache.is_dir():
            return False
        for old in [*cache.glob("*.nbi"), *cache.glob("*.nbc"), *cache.glob("_fastmath.*.stamp")]:
            old.unlink(missing_ok=True)
        stamp.touch()
    except OSError:  # a read-only install: numba caches elsewhere (NUMBA_CACHE_DIR) or not at all
        return False
    return True


if numba is not None:
    clear_stale_kernels()

DistinctArrays = None  # njit(pipeline_class=None) is numba's default compiler

if numba is not None:
    try:
        from numba.core.compiler import Compiler as _Compiler
    except ImportError:  # pragma: no cover - a numba that moved it: the default compiler
        _Compiler = None

if numba is not None and _Compiler is not None:

    class DistinctArrays(_Compiler):
        """numba's default compiler (``njit(pipeline_class=DistinctArrays)``), telling LLVM
        that the kernel's array arguments do not overlap: its pointer arguments are marked
        ``noalias``, as numba marks the kernels of its own ``parallel`` loops once it has shown
        that their arrays are distinct.

        Without it LLVM must assume that a store through one array may change another array's
        values, so a short loop that writes one array while reading others either stays scalar
        or is vectorised behind run-time overlap checks that run at every entry: in the
        statistics sweep's loops of A = 18 values per (model, example) those checks cost about
        as much as the arithmetic. Use it only on kernels whose callers never pass one array
        (or two views of one buffer) twice where the kernel writes either of them. The flag is
        numba's own (``Flags.noalias``); a numba without it (or without this compiler class:
        then ``DistinctArrays`` is None, numba's default) compiles the kernel as before."""

        def define_pipelines(self):
            try:
                self.state.flags.noalias = True
            except Exception:  # pragma: no cover - a hint only
                pass
            return super().define_pipelines()


if numba is not None:
    from llvmlite import ir
    from numba import types
    from numba.extending import intrinsic

    @intrinsic
    def _bits_to_float(typingctx, x):
        """The float32 whose bits are the int32 ``x``."""

        def codegen(context, builder, signature, args):
            return builder.bitcast(args[0], ir.FloatType())

        return types.float32(types.int32), codegen

    @intrinsic
    def _float_to_bits(typingctx, x):
        """The int32 bits of the float32 ``x``."""

        def codegen(context, builder, signature, args):
            return builder.bitcast(args[0], ir.IntType(32))

        return types.int32(types.float32), codegen

    @intrinsic
    def wide_vectors(typingctx):
        """Marks the kernel that calls it (its LLVM function) to vectorise at up to 512 bits.

        LLVM's x86 targets prefer 256-bit vectors on CPUs where 512-bit instructions once cost
        clock speed (Skylake to Rocket Lake and Sapphire Rapids among them), so numba compiles
        AVX-512 machines to 256-bit code. Setting ``NUMBA_CPU_FEATURES`` would change that for
        every numba function of the user's process; the function attribute
        ``"prefer-vector-width"="512"`` changes it for this kernel alone (the exponentials and
        logarithms of the logit-scaled confidence run about a third faster on the project's
        AVX-512 machine). On a CPU without 512-bit vectors the attribute has no effect. It is a
        hint: if llvmlite ever refuses it, the kernel compiles without it."""

        def codegen(context, builder, signature, args):
            try:  # llvmlite's attribute set checks names against a list without string attributes
                set.add(builder.function.attributes, '"prefer-vector-width"="512"')
            except Exception:  # pragma: no cover - a hint only
                pass
            return context.get_dummy_value()

        return types.void(), codegen

    @intrinsic
    def prefetch(typingctx, arr, idx):
        """A hint to bring the cache line of ``arr.flat[idx]`` (a C-contiguous array; ``idx`` in
        range) into the level-2 cache; no effect on values. LLVM's ``llvm.prefetch`` (read,
        locality 2, data), named through llvmlite so that its pointer suffix matches the LLVM
        version."""

        def codegen(context, builder, signature, args):
            aryty = signature.args[0]
            ary = context.make_array(aryty)(context, builder, args[0])
            ptr = builder.gep(ary.data, [args[1]])
            i8p = ir.IntType(8).as_pointer()
            i32 = ir.IntType(32)
            fnty = ir.FunctionType(ir.VoidType(), [i8p, i32, i32, i32])
            fn = builder.module.declare_intrinsic("llvm.prefetch", [i8p], fnty)
            flags = [ir.Constant(i32, v) for v in (0, 2, 1)]  # read, keep in L2, data cache
            builder.call(fn, [builder.bitcast(ptr, i8p), *flags])
            return context.get_dummy_value()

        return types.void(arr, types.intp), codegen

    @numba.njit(inline="always")
    def prefetch_span(arr, lo, hi):
        """:func:`prefetch` of every cache line (64 bytes) of ``arr.flat[lo:hi]`` (flat indices
        of a C-contiguous array, ``0 <= lo <= hi <= arr.size``)."""
        step = max(1, 64 // arr.itemsize)
        for i in range(lo - lo % step, hi, step):
            prefetch(arr, i)

    @numba.njit(inline="always")
    def prefetch_rows(x, m, e0, e1):
        """:func:`prefetch_span` of the rows ``x[m, e0:e1, :]`` of a C-contiguous 3-D array
        (``0 <= e0 <= e1 <= x.shape[1]``)."""
        n_all, a_all = x.shape[1], x.shape[2]
        prefetch_span(x, (m * n_all + e0) * a_all, (m * n_all + e1) * a_all)

    @numba.njit(inline="always")
    def prefetch_row_ends(x, m, e):
        """:func:`prefetch` of the first and the last value of the row ``x[m, e, :]`` of a
        C-contiguous 3-D array: the row's (one or two) cache lines when it is at most 64 bytes
        long, in two hints and no loop (a loop measured slower in the score pass)."""
        j = (m * x.shape[1] + e) * x.shape[2]
        prefetch(x, j)
        prefetch(x, j + x.shape[2] - 1)

    _P0, _P1, _P2, _P3, _P4, _P5 = _EXP_POLY
    _L0, _L1, _L2, _L3, _L4, _L5, _L6, _L7, _L8 = _LOG_POLY

    @numba.njit(inline="always")
    def exp_reduced(r):
        """``exp(r)`` of a float32 ``|r| <= ln(2) / 2`` (the range-reduced argument): the
        polynomial of the functions below, compiled with its caller's flags where inlined."""
        r2 = r * r
        p = (((((_P0 * r + _P1) * r + _P2) * r + _P3) * r + _P4) * r + _P5) * r2
        return p + r + _F(1.0)

    @numba.njit(inline="always", fastmath=FAST)
    def exp_nonpositive(x):
        """``exp(x)`` of a float32 ``x <= 0``; 0 below -87 (and for NaN)."""
        k = np.int32(max(x, _EXP_MIN) * _LOG2E - _F(0.5))  # round to nearest: x <= 0
        kf = _F(k)
        r = (x - kf * _LN2_HI) - kf * _LN2_LO
        scale = _bits_to_float((k + np.int32(127)) << np.int32(23))
        return exp_reduced(r) * scale if x >= _EXP_MIN else _F(0.0)

    @numba.njit(inline="always", fastmath=FAST)
    def exp_moderate(x):
        """``exp(x)`` of a float32 ``|x| <= 87`` (no range checks: the caller keeps x there)."""
        k = np.int32(x * _LOG2E + _F(128.5)) - np.int32(128)  # round to nearest: x > -88
        kf = _F(k)
        r = (x - kf * _LN2_HI) - kf * _LN2_LO
        return exp_reduced(r) * _bits_to_float((k + np.int32(127)) << np.int32(23))

    @numba.njit(inline="always", fastmath=FAST)
    def log_positive(x):
        """``log(x)`` of a finite, normal float32 ``x > 0``."""
        bits = _float_to_bits(x)
        e = (bits >> np.int32(23)) - np.int32(126)
        m = _bits_to_float((bits & np.int32(0x007FFFFF)) | np.int32(0x3F000000))  # [1/2, 1)
        low = m < _SQRT_HALF
        ef = _F(e) - (_F(1.0) if low else _F(0.0))
        m = (m + m if low else m) - _F(1.0)
        m2 = m * m
        p = _L0 * m + _L1
        for c in (_L2, _L3, _L4, _L5, _L6, _L7, _L8):
            p = p * m + c
        y = p * m * m2 + ef * _LN2_LO - _F(0.5) * m2
        return m + y + ef * _LN2_HI
