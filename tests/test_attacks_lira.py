"""LiRA: hand computation, naive per-target reference, leave-one-out tell-tale, fallbacks.

The null test (no membership signal), the published-code compatibility test and the too-few-
shadows errors live in test_attacks_lira_null.py.
"""

import math

import numpy as np
import pytest

from jaxsam.attacks import lira, lira_from_signal, rmia_from_signal
from jaxsam.attacks._lira import loo_median
from jaxsam.attacks.naive import lira_per_target
from jaxsam.errors import ConfigError, DataError


def _logpdf(x, mu, var):
    return -0.5 * (math.log(2 * math.pi * var) + (x - mu) ** 2 / var)


def test_online_lira_hand_computation():
    # M = 5 models, N = 2 examples, A = 1 query; target model 0.
    s = np.array([[1.0, -1.0], [2.0, 0.5], [3.0, 0.0], [-1.0, 2.5], [0.0, 1.0]], np.float32)
    keep = np.array([[1, 1], [1, 0], [1, 0], [0, 1], [0, 0]], bool)
    # Shadows of target 0. Example 0: IN {1, 2} -> 2, 3; OUT {3, 4} -> -1, 0.
    # Example 1: IN {3} -> 2.5; OUT {1, 2, 4} -> 0.5, 0, 1.
    mi0, mo0, mi1, mo1 = 2.5, -0.5, 2.5, 0.5
    var_in = ((2 - mi0) ** 2 + (3 - mi0) ** 2 + (2.5 - mi1) ** 2) / 3  # pooled over 3 IN values
    var_out = (
        (-1 - mo0) ** 2 + (0 - mo0) ** 2 + (0.5 - mo1) ** 2 + (0 - mo1) ** 2 + (1 - mo1) ** 2
    ) / 5
    want = [
        _logpdf(1.0, mi0, var_in) - _logpdf(1.0, mo0, var_out),
        _logpdf(-1.0, mi1, var_in) - _logpdf(-1.0, mo1, var_out),
    ]
    got = lira_from_signal(s[..., None], keep, equal_groups=False)[0]
    np.testing.assert_allclose(got, want, rtol=1e-6)
    # Offline one-sided: -log P[Z > s] with Z ~ N(mu_out, var_out).
    off = lira_from_signal(s[..., None], keep, online=False, equal_groups=False)[0]
    sf = [0.5 * math.erfc((x - mu) / math.sqrt(2 * var_out)) for x, mu in ((1.0, mo0), (-1.0, mo1))]
    np.testing.assert_allclose(off, [-math.log(v) for v in sf], rtol=1e-6)
    dens = lira_from_signal(
        s[..., None], keep, online=False, offline_test="density", equal_groups=False
    )[0]
    np.testing.assert_allclose(
        dens, [-_logpdf(1.0, mo0, var_out), -_logpdf(-1.0, mo1, var_out)], rtol=1e-6
    )


def test_online_lira_hand_computation_equal_groups():
    # The same study with equal groups. Target 0's leave-one-out IN groups have 2
    # (example 0: models 1, 2) and 1 (example 1: model 3) shadows, so both are cut to 1, keeping
    # the lowest index: example 0 uses model 1 only. The OUT groups have 2 and 3 shadows, cut to
    # 2: example 1 uses models 1, 2 and drops model 4.
    s = np.array([[1.0, -1.0], [2.0, 0.5], [3.0, 0.0], [-1.0, 2.5], [0.0, 1.0]], np.float32)
    keep = np.array([[1, 1], [1, 0], [1, 0], [0, 1], [0, 0]], bool)
    mi0, mo0, mi1, mo1 = 2.0, -0.5, 2.5, 0.25
    # The global variance pools every leave-one-out shadow (around the full groups' means).
    var_in = ((2 - 2.5) ** 2 + (3 - 2.5) ** 2 + 0.0) / 3
    var_out = ((-1 + 0.5) ** 2 + (0 + 0.5) ** 2 + (0.5 - 0.5) ** 2 + 0.5**2 + 0.5**2) / 5
    want = [
        _logpdf(1.0, mi0, var_in) - _logpdf(1.0, mo0, var_out),
        _logpdf(-1.0, mi1, var_in) - _logpdf(-1.0, mo1, var_out),
    ]
    got = lira_from_signal(s[..., None], keep, equal_groups=True)[0]
    np.testing.assert_allclose(got, want, rtol=1e-6)
    dens = lira_from_signal(
        s[..., None], keep, online=False, offline_test="density", equal_groups=True
    )[0]
    np.testing.assert_allclose(
        dens, [-_logpdf(1.0, mo0, var_out), -_logpdf(-1.0, mo1, var_out)], rtol=1e-6
    )


