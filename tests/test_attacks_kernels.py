"""The compiled (numba) scoring kernels against the NumPy/JAX paths and the naive oracles.

Every kernel has a pure NumPy/JAX counterpart that runs when numba is absent or
``JAXSAM_NO_NUMBA=1``; these tests hold the two to each other (exactly for integer and rank
outputs, to float64 rounding for statistics, to float32 rounding for scores) and to
:mod:`jaxsam.attacks.naive`.
"""

from __future__ import annotations

import numpy as np
import pytest

from jaxsam.attacks import (
    _kernels,
    _lira_groups,
    _lira_stats_kernels,
    _reference,
    lira_from_signal,
    naive,
    rmia_from_signal,
)
from jaxsam.errors import DataError

pytestmark = pytest.mark.skipif(not _kernels.available(), reason="numba is not installed")


def _exact(rng, m, n, k=None):
    k = m // 2 if k is None else k
    return np.argsort(rng.random((m, n)), axis=0) < k


def _designs(rng):
    exact = _exact(rng, 12, 150)
    dropped = _exact(rng, 12, 150)
    dropped[3] = False  # a model that trained on nothing: unequal cut sizes, gaps in offsets
    dropped[7, :40] = True
    return {
        "exact": exact,
        "bernoulli": rng.random((16, 200)) < 0.4,
        "dropped": dropped,
    }


def test_cut_sets_match_numpy(numpy_path):
    rng = np.random.default_rng(0)
    for name, keep in _designs(rng).items():
        for member in (keep, ~keep):
            got = _lira_groups.cut_to_smallest(member)
            with numpy_path():
                want = _lira_groups.cut_to_smallest(member)
                want_sizes = want.sizes()
            assert np.array_equal(got.masks, want.masks), name
            assert np.array_equal(got.pick, want.pick), name
            assert np.array_equal(got.inside, want.inside), name
            assert np.array_equal(got.sizes(), want_sizes), name
            # chunks of a few examples on two threads: the same sets (t and the offsets
            # that occur are combined over chunks)
            small = _kernels.cut_sets(member, chunk=7)
            both = (got.masks, got.pick, got.inside, got.candidate_counts(), got.sizes()[:, 0])
            for a, b in zip(small, both, strict=True):
                assert np.array_equal(a, b), name
            # the candidates' counts and the sizes are what the masks say: the candidate's size
            # less the target itself
            counts = got.masks.sum(axis=1)
            assert np.array_equal(got.candidate_counts(), counts), name
            direct = counts[got.pick, np.arange(member.shape[1])[None, :]] - got.inside
            assert np.array_equal(got.sizes(), direct), name
            # the per-target summary (fewest, most, total), without and with the sizes at hand
            want = np.stack([direct.min(1), direct.max(1), direct.sum(1)], axis=1)
            fresh_sets = _lira_groups.ShadowSets(*_kernels.cut_sets(member)[:4])
            np.testing.assert_array_equal(fresh_sets.size_summary(), want)
            assert "sizes" not in fresh_sets._memo  # the summary never wrote the sizes
            np.testing.assert_array_equal(got.size_summary(), want)
            # cut sets: every target has the same number of shadows at every example
            np.testing.assert_array_equal(_lira_groups.cut_to_smallest(member).size_summary(), want)


