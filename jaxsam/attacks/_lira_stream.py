"""LiRA's scoring passes streamed over tiles of examples (global pooled variance, mean location).

After the statistics of the candidate shadow sets (one pass, :func:`jaxsam.attacks._lira.
all_set_stats`), two more read passes over the signal score every target; each pass sweeps
tiles of all M targets by a few hundred examples (:mod:`jaxsam.attacks._tiles`), so nothing of
size [M, N, A] is ever materialised beyond the signal itself.

1. **Variance.** Target m's pooled variance of a group is ``sum_n SS'_mn / sum_n n'_mn`` over
   its leave-one-out (or cut) shadows, where the down-date removes m's own value x where m is in
   the candidate set: ``SS' = SS - r d^2 c / (c - 1)``, ``d = x - mean``. The sum splits into
   ``sum_n SS_n`` over the examples where m has shadows (a float64 matrix product of the picks
   with the candidates' SS) minus ``sum_n r c / (c - 1) d^2`` (one elementwise float32 sweep,
   summed per tile in float32 and over tiles in float64). The counts ``n'`` are integers
   computed on the host.
2. **Scores.** The down-dated location gives ``x - mean' = (x - mean) c / (c - 1)`` where m is
   in the set (``x - mean`` otherwise), so each score is a few float32 operations per value
   with the per-target constants (1 / var, log var) precomputed in float64.

Precision. The candidates' means are kept as float32 pairs (``hi + lo`` = the float64 mean to
about 1e-14), and ``d = (x - hi) - lo`` carries full float32 *relative* precision even when x
is close to the mean; every score term is then within a few float32 ulps of the float64 value,
i.e. at the level of the float32 rounding of the signal itself. The variance's down-date term
enters as ``sum SS - sum r c/(c-1) d^2`` with both sums float64, so a small group (where the
target's own value is much of the spread) keeps float64 accuracy in the subtraction; only the
float32 relative error of each ``d^2`` (about 1e-7) remains.
"""

from __future__ import annotations

import dataclasses
import functools
import math

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from jaxsam.attacks import _kernels, _lira_kernels, _lira_stats_kernels, _tiles
from jaxsam.attacks._lira_groups import ShadowSets
from jaxsam.attacks._lira_options import LiraOptions

_LOG_2PI = math.log(2 * math.pi)


def supported(opts: LiraOptions) -> bool:
    """True for the options these passes compute: a global pooled variance and the mean as the
    location (the defaults), online or offline, any reference-group rule."""
    return opts.fix_variance and opts.variance_mode == "pooled" and opts.mean == "mean"


@dataclasses.dataclass(frozen=True)
class _Family:
    """A group's candidate sets on the device: ``idx`` (static) indexes the stacked statistics;
    pick int8 [M, N] (None for one candidate); inside bool [M, N]."""

    idx: tuple[int, ...]
    pick: jax.Array | None
    inside: jax.Array


jax.tree_util.register_dataclass(_Family, data_fields=["pick", "inside"], meta_fields=["idx"])


def _family(sets: ShadowSets, idx: np.ndarray) -> _Family:
    pick = None if len(idx) == 1 else jnp.asarray(sets.pick.astype(np.int8))
    return _Family(tuple(int(i) for i in idx), pick, jnp.asarray(sets.inside))


def _select(fam: _Family, per_cand, t0, n0, rows, step):
    """Per-target values of the picked candidate: per_cand(j) gives candidate j's [step, ...]
    values; returns them broadcast to [rows, step, ...] by the targets' picks."""
    out = per_cand(fam.idx[0])[None]
    if fam.pick is None:
        return out
    pick = _tiles.cut(fam.pick, (t0, n0), (rows, step))
    for j, i in enumerate(fam.idx[1:], start=1):
        val = per_cand(i)[None]
        sel = pick == j
        out = jnp.where(sel.reshape(sel.shape + (1,) * (val.ndim - 2)), val, out)
    return out


def _means(fam: _Family, st, t0, n0, rows, step):
    """For one family on one tile: c, r (float32 [rows, step]) and the picked candidate's mean
    as hi, lo (float32, broadcastable to [rows, step, A])."""
    count, hi, lo = st["count"], st["hi"], st["lo"]
    c = _select(fam, lambda i: lax.dynamic_slice_in_dim(count[i], n0, step, 0), t0, n0, rows, step)
    c = jnp.broadcast_to(c, (rows, step))
    hi_t = _select(fam, lambda i: lax.dynamic_slice_in_dim(hi[i], n0, step, 0), t0, n0, rows, step)
    lo_t = _select(fam, lambda i: lax.dynamic_slice_in_dim(lo[i], n0, step, 0), t0, n0, rows, step)
    r = _tiles.cut(fam.inside, (t0, n0), (rows, step)).astype(jnp.float32)
    return c, r, hi_t, lo_t