@pytest.fixture
def synth():
    rng = np.random.default_rng(1)
    m, n, a = 12, 30, 3
    keep = np.argsort(rng.random((m, n)), 0) < rng.integers(3, 9, n)[None]  # 3..8 IN of 12
    s = rng.normal(size=(m, n, a)) + rng.normal(size=(1, n, 1)) * 3 + 2.0 * keep[..., None]
    return s.astype(np.float32), keep


@pytest.mark.parametrize("equal_groups", [True, False])
@pytest.mark.parametrize("online", [True, False])
@pytest.mark.parametrize("fix_variance", [True, False])
def test_matches_naive_per_target(synth, online, fix_variance, equal_groups):
    s, keep = synth
    kw = dict(online=online, fix_variance=fix_variance, equal_groups=equal_groups)
    fast = lira_from_signal(s, keep, chunk_size=5, **kw)
    slow = lira_per_target(s, keep, **kw)
    np.testing.assert_allclose(fast, slow, rtol=2e-5, atol=1e-4)


@pytest.mark.parametrize(
    "kw",
    [
        {"mean": "median"},
        {"mean": "median", "fix_variance": False},
        {"online": False, "offline_test": "density"},
        {"online": False, "mean": "median", "equal_groups": False},
    ],
)
def test_matches_naive_per_target_median_and_density(synth, kw):
    s, keep = synth
    kw = {"equal_groups": True, **kw}
    fast = lira_from_signal(s, keep, chunk_size=7, **kw)
    slow = lira_per_target(s, keep, **kw)
    np.testing.assert_allclose(fast, slow, rtol=2e-5, atol=1e-4)


def test_leave_one_out_tell_tale(synth):
    s, keep = synth
    n_star = 4
    planted, kp = s.copy(), keep.copy()
    others = np.arange(s.shape[1]) != n_star
    planted[0, others] = 1e3  # tell-tale: huge values from model 0 everywhere but n*
    kp[0, others] = ~kp[0, others]  # and its membership flipped
    kp[0, n_star] = ~kp[0, n_star]  # its own label at n* must not matter either
    opts = [
        {},
        {"online": False},
        {"fix_variance": False},
        {"mean": "median"},
        {"variance_mode": "reference"},
        {"online": False, "offline_test": "density"},
        {"equal_groups": False},
        {"equal_groups": False, "fix_variance": False},
        {"compat": "reference"},
        {"compat": "reference", "online": False},
        {"compat": "reference", "fix_variance": False},
    ]
    for kw in opts:
        a = lira_from_signal(s, keep, **kw)
        b = lira_from_signal(planted, kp, **kw)
        np.testing.assert_allclose(a[0, n_star], b[0, n_star], rtol=1e-5, err_msg=str(kw))
        # Model 0 is a shadow of the other targets, so the planted value does reach them.
        assert np.abs(a[1:, n_star] - b[1:, n_star]).max() > 1e-2, kw


def test_loo_median_brute_force(synth):
    s, keep = synth
    got = loo_median(s, keep, chunk_examples=7)
    for t in range(s.shape[0]):
        for n in range(s.shape[1]):
            sel = keep[:, n].copy()
            sel[t] = False
            want = np.median(s[sel, n], axis=0)
            np.testing.assert_allclose(got[t, n], want, rtol=1e-6)


def test_reference_variance_mode(synth):
    s, keep = synth
    got = lira_from_signal(s, keep, variance_mode="reference", equal_groups=False)[0]
    sh = np.arange(s.shape[0]) != 0
    x, k = s[sh].astype(np.float64), keep[sh]
    vals = np.concatenate([x[k[:, n], n].ravel() for n in range(s.shape[1])])
    var = vals.var()  # grand spread of IN scores, all queries; used for IN and OUT
    mi = np.stack([x[k[:, n], n].mean(0) for n in range(s.shape[1])])
    mo = np.stack([x[~k[:, n], n].mean(0) for n in range(s.shape[1])])
    obs = s[0].astype(np.float64)
    want = (-((obs - mi) ** 2) / (2 * var) + (obs - mo) ** 2 / (2 * var)).mean(-1)
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)