def test_cut_sets_of_exact_masks_skip_the_offsets_sweep(monkeypatch):
    from jaxsam.attacks import _mask_kernels

    rng = np.random.default_rng(3)
    designs = _designs(rng)
    exact, other = designs["exact"], designs["dropped"]
    # a group of constant size with a model that is never in it: t is c there, not c - 1
    never = _exact(rng, 12, 150, k=5)
    never = np.concatenate([never, np.zeros((1, 150), bool)])
    # groups of one model and of all but one at every example: the candidates are then the
    # empty set and the group, or the group less one model and the group
    ones = _exact(rng, 9, 80, k=1)
    exacts = (exact, ~exact, ones, ~ones)
    with monkeypatch.context() as general:  # every mask through the general sweep
        general.setattr(_mask_kernels, "_exact_cut", lambda *args: None)
        want = {i: _kernels.cut_sets(mk) for i, mk in enumerate((*exacts, other, never))}
    calls = []
    real = _mask_kernels._prefix_lengths

    def spy(*args):
        calls.append(1)
        return real(*args)

    monkeypatch.setattr(_mask_kernels, "_prefix_lengths", spy)
    for i, member in enumerate(exacts):
        got = _kernels.cut_sets(member, chunk=16)
        assert not calls, "the exact masks took the general sweep"
        assert len(got[0]) == 2 and np.array_equal(got[1], member)
        for a, b in zip(got, want[i], strict=True):
            assert a.dtype == b.dtype and np.array_equal(a, b)
    for i, member in ((4, other), (5, never)):
        got = _kernels.cut_sets(member)
        assert calls, "masks that are not exact skipped the general sweep"
        calls.clear()
        for a, b in zip(got, want[i], strict=True):
            assert np.array_equal(a, b)


@pytest.mark.parametrize("candidates", [1, 2, 3])
def test_shadow_sizes_and_summary_for_any_number_of_candidates(candidates, numpy_path):
    """The sizes' kernels select one or two candidates' counts and gather from more."""
    rng = np.random.default_rng(21)
    m, n = 9, 70
    counts = rng.integers(0, m + 1, (candidates, n))
    pick = rng.integers(0, candidates, (m, n)).astype(np.int16)
    inside = rng.random((m, n)) < 0.5
    want = counts[pick, np.arange(n)[None, :]] - inside
    np.testing.assert_array_equal(_kernels.shadow_sizes(counts, pick, inside), want)
    summary = _kernels.size_summary(counts, pick, inside)
    np.testing.assert_array_equal(summary, np.stack([want.min(1), want.max(1), want.sum(1)], 1))
    masks = np.zeros((candidates, m, n), bool)  # counts given: the masks are not read
    sets = _lira_groups.ShadowSets(masks, pick, inside, counts)
    with numpy_path():
        np.testing.assert_array_equal(sets.sizes(), want)
        np.testing.assert_array_equal(sets.size_summary(), summary)


def test_membership_dependence_matches_numpy(numpy_path):
    rng = np.random.default_rng(1)
    for name, keep in _designs(rng).items():
        got = _reference.membership_dependence(keep)
        with numpy_path():
            want = _reference.membership_dependence(keep)
        assert got == pytest.approx(want, abs=1e-12), name
    assert _reference.membership_dependence(np.ones((3, 5), bool)) == 0.0


def test_all_finite():
    x = np.random.default_rng(2).normal(size=(3, 70_000)).astype(np.float32)
    assert _kernels.all_finite(x)
    for bad in (np.nan, np.inf, -np.inf):
        y = x.copy()
        y[2, 69_999] = bad
        assert not _kernels.all_finite(y)
    big = np.full((4, 5), np.finfo(np.float32).max, np.float32)
    assert _kernels.all_finite(big)
    keep = np.ones((4, 5), bool)
    keep[0] = False
    with pytest.raises(DataError, match="NaN or infinite"):
        lira_from_signal(np.where(np.eye(4, 5) > 0, np.inf, 1.0)[..., None], keep)


