"""RMIA, calibrated loss and global-threshold attacks against direct per-target computations."""

import numpy as np
import pytest

from jaxsam import attacks
from jaxsam.attacks import signals as S
from jaxsam.attacks._rmia import rmia_from_signal
from jaxsam.attacks.threshold import calibrated_loss_from_signal


@pytest.fixture
def probs():
    rng = np.random.default_rng(0)
    m, n, a = 6, 20, 2
    keep = np.argsort(rng.random((m, n)), 0) < 3
    p = rng.uniform(0.05, 0.95, size=(m, n, a)).astype(np.float32)
    return p, keep


def _rmia_naive(p, keep, t, online, a, gamma, pop):
    p = p.astype(np.float64)
    sh = np.arange(p.shape[0]) != t
    if online:
        ref = p[sh].mean(0)
    else:
        out = ~keep[sh]
        pout = (p[sh] * out[..., None]).sum(0) / out.sum(0)[:, None]
        ref = 0.5 * ((1 + a) * pout + (1 - a))
    ratio = (p[t] / ref).mean(-1)
    rz = ratio[pop]
    return (rz[None, :] <= ratio[:, None] / gamma).mean(1)


@pytest.mark.parametrize("online", [True, False])
def test_rmia_matches_naive(probs, online):
    p, keep = probs
    pop = np.array([0, 3, 5, 7, 11, 19])
    got = rmia_from_signal(p, keep, online=online, a=0.4, gamma=1.5, population=pop, chunk_size=4)
    for t in range(p.shape[0]):
        want = _rmia_naive(p, keep, t, online, 0.4, 1.5, pop)
        np.testing.assert_allclose(got[t], want, atol=1e-6)


def test_rmia_external_population(probs):
    p, keep = probs
    rng = np.random.default_rng(1)
    pz = rng.uniform(0.05, 0.95, size=(p.shape[0], 9, p.shape[2])).astype(np.float32)
    got = rmia_from_signal(p, keep, population_prob=pz)
    for t in range(p.shape[0]):
        sh = np.arange(p.shape[0]) != t
        rx = (p[t] / p[sh].mean(0)).mean(-1)
        rz = (pz[t] / pz[sh].mean(0)).mean(-1)
        np.testing.assert_allclose(got[t], (rz[None] <= rx[:, None]).mean(1), atol=1e-6)


def test_calibrated_loss_matches_naive(probs):
    loss, keep = probs
    got = calibrated_loss_from_signal(loss, keep, chunk_size=4)
    for t in range(loss.shape[0]):
        sh = np.arange(loss.shape[0]) != t
        out = ~keep[sh]
        ref = (loss[sh] * out[..., None]).sum(0) / out.sum(0)[:, None]
        np.testing.assert_allclose(got[t], (ref - loss[t]).mean(-1), rtol=1e-5, atol=1e-6)


def test_threshold_attacks_signs():
    rng = np.random.default_rng(2)
    logits = rng.normal(size=(3, 4, 2, 5)).astype(np.float32)
    y = rng.integers(0, 5, 4)
    np.testing.assert_allclose(attacks.loss_attack(logits, y), -S.loss(logits, y)[..., 0])
    # The confidence attack scores logit(p_y) (same ranking as p_y, never saturates): its
    # sigmoid is the mean confidence over the queries.
    sigmoid = lambda x: 1.0 / (1.0 + np.exp(-x.astype(np.float64)))
    np.testing.assert_allclose(
        sigmoid(attacks.confidence_attack(logits, y, query=None)),
        S.confidence(logits, y).mean(-1),
        rtol=1e-6,
    )
    np.testing.assert_allclose(
        attacks.confidence_attack(logits, y), S.logit_scaled_confidence(logits, y)[..., 0]
    )
    np.testing.assert_allclose(attacks.entropy_attack(logits, y), -S.entropy(logits, y)[..., 0])
    np.testing.assert_allclose(
        attacks.modified_entropy_attack(logits, y), -S.modified_entropy(logits, y)[..., 0]
    )
    keep = rng.random((3, 4)) < 0.5
    keep[:, 0] = [True, False, False]
    assert attacks.calibrated_loss_attack(logits, y, keep).shape == (3, 4)
    r = attacks.rmia(logits, y, keep)
    assert r.shape == (3, 4) and (r >= 0).all() and (r <= 1).all()


def test_rmia_model_sums_in_example_chunks(probs):
    from jaxsam.attacks._rmia import _model_sums

    p, keep = probs
    s_all, s_out, n_out = (np.asarray(x) for x in _model_sums(p, keep, chunk_examples=6))
    np.testing.assert_allclose(s_all, p.sum(0), rtol=1e-6)
    np.testing.assert_allclose(s_out, (p * ~keep[..., None]).sum(0), rtol=1e-6)
    np.testing.assert_array_equal(n_out, (~keep).sum(0))
