"""The compiled logit-scaled confidence and its float32 exp/log, against float64 references."""

from __future__ import annotations

import numpy as np
import pytest

from jaxsam.attacks import _kernels, _signal_kernels, signals

pytestmark = pytest.mark.skipif(not _kernels.available(), reason="numba not installed")


def _exact_lsc(z, y):
    """float64 reference: z_y - logsumexp_{i != y} z_i, [..., N, A]."""
    z = np.asarray(z, np.float64)
    onehot = np.arange(z.shape[-1]) == np.asarray(y)[:, None, None]
    zy = np.where(onehot, z, 0.0).sum(-1)
    rest = np.where(onehot, -np.inf, z)
    m = rest.max(-1, keepdims=True)
    return zy - (m[..., 0] + np.log(np.exp(rest - m).sum(-1)))


def test_exp_and_log_match_float64_to_float32_rounding():
    import numba

    from jaxsam.attacks._fastmath import exp_nonpositive, log_positive

    @numba.njit
    def both(x, xs, e, lg):
        for i in range(x.size):
            e[i] = exp_nonpositive(x[i])
        for i in range(xs.size):
            lg[i] = log_positive(xs[i])

    x = np.concatenate([np.linspace(-87.0, 0.0, 200_001), [-0.0, -1e-30, -1e-8]]).astype(np.float32)
    xs = np.geomspace(1e-30, 1e30, 200_001).astype(np.float32)
    e, lg = np.empty_like(x), np.empty_like(xs)
    both(x, xs, e, lg)
    want = np.exp(x.astype(np.float64))
    assert np.max(np.abs(e - want) / want) < 2.5e-7
    got_log = lg.astype(np.float64)
    want_log = np.log(xs.astype(np.float64))
    assert np.max(np.abs(got_log - want_log) / np.maximum(np.abs(want_log), 1.0)) < 3e-7
    # exp_moderate: the same over |x| <= 87, positive arguments included
    from jaxsam.attacks._fastmath import exp_moderate

    @numba.njit
    def moderate(x, out):
        for i in range(x.size):
            out[i] = exp_moderate(x[i])

    xm = np.linspace(-87.0, 87.0, 200_001).astype(np.float32)
    em = np.empty_like(xm)
    moderate(xm, em)
    want_m = np.exp(xm.astype(np.float64))
    assert np.max(np.abs(em - want_m) / want_m) < 2.5e-7
    # below the float32 normal range the exponential is exactly 0 (and never NaN)
    tiny = np.array([-87.5, -100.0, -1e30, -np.inf], np.float32)
    out = np.empty_like(tiny)
    both(tiny, xs[:0], out, lg[:0])
    assert (out == 0.0).all()


@pytest.mark.parametrize("scale", [0.1, 1.0, 8.0, 40.0])
@pytest.mark.parametrize("shape", [(2, 37, 18, 10), (1, 5, 1, 2), (3, 101, 7, 33)])
def test_kernel_matches_float64_and_the_xla_pass(scale, shape):
    rng = np.random.default_rng(int(scale * 10) + shape[-1])
    z = (rng.normal(size=shape) * scale).astype(np.float32)
    y = rng.integers(0, shape[-1], shape[1])
    z[0, 0, 0, :] = 0.0  # all ties
    z[0, 1 % shape[1], 0, y[1 % shape[1]]] = 60.0  # confident and right
    got = _signal_kernels.logit_scaled_confidence(z, y)
    assert got is not None and got.dtype == np.float32 and got.shape == shape[:-1]
    want = _exact_lsc(z, y)
    # a few float32 ulps of the inputs or the result (a sum of up to C - 1 float32 terms)
    tol = 6e-7 * np.maximum(np.maximum(np.abs(z).max(-1), np.abs(want)), 1.0)
    assert np.all(np.abs(got - want) <= tol)
    import jax.numpy as jnp

    xla = np.asarray(signals._lsc_fused(jnp.asarray(z), jnp.asarray(y, jnp.int32)))
    assert np.all(np.abs(got - xla) <= 2 * tol)


def test_two_class_rows_are_exact():
    zs = np.arange(15.0, 40.5, 0.5, dtype=np.float32)
    z = np.zeros((1, zs.size, 1, 2), np.float32)
    z[0, :, 0, 0] = zs
    got = _signal_kernels.logit_scaled_confidence(z, np.zeros(zs.size, int))
    np.testing.assert_array_equal(got[0, :, 0], zs)
    got = _signal_kernels.logit_scaled_confidence(z, np.ones(zs.size, int))
    np.testing.assert_array_equal(got[0, :, 0], -zs)


def test_non_finite_logits_and_bad_labels_go_to_the_xla_pass():
    rng = np.random.default_rng(1)
    z = rng.normal(size=(2, 9, 3, 4)).astype(np.float32)
    y = rng.integers(0, 4, 9)
    for bad in (np.nan, np.inf, -np.inf):
        zb = z.copy()
        zb[1, 4, 2, (y[4] + 1) % 4] = bad
        assert _signal_kernels.logit_scaled_confidence(zb, y) is None
        import jax.numpy as jnp

        via = signals.compute_signals(["logit_scaled_confidence"], zb, y)
        xla = np.asarray(signals._lsc_fused(jnp.asarray(zb), jnp.asarray(y, jnp.int32)))
        np.testing.assert_array_equal(via["logit_scaled_confidence"], xla)
    assert _signal_kernels.logit_scaled_confidence(z, np.full(9, 4)) is None
    assert _signal_kernels.logit_scaled_confidence(z, np.full(9, -1)) is None