def test_stats_tree_matches_float64():
    rng = np.random.default_rng(3)
    keep = _exact(rng, 10, 120)
    x = (rng.normal(size=(10, 120, 3)) * 3 + 40).astype(np.float32)  # far from 0: cancellation
    cut = _lira_groups.cut_to_smallest(keep)
    masks = np.concatenate([keep[None], cut.masks, (~keep)[None]])
    count, mean, ss, _ = _lira_stats_kernels.stats_tree(x, masks)
    x64 = x.astype(np.float64)
    for s, mk in enumerate(masks):
        w = mk[..., None]
        c = mk.sum(axis=0)
        mu = np.where(c[:, None] > 0, (w * x64).sum(0) / np.maximum(c, 1)[:, None], 0.0)
        want_ss = (w * (x64 - mu) ** 2).sum(0)
        assert np.array_equal(count[s], c)
        np.testing.assert_allclose(mean[s], mu, rtol=1e-12, atol=1e-12)
        np.testing.assert_allclose(ss[s], want_ss, rtol=1e-10, atol=1e-9)


def test_set_stats_of_a_pair_match_the_general_sweep():
    rng = np.random.default_rng(8)
    keep = rng.random((11, 90)) < 0.5
    keep[:, 3] = True  # an example whose OUT set is empty
    x = (rng.normal(size=(11, 90, 5)) * 2 + 30).astype(np.float32)
    pair = np.stack([keep, ~keep])
    count = pair.sum(axis=1).astype(np.float64)
    got = _kernels.set_stats(x, pair, count)  # the complement sweep
    three = np.concatenate([pair, keep[None]])  # three sets: the general sweep
    want = _kernels.set_stats(x, three, three.sum(axis=1).astype(np.float64))
    np.testing.assert_allclose(got[0], want[0][:2], rtol=1e-13, atol=1e-12)
    np.testing.assert_allclose(got[1], want[1][:2], rtol=1e-10, atol=1e-9)
    assert (got[0][1, 3] == 0).all() and (got[1][1, 3] == 0).all()


def test_candidate_sums_match_numpy(numpy_path):
    rng = np.random.default_rng(9)
    keep = _exact(rng, 10, 80)
    x = rng.random((10, 80, 3)).astype(np.float32)
    for masks in (np.stack([keep, ~keep]), _lira_groups.cut_to_smallest(keep).masks):
        got = _reference.candidate_sums(x, masks)
        with numpy_path():
            want = _reference.candidate_sums(x, masks)
        direct = np.einsum("jmn,mna->jna", masks.astype(np.float64), x.astype(np.float64))
        np.testing.assert_array_equal(got[0], want[0])
        np.testing.assert_allclose(got[1], want[1], rtol=1e-12)
        np.testing.assert_allclose(got[1], direct, rtol=1e-12)


