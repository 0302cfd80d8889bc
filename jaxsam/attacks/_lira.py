"""Likelihood-ratio attack (LiRA, Carlini et al. 2022) for all targets at once.

Every model m in turn is the target; its shadows are *other* models (it never enters its own
statistics). Which ones is the reference-group rule every attack shares
(:mod:`jaxsam.attacks._reference`, ``equal_groups``): on exact k-of-M masks each of m's groups
(IN, OUT) is cut to a size that depends neither on the example nor on m's membership (k - 1 IN
and M - k - 1 OUT), because leave-one-out groups leave m's own group one shadow short and bias
the score against members even when there is no signal (docs/attacks.md); on independent masks
every other model is a shadow (leave-one-out), which is unbiased there.

The statistics (count, mean, sum of squared deviations) of a few candidate shadow sets per group
are computed once over all M models; target m's statistics are obtained by removing m's own value
from the candidate that holds its shadows (an exact Welford down-date), so the whole attack costs
O(M N A) instead of O(M^2 N A) and never loops in Python over targets or examples (only over
chunks, to bound memory).

Decisions (see docs/attacks.md):

* location: the mean of the shadow scores (paper) by default, ``mean="median"`` as an option;
* spread: always the spread around each example's mean (maximum-likelihood, ddof = 0);
* ``fix_variance=True`` ("global variance"): one variance for IN and one for OUT per target and
  query augmentation, each the pooled within-example variance ``sum_n SS_n / sum_n n_n`` over
  all of the target's leave-one-out shadows (a per-target constant, so the group sizes cannot
  bias it); ``variance_mode="reference"`` takes the spread around the grand mean instead, over
  all queries, and online uses the IN spread for both distributions;
* offline: one-sided test against the OUT Gaussian, ``-log P[Z > s]`` (paper) by default,
  ``offline_test="density"`` gives the published code's ``-log pdf_OUT(s)``;
* queries: the per-query log-likelihood ratios (online) or log-probabilities (offline) are
  averaged over the A queries;
* ``compat="reference"``: everything the published code (tensorflow/privacy
  research/mi_lira_2021/plot.py) does: median, grand-mean spread (IN spread reused online),
  density offline test, groups cut to the smallest size, global variance from the cut groups.

Options that the masks cannot support under the rule (an empty group, per-example variance with
fewer than 2 shadows) raise a TooFewModelsError naming the smallest M that works. With an
explicit ``equal_groups=False`` the old fallbacks apply instead: an example whose group has no
shadow for a target uses that target's global mean of the group (same query); per-example
variance with fewer than ``min_shadows_variance`` shadows uses the pooled variance. Every
variance is floored at ``var_floor``.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax
from jax.scipy.stats import norm

from jaxsam.attacks import _lira_groups as _groups
from jaxsam.attacks import _lira_stream as _stream
from jaxsam.attacks import _reference, _tiles
from jaxsam.attacks import signals as _signals
from jaxsam.attacks._checks import check_finite, check_logits, check_signal
from jaxsam.attacks._lira_options import LiraOptions
from jaxsam.errors import TooFewModelsError

Array = Any

_LOG_2PI = float(np.log(2 * np.pi))


def auto_chunk(n: int, a: int, budget: int = 1 << 24) -> int:
    """Targets per chunk so that one chunk holds about ``budget`` float32 values."""
    return max(1, budget // max(1, n * a))


@functools.partial(jax.jit, static_argnames=("step", "dtype"))
def _stats_tile(src, at, masks, count, start, *, step, dtype):
    """Mean and SS [S, step, A] of S sets on one tile of examples (two passes over the tile,
    which stays in cache): src holds the signal (float32 [M, *, A]), masks bool [S, M, N],
    count [S, N]."""
    m = masks.shape[1]
    x = _tiles.cut(src, at, (m, step)).astype(dtype)  # [M, step, A]
    w = lax.dynamic_slice_in_dim(masks, start, step, 2)[..., None]  # [S, M, step, 1]
    c = jnp.maximum(lax.dynamic_slice_in_dim(count, start, step, 1), 1.0)[..., None]
    total = _tiles.sums([jnp.where(w[s], x, 0.0) for s in range(w.shape[0])], 0)
    mean = [t / c[s] for s, t in enumerate(total)]  # 0 for an empty set
    ss = _tiles.sums([jnp.where(w[s], jnp.square(x - mu), 0.0) for s, mu in enumerate(mean)], 0)
    return jnp.stack(mean), jnp.stack(ss)


# The one-pass sums around a shift K lose about log10(1 + c (mean - K)^2 / SS) digits of SS;
# a tile where that exceeds 6 digits (K far outside the set's spread) is redone in two passes.
_SHIFT_RISK = 1e6


@functools.partial(jax.jit, static_argnames=("step", "dtype"))
def _stats_tile_shifted(src, at, masks, count, start, *, step, dtype):
    """:func:`_stats_tile` in one sweep: sums of y = x - K and y^2 with K the first model's
    value at each (example, query); also whether the tile needs the two-pass form."""
    m = masks.shape[1]
    x = _tiles.cut(src, at, (m, step))  # [M, step, A] float32
    shift = x[0].astype(dtype)
    y = x.astype(dtype) - shift
    w = lax.dynamic_slice_in_dim(masks, start, step, 2)[..., None]  # [S, M, step, 1]
    c = lax.dynamic_slice_in_dim(count, start, step, 1)[..., None]  # [S, step, 1]
    ops = []
    for s in range(w.shape[0]):
        ops += [jnp.where(w[s], y, 0.0), jnp.where(w[s], jnp.square(y), 0.0)]
    got = _tiles.sums(ops, 0)
    s1, s2 = jnp.stack(got[0::2]), jnp.stack(got[1::2])  # [S, step, A]
    safe = jnp.maximum(c, 1.0)
    ss = jnp.maximum(s2 - jnp.square(s1) / safe, 0.0)
    mean = jnp.where(c > 0, shift + s1 / safe, 0.0)
    far = jnp.square(s1) / safe > _SHIFT_RISK * jnp.maximum(ss, 1e-300)
    risky = jnp.any(far & (c > 1))  # one model: SS = 0 exactly
    return mean, ss, risky


def set_stats(
    signal: np.ndarray, masks: np.ndarray, dtype, chunk_examples: int | None = None
) -> tuple[jax.Array, jax.Array, jax.Array]:
    """Statistics of S sets of models at every example, computed over tiles of examples.

    One read pass over the signal: each tile (all M models, ``chunk_examples`` examples) is
    summed in one sweep around a shift (the first model's values), or, where the shift lies
    far outside a set's spread, swept twice while it is in cache (the sets' means, then the
    squared deviations from them); only a tile is ever converted to ``dtype``, so peak memory
    stays near the size of the float32 signal itself (which is shared with XLA, not copied, where
    :func:`jaxsam.attacks._tiles.device_view` allows).

    Args:
      signal: float32 [M, N, A].
      masks: bool [S, M, N]: set s holds model m at example n.
      dtype: accumulation dtype (float64 needs ``jax.enable_x64``).
      chunk_examples: examples per tile (None: about 2M values per tile).

    Returns:
      ``count [S, N]``, ``mean [S, N, A]`` (0 for an empty set), ``SS [S, N, A]`` (sum of
      squared deviations from the set's mean).
    """
    m, n, a = signal.shape
    step = min(n, chunk_examples or _tiles.tile_shape(m, n, a)[1])
    count = jnp.asarray(masks.sum(axis=1), dtype)  # exact: an integer below 2**24
    dmasks = jnp.asarray(masks)
    full = _tiles.device_view(signal)

    def one(t):
        args = (t.load(), t.at, dmasks, count, t.start[1])
        mean, ss, risky = _stats_tile_shifted(*args, step=step, dtype=dtype)
        if risky:
            mean, ss = _stats_tile(*args, step=step, dtype=dtype)
        return jax.block_until_ready((mean[:, t.skip[1] :], ss[:, t.skip[1] :]))

    done = _tiles.map_tiles(one, _tiles.tiles(signal, m, step, full))
    means, sss = [d[0] for d in done], [d[1] for d in done]
    return count, jnp.concatenate(means, axis=1), jnp.concatenate(sss, axis=1)


def group_stats(
    signal: np.ndarray, keep: np.ndarray, dtype, chunk_examples: int | None = None
) -> tuple[tuple[jax.Array, ...], tuple[jax.Array, ...]]:
    """IN and OUT group statistics over all M models: ``(count [N], mean [N, A], SS [N, A])``
    for IN, then for OUT (see :func:`set_stats`)."""
    count, mean, ss = set_stats(signal, np.stack([keep, ~keep]), dtype, chunk_examples)
    return (count[0], mean[0], ss[0]), (count[1], mean[1], ss[1])


def _parents(masks: np.ndarray) -> list[int | None]:
    """For each set, another set that holds it plus one model at some examples (at most one
    per example), or None. Strictly larger parents, so no set is its own ancestor."""
    out: list[int | None] = []
    for a, ma in enumerate(masks):
        parent = None
        for b, mb in enumerate(masks):
            extra = (mb & ~ma).sum(axis=0)
            if b != a and not (ma & ~mb).any() and extra.max() == 1:
                parent = b
                break
        out.append(parent)
    return out


def all_set_stats(signal: np.ndarray, masks: np.ndarray, dtype) -> tuple[jax.Array, ...]:
    """:func:`set_stats` of distinct sets, down-dating where a set is another minus one model.

    A cut group is typically the whole group minus its last model at each example: its
    statistics then cost one gather of [N, A] values instead of a pass over the signal.
    """
    parents = _parents(masks)
    roots = [i for i, p in enumerate(parents) if p is None]
    count, mean, ss = set_stats(signal, masks[roots], dtype)
    done = {r: (count[i], mean[i], ss[i]) for i, r in enumerate(roots)}
    cols = np.arange(masks.shape[2])
    while len(done) < len(masks):
        for a, b in enumerate(parents):
            if a in done or b not in done:
                continue
            extra = masks[b] & ~masks[a]  # [M, N]: at most one model per example
            x = jnp.asarray(signal[extra.argmax(axis=0), cols])  # [N, A] float32
            r = jnp.asarray(extra.any(axis=0))
            done[a] = _loo_jit(x.astype(dtype), r.astype(dtype), *done[b])
    return tuple(jnp.stack([done[i][k] for i in range(len(masks))]) for k in range(3))


def _take(stats, pick):
    """Per-target statistics from a family's J candidate sets.

    stats: count [J, N], mean and SS [J, N, A]; pick: int [B, N] (the candidate of each target
    and example), or None when J = 1. Returns count [B or 1, N], mean and SS [B or 1, N, A].
    """
    out = [s[0][None] for s in stats]
    for j in range(1, stats[0].shape[0]):
        sel = pick == j
        out = [
            jnp.where(sel if s.ndim == 2 else sel[..., None], s[j][None], o)
            for s, o in zip(stats, out, strict=True)
        ]
    return tuple(out)


def _loo(obs, r, count, mean, ss):
    """Down-date per-target set statistics by the target's own value where it is in the set.

    obs [B, N, A]; r [B, N] (1.0 where the target is in the set); count [B, N]; mean, ss
    [B, N, A]. Returns count' [B, N], mean' [B, N, A] (garbage where count' = 0), SS' [B, N, A].
    """
    n1 = count - r
    safe = jnp.maximum(n1, 1.0)[..., None]
    d = obs - mean
    rr = r[..., None]
    mean1 = mean - rr * d / safe
    ss1 = ss - rr * jnp.square(d) * (count[..., None] / safe)
    ss1 = jnp.where(n1[..., None] > 0, jnp.maximum(ss1, 0.0), 0.0)
    return n1, mean1, ss1


_loo_jit = jax.jit(_loo)


def _global_variance(n1, mean1, ss1, variance_mode):
    """One variance per target and query [B, A] from its shadows' statistics."""
    has = (n1 > 0)[..., None]
    total = jnp.maximum(jnp.sum(n1, axis=1), 1.0)  # [B]
    pooled = jnp.sum(ss1, axis=1) / total[:, None]  # [B, A]
    if variance_mode == "pooled":
        return pooled
    a = mean1.shape[-1]
    m1 = jnp.where(has, mean1, 0.0)
    grand = jnp.sum(n1[..., None] * m1, axis=(1, 2)) / (total * a)  # [B]
    between = jnp.sum(n1[..., None] * jnp.square(m1 - grand[:, None, None]), axis=(1, 2))
    ref = (jnp.sum(ss1, axis=(1, 2)) + between) / (total * a)  # [B]
    return jnp.broadcast_to(ref[:, None], pooled.shape)


def _group(obs, stats, targets, opts: LiraOptions):
    """Location and variance [B, N, A] of one group for a chunk of targets.

    stats: the candidate sets' statistics of the location family and of the global-variance
    family (None: the same); targets: (pick, inside) for each of the two families (pick None
    when a family has one candidate) and the precomputed median [B, N, A] or None.
    """
    loc_stats, var_stats = stats
    (pick, inside), var_targets, median = targets
    n1, mean1, ss1 = _loo(obs, inside.astype(obs.dtype), *_take(loc_stats, pick))
    has = (n1 > 0)[..., None]
    total = jnp.maximum(jnp.sum(n1, axis=1), 1.0)  # [B]
    # Global (per target, per query) mean of the group: fallback location (old groups only).
    gmean = jnp.sum(jnp.where(has, n1[..., None] * mean1, 0.0), axis=1) / total[:, None]  # [B, A]
    loc = mean1 if median is None else median
    location = jnp.where(has & jnp.isfinite(loc), loc, gmean[:, None, :])
    if opts.fix_variance:
        if var_stats is not None:
            vpick, vinside = var_targets
            n1, mean1, ss1 = _loo(obs, vinside.astype(obs.dtype), *_take(var_stats, vpick))
        # [B, 1, A]: log(var) is taken once per target and query
        var = _global_variance(n1, mean1, ss1, opts.variance_mode)[:, None, :]
    else:
        pooled = jnp.sum(ss1, axis=1) / total[:, None]  # [B, A]
        per = ss1 / jnp.maximum(n1, 1.0)[..., None]
        var = jnp.where((n1 >= opts.min_shadows_variance)[..., None], per, pooled[:, None, :])
    return location, jnp.maximum(var, opts.var_floor)


def _logpdf(x, mu, var):
    return -0.5 * (_LOG_2PI + jnp.log(var) + jnp.square(x - mu) / var)


@functools.partial(jax.jit, static_argnames=("opts",))
def _score_chunk(obs, stats, targets, *, opts: LiraOptions):
    """Scores [B, N] float32 of a chunk of targets: obs [B, N, A]; per group (a dict keyed by
    "in" and "out"), the statistics and the targets' picks (see :func:`_group`)."""
    obs = obs.astype(stats["out"][0][1].dtype)
    mu_out, var_out = _group(obs, stats["out"], targets["out"], opts)
    if opts.online:
        mu_in, var_in = _group(obs, stats["in"], targets["in"], opts)
        if opts.variance_mode == "reference" and opts.fix_variance:
            var_out = var_in  # the published code's choice, kept only in this mode
        per_query = _logpdf(obs, mu_in, var_in) - _logpdf(obs, mu_out, var_out)
    elif opts.offline_test == "one_sided":
        per_query = -norm.logsf((obs - mu_out) / jnp.sqrt(var_out))
    else:
        per_query = -_logpdf(obs, mu_out, var_out)
    return jnp.mean(per_query, axis=-1).astype(jnp.float32)


def loo_median(signal: np.ndarray, member: np.ndarray, chunk_examples: int | None = None):
    """Leave-one-out median of each group: float32 [M, N, A], NaN where the group is empty.

    Target m's value at (n, a) is the median of the group's scores over all models but m.
    Sorting runs over chunks of examples; no loop over targets.
    """
    return _groups.shadow_median(signal, _groups.leave_one_out(member), chunk_examples)


def _describe(opts: LiraOptions) -> str:
    kind = "online" if opts.online else "offline"
    var = "global variance" if opts.fix_variance else "per-example variance"
    return f"{kind}, {var}" + (f", compat={opts.compat!r}" if opts.compat else "")


def _check_sets(keep, sets, var_sets, rule, opts: LiraOptions) -> None:
    """Raise, naming the smallest M, where the masks cannot serve ``opts`` under ``rule``."""
    what = f"LiRA ({_describe(opts)})"
    need = 1 if opts.fix_variance else opts.min_shadows_variance
    hint = "use fix_variance=True" if need > 1 else ""
    needs = {g: need for g in sets}
    if opts.fix_variance and not var_sets and opts.variance_mode == "pooled":
        if rule.cut:  # a within-example spread from the cut groups themselves
            needs = {g: 2 for g in sets}
            hint = "use fix_variance=True"
        else:
            var_sets = sets  # leave-one-out: the spread pools the same groups
    _reference.check_sizes(keep, sets, rule, what, needs, hint)
    for group, s in var_sets.items():
        # The pooled variance needs some example with 2 or more leave-one-out shadows.
        if s.size_summary()[:, 1].min() < 2:
            fix = "use fix_variance=True"
            _reference.check_sizes(keep, {group: s}, rule, what, {group: 2}, fix)


def lira_scores(signal: np.ndarray, keep: np.ndarray, opts: LiraOptions) -> np.ndarray:
    """LiRA scores from a checked signal (float32 [M, N, A]) and keep (bool [M, N]).

    Raises DataError where the signal has a NaN or infinite value (checked here: the compiled
    path's statistics sweep shows it without a pass of its own).
    """
    rule = _reference.resolve(opts.equal_groups, keep)
    # The jitted scorer sees the resolved rule only ("auto" and True compile once).
    opts = dataclasses.replace(opts, equal_groups=rule.cut)
    with jax.enable_x64(opts.precision == "float64"):
        return _lira_impl(signal, keep, opts, rule)


def _lira_impl(signal, keep, opts: LiraOptions, rule):
    m, n, a = signal.shape
    dtype = jnp.float64 if opts.precision == "float64" else jnp.float32
    groups = opts.groups
    sets = {g: rule.sets(keep, g) for g in groups}
    var_sets = {}  # global variance from all leave-one-out shadows, the location from the cut
    if opts.fix_variance and rule.cut and opts.variance_groups == "all":
        var_sets = {g: _groups.shadow_sets(keep, g, False) for g in groups}
    try:
        _check_sets(keep, sets, var_sets, rule, opts)
    except TooFewModelsError:
        check_finite(signal)  # a damaged signal is named first, as where the masks are fine
        raise
    # Location families (cut) and, for a global variance, leave-one-out families per group.
    families = {("loc", g): sets[g] for g in groups} | {("var", g): v for g, v in var_sets.items()}
    masks, ids, counts = _groups.distinct_masks(list(families.values()))
    fams = None
    if _stream.supported(opts):
        cands = dict(zip(families, ids, strict=True))
        var = {g: (var_sets[g], cands["var", g]) for g in var_sets}
        fams = {g: ((sets[g], cands["loc", g]), var.get(g)) for g in groups}
        if _stream.kernel_supported(opts, fams):  # its statistics sweep checks the signal
            return _stream.score_kernels(signal, masks, fams, opts, counts)
    check_finite(signal)
    every = all_set_stats(signal, np.stack(masks), dtype)
    if fams is not None:
        return _stream.score(signal, every, fams, opts, dtype)
    stats, picks = {}, {}  # per family: its candidates' statistics; (pick, inside) [M, N]
    for (key, f), idx in zip(families.items(), ids, strict=True):
        stats[key] = tuple(x[jnp.asarray(idx)] for x in every)
        picks[key] = (None if f.masks.shape[0] == 1 else f.pick, f.inside)
    by_group, targets = {}, {}  # targets: host arrays [M, ...] that each chunk slices
    for g in groups:
        med = _groups.shadow_median(signal, sets[g]) if opts.mean == "median" else None
        by_group[g] = (stats["loc", g], stats.get(("var", g)))
        targets[g] = (picks["loc", g], picks.get(("var", g)), med)
    step = opts.chunk_size or auto_chunk(n, a)
    out = np.empty((m, n), np.float32)
    for s0 in range(0, m, step):
        chunk = jax.tree.map(lambda x, s0=s0: jnp.asarray(x[s0 : s0 + step]), targets)
        out[s0 : s0 + step] = np.asarray(
            _score_chunk(jnp.asarray(signal[s0 : s0 + step]), by_group, chunk, opts=opts)
        )
    return out


def lira_from_signal(signal: Array, keep: Array, **options: Any) -> np.ndarray:
    """LiRA scores from a precomputed signal (normally the logit-scaled confidence).

    Args:
      signal: float [M, N, A], target-model signal for every model, example and query.
      keep: bool [M, N], True where model m trained on example n.
      **options: the keyword options of :func:`lira` (``online``, ``fix_variance``, ``compat``,
        ...); an unknown name is a ``TypeError``.

    Returns:
      numpy float32 [M, N]: target m's score for example n, higher = member.
    """
    opts = LiraOptions.from_keywords(**options)
    signal, keep = check_signal(signal, keep, finite=False)  # lira_scores checks it
    return lira_scores(signal, keep, opts)


def lira(
    logits: Array,
    labels: Array,
    keep: Array,
    *,
    online: bool = True,
    fix_variance: bool = True,
    mean: str | None = None,
    offline_test: str | None = None,
    variance_mode: str | None = None,
    equal_groups: bool | str | None = None,
    compat: str | None = None,
    chunk_size: int | None = None,
    min_shadows_variance: int = 2,
    var_floor: float = 1e-12,
    precision: str = "float64",
) -> np.ndarray:
    """LiRA membership scores for every model as the target.

    Args:
      logits: float [M, N, A, C] (any float dtype; numpy, jax or a memory map).
      labels: int [N].
      keep: bool [M, N], True where model m trained on example n.
      online: use IN and OUT shadows (likelihood ratio); False: OUT shadows only.
      fix_variance: one (global) variance per group and query instead of per example.
      mean: ``"mean"`` (paper; default) or ``"median"`` as the Gaussian's location.
      offline_test: ``"one_sided"`` (paper, default: ``-log P_OUT[Z > s]``) or ``"density"``
        (published code: ``-log pdf_OUT(s)``).
      variance_mode: ``"pooled"`` (default: pooled within-example variance, separate for IN and
        OUT) or ``"reference"`` (the published code's spread around the grand mean; IN spread
        for both).
      equal_groups: the reference-group rule shared by every attack
        (:mod:`jaxsam.attacks._reference`): ``"auto"`` (default) decides from the masks, True
        cuts each target's IN and OUT groups to sizes that do not depend on its membership
        (k - 1 IN, M - k - 1 OUT with exact k-of-M masks), False keeps all leave-one-out
        shadows (unbiased on independent masks, biased on exact ones). ``"auto"`` is
        leave-one-out where the masks look independent (Bernoulli) and cut otherwise.
      compat: None (default) or ``"reference"``: everything the published code does (median,
        grand-mean spread with the IN spread reused online, density offline test, groups cut to
        the smallest size and the global variance taken from them). Keywords that contradict it
        raise a ConfigError.
      chunk_size: targets scored per jitted call (None: all targets in tiles of about 2M
        values; other than with a global pooled variance and the mean: about 16M values
        per chunk).
      min_shadows_variance: per-example variance needs this many shadows per group (>= 2).
      var_floor: lower bound on every variance.
      precision: ``"float64"`` (default; exact down-dates even for tiny groups) or
        ``"float32"`` (faster; fine with global variance and many shadows).

    Returns:
      numpy float32 [M, N]: target m's score for example n; higher = member. Model m never
      enters its own shadow statistics.

    Raises:
      TooFewModelsError: (a ConfigError) unless ``equal_groups=False``, when the masks leave a
        target too few shadows for the options (an empty group; per-example variance with
        fewer than ``min_shadows_variance``); the message names the smallest M that works.

    Example:
      >>> scores = lira(logits, labels, keep)            # online, global variance
      >>> off = lira(logits, labels, keep, online=False)  # offline, one-sided
      >>> ref = lira(logits, labels, keep, compat="reference")  # as the published code
    """
    check_logits(logits, labels, keep)
    opts = LiraOptions.from_keywords(
        online=online,
        fix_variance=fix_variance,
        mean=mean,
        offline_test=offline_test,
        variance_mode=variance_mode,
        equal_groups=equal_groups,
        compat=compat,
        chunk_size=chunk_size,
        min_shadows_variance=min_shadows_variance,
        var_floor=var_floor,
        precision=precision,
    )
    signal = _signals.compute_chunked(_signals.logit_scaled_confidence, logits, labels)
    signal, keep = check_signal(signal, keep, finite=False)  # lira_scores checks it
    return lira_scores(signal, keep, opts)
