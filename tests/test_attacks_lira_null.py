"""LiRA without membership signal, against the published algorithm, and with too few models.

* Null test: logits whose distribution does not depend on membership must give every LiRA
  variant a pooled AUC of 0.5 within 3 standard errors, at M = 4, 8, 16 and 32. The standard
  error is the clustered (by example) DeLong/Obuchowski one: all targets' scores of one example
  share its shadows, so they are not independent. Over 25 repetitions at M = 4 and 8 the spread
  of the AUC matched this standard error (z-scores with standard deviation 0.9 to 1.1).
  The old leave-one-out groups (``equal_groups=False``) fail it at small M.
* Published code: ``compat="reference"`` equals a small NumPy transcription of what
  tensorflow/privacy research/mi_lira_2021/plot.py computes, written from its description.
"""

import dataclasses

import numpy as np
import pytest
from scipy.stats import norm

from jaxsam import metrics
from jaxsam.attacks import LiraOptions, lira, lira_from_signal
from jaxsam.attacks import _lira_groups as groups
from jaxsam.data.masks import make_masks
from jaxsam.errors import ConfigError


def clustered_auc(scores: np.ndarray, member: np.ndarray) -> tuple[float, float]:
    """Pooled AUC of scores [M, N] and its standard error with examples (columns) as clusters.

    Each member score's placement is the fraction of non-member scores below it (ties count
    half), and each non-member's the fraction of member scores above it; the variance of the AUC
    is that of the per-example sums of placement deviations (Obuchowski 1997).
    """
    s, y = scores.ravel().astype(np.float64), member.ravel()
    pos, neg = np.sort(s[y]), np.sort(s[~y])
    v10 = (np.searchsorted(neg, s, "left") + np.searchsorted(neg, s, "right")) / (2 * neg.size)
    v01 = 1 - (np.searchsorted(pos, s, "left") + np.searchsorted(pos, s, "right")) / (2 * pos.size)
    auc = v10[y].mean()
    n = scores.shape[1]
    col = np.broadcast_to(np.arange(n), scores.shape).ravel()
    s10 = np.bincount(col, weights=np.where(y, v10 - auc, 0.0), minlength=n) / pos.size
    s01 = np.bincount(col, weights=np.where(~y, v01 - auc, 0.0), minlength=n) / neg.size
    var = n / (n - 1) * np.sum((s10 + s01) ** 2)
    return float(auc), float(np.sqrt(var))


def null_study(m: int, n: int, seed: int, a: int = 2, c: int = 3):
    """Logits [M, N, A, C] with no membership signal: each example has its own class offsets and
    noise level, every model draws around them independently of its mask. Exact masks."""
    rng = np.random.default_rng(seed)
    base = 2.0 * rng.normal(size=(1, n, 1, c))
    scale = rng.uniform(0.3, 1.5, size=(1, n, 1, 1))
    logits = (base + scale * rng.normal(size=(m, n, a, c))).astype(np.float32)
    return logits, rng.integers(0, c, n), make_masks(m, n, 0.5, seed=seed)


# Every LiRA variant: online / offline, global / per-example variance, mean / median, pooled /
# reference spread, one-sided / density offline test, and the published code's choices.
VARIANTS = [
    {},
    {"fix_variance": False},
    {"mean": "median"},
    {"mean": "median", "fix_variance": False},
    {"variance_mode": "reference"},
    {"online": False},
    {"online": False, "fix_variance": False},
    {"online": False, "mean": "median"},
    {"online": False, "offline_test": "density"},
    {"online": False, "offline_test": "density", "fix_variance": False},
    {"compat": "reference"},
    {"compat": "reference", "fix_variance": False},
    {"compat": "reference", "online": False},
    {"compat": "reference", "online": False, "fix_variance": False},
]


@pytest.fixture(scope="module")
def null_signals():
    """M -> (signal [M, N, A], keep [M, N]) from no-signal logits (one draw per M)."""
    from jaxsam.attacks import signals

    out = {}
    for m in (4, 8, 16, 32):
        logits, y, keep = null_study(m, 1000, seed=m)
        out[m] = (np.asarray(signals.logit_scaled_confidence(logits, y)), keep)
    return out