def _parts(x, fam: _Family, st, t0, n0, rows, step, dtype=jnp.float32):
    """For one family on one tile: c, r (float32 [rows, step]) and d = x - mean [rows, step, A]
    in ``dtype`` (float64: exact differences of the float32 values x, hi and lo)."""
    c, r, hi_t, lo_t = _means(fam, st, t0, n0, rows, step)
    if dtype != jnp.float32:
        return c, r, (x.astype(dtype) - hi_t.astype(dtype)) - lo_t.astype(dtype)
    return c, r, (x - hi_t) - lo_t


def _disjoint_terms(x, fams, st, t0, n0, rows, step, valid):
    """The float32 second terms [F, rows, A] of families whose targets are inside at most one
    of them at each (target, example) (the IN and OUT leave-one-out groups): the target's d^2
    is computed once, from the family it is in, and the sums over examples are one batched
    product with the families' weights."""
    weights, hi, lo = [], None, None
    for fam in fams:
        c, r, hi_f, lo_f = _means(fam, st, t0, n0, rows, step)
        has = (c - r > 0) & valid[None]
        weights.append(jnp.where(has & (r > 0), c / jnp.maximum(c - 1.0, 1.0), 0.0))
        inside = (r > 0)[..., None]
        hi = hi_f if hi is None else jnp.where(inside, hi_f, hi)
        lo = lo_f if lo is None else jnp.where(inside, lo_f, lo)
    d2 = jnp.square((x - hi) - lo)  # [rows, step, A]
    dims = (((2,), (1,)), ((0,), (0,)))
    got = lax.dot_general(jnp.stack(weights, 1), d2, dims, precision=lax.Precision.HIGHEST)
    return jnp.swapaxes(got, 0, 1)  # [F, rows, A]


@functools.partial(jax.jit, static_argnames=("rows", "step", "acc_dtype", "exact", "disjoint"))
def _variance_tile(
    src, at, start, skip, fams, st, gfams, *, rows, step, acc_dtype, exact, disjoint
):
    """Per-target sums of one tile, float ``acc_dtype`` [2, F, rows, A]: for each variance
    family the two terms of ``sum_n SS'`` (``sum_n SS`` over the examples with shadows, then
    ``sum_n r c / (c - 1) d^2``), then for each fallback family those of ``sum_n n' mean'``.

    ``exact``: the second terms elementwise in ``acc_dtype`` too (XLA:CPU runs float64
    elementwise code about 4x slower than float32); otherwise in float32. ``disjoint``: no
    target is inside two of ``fams`` at one example (see :func:`_disjoint_terms`).
    """
    t0, n0 = start
    x = _tiles.cut(src, at, (rows, step))  # [rows, step, A] float32
    valid = jnp.arange(step) >= skip[1]  # examples an earlier tile has not covered
    ew = acc_dtype if exact else jnp.float32
    terms, dots = [], []
    for fam in fams:
        c, r, d = _parts(x, fam, st, t0, n0, rows, step, ew)
        has = (c - r > 0) & valid[None]
        if not (disjoint and not exact):
            c = c.astype(ew)
            w = jnp.where(has & (r > 0), c / jnp.maximum(c - 1.0, 1.0), 0.0)
            terms.append(w[..., None] * jnp.square(d))
        dots.append(_picked_dot(fam, has, st["ss"], t0, n0, rows, step, acc_dtype))
    for fam in gfams:  # sum_n n' mean' = sum_n (c mean - r x) where the target has shadows
        c, r, _ = _parts(x, fam, st, t0, n0, rows, step)
        has = (c - r > 0) & valid[None]
        terms.append(jnp.where((has & (r > 0))[..., None], x.astype(ew), 0.0))
        dots.append(_picked_dot(fam, has, st["sums"], t0, n0, rows, step, acc_dtype))
    parts = [_tiles.sum_middle(t).astype(acc_dtype) for t in terms]
    if disjoint and not exact:
        merged = _disjoint_terms(x, fams, st, t0, n0, rows, step, valid).astype(acc_dtype)
        parts = [*merged, *parts]
    return jnp.stack([jnp.stack(dots), jnp.stack(parts)])


