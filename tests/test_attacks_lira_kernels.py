"""LiRA's compiled score pass (jaxsam.attacks._lira_kernels) against float64, the JAX path and
the naive oracle: cut groups with several candidate sets, Bernoulli masks, tiny groups (where
the JAX path redoes its variance in float64), ties, all three score kinds."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.stats import norm

from jaxsam.attacks import (
    _block_kernels,
    _lira_groups,
    _lira_kernels,
    _lira_stats_kernels,
    lira_from_signal,
    naive,
)

pytestmark = pytest.mark.skipif(not _lira_kernels.available(), reason="numba is not installed")

KINDS = [{"online": True}, {"online": False}, {"online": False, "offline_test": "density"}]


@pytest.fixture
def passes(monkeypatch):
    """Counts the calls of the compiled score pass (the tests must exercise it)."""
    calls = []
    real = _lira_kernels.score_pass

    def spy(*args, **kw):
        calls.append(1)
        return real(*args, **kw)

    monkeypatch.setattr(_lira_kernels, "score_pass", spy)
    return calls


def _neg_log_sf(t: np.ndarray) -> np.ndarray:
    import numba

    @numba.njit
    def run(t, out):
        for i in range(t.size):
            out[i] = _lira_kernels._neg_log_sf(t[i])

    out = np.empty_like(t)
    run(t, out)
    return out


def _t_grid() -> np.ndarray:
    """float32 t values for the one-sided test's accuracy checks: dense on [-40, 40], and
    geometric towards 0 and far out on both sides."""
    return np.concatenate(
        [
            np.linspace(-40, 40, 200_001),
            np.geomspace(1e-30, 1e4, 2001),
            -np.geomspace(1e-30, 40, 2001),
        ]
    ).astype(np.float32)


def test_neg_log_sf_within_float32_rounding_of_float64():
    t = _t_grid()
    want = -norm.logsf(t.astype(np.float64))
    # the function on its own, and as the score pass runs it (its loop contracts multiplies
    # and adds into fused multiply-adds)
    scored = np.empty_like(t)
    _lira_kernels._one_sided(t, np.ones_like(t), t.size, scored)
    for got in (_neg_log_sf(t).astype(np.float64), scored.astype(np.float64)):
        err = np.abs(got - want) / np.maximum(1.0, np.abs(want))
        assert err.max() < 3e-7, (err.max(), t[err.argmax()])
        # small values (t far below 0) to a relative accuracy set by the rounding of t itself
        neg = (t < -1) & (t > -12.5)  # from -12.5 on the value is a float32 subnormal
        rel = np.abs(got[neg] / want[neg] - 1)
        assert (rel < 3e-7 + 1e-7 * t[neg].astype(np.float64) ** 2).all()
    assert (got[t <= -13] < 1e-37).all()
    edge = _neg_log_sf(np.array([np.inf, -np.inf, 0.0, -0.0, 1e20, -1e20], np.float32))
    np.testing.assert_array_equal(edge[:2], [np.inf, 0.0])
    np.testing.assert_allclose(edge[2:4], np.log(2.0), rtol=1e-7)
    assert edge[4] == np.inf  # t^2 / 2 overflows float32, as in the JAX path
    assert edge[5] == 0.0


def _design(name, rng):
    if name == "exact":
        return np.argsort(rng.random((24, 300)), axis=0) < 12
    if name == "bernoulli":
        keep = rng.random((20, 300)) < 0.5
        keep[:3], keep[3:6] = True, False  # every example has IN and OUT shadows
        return keep
    if name == "dropped":  # unequal cut sizes: several candidate sets per group
        keep = np.argsort(rng.random((14, 300)), axis=0) < 7
        keep[3] = False
        keep[9, :60] = True
        return keep
    # tiny: 2 IN and 2 OUT models per example (a target's own value is half its group)
    return np.argsort(rng.random((4, 300)), axis=0) < 2


@pytest.mark.parametrize("design", ["exact", "bernoulli", "dropped", "tiny"])
@pytest.mark.parametrize("kw", KINDS)
def test_score_pass_matches_jax_and_naive(design, kw, numpy_path, passes):
    rng = np.random.default_rng(11)
    keep = _design(design, rng)
    m, n = keep.shape
    x = rng.normal(size=(m, n, 5)) + 1.5 * keep[..., None]
    if design == "exact":
        x = np.round(x * 2) / 2  # ties
    x = x.astype(np.float32)
    got = lira_from_signal(x, keep, **kw)
    assert passes, "the compiled score pass did not run"
    with numpy_path():
        want = lira_from_signal(x, keep, **kw)
    scale = max(1.0, np.abs(want).max())
    np.testing.assert_allclose(got, want, atol=4e-7 * scale)
    cut = design != "bernoulli"
    targets = [0, 3, m - 1]
    oracle = naive.lira_per_target(x, keep, targets=targets, equal_groups=cut, **kw)
    np.testing.assert_allclose(got[targets], oracle, atol=4e-7 * scale, rtol=1e-5)


@pytest.mark.parametrize("design", ["dropped", "exact"])
@pytest.mark.parametrize("kw", KINDS)
def test_score_pass_with_eighteen_queries(kw, design, numpy_path, passes):
    """A = 18 (the published study's queries) runs its own copy of the quadratic loops, and
    with exact masks (two candidate sets) the one-sided test's vector z blocks."""
    rng = np.random.default_rng(17)
    keep = _design(design, rng)
    m, n = keep.shape
    x = (rng.normal(size=(m, n, 18)) + 1.5 * keep[..., None]).astype(np.float32)
    got = lira_from_signal(x, keep, **kw)
    assert passes
    with numpy_path():
        want = lira_from_signal(x, keep, **kw)
    np.testing.assert_allclose(got, want, atol=4e-7 * max(1.0, np.abs(want).max()))


@pytest.mark.parametrize("queries", [1, 2, 18, 5])
@pytest.mark.parametrize("n_sets", [1, 2])
def test_vector_z_block_equals_the_scalar_loop(queries, n_sets):
    """The vector z block (A in VECTOR_QUERIES; another A falls back to the scalar loop) gives
    the scalar loop's z values to the bit, whichever of one or two sets (any rows of the
    means) each example picks and whether the target is inside it."""
    rng = np.random.default_rng(19)
    m, n = 3, 70
    x = rng.normal(size=(m, n, queries)).astype(np.float32)
    hi = rng.normal(size=(3, n, queries)).astype(np.float32)
    lo = (rng.normal(size=hi.shape) * 1e-8).astype(np.float32)
    fac = (1.0 + rng.random((3, n))).astype(np.float32)
    sets = np.array([2, 0][:n_sets], np.int64)
    pick = rng.integers(0, n_sets, (m, n)).astype(np.int16)
    inside = rng.random((m, n)) < 0.5
    block = _lira_kernels.BLOCK
    for t in range(m):
        for b0 in range(0, n - block + 1, block):
            want = np.empty(block * queries, np.float32)
            got = np.full_like(want, np.nan)
            _lira_kernels._z_block(x, hi, lo, fac, sets, pick, inside, t, b0, b0 + block, want)
            _lira_kernels._z_full_block(x, hi, lo, fac, sets, pick, inside, t, b0, got)
            np.testing.assert_array_equal(got.view(np.int32), want.view(np.int32))


def test_fold_patterns_put_each_example_sum_in_its_lane():
    """The transposing tree of block_scores, followed symbolically: 16 vectors (one per
    example) of 16 partial sums end as one vector whose lane n adds example n's 16 partials,
    each once."""
    lanes = _block_kernels.LANES
    vecs = [[{(n, i)} for i in range(lanes)] for n in range(lanes)]
    for low, high in _block_kernels.fold_patterns():
        nxt = []
        for a, b in zip(vecs[0::2], vecs[1::2], strict=True):
            pair = a + b
            nxt.append([pair[lo] | pair[hi] for lo, hi in zip(low, high, strict=True)])
        vecs = nxt
    assert len(vecs) == 1
    assert vecs[0] == [{(n, i) for i in range(lanes)} for n in range(lanes)]


@pytest.mark.parametrize("queries", [1, 2, 18])
def test_block_folds_sum_and_multiply_each_example(queries):
    """block_folds: per example n of a block the sum of its A additive parts and the product
    of its A mantissas (rows far apart, so a value folded into another example's lane would
    show), and nothing past the 16 results written."""
    rng = np.random.default_rng(20)
    block = _lira_kernels.BLOCK
    add = (rng.random((block, queries)) + 100.0 * np.arange(block)[:, None]).astype(np.float32)
    mant = (1.0 + rng.random((block, queries))).astype(np.float32)
    mant[3] = 1.0 + np.arange(queries) / 64.0  # no mantissa equal to another row's
    sums = np.full(block + 4, np.nan, np.float32)
    prods = np.full(block + 4, np.nan, np.float32)
    _lira_kernels._full_block_folds(add.reshape(-1), mant.reshape(-1), sums, prods, 2, queries)
    np.testing.assert_allclose(sums[2 : block + 2], add.astype(np.float64).sum(axis=1), rtol=2e-7)
    want_prods = mant.astype(np.float64).prod(axis=1)
    np.testing.assert_allclose(prods[2 : block + 2], want_prods, rtol=2e-6)
    rest = np.r_[0:2, block + 2 : block + 4]
    assert np.isnan(sums[rest]).all() and np.isnan(prods[rest]).all()


def test_neg_log_sf_parts_within_float32_rounding_of_float64():
    """The split test: b - log(m) is -log P[Z > t] to the accuracy of the per-value function
    (m in [1, 2)), small values (t < -1) to a relative accuracy."""
    t = _t_grid()
    want = -norm.logsf(t.astype(np.float64))
    mant, add = np.empty_like(t), np.empty_like(t)
    _lira_kernels._one_sided_parts(t, np.ones_like(t), t.size, mant, add)
    assert (mant >= 1.0).all() and (mant < 2.0).all()
    got = add.astype(np.float64) - np.log(mant.astype(np.float64))
    assert (np.abs(got - want) / np.maximum(1.0, np.abs(want))).max() < 3e-7
    neg = (t < -1) & (t > -12.5)
    rel = np.abs(got[neg] / want[neg] - 1)
    assert (rel < 3e-7 + 1e-7 * t[neg].astype(np.float64) ** 2).all()
    assert (got[t <= -13] < 1e-37).all()
    edge = np.array([np.inf, -np.inf, 0.0, -0.0], np.float32)
    m_e, a_e = np.empty_like(edge), np.empty_like(edge)
    _lira_kernels._one_sided_parts(edge, np.ones_like(edge), 4, m_e, a_e)
    assert a_e[0] == np.inf and a_e[1] == 0.0 and (m_e[1] == 1.0)
    np.testing.assert_allclose(a_e[2:] - np.log(m_e[2:].astype(np.float64)), np.log(2.0), rtol=2e-7)


@pytest.mark.parametrize("scale", [1.0, 0.2])
def test_vector_block_scores_match_float64(scale):
    """A full block's scores by the split test (parts, folds, one logarithm per example)
    against c + the float64 mean of -log P over the queries: to float32 rounding of the score,
    and rows whose every t is far below 0 (tiny scores) to a relative accuracy."""
    rng = np.random.default_rng(21)
    block, a = _lira_kernels.BLOCK, 18
    t = (rng.normal(size=(block, a)) * 3 / scale).astype(np.float32)
    t[:4] = -np.abs(t[:4]) - 2.0  # tiny scores
    flat = t.reshape(-1)
    mant, add = np.empty_like(flat), np.empty_like(flat)
    _lira_kernels._one_sided_parts(flat, np.ones_like(flat), flat.size, mant, add)
    sums, prods = np.empty(block, np.float32), np.empty(block, np.float32)
    _lira_kernels._full_block_folds(add, mant, sums, prods, 0, a)
    out = np.full((2, block), np.nan, np.float32)
    c = np.float32(0.0)
    _lira_kernels._block_scores(sums, prods, out, 1, 0, block, c, np.float32(a))
    want = -norm.logsf(t.astype(np.float64)).mean(axis=1)
    got = out[1].astype(np.float64)
    np.testing.assert_allclose(got, want, atol=3e-7 * max(1.0, want.max()))
    np.testing.assert_allclose(got[:4], want[:4], rtol=1e-6)


def test_score_pass_far_tail_and_large_signal(numpy_path, passes):
    rng = np.random.default_rng(12)
    keep = np.argsort(rng.random((16, 200)), axis=0) < 8
    x = (rng.normal(size=(16, 200, 3)) * 0.01 + 40.0 * keep[..., None]).astype(np.float32)
    x[0, :10] -= 80.0  # members far below the OUT mean: -log P close to 0
    got = lira_from_signal(x, keep, online=False)
    with numpy_path():
        want = lira_from_signal(x, keep, online=False)
    assert passes
    np.testing.assert_allclose(got, want, rtol=2e-6, atol=1e-6)


def test_pair_stats_brute_force_with_tiny_and_empty_groups():
    rng = np.random.default_rng(13)
    m, n, a = 7, 90, 4
    keep = rng.random((m, n)) < 0.5
    keep[:, 5] = False  # an empty IN set
    keep[:, 6] = True  # an empty OUT set
    keep[:, 7], keep[2, 7] = False, True  # one IN model: its SS is 0, it has no shadow
    x = (rng.normal(size=(m, n, a)) * 3 + 100).astype(np.float32)  # far from 0: no cancellation
    mean, ss, dd = _lira_stats_kernels.pair_stats(x, keep)
    want_dd = np.zeros((2, m, a))
    for g, member in enumerate((keep, ~keep)):
        for e in range(n):
            v = x[member[:, e], e].astype(np.float64)
            mu = v.mean(0) if v.size else np.zeros(a)
            np.testing.assert_allclose(mean[g, e], mu, rtol=1e-14)
            np.testing.assert_allclose(ss[g, e], ((v - mu) ** 2).sum(0), rtol=1e-9, atol=1e-9)
            c = v.shape[0]
            for t in np.flatnonzero(member[:, e]):
                if c > 1:
                    want_dd[g, t] += c / (c - 1) * (x[t, e].astype(np.float64) - mu) ** 2
    np.testing.assert_allclose(dd, want_dd, rtol=1e-10)
    # the pooled leave-one-out variance sums: sum_n SS - dd (every target, both groups)
    for g, member in enumerate((keep, ~keep)):
        for t in range(m):
            want = np.zeros(a)
            for e in range(n):
                sel = member[:, e].copy()
                sel[t] = False
                v = x[sel, e].astype(np.float64)
                if v.size:
                    want += ((v - v.mean(0)) ** 2).sum(0)
            np.testing.assert_allclose(ss[g].sum(0) - dd[g, t], want, rtol=1e-9)


def test_stats_tree_with_keep_matches_the_general_sweep():
    rng = np.random.default_rng(14)
    keep = np.argsort(rng.random((10, 120)), axis=0) < 5
    x = rng.normal(size=(10, 120, 3)).astype(np.float32)
    cut = _lira_groups.cut_to_smallest(~keep).masks  # OUT less its last model, OUT itself
    masks = [*cut, keep]
    got = _lira_stats_kernels.stats_tree(x, masks, keep)
    want = _lira_stats_kernels.stats_tree(x, masks)
    assert got[3] is not None and want[3] is None
    np.testing.assert_array_equal(got[0], want[0])
    np.testing.assert_allclose(got[1], want[1], rtol=1e-13, atol=1e-13)
    np.testing.assert_allclose(got[2], want[2], rtol=1e-10, atol=1e-10)
    # a root that is neither the IN nor the OUT set: the general sweep, no down-date sums
    other = keep.copy()
    other[0] = ~other[0]
    assert _lira_stats_kernels.stats_tree(x, [other, ~keep], keep)[3] is None


@pytest.mark.parametrize("exact", [True, False])
def test_stats_tree_without_ss_gives_the_same_means_and_pooled_sums(exact, monkeypatch):
    """want_ss=False: no per-example SS (None), the down-dated sets' means alone, and for
    exact masks (one size per set) the one-accumulator second sweep: the same means to the
    bit and the same pooled sums to float64 rounding as the sweep that keeps the SS."""
    seen = []
    real = _lira_stats_kernels._pair_chunk
    spy = lambda *a: seen.append(a[-1]) or real(*a)  # noqa: E731  (a[-1]: fixed)
    monkeypatch.setattr(_lira_stats_kernels, "_pair_chunk", spy)
    rng = np.random.default_rng(16)
    m, n = 11, 300
    keep = np.argsort(rng.random((m, n)), axis=0) < 4 if exact else rng.random((m, n)) < 0.4
    x = (rng.normal(size=(m, n, 3)) * 2 + 50).astype(np.float32)
    # exact: the OUT set cut to its smallest size is a down-date of it; otherwise that cut is
    # no IN or OUT set (the general sweep), so the IN and OUT sets alone
    masks = [*_lira_groups.cut_to_smallest(~keep).masks, keep] if exact else [~keep, keep]
    want = _lira_stats_kernels.stats_tree(x, masks, keep)
    assert not any(seen)
    seen.clear()
    got = _lira_stats_kernels.stats_tree(x, masks, keep, want_ss=False)
    assert got[2] is None and seen and all(f == exact for f in seen)
    np.testing.assert_array_equal(got[0], want[0])
    np.testing.assert_array_equal(got[1], want[1])
    np.testing.assert_allclose(got[3], want[3], rtol=1e-12)
    assert not np.array_equal(got[3], np.zeros_like(got[3]))


@pytest.mark.parametrize("kw", [{"online": True}, {"online": False}])
def test_lira_default_takes_the_fused_sweep(kw, monkeypatch):
    calls = []
    real = _lira_stats_kernels.pair_stats_into
    spy = lambda *a: calls.append(1) or real(*a)  # noqa: E731
    monkeypatch.setattr(_lira_stats_kernels, "pair_stats_into", spy)
    rng = np.random.default_rng(15)
    keep = np.argsort(rng.random((12, 80)), axis=0) < 6
    x = rng.normal(size=(12, 80, 2)).astype(np.float32)
    lira_from_signal(x, keep, **kw)
    assert calls == [1]


def test_separate_variance_sweep_gives_the_same_scores(monkeypatch):
    """Without the fused sums (a variance family that is no whole leave-one-out group), the
    second sweep (_kernels.variance_sums) must give the same variances."""
    rng = np.random.default_rng(16)
    keep = np.argsort(rng.random((12, 150)), axis=0) < 6
    x = (rng.normal(size=(12, 150, 3)) + 1.5 * keep[..., None]).astype(np.float32)
    fused = lira_from_signal(x, keep)
    real, calls = _lira_stats_kernels.stats_tree, []

    def no_fused(signal, masks, keep=None, counts=None, want_ss=True):
        calls.append(keep is not None)
        return (*real(signal, masks, None, counts)[:3], None)

    monkeypatch.setattr(_lira_stats_kernels, "stats_tree", no_fused)
    np.testing.assert_allclose(lira_from_signal(x, keep), fused, rtol=1e-6, atol=1e-6)
    assert calls == [True]


def test_pair_stats_into_writes_only_the_wanted_rows_and_sees_a_nan():
    rng = np.random.default_rng(18)
    m, n, a = 9, 1100, 3  # more than one chunk of examples: the sums are added in chunk order
    keep = rng.random((m, n)) < 0.5
    x = (rng.normal(size=(m, n, a)) + keep[..., None]).astype(np.float32)
    mean_all, ss_all, dd_all = _lira_stats_kernels.pair_stats(x, keep)
    mean = np.full((3, n, a), 7.0)
    ss = np.full((3, n, a), 7.0)
    inside = keep.sum(axis=0)
    dd, ss_sum, finite = _lira_stats_kernels.pair_stats_into(x, keep, inside, mean, ss, (2, -1))
    assert finite
    np.testing.assert_array_equal(mean[2], mean_all[0])  # IN into row 2
    np.testing.assert_array_equal(ss[2], ss_all[0])
    assert (mean[:2] == 7.0).all() and (ss[:2] == 7.0).all()  # the OUT set is not wanted
    np.testing.assert_array_equal(dd, dd_all)
    np.testing.assert_allclose(ss_sum, ss_all.sum(axis=1), rtol=1e-12)
    bad = x.copy()
    bad[4, 1000, 1] = np.nan
    assert not _lira_stats_kernels.pair_stats_into(bad, keep, inside, mean, ss, (0, 1))[2]
    bad[4, 1000, 1] = np.inf
    assert not _lira_stats_kernels.pair_stats_into(bad, keep, inside, mean, ss, (0, 1))[2]


def test_split_float64_matches_two_roundings():
    rng = np.random.default_rng(19)
    x = rng.normal(size=(3, 70_000)) * 10.0 ** rng.integers(-30, 30, (3, 70_000))
    hi, lo = _lira_kernels.split_float64(x)
    want_hi = x.astype(np.float32)
    np.testing.assert_array_equal(hi, want_hi)
    np.testing.assert_array_equal(lo, (x - want_hi).astype(np.float32))