@pytest.mark.parametrize(
    "m", [4, 8, pytest.param(16, marks=pytest.mark.slow), pytest.param(32, marks=pytest.mark.slow)]
)
def test_null_every_variant_has_auc_one_half(null_signals, m):
    # 14 variants x 4 sizes compile 56 scorers (about 25 s per size on a loaded 2-core CPU), so
    # M = 16 and 32 run with -m slow; test_null_default_lira_on_logits covers all four sizes.
    signal, keep = null_signals[m]
    checked = 0
    for kw in VARIANTS:
        if m < 6 and kw.get("fix_variance") is False:
            # 2-of-4 masks leave one shadow per cut group: no per-example spread. Offline needs
            # only OUT shadows: 2-of-5 masks leave 2 of them.
            smallest = 6 if kw.get("online", True) else 5
            with pytest.raises(ConfigError, match=f"smallest M that works is {smallest}:"):
                lira_from_signal(signal, keep, **kw)
            continue
        scores = lira_from_signal(signal, keep, **kw)
        auc, se = clustered_auc(scores, keep)
        assert abs(auc - 0.5) <= 3 * se, (m, kw, auc, se)
        checked += 1
    assert checked == len(VARIANTS) - (6 if m < 6 else 0)


@pytest.mark.parametrize("m", [4, 8])
def test_null_fails_with_the_old_leave_one_out_groups(null_signals, m):
    # The same data and the same criterion reject the old groups: a member's own group is one
    # shadow short, so its expected online score is (1/n_out - 1/n_in)/2 below a non-member's.
    signal, keep = null_signals[m]
    for kw in ({}, {"fix_variance": False}, {"mean": "median"}):
        auc, se = clustered_auc(lira_from_signal(signal, keep, equal_groups=False, **kw), keep)
        assert abs(auc - 0.5) > 3 * se, (m, kw, auc, se)


@pytest.mark.parametrize("m", [4, 8, 16, 32])
def test_null_default_lira_on_logits(m):
    logits, y, keep = null_study(m, 800, seed=100 + m)
    auc, se = clustered_auc(lira(logits, y, keep), keep)
    assert abs(auc - 0.5) <= 3 * se, (m, auc, se)


def test_null_with_an_excluded_model():
    # Exact 8-of-16 masks minus one model (a failed one) are no longer exact; the cut groups
    # still make member and non-member scores alike.
    logits, y, keep = null_study(16, 1000, seed=7)
    use = np.arange(16) != 5
    for kw in ({}, {"fix_variance": False}, {"online": False}):
        auc, se = clustered_auc(lira(logits[use], y, keep[use], **kw), keep[use])
        assert abs(auc - 0.5) <= 3 * se, (kw, auc, se)


# --- the published code ------------------------------------------------------------------


def published_lira(signal, keep, target, *, online, fix_variance):
    """What plot.py computes with ``target`` as its one test model and all other models (in
    index order) as the shadows, from its description; higher = member (plot.py ranks the
    negated value).

    * Per example, the IN (OUT) shadows' scores in model order; every example's list is cut to
      the shortest list's length over all examples (taking the first ones).
    * Location: the median of the cut list.
    * Global variance: the standard deviation of *all* cut IN scores (all examples and queries,
      around their grand mean); online it serves the OUT Gaussian too. Offline: of all cut OUT
      scores. Per-example variance: the standard deviation of the cut list, per query.
    * Online: log N(s; IN) - log N(s; OUT); offline: -log N(s; OUT); averaged over queries.
    """
    m, n, _ = signal.shape
    shadows = [i for i in range(m) if i != target]
    x, k = signal[shadows].astype(np.float64), keep[shadows]
    cut = {}
    for name, member in (("in", k), ("out", ~k)):
        lists = [x[member[:, j], j] for j in range(n)]  # each [n_j, A], model order
        size = min(len(v) for v in lists)
        cut[name] = np.stack([v[:size] for v in lists])  # [N, size, A]
    obs = signal[target].astype(np.float64)
    loc = {g: np.median(v, axis=1) for g, v in cut.items()}
    if fix_variance:
        sd = {"in": cut["in"].std(), "out": cut["in"].std() if online else cut["out"].std()}
    else:
        sd = {g: v.std(axis=1) for g, v in cut.items()}
    out = norm.logpdf(obs, loc["out"], sd["out"])
    if not online:
        return -out.mean(-1)
    return (norm.logpdf(obs, loc["in"], sd["in"]) - out).mean(-1)