# A float32 second term is used where it is at most this many times the difference of the two
# terms (its float32 error, about 1e-7 of itself, is then below 1e-6 of the result); where a
# target's own values make up more of its group's spread, the pass is redone in float64.
_FLOAT32_RATIO = 4.0


def _variance_sums(signal, full, rows, step, vfams, gfams, st, dtype, disjoint) -> np.ndarray:
    """``sum_n SS'`` of every variance family, then ``sum_n n' mean'`` of every fallback
    family: float64 [F, M, A] (see :func:`_variance_tile`)."""
    m, a = signal.shape[0], signal.shape[2]
    exact = False
    while True:
        acc = np.zeros((2, len(vfams) + len(gfams), m, a), np.float64)

        def one(t, exact=exact):
            part = _variance_tile(
                t.load(),
                t.at,
                t.start,
                t.skip,
                vfams,
                st,
                gfams,
                rows=rows,
                step=step,
                acc_dtype=dtype,
                exact=exact,
                disjoint=disjoint,
            )
            return t, np.asarray(part, np.float64)

        for t, part in _tiles.map_tiles(one, _tiles.tiles(signal, rows, step, full)):
            r0 = t.start[0] + t.skip[0]
            acc[:, :, r0 : t.start[0] + rows] += part[:, :, t.skip[0] :]
        diff = acc[0] - acc[1]
        if exact or dtype != jnp.float64:
            return diff
        if not (np.abs(acc[1]) > _FLOAT32_RATIO * np.abs(diff)).any():
            return diff
        exact = True


def _picked_dot(fam, has, per_example, t0, n0, rows, step, dtype):
    """sum_n [has, pick = j] per_example[j, n] over the family's candidates j: [rows, A]."""
    pick = None if fam.pick is None else _tiles.cut(fam.pick, (t0, n0), (rows, step))
    out = 0.0
    for j, i in enumerate(fam.idx):
        sel = has if pick is None else has & (pick == j)
        vals = lax.dynamic_slice_in_dim(per_example[i], n0, step, 0)  # [step, A]
        out = out + jnp.dot(sel.astype(dtype), vals, precision=lax.Precision.HIGHEST)
    return out


def _neg_log_sf(t):
    """-log P[Z > t] for a standard normal Z, float32, accurate to a few ulps for every t."""
    u = jnp.abs(t) * (1.0 / math.sqrt(2.0))
    tail = 0.5 * lax.erfc(u)  # P[Z > |t|], no cancellation
    mid = jnp.where(t < 0, -jnp.log1p(-tail), -jnp.log(tail))

    def far():
        # Beyond t = 10 (P < 1e-23) the asymptotic series: erfc underflows float32 near t = 13.
        big = jnp.maximum(t, 10.0)
        q = 1.0 / (big * big)
        series = q * (-1.0 + q * (3.0 + q * (-15.0 + q * (105.0 - 945.0 * q))))
        tail_far = 0.5 * big * big + jnp.log(big) + 0.5 * _LOG_2PI - jnp.log1p(series)
        return jnp.where(t > 10.0, tail_far, mid)

    # Only a block with such a value pays for the series (XLA evaluates both sides of a where).
    return lax.cond(jnp.any(t > 10.0), far, lambda: mid)


@functools.partial(jax.jit, static_argnames=("rows", "step", "opts", "fallback"))
def _score_tile(src, at, start, fams, st, per_target, *, rows, step, opts, fallback):
    """Scores float32 [rows, step] of one tile. fams: the location family of each group;
    per_target: per group, 1/var, 1/sd and the fallback location [M, A], and the constant [M]."""
    t0, n0 = start
    x = _tiles.cut(src, at, (rows, step))
    z = {}
    for g, fam in fams.items():
        c, r, d = _parts(x, fam, st, t0, n0, rows, step)
        n1 = c - r
        zg = d * jnp.where(r > 0, c / jnp.maximum(n1, 1.0), 1.0)[..., None]
        if fallback:
            gmean = lax.dynamic_slice_in_dim(per_target[g]["gmean"], t0, rows, 0)[:, None, :]
            zg = jnp.where((n1 > 0)[..., None], zg, x - gmean)
        z[g] = zg

    def per(g, name):
        return lax.dynamic_slice_in_dim(per_target[g][name], t0, rows, 0)[:, None, :]

    if opts.online:
        q = jnp.square(z["out"]) * per("out", "iv") - jnp.square(z["in"]) * per("in", "iv")
        total = 0.5 * _tiles.sum_minor(q)
    elif opts.offline_test == "one_sided":
        total = _tiles.sum_minor(_neg_log_sf(z["out"] * per("out", "isd")))
    else:  # density: -log pdf_OUT
        total = 0.5 * _tiles.sum_minor(jnp.square(z["out"]) * per("out", "iv"))
    const = lax.dynamic_slice_in_dim(per_target["const"], t0, rows, 0)[:, None]
    return const + total / x.shape[-1]


