"""RMIA, calibrated loss and global-threshold attacks against direct per-target computations."""

import numpy as np
import pytest

from jaxsam import attacks
from jaxsam.attacks import naive
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


@pytest.mark.parametrize("online", [True, False])
@pytest.mark.parametrize("equal_groups", ["auto", True, False])
def test_rmia_matches_naive(probs, online, equal_groups):
    # Exact 3-of-6 masks: "auto" cuts, as True does.
    p, keep = probs
    pop = np.array([0, 3, 5, 7, 11, 19])
    got = rmia_from_signal(
        p,
        keep,
        online=online,
        a=0.4,
        gamma=1.5,
        population=pop,
        chunk_size=4,
        equal_groups=equal_groups,
    )
    cut = equal_groups is not False
    for t in range(p.shape[0]):
        want = naive.rmia_general_one_target(
            p, keep, t, online=online, cut=cut, a=0.4, gamma=1.5, population=pop
        )
        np.testing.assert_allclose(got[t], want, atol=1e-6)
    if online and not cut:  # leave-one-out online: the mean over all other models
        full = rmia_from_signal(p, keep, gamma=1.5, equal_groups=False)
        np.testing.assert_allclose(full[2], naive.rmia_one_target(p, 2, 1.5), atol=1e-6)


def test_rmia_external_population(probs):
    p, keep = probs
    rng = np.random.default_rng(1)
    pz = rng.uniform(0.05, 0.95, size=(p.shape[0], 9, p.shape[2])).astype(np.float32)
    got = rmia_from_signal(p, keep, population_prob=pz, equal_groups=False)
    for t in range(p.shape[0]):
        sh = np.arange(p.shape[0]) != t
        rx = (p[t] / p[sh].mean(0)).mean(-1)
        rz = (pz[t] / pz[sh].mean(0)).mean(-1)
        np.testing.assert_allclose(got[t], (rz[None] <= rx[:, None]).mean(1), atol=1e-6)


@pytest.mark.parametrize("equal_groups", ["auto", True, False])
def test_calibrated_loss_matches_naive(probs, equal_groups):
    loss, keep = probs
    got = calibrated_loss_from_signal(loss, keep, chunk_size=4, equal_groups=equal_groups)
    for t in range(loss.shape[0]):
        want = naive.calibrated_loss_one_target(loss, keep, t, cut=equal_groups is not False)
        np.testing.assert_allclose(got[t], want, rtol=1e-5, atol=1e-6)


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
    # The jax signal is a fused float32 pass, the attack's a float64 one rounded once.
    np.testing.assert_allclose(
        attacks.confidence_attack(logits, y),
        S.logit_scaled_confidence(logits, y)[..., 0],
        rtol=1e-6,
    )
    np.testing.assert_allclose(attacks.entropy_attack(logits, y), -S.entropy(logits, y)[..., 0])
    np.testing.assert_allclose(
        attacks.modified_entropy_attack(logits, y), -S.modified_entropy(logits, y)[..., 0]
    )
    keep = rng.random((3, 4)) < 0.5
    keep[:, 0] = [True, False, False]
    # Random masks with an example in every model: only the old fallbacks can score them.
    assert attacks.calibrated_loss_attack(logits, y, keep, equal_groups=False).shape == (3, 4)
    r = attacks.rmia(logits, y, keep, equal_groups=False)
    assert r.shape == (3, 4) and (r >= 0).all() and (r <= 1).all()


def test_candidate_sums_in_example_chunks(probs):
    from jaxsam.attacks._reference import candidate_sums

    p, keep = probs
    masks = np.stack([keep, ~keep, np.ones_like(keep)])
    count, sums = candidate_sums(p, masks, chunk_examples=6)
    np.testing.assert_array_equal(count, masks.sum(1))
    for j, mk in enumerate(masks):
        np.testing.assert_allclose(sums[j], (p * mk[..., None]).sum(0), rtol=1e-6)