def _irregular_study(seed=11, m=10, n=40, a=3):
    """Masks where examples are in 3 to 7 of 10 models: the cut to the smallest group matters."""
    rng = np.random.default_rng(seed)
    keep = np.argsort(rng.random((m, n)), 0) < rng.integers(3, 8, n)[None]
    s = rng.normal(size=(m, n, a)) + 3 * rng.normal(size=(1, n, 1)) + 1.5 * keep[..., None]
    return s.astype(np.float32), keep


@pytest.mark.parametrize("online", [True, False])
@pytest.mark.parametrize("fix_variance", [True, False])
@pytest.mark.parametrize("exact", [True, False])
def test_compat_reference_equals_the_published_algorithm(online, fix_variance, exact):
    if exact:
        s, _ = _irregular_study()
        keep = make_masks(10, 40, 0.5, seed=3)
    else:
        s, keep = _irregular_study()
    kw = dict(online=online, fix_variance=fix_variance)
    ours = lira_from_signal(s, keep, compat="reference", chunk_size=3, **kw)
    theirs = np.stack([published_lira(s, keep, t, **kw) for t in range(s.shape[0])])
    np.testing.assert_allclose(ours, theirs, rtol=1e-5, atol=1e-4)
    # The same ROC: equal AUC and TPR at every FPR (one ROC point per distinct score).
    a, b = metrics.roc_metrics(ours, keep), metrics.roc_metrics(theirs.astype(np.float32), keep)
    assert a["auc"] == pytest.approx(b["auc"], abs=1e-7)
    assert a["tpr_at_fpr"] == b["tpr_at_fpr"]
    fa, ta = metrics.roc_curve(ours, keep)[:2]
    fb, tb = metrics.roc_curve(theirs.astype(np.float32), keep)[:2]
    np.testing.assert_array_equal(fa, fb)
    np.testing.assert_array_equal(ta, tb)
    if not exact:
        # Without the cut (the old variance_mode="reference" path) the numbers differ here.
        old = lira_from_signal(
            s,
            keep,
            mean="median",
            offline_test="density",
            variance_mode="reference",
            equal_groups=False,
            **kw,
        )
        assert np.abs(old - theirs).max() > 1e-2


def test_compat_reference_from_logits_as_the_published_scores():
    # The published pipeline: signal = log p_y - log sum_{y' != y} p_y' from a float64 softmax.
    rng = np.random.default_rng(5)
    m, n, a, c = 8, 30, 2, 4
    logits = rng.normal(size=(m, n, a, c)).astype(np.float32) * 2
    y = rng.integers(0, c, n)
    keep = make_masks(m, n, 0.5, seed=5)
    p = np.exp(logits.astype(np.float64) - logits.max(-1, keepdims=True))
    p /= p.sum(-1, keepdims=True)
    p_true = np.take_along_axis(p, np.broadcast_to(y[None, :, None, None], (m, n, a, 1)), -1)[
        ..., 0
    ]
    signal = np.log(p_true) - np.log(p.sum(-1) - p_true)
    ours = lira(logits, y, keep, compat="reference")
    theirs = np.stack(
        [published_lira(signal, keep, t, online=True, fix_variance=True) for t in range(m)]
    )
    np.testing.assert_allclose(ours, theirs, rtol=1e-4, atol=1e-4)


def test_compat_rejects_contradicting_keywords():
    s, keep = _irregular_study()
    ref = lira_from_signal(s, keep, compat="reference")
    same = lira_from_signal(s, keep, compat="reference", mean="median", equal_groups=True)
    np.testing.assert_array_equal(ref, same)
    for bad in ({"mean": "mean"}, {"equal_groups": False}, {"offline_test": "one_sided"}):
        with pytest.raises(ConfigError, match="compat='reference' sets"):
            lira_from_signal(s, keep, compat="reference", **bad)
    with pytest.raises(ConfigError, match="compat"):
        lira_from_signal(s, keep, compat="plot.py")