def score(signal, every, families, opts: LiraOptions, dtype) -> np.ndarray:
    """Scores float32 [M, N] from the stacked candidate statistics and the families.

    Args:
      signal: float32 [M, N, A]; every: count [S, N], mean and SS [S, N, A] (``dtype``) of the
        distinct candidate sets; families: per group name, ``(loc, var)`` where each is
        ``(ShadowSets, idx)`` (idx: the candidates' rows in ``every``) and var is None when the
        variance comes from the location family itself; dtype: float64 or float32.
    """
    m, n, a = signal.shape
    rows, step = _tiles.tile_shape(m, n, a, opts.chunk_size)
    count, mean, ss = every
    hi = mean.astype(jnp.float32)
    st = {
        "count": count.astype(jnp.float32),
        "hi": hi,
        "lo": (mean - hi.astype(mean.dtype)).astype(jnp.float32),
        "ss": ss,
        "sums": count[..., None] * mean,
    }
    groups = list(families)
    loc = {g: _family(*families[g][0]) for g in groups}
    var = {g: loc[g] if families[g][1] is None else _family(*families[g][1]) for g in groups}
    sizes = _summaries(families, groups)
    fallback = any(int(sizes[g][0][:, 0].min()) == 0 for g in groups)
    vfams = tuple(var[g] for g in groups)
    gfams = tuple(loc[g] for g in groups) if fallback else ()
    full = _tiles.device_view(signal)
    insides = [families[g][1 if families[g][1] else 0][0].inside for g in groups]
    disjoint = len(insides) == 2 and not (insides[0] & insides[1]).any()
    acc = _variance_sums(signal, full, rows, step, vfams, gfams, st, dtype, disjoint)
    variances, const = _variances(acc, sizes, groups, opts)
    per_target = {}
    for k, g in enumerate(groups):
        v = variances[k]
        entry = {"iv": jnp.asarray(1.0 / v, jnp.float32), "isd": jnp.asarray(v**-0.5, jnp.float32)}
        if fallback:
            shadows = np.maximum(sizes[g][0][:, 2], 1)[:, None]
            entry["gmean"] = jnp.asarray(acc[len(vfams) + k] / shadows, jnp.float32)
        per_target[g] = entry
    per_target["const"] = jnp.asarray(const, jnp.float32)
    return _score_pass(signal, full, rows, step, loc, st, per_target, opts, fallback)


def _variances(acc, sizes, groups, opts: LiraOptions):
    """Each group's variance float64 [G, M, A] from its ``sum_n SS'`` (``acc[k]``) and its
    variance family's shadows summed over examples (``sizes[g][1][:, 2]``, see
    :func:`_summaries`), and the scores' per-target constant [M] (the log-variance terms,
    averaged over queries)."""
    out, const = [], np.zeros(acc.shape[1], np.float64)
    for k, g in enumerate(groups):
        total = np.maximum(sizes[g][1][:, 2], 1)[:, None]  # [M, 1]
        v = np.maximum(np.maximum(acc[k], 0.0) / total, opts.var_floor)  # [M, A]
        out.append(v)
        lv = np.log(v).mean(axis=1)
        if opts.online:
            const += -0.5 * lv if g == "in" else 0.5 * lv
        elif opts.offline_test == "density":
            const += 0.5 * (_LOG_2PI + lv)
    return np.stack(out), const


def _weights(v: np.ndarray, opts: LiraOptions) -> np.ndarray:
    """The score pass's per-target weights float32 [M, A] from a variance [M, A]: 1 / sd for
    the one-sided test, 1 / var otherwise."""
    if not opts.online and opts.offline_test == "one_sided":
        return np.asarray(v**-0.5, np.float32)
    return np.asarray(1.0 / v, np.float32)