def test_compute_signals_uses_the_kernel_and_matches_without_numba(monkeypatch):
    rng = np.random.default_rng(2)
    z = (rng.normal(size=(3, 50, 5, 10)) * 4).astype(np.float16)  # widened block by block
    y = rng.integers(0, 10, 50)
    calls = []
    real = _signal_kernels.logit_scaled_confidence
    monkeypatch.setattr(
        _signal_kernels, "logit_scaled_confidence", lambda *a: calls.append(1) or real(*a)
    )
    fast = signals.compute_signals(["logit_scaled_confidence"], z, y)["logit_scaled_confidence"]
    assert calls
    monkeypatch.setenv("JAXSAM_NO_NUMBA", "1")
    slow = signals.compute_signals(["logit_scaled_confidence"], z, y)["logit_scaled_confidence"]
    assert len(calls) == 1
    want = _exact_lsc(z.astype(np.float32), y)
    tol = 6e-7 * np.maximum(np.maximum(np.abs(z.astype(np.float32)).max(-1), np.abs(want)), 1.0)
    assert np.all(np.abs(fast - want) <= tol) and np.all(np.abs(slow - want) <= tol)


def test_blocks_with_large_logits_take_the_shifted_form_beside_moderate_ones():
    rng = np.random.default_rng(4)
    z = (rng.normal(size=(2, 300, 18, 10)) * 3).astype(np.float32)
    y = rng.integers(0, 10, 300)
    z[0, 5, 3, :] += 150.0  # one block beyond +-80: shifted there, unshifted elsewhere
    z[1, 250, 0, (y[250] + 2) % 10] = -500.0
    got = _signal_kernels.logit_scaled_confidence(z, y)
    want = _exact_lsc(z, y)
    tol = 6e-7 * np.maximum(np.maximum(np.abs(z).max(-1), np.abs(want)), 1.0)
    assert np.all(np.abs(got - want) <= tol)
    np.testing.assert_allclose(got[0, 5, 3], want[0, 5, 3], rtol=1e-6)


def test_kernels_compiled_with_an_older_fastmath_are_cleared(tmp_path):
    from jaxsam.attacks import _fastmath

    for name in (
        "_signal_kernels._lsc_rows-1.py311.nbi",
        "_signal_kernels._lsc_rows-1.py311.1.nbc",
    ):
        (tmp_path / name).write_text("stale")
    (tmp_path / "_fastmath.0123456789abcdef.stamp").touch()  # an older _fastmath.py's stamp
    assert _fastmath.clear_stale_kernels(tmp_path)
    left = sorted(p.name for p in tmp_path.iterdir())
    assert (
        len(left) == 1
        and left[0].startswith("_fastmath.")
        and left[0] != ("_fastmath.0123456789abcdef.stamp")
    )
    (tmp_path / "_lira_kernels.x-1.py311.nbi").write_text("current")  # compiled after the stamp
    assert not _fastmath.clear_stale_kernels(tmp_path)
    assert (tmp_path / "_lira_kernels.x-1.py311.nbi").exists()


def test_compute_signals_writes_into_given_arrays_and_names_a_wrong_one():
    rng = np.random.default_rng(5)
    z = (rng.normal(size=(4, 23, 3, 10)) * 2).astype(np.float32)
    y = rng.integers(0, 10, 23)
    name = "logit_scaled_confidence"
    want = signals.compute_signals([name, "loss"], z, y)
    whole = np.full((6, 23, 3), np.nan, np.float32)  # a chunk of models at rows 1..4
    got = signals.compute_signals([name, "loss"], z, y, out={name: whole[1:5]})
    assert np.shares_memory(got[name], whole)
    np.testing.assert_array_equal(whole[1:5], want[name])
    assert np.isnan(whole[[0, 5]]).all()  # nothing written outside the slice
    np.testing.assert_array_equal(got["loss"], want["loss"])  # not in out: a new array
    bad = {
        "shape": np.empty((4, 23, 2), np.float32),
        "dtype": np.empty((4, 23, 3), np.float64),
        "read-only": np.empty((4, 23, 3), np.float32),
    }
    bad["read-only"].flags.writeable = False
    for why, dest in bad.items():
        with pytest.raises(ValueError, match="out\\['logit_scaled_confidence'\\]") as err:
            signals.compute_signals([name], z, y, out={name: dest})
        assert ("read-only" in str(err.value)) == (why == "read-only"), why


def test_distinct_arrays_marks_the_kernels_pointers_noalias_and_keeps_its_values():
    import numba

    from jaxsam.attacks import _fastmath

    def axpy(x, y, out):
        for i in range(x.size):
            out[i] = 2.0 * x[i] + y[i]

    plain = numba.njit(axpy)
    marked = numba.njit(axpy, pipeline_class=_fastmath.DistinctArrays)
    x, y = np.arange(37.0), np.linspace(-1.0, 1.0, 37)
    got, want = np.empty(37), np.empty(37)
    marked(x, y, got)
    plain(x, y, want)
    np.testing.assert_array_equal(got, want)
    sig = marked.signatures[0]
    ir_marked, ir_plain = marked.inspect_llvm(sig), plain.inspect_llvm(plain.signatures[0])
    # numba always marks its own return and exception pointers; only the marked kernel's
    # array data pointers carry it too
    assert ir_marked.count("noalias") > ir_plain.count("noalias")
