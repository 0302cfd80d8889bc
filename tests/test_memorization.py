"""Memorization, influence and mechanism statistics against direct per-example loops."""

from __future__ import annotations

import numpy as np
import pytest

from jaxsam import memorization as memo
from jaxsam.errors import DataError


def _random_masks(rng: np.random.Generator, m: int, n: int, pkeep: float) -> np.ndarray:
    """Exact-count masks: every example IN in round(pkeep * M) models."""
    k = round(pkeep * m)
    order = np.argsort(rng.uniform(size=(m, n)), axis=0)
    return order < k


def _loop_gap(values: np.ndarray, keep: np.ndarray) -> np.ndarray:
    out = np.empty(keep.shape[1])
    for i in range(keep.shape[1]):
        ins = [values[m, i] for m in range(keep.shape[0]) if keep[m, i]]
        outs = [values[m, i] for m in range(keep.shape[0]) if not keep[m, i]]
        out[i] = np.mean(ins) - np.mean(outs) if ins and outs else np.nan
    return out


@pytest.mark.parametrize("pkeep", [0.5, 0.7])
def test_memorization_matches_loop(pkeep):
    rng = np.random.default_rng(0)
    keep = _random_masks(rng, 10, 37, pkeep)
    correct = rng.uniform(size=keep.shape) < 0.6
    got = np.asarray(memo.memorization(correct, keep))
    np.testing.assert_allclose(got, _loop_gap(correct.astype(float), keep), atol=1e-6)
    assert memo.count_undefined(keep) == 0


def test_memorization_undefined_examples_are_nan():
    rng = np.random.default_rng(1)
    keep = rng.uniform(size=(6, 12)) < 0.5
    keep[0], keep[1] = True, False  # every example has an IN and an OUT model ...
    keep[:, 3] = True  # never OUT
    keep[:, 7] = False  # ... except these two: never IN
    correct = rng.uniform(size=keep.shape) < 0.5
    got = np.asarray(memo.memorization(correct, keep))
    want = _loop_gap(correct.astype(float), keep)
    assert np.isnan(got[3]) and np.isnan(got[7])
    np.testing.assert_allclose(got, want, atol=1e-6)  # NaN positions must match too
    assert memo.count_undefined(keep) == 2
    assert set(np.flatnonzero(memo.undefined_mask(keep))) == {3, 7}


def test_planted_memorizer_scores_one():
    rng = np.random.default_rng(2)
    keep = _random_masks(rng, 16, 20, 0.5)
    # Typical examples: right 90% of the time regardless of membership.
    correct = rng.uniform(size=keep.shape) < 0.9
    planted = 5
    correct[:, planted] = keep[:, planted]  # right iff trained on
    mem = np.asarray(memo.memorization(correct, keep))
    assert mem[planted] == pytest.approx(1.0)
    others = np.delete(mem, planted)
    assert np.all(np.abs(others) < 0.6)
    assert np.argmax(mem) == planted


@pytest.mark.parametrize("block_size", [1, 4, 7, 100])
def test_influence_matches_loop(block_size):
    rng = np.random.default_rng(3)
    keep = _random_masks(rng, 9, 13, 0.7)
    keep[:, 0] = True  # an undefined row
    test_correct = rng.uniform(size=(9, 5)) < 0.5
    got = memo.influence(test_correct, keep, block_size=block_size)
    assert got.shape == (13, 5)
    want = np.empty((13, 5))
    for i in range(13):
        for j in range(5):
            ins = [test_correct[m, j] for m in range(9) if keep[m, i]]
            outs = [test_correct[m, j] for m in range(9) if not keep[m, i]]
            want[i, j] = np.mean(ins) - np.mean(outs) if ins and outs else np.nan
    np.testing.assert_allclose(got, want, atol=1e-6)
    assert np.all(np.isnan(got[0]))


def test_influence_self_is_memorization():
    rng = np.random.default_rng(4)
    keep = _random_masks(rng, 8, 11, 0.5)
    correct = rng.uniform(size=keep.shape) < 0.7
    infl = memo.influence(correct, keep, block_size=3)
    np.testing.assert_allclose(np.diag(infl), memo.memorization(correct, keep), atol=1e-6)


def test_out_variance_and_gap_match_loop():
    rng = np.random.default_rng(5)
    keep = _random_masks(rng, 12, 9, 0.5)
    keep[:, 2] = True
    keep[1:, 4] = True  # a single OUT model -> variance undefined
    keep[0, 4] = False
    signal = rng.normal(size=keep.shape) * 3.0 + 1.0
    var = np.asarray(memo.out_confidence_variance(signal, keep))
    gap = np.asarray(memo.in_out_gap(signal, keep))
    for i in range(9):
        outs = signal[~keep[:, i], i]
        if len(outs) >= 2:
            assert var[i] == pytest.approx(np.var(outs, ddof=1), rel=1e-5)
        else:
            assert np.isnan(var[i])
    np.testing.assert_allclose(gap, _loop_gap(signal, keep), rtol=1e-5, atol=1e-5)


def test_correct_from_logits():
    logits = np.zeros((2, 3, 2, 4), np.float32)
    logits[0, :, :, 1] = 1.0  # model 0 always predicts class 1
    logits[1, :, 0, 2] = 5.0  # model 1: query 0 says 2, query 1 says 3 (weaker)
    logits[1, :, 1, 3] = 1.0
    labels = np.array([1, 2, 3])
    np.testing.assert_array_equal(memo.correct_from_logits(logits, labels), [[1, 0, 0], [0, 1, 0]])
    np.testing.assert_array_equal(
        memo.correct_from_logits(logits, labels, query=1), [[1, 0, 0], [0, 0, 1]]
    )


def test_bad_shapes_raise_data_error():
    with pytest.raises(DataError, match="keep has shape"):
        memo.memorization(np.zeros((3, 4)), np.zeros((3, 5), bool))
    with pytest.raises(DataError, match="same M models"):
        memo.influence(np.zeros((2, 4)), np.zeros((3, 5), bool))