def test_fallback_no_nan_when_group_empty():
    rng = np.random.default_rng(2)
    s = rng.normal(size=(4, 6, 2)).astype(np.float32)
    keep = np.zeros((4, 6), bool)
    keep[:, 0] = True  # every model IN: no OUT shadows anywhere
    keep[0, 1] = True  # single IN model: no IN shadow for target 0
    keep[1:3, 2:] = True
    for kw in [{}, {"online": False}, {"fix_variance": False}, {"mean": "median"}]:
        # The old leave-one-out groups fall back; the default raises (test_attacks_lira_null).
        sc = lira_from_signal(s, keep, equal_groups=False, **kw)
        assert np.isfinite(sc).all(), kw


def test_lira_from_logits_and_bad_input():
    rng = np.random.default_rng(3)
    logits = rng.normal(size=(4, 5, 2, 3)).astype(np.float32)
    y = rng.integers(0, 3, 5)
    keep = np.argsort(rng.random((4, 5)), 0) < 2  # exact 2-of-4 masks
    assert lira(logits, y, keep).shape == (4, 5)
    with pytest.raises(DataError):
        lira(logits[:, :, 0], y, keep)
    with pytest.raises(DataError):
        lira(logits, y, keep[:, :3])
    with pytest.raises(DataError):
        lira(logits[:1], y, keep[:1])
    with pytest.raises(DataError, match="no examples"):  # an empty pool, for every attack
        lira(logits[:, :0], y[:0], keep[:, :0])
    with pytest.raises(DataError, match="no examples"):
        rmia_from_signal(np.zeros((4, 0, 2), np.float32), keep[:, :0])
    with pytest.raises(ConfigError):
        lira(logits, y, keep, mean="mode")


def test_group_stats_in_example_chunks_match_numpy(synth):
    import jax
    import jax.numpy as jnp

    from jaxsam.attacks import _lira

    s, keep = synth
    with jax.enable_x64(True):
        (ci, mi, si), (co, mo, so) = _lira.group_stats(s, keep, jnp.float64, chunk_examples=7)
    x = s.astype(np.float64)
    for member, count, mean, ss in ((keep, ci, mi, si), (~keep, co, mo, so)):
        w = member[..., None]
        c = member.sum(0)
        want_mean = (w * x).sum(0) / c[:, None]
        want_ss = (w * (x - want_mean) ** 2).sum(0)
        np.testing.assert_array_equal(np.asarray(count), c)
        np.testing.assert_allclose(np.asarray(mean), want_mean, rtol=1e-12, atol=1e-12)
        np.testing.assert_allclose(np.asarray(ss), want_ss, rtol=1e-10, atol=1e-10)


def test_scores_do_not_depend_on_the_statistics_chunking(synth, monkeypatch):
    from jaxsam.attacks import _lira

    s, keep = synth
    whole = lira_from_signal(s, keep, fix_variance=False)
    calls, whole_stats = [], _lira.set_stats

    def chunked_stats(signal, masks, dtype, chunk_examples=None):
        calls.append(chunk_examples)
        return whole_stats(signal, masks, dtype, chunk_examples=4)

    monkeypatch.setattr(_lira, "set_stats", chunked_stats)
    chunked = lira_from_signal(s, keep, fix_variance=False)
    assert calls, "the statistics must go through set_stats"
    np.testing.assert_allclose(chunked, whole, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("kw", [{}, {"online": False}, {"mean": "median"}])
def test_float32_precision_close_to_float64(synth, kw):
    # float32 accumulation down-dates twice (cut set, then the target): close with a global
    # variance. (Per-example variance from 2 or 3 shadows can lose most of a tiny sum of
    # squares in float32; that is what the float64 default is for.)
    s, keep = synth
    lo = lira_from_signal(s, keep, precision="float32", **kw)
    hi = lira_from_signal(s, keep, **kw)
    np.testing.assert_allclose(lo, hi, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("exact", [True, False])
def test_cut_statistics_by_down_date_match_a_direct_pass(synth, exact):
    import jax
    import jax.numpy as jnp

    from jaxsam.attacks import _lira, _lira_groups
    from jaxsam.data.masks import make_masks

    s, keep = synth
    if exact:
        keep = make_masks(*keep.shape, 0.5, seed=2)
    masks = _lira_groups.cut_to_smallest(keep).masks
    if exact:  # the whole group minus its last model, and the whole group
        np.testing.assert_array_equal(masks[-1], keep)
        assert _lira._parents(masks) == [1, None]  # one down-date, no pass of its own
    else:
        masks = np.concatenate([masks, keep[None]])  # the whole group too
    with jax.enable_x64(True):
        derived = _lira.all_set_stats(s, masks, jnp.float64)
        direct = _lira.set_stats(s, masks, jnp.float64)
    for a, b in zip(derived, direct, strict=True):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-10, atol=1e-10)