# --- too few models ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("m", "pkeep", "kw", "smallest"),
    [
        (4, 0.5, {"fix_variance": False}, 6),  # one shadow per cut group: no spread
        (4, 0.5, {"online": False, "fix_variance": False}, 5),  # 2-of-5: 2 OUT shadows
        (4, 0.5, {"compat": "reference", "fix_variance": False}, 6),
        (3, 2 / 3, {}, 5),  # 2-of-3 masks: no OUT shadow is left; 3-of-5 leaves one
        (2, 0.5, {"online": False}, 4),  # 1-of-2: the only other model is IN or OUT
        (8, 0.25, {"fix_variance": False}, 11),  # k = round(M / 4) >= 3: M = 11
    ],
)
def test_too_few_models_raise_naming_the_smallest_m(m, pkeep, kw, smallest):
    rng = np.random.default_rng(0)
    s = rng.normal(size=(m, 20, 1)).astype(np.float32)
    keep = make_masks(m, 20, pkeep, seed=1)
    with pytest.raises(ConfigError, match=f"smallest M that works is {smallest}:"):
        lira_from_signal(s, keep, **kw)
    # The named M does work.
    s2 = rng.normal(size=(smallest, 20, 1)).astype(np.float32)
    assert np.isfinite(lira_from_signal(s2, make_masks(smallest, 20, pkeep, seed=1), **kw)).all()


def test_empty_group_raises_by_default_and_falls_back_when_asked():
    rng = np.random.default_rng(2)
    s = rng.normal(size=(6, 5, 1)).astype(np.float32)
    keep = make_masks(6, 5, 0.5, seed=0)
    keep[:, 0] = True  # every model trained on example 0: no OUT shadow there
    with pytest.raises(ConfigError, match="OUT shadow"):
        lira_from_signal(s, keep)
    assert np.isfinite(lira_from_signal(s, keep, equal_groups=False)).all()


# --- the cut groups and the options object -----------------------------------------------


def test_cut_groups_with_exact_masks_are_k_minus_one_and_ignore_the_target():
    m, n, k = 10, 50, 4
    keep = make_masks(m, n, k / m, seed=4)
    s_in, s_out = groups.cut_to_smallest(keep), groups.cut_to_smallest(~keep)
    assert (s_in.sizes() == k - 1).all() and (s_out.sizes() == m - k - 1).all()
    for sets, member in ((s_in, keep), (s_out, ~keep)):
        chosen = sets.masks[sets.pick, :, np.arange(n)[None, :]]  # [M, N, M]: the candidate
        shadows = chosen & ~np.eye(m, dtype=bool)[:, None, :]
        assert (shadows <= member.T[None]).all()  # only group members, never the target
        # The lowest-indexed shadows are kept: a kept shadow has no dropped one below it.
        dropped = member.T[None] & ~shadows & ~np.eye(m, dtype=bool)[:, None, :]
        first_dropped = np.where(dropped.any(-1), dropped.argmax(-1), m)
        last_kept = np.where(shadows.any(-1), m - 1 - shadows[..., ::-1].argmax(-1), -1)
        assert (last_kept < first_dropped).all()
    # A target's own mask does not decide its cut: flip target 0's row, its sets stay.
    flipped = keep.copy()
    flipped[0] = ~flipped[0]
    for member, other in ((keep, flipped), (~keep, ~flipped)):
        a, b = groups.cut_to_smallest(member), groups.cut_to_smallest(other)
        for sets in (a, b):
            assert np.issubdtype(sets.pick.dtype, np.signedinteger)  # int16 or int32
        sa = a.masks[a.pick[0], 1:, np.arange(n)]
        sb = b.masks[b.pick[0], 1:, np.arange(n)]
        np.testing.assert_array_equal(sa, sb)


def test_options_are_one_frozen_value():
    opts = LiraOptions.from_keywords(online=False, fix_variance=False)
    assert opts == LiraOptions(online=False, fix_variance=False)
    assert hash(opts) == hash(LiraOptions(online=False, fix_variance=False))
    assert opts.equal_groups and opts.mean == "mean" and opts.offline_test == "one_sided"
    with pytest.raises(dataclasses.FrozenInstanceError):
        opts.online = True  # type: ignore[misc]
    ref = LiraOptions.from_keywords(compat="reference")
    assert (ref.mean, ref.offline_test, ref.variance_mode) == ("median", "density", "reference")
    assert ref.equal_groups and ref.variance_groups == "cut" and ref.compat == "reference"
    with pytest.raises(ConfigError, match="min_shadows_variance"):
        LiraOptions(min_shadows_variance=1)
    with pytest.raises(ConfigError, match="equal_groups"):
        LiraOptions(equal_groups="yes")  # type: ignore[arg-type]
