"""RMIA's compiled pool-population pass (:mod:`jaxsam.attacks._rmia_kernels`) against the JAX
tile pass (the ratios to the bit, the ranks exactly) and the naive float64 oracle."""

from __future__ import annotations

import numpy as np
import pytest

from jaxsam.attacks import _reference, _rmia, naive, rmia_from_signal
from jaxsam.attacks import _rmia_kernels as rk
from jaxsam.errors import DataError

pytestmark = pytest.mark.skipif(not rk.available(), reason="numba is not installed")


def _exact(rng, m, n, k=None):
    k = m // 2 if k is None else k
    return np.argsort(rng.random((m, n)), axis=0) < k


def _design(name):
    rng = np.random.default_rng(11)
    if name == "exact":
        return _exact(rng, 12, 150)
    if name == "exact_k4":  # 4-of-10: IN and OUT groups of unequal sizes
        return _exact(rng, 10, 120, 4)
    if name == "bernoulli":
        keep = rng.random((16, 200)) < 0.4
        keep[:2], keep[2:4] = True, False  # every example has IN and OUT models
        return keep
    keep = _exact(rng, 12, 150)  # "dropped": two roots that are not complements, chains
    keep[3] = False
    keep[7, :40] = True
    return keep


def _prob(keep, a=3, decimals=None):
    rng = np.random.default_rng(12)
    z = rng.normal(size=(*keep.shape, a)) + 1.5 * keep[..., None]
    p = 1 / (1 + np.exp(-z))
    return (p if decimals is None else np.round(p, decimals)).astype(np.float32)


@pytest.mark.parametrize("design", ["exact", "exact_k4", "bernoulli", "dropped"])
@pytest.mark.parametrize("online", [True, False])
@pytest.mark.parametrize("equal_groups", ["auto", True, False])
def test_ratios_match_the_jax_pass_and_the_oracle(design, online, equal_groups, numpy_path):
    keep = _design(design)
    prob = _prob(keep)
    rule = _reference.resolve(equal_groups, keep)
    sets = {g: rule.sets(keep, g) for g in (("in", "out") if online else ("out",))}
    if not online and (sets["out"].sizes() == 0).any():
        pytest.skip("a target without OUT shadows takes the chunked path")
    got, finite = rk.ratios(prob, sets, online, 0.4)
    assert finite
    with numpy_path():
        sums = _rmia._float32_sums(prob, sets)
        want = _rmia._streamed_ratios(prob, sums, sets, online, 0.4, None)
    if online:
        np.testing.assert_array_equal(got, want)
    else:  # XLA fuses (1 + a) mean + (1 - a) into one multiply-add only when it optimises
        np.testing.assert_allclose(got, want, rtol=4e-7, atol=0)  # (the tests run it at -O0)
    for t in (0, 5, keep.shape[0] - 1):
        oracle = naive.rmia_ratio_one_target(prob, keep, t, online=online, cut=rule.cut, a=0.4)
        np.testing.assert_allclose(got[t], oracle, rtol=3e-6)


@pytest.mark.parametrize("design", ["exact", "bernoulli", "dropped"])
@pytest.mark.parametrize("gamma", [1.0, 1.5])
def test_rmia_scores_match_the_jax_path_with_ties(design, gamma, numpy_path):
    keep = _design(design)
    prob = _prob(keep, a=2, decimals=2)  # many equal probabilities: ties in the ratios
    got = rmia_from_signal(prob, keep, gamma=gamma)
    with numpy_path():
        want = rmia_from_signal(prob, keep, gamma=gamma)
    np.testing.assert_array_equal(got, want)
    cut = _reference.resolve("auto", keep).cut
    for t in (1, 6):
        oracle = naive.rmia_general_one_target(prob, keep, t, cut=cut, gamma=gamma)
        np.testing.assert_allclose(got[t], oracle, atol=1e-6)
    strided = np.asfortranarray(prob)  # not C-contiguous: copied, same numbers
    np.testing.assert_array_equal(rmia_from_signal(strided, keep, gamma=gamma), got)


def test_dominated_matches_numpy_and_brute_force():
    rng = np.random.default_rng(5)
    rx = rng.random((9, 3000)).astype(np.float32)
    rx[:, :900] = np.round(rx[:, :900], 2)  # many ties
    rx[0, :10] = 0.0
    rx[0, 10:20] = -0.0  # ties with 0.0
    rx[1, :5] = -rng.random(5)
    rx[2] = 0.75  # one value: no radix pass
    rx[3] = np.float32(1.0) + np.arange(3000) % 7 * np.finfo(np.float32).eps  # one pass
    rx[4] = 10.0 ** rng.uniform(-30, 30, 3000)  # keys 2^31 apart: three passes
    rx[5, ::2] = -rx[4, ::2]
    rx[6] = np.float32(np.finfo(np.float32).max) * np.sign(rng.normal(size=3000))
    got = rk.dominated(rx)
    np.testing.assert_array_equal(got, _rmia._dominated_rows(rx, 1.0))
    brute = (rx[:, None, :] <= rx[:, :, None]).mean(axis=2).astype(np.float32)
    np.testing.assert_array_equal(got, brute)


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
@pytest.mark.parametrize("online", [True, False])
def test_the_compiled_pass_finds_values_that_are_not_finite(bad, online, numpy_path):
    keep = _design("dropped")  # roots that are not complements: a value may be in no root
    prob = _prob(keep)
    for m, n in ((3, 149), (0, 0), (7, 77)):  # model 3 is in no IN set
        p = prob.copy()
        p[m, n, 1] = bad
        with pytest.raises(DataError, match="NaN or infinite"):
            rmia_from_signal(p, keep, online=online)
        with numpy_path(), pytest.raises(DataError, match="NaN or infinite"):
            rmia_from_signal(p, keep, online=online)