def _score_pass(signal, full, rows, step, loc, st, per_target, opts, fallback) -> np.ndarray:
    """The scores float32 [M, N], one tiled XLA pass (see :func:`_score_tile`)."""
    m, n = signal.shape[:2]
    out = np.empty((m, n), np.float32)

    def one(t):
        res = _score_tile(
            t.load(),
            t.at,
            t.start,
            loc,
            st,
            per_target,
            rows=rows,
            step=step,
            opts=opts,
            fallback=fallback,
        )
        _write(out, t, res, rows, step)

    _tiles.map_tiles(one, _tiles.tiles(signal, rows, step, full))
    return out


def _write(out, t, res, rows, step):
    (r0, s0), (rs, ss) = t.start, t.skip
    out[r0 + rs : r0 + rows, s0 + ss : s0 + step] = np.asarray(res)[rs:, ss:]


def _summaries(families, groups) -> dict:
    """Per group, the size summaries int64 [M, 3] (fewest, most and total shadows of each
    target over the examples) of its location family and of its variance family."""
    return {
        g: (
            families[g][0][0].size_summary(),
            (families[g][1] or families[g][0])[0].size_summary(),
        )
        for g in groups
    }


def kernel_supported(opts: LiraOptions, families) -> bool:
    """True where :func:`score_kernels` computes these scores: :func:`supported` options in
    float64, compiled kernels available (:mod:`jaxsam.attacks._kernels`), one candidate per
    variance family, and every target has a shadow in each group at every example (no
    fallback location)."""
    if not (_lira_kernels.available() and supported(opts) and opts.precision == "float64"):
        return False
    if any(len((families[g][1] or families[g][0])[1]) != 1 for g in families):
        return False
    sizes = _summaries(families, list(families))
    return all(int(s[0][:, 0].min()) > 0 for s in sizes.values())


def _loo_keep(groups, var, masks) -> np.ndarray | None:
    """The IN mask where every variance family is its group's whole leave-one-out set (one
    candidate, the group itself, the target inside it exactly where it is a member), else None."""
    keep = None
    for g, (sets, idx) in zip(groups, var, strict=True):
        mask = masks[int(idx[0])]
        if len(idx) != 1 or not _kernels.same_masks(sets.inside, mask):
            return None
        if keep is None:
            keep = mask if g == "in" else ~mask
        elif not _kernels.same_masks(keep, mask, complement=g != "in"):  # keep is ~OUT
            return None
    return keep


def score_kernels(signal: np.ndarray, masks: list, families, opts: LiraOptions, counts=None):
    """Scores float32 [M, N], every pass by the compiled kernels (two read passes).

    1. The distinct candidate sets' statistics (:func:`jaxsam.attacks._lira_stats_kernels.
       stats_tree`: one read pass for the sets that are no other set less one model,
       down-dates for the rest) in float64 with the signal read as float32. Where every
       variance family is a whole leave-one-out group (the defaults, cut or not: see
       :func:`_loo_keep`) the same sweep sums the targets' variance down-date terms;
       otherwise :func:`jaxsam.attacks._kernels.variance_sums` makes a second sweep for them.
    2. The score pass (:func:`jaxsam.attacks._lira_kernels.score_pass`): the float32
       operations of the XLA pass :func:`_score_tile`.

    Args:
      signal: float32 [M, N, A]; masks: the S distinct candidate sets (bool [M, N] each);
      families: as in :func:`score`, their ``idx`` indexing ``masks``; counts: int64 [S, N],
      the masks' sizes at every example (counted here where not given).
    """
    groups = list(families)
    sizes = _summaries(families, groups)
    signal = np.ascontiguousarray(signal, np.float32)
    var = [families[g][1] or families[g][0] for g in groups]
    js = [int(idx[0]) for _, idx in var]
    keep = _loo_keep(groups, var, masks)
    count, mean, ss, pooled = _lira_stats_kernels.stats_tree(
        signal, masks, keep, counts, want_ss=False
    )
    if pooled is not None:  # leave-one-out variance families: the fused sweep's sums
        acc = pooled[[0 if g == "in" else 1 for g in groups]]
    else:
        insides = np.stack([sets.inside for sets, _ in var])
        acc = _kernels.variance_sums(signal, mean[js], ss[js], count[js], insides)
    del ss
    variances, const = _variances(acc, sizes, groups, opts)
    loc = {g: families[g][0] for g in groups}
    weights = {g: _weights(variances[k], opts) for k, g in enumerate(groups)}
    return _lira_kernels.score_pass(signal, mean, count, loc, weights, const, opts)