def test_variance_sums_brute_force():
    rng = np.random.default_rng(4)
    m, n, a = 9, 70, 4
    keep = rng.random((m, n)) < 0.5
    keep[:2, 5] = True  # an example with few IN models
    keep[2:, 5] = False
    x = rng.normal(size=(m, n, a)).astype(np.float32)
    _, mean, ss, _ = _lira_stats_kernels.stats_tree(x, keep[None])
    count = keep.sum(axis=0).astype(np.float64)
    got = _kernels.variance_sums(x, mean, ss, count[None], keep[None])[0]
    want = np.zeros((m, a))
    for t in range(m):
        for e in range(n):
            sel = keep[:, e].copy()
            sel[t] = False
            if sel.any():
                v = x[sel, e].astype(np.float64)
                want[t] += ((v - v.mean(0)) ** 2).sum(0)
    np.testing.assert_allclose(got, want, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("design", ["exact", "bernoulli"])
@pytest.mark.parametrize(
    "kw",
    [{"online": True}, {"online": False}, {"online": False, "offline_test": "density"}],
)
def test_lira_kernels_match_numpy_and_naive(design, kw, numpy_path):
    rng = np.random.default_rng(6)
    m, n, a = 24, 300, 3
    keep = _exact(rng, m, n) if design == "exact" else rng.random((m, n)) < 0.5
    if design == "bernoulli":
        keep[:3, :] = True  # every example has IN and OUT models
        keep[3:6, :] = False
    x = (rng.normal(size=(m, n, a)) + 1.5 * keep[..., None]).astype(np.float32)
    got = lira_from_signal(x, keep, **kw)
    with numpy_path():
        want = lira_from_signal(x, keep, **kw)
    scale = np.abs(want).max()
    np.testing.assert_allclose(got, want, atol=4e-7 * scale)
    oracle = naive.lira_per_target(
        x,
        keep,
        targets=[0, 5, 23],
        equal_groups=design == "exact",
        **kw,
    )
    np.testing.assert_allclose(got[[0, 5, 23]], oracle, atol=4e-7 * scale, rtol=1e-5)


def test_rmia_ranks_match_numpy_and_naive(numpy_path):
    rng = np.random.default_rng(7)
    m, n, a = 16, 400, 2
    keep = rng.random((m, n)) < 0.5
    keep[:2] = True
    keep[2:4] = False
    prob = 1 / (1 + np.exp(-rng.normal(size=(m, n, a)) - keep[..., None]))
    prob = np.round(prob, 3).astype(np.float32)  # ties
    got = rmia_from_signal(prob, keep, equal_groups=False)
    with numpy_path():
        want = rmia_from_signal(prob, keep, equal_groups=False)
    np.testing.assert_array_equal(got, want)
    np.testing.assert_allclose(got[4], naive.rmia_one_target(prob, 4), atol=2.0 / n)


def test_mask_comparisons_match_numpy(numpy_path):
    # same_masks compares 8 bytes at a time and stops early; sizes with a tail of 1..7 bytes
    rng = np.random.default_rng(9)
    for shape in ((3, 7), (5, 8), (64, 1000), (2, 40_001)):
        a = rng.random(shape) < 0.5
        b = a.copy()
        for flip in (False, True):
            other = ~b if flip else b
            assert _kernels.same_masks(a, other, complement=flip)
        for i in (0, a.size // 2, a.size - 1):  # one difference, first, middle or last byte
            c = b.copy().reshape(-1)
            c[i] ^= True
            c = c.reshape(shape)
            assert not _kernels.same_masks(a, c)
            assert not _kernels.same_masks(a, ~c, complement=True)
        assert not _kernels.same_masks(a, a[:, :-1])
        from jaxsam.attacks import _mask_kernels

        assert _mask_kernels.masks_disjoint(a, ~a)
        for i in (0, a.size // 2, a.size - 1):  # one value in both
            c = ~a.reshape(-1)
            c[i] = a.reshape(-1)[i] = True
            assert not _mask_kernels.masks_disjoint(a, c.reshape(shape))
        sub = a & (rng.random(shape) < 0.7)  # a subset of a (by several models at some n)
        got = _kernels.one_more(sub, a)
        with numpy_path():
            want = _kernels.one_more(sub, a)
            assert _kernels.one_more(a, sub) is None
        np.testing.assert_array_equal(got, want)  # the first model of a not in sub
        assert _kernels.one_more(a, sub) is None  # a is no subset of sub
        np.testing.assert_array_equal(_kernels.column_counts(a), a.sum(axis=0))


def test_prefix_offsets_records_every_offset():
    # cut_sets' offsets are 0..2; the kernel also records larger ones (up to M + 1: a slower
    # second sweep from 31 on)
    from jaxsam.attacks import _mask_kernels

    rng = np.random.default_rng(8)
    for m, top in ((3, 1), (80, 2), (80, 30), (80, 62), (80, 79)):
        inside = rng.random((m, 300)) < 0.5
        t = rng.integers(0, top + 1, m)
        base = np.zeros(300, np.int64)
        off = np.empty((m, 300), np.int16)
        seen = _mask_kernels._prefix_offsets(inside, t, base, 0, 300, off)
        want = t[:, None] + inside
        np.testing.assert_array_equal(off, want)
        assert seen.shape == (m + 2,)
        np.testing.assert_array_equal(np.flatnonzero(seen), np.unique(want))
