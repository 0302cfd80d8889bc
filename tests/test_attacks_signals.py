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


# ------------------------------------------------------------------ precision (issue: exact ranks)


def _exact(z, y, what):
    """50-digit reference of one signal for one logit row (decimal, no float rounding)."""
    import decimal

    with decimal.localcontext() as ctx:
        ctx.prec = 50
        zs = [decimal.Decimal(float(v)) for v in z]
        top = max(zs)
        e = [(v - top).exp() for v in zs]
        tot = sum(e)
        p = [v / tot for v in e]
        logp = [(v - top) - tot.ln() for v in zs]
        if what == "loss":
            return float(-logp[y])
        if what == "entropy":
            return float(-sum(pi * lp for pi, lp in zip(p, logp, strict=True)))
        if what == "modified_entropy":
            rest = sum(p[i] * (1 - p[i]).ln() for i in range(len(p)) if i != y)
            return float(-(1 - p[y]) * logp[y] - rest)
        raise ValueError(what)


def _exact_all(z, y, what):
    out = np.empty(z.shape[:-1])
    for idx in np.ndindex(*z.shape[:-1]):
        out[idx] = _exact(z[idx], int(y[idx[-2]]), what)
    return out


@pytest.mark.parametrize("scale", [1.0, 8.0, 30.0])
@pytest.mark.parametrize("what", ["modified_entropy", "loss", "entropy"])
def test_matches_exact_reference_to_1e6_relative(scale, what):
    rng = np.random.default_rng(3)
    z = (rng.normal(size=(2, 6, 2, 4)) * scale).astype(np.float32)
    y = rng.integers(0, 4, 6)
    z[0, :, 0, :] = 0.0  # also rows with ties
    z[0, 0, 0, y[0]] = 35.0  # confident and right (Mentr ~ 1e-30)
    z[1, 1, 1, (y[1] + 1) % 4] = 35.0  # confident and wrong
    want = _exact_all(z, y, what)
    got = getattr(S, what)(z, y)
    assert got.dtype == np.float32
    np.testing.assert_allclose(got, want, rtol=1e-6, atol=0)
    # The jax path (float32 arithmetic) uses the same log-space forms: close in relative terms.
    got_jax = np.asarray(getattr(S, what)(jnp.asarray(z), jnp.asarray(y)))
    np.testing.assert_allclose(got_jax, want, rtol=1e-5, atol=0)


def _two_class(zs):
    """Logits [1, Z, 1, 2] rows [z, 0] for each z; label 0 is the confident class."""
    z = np.zeros((1, len(zs), 1, 2), np.float32)
    z[0, :, 0, 0] = zs
    return z


ZS = np.arange(15.0, 40.5, 0.5)


@pytest.mark.parametrize("right", [True, False])
def test_threshold_scores_distinct_and_ordered_when_confident(right):
    """Logits [z, 0], z = 15 ... 40: every threshold score is strictly monotone in z.

    Label 0 (right): more confident = more member-like, so every score rises with z. Label 1
    (wrong): loss, confidence and modified entropy fall; entropy ignores the label and rises.
    In float32 p_y rounds to 1.0 and log_softmax rounds the loss to 0 over this whole range.
    """
    from jaxsam import attacks
    from jaxsam.scoring import score

    z = _two_class(ZS)
    y = np.zeros(len(ZS), int) if right else np.ones(len(ZS), int)
    rising = {
        "loss": right,
        "confidence": right,
        "entropy": True,
        "modified_entropy": right,
    }
    fns = {
        "loss": attacks.loss_attack,
        "confidence": attacks.confidence_attack,
        "entropy": attacks.entropy_attack,
        "modified_entropy": attacks.modified_entropy_attack,
    }
    z2 = np.concatenate([z, z])  # two models so that score() accepts the keep mask
    keep = np.zeros((2, len(ZS)), bool)
    keep[0, ::2] = True
    keep[1] = ~keep[0]
    via_score = score(z2, y, keep, attacks=list(fns), bootstrap=0).scores
    for name, fn in fns.items():
        for s in (fn(z2, y)[0], via_score[name][0]):
            d = np.diff(s.astype(np.float64))
            assert (d > 0).all() if rising[name] else (d < 0).all(), (name, s)
    # and the signals themselves hold their exact values
    for what in ("loss", "entropy", "modified_entropy"):
        np.testing.assert_allclose(
            getattr(S, what)(z, y), _exact_all(z, y, what), rtol=1e-6, atol=0, err_msg=what
        )
    np.testing.assert_allclose(S.logit_scaled_confidence(z, y)[0, :, 0], ZS if right else -ZS)
