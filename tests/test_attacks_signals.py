"""Signals against their textbook formulas (float64 numpy references)."""

import jax.numpy as jnp
import numpy as np
import pytest

from jaxsam.attacks import signals as S


def _ref(z, y):
    z = z.astype(np.float64)
    p = np.exp(z - z.max(-1, keepdims=True))
    p /= p.sum(-1, keepdims=True)
    oh = np.eye(z.shape[-1], dtype=bool)[y][:, None, :]
    py = np.where(oh, p, 0).sum(-1)
    return p, py, oh


@pytest.fixture
def data():
    rng = np.random.default_rng(0)
    z = (rng.normal(size=(3, 7, 2, 5)) * 3).astype(np.float32)
    y = rng.integers(0, 5, 7)
    return z, y


def test_signals_match_formulas(data):
    z, y = data
    p, py, oh = _ref(z, y)
    np.testing.assert_allclose(S.confidence(z, y), py, rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(S.loss(z, y), -np.log(py), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(
        S.logit_scaled_confidence(z, y), np.log(py) - np.log(1 - py), rtol=1e-4, atol=1e-4
    )
    zy = np.where(oh, z, 0).sum(-1)
    np.testing.assert_allclose(S.hinge(z, y), zy - np.where(oh, -np.inf, z).max(-1), atol=1e-5)
    np.testing.assert_allclose(S.entropy(z, y), -(p * np.log(p)).sum(-1), rtol=1e-5, atol=1e-6)


def test_modified_entropy_formula(data):
    z, y = data
    p, py, oh = _ref(z, y)
    want = -(1 - py) * np.log(py) - np.where(oh, 0.0, p * np.log(1 - p)).sum(-1)
    got = S.modified_entropy(z, y)
    assert got.shape == (3, 7, 2) and got.dtype == np.float32
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-6)


def test_stable_for_confident_logits():
    z = np.zeros((1, 2, 1, 3), np.float32)
    z[0, 0, 0, 0] = 60.0  # p_y = 1 - 2e-26: naive log(1 - p) is -inf
    z[0, 1, 0, 1] = 60.0  # confidently wrong
    y = np.array([0, 0])
    lsc = S.logit_scaled_confidence(z, y)
    np.testing.assert_allclose(lsc[0, :, 0], [60 - np.log(2), -60.0], rtol=1e-5)
    for fn in S.SIGNALS.values():
        assert np.isfinite(fn(z, y)).all(), fn.__name__
    me = S.modified_entropy(z, y)
    assert me[0, 0, 0] < 1e-20 and me[0, 1, 0] > 50  # 0 when right, large when confidently wrong


def test_jax_in_jax_out_and_numpy_in_numpy_out(data):
    z, y = data
    assert isinstance(S.loss(z, y), np.ndarray)
    out = S.loss(jnp.asarray(z), jnp.asarray(y))
    assert not isinstance(out, np.ndarray) and out.shape == (3, 7, 2)


def test_chunked_equals_direct(data):
    z, y = data
    np.testing.assert_array_equal(
        S.compute_chunked(S.hinge, z.astype(np.float16), y, chunk_models=2),
        S.hinge(z.astype(np.float16).astype(np.float32), y),
    )
