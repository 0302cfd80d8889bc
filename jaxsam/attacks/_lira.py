"""Likelihood-ratio attack (LiRA, Carlini et al. 2022) for all targets at once.

Every model m in turn is the target; all *other* models are its shadows (leave-one-out). The
statistics of the full IN and OUT groups of each example are computed once; target m's shadow
statistics are obtained by removing m's own value from the group it belongs to (an exact
Welford down-date), so the whole attack costs O(M N A) instead of O(M^2 N A) and never loops in
Python over targets or examples (only over chunks of targets, to bound memory).

Decisions (explained in docs/attacks.md):

* location: the mean of the shadow scores (paper) by default, ``mean="median"`` as an option;
* spread: always the spread around each example's mean (maximum-likelihood, ddof = 0);
* ``fix_variance=True`` ("global variance"): one variance for IN and one for OUT per query
  augmentation, each the pooled within-example variance ``sum_n SS_n / sum_n n_n``;
  ``variance_mode="reference"`` reproduces the reference code instead (spread around the grand
  mean, over all queries, and the IN spread used for both distributions online);
* offline: one-sided test against the OUT Gaussian, ``-log P[Z > s]`` (paper) by default,
  ``offline_test="density"`` gives the reference code's ``-log pdf_OUT(s)``;
* queries: the per-query log-likelihood ratios (online) or log-probabilities (offline) are
  averaged over the A queries.

Fallbacks (no NaN ever leaves): an example whose group (IN or OUT) has no shadow for a target
uses that target's global mean of the group (over all examples, same query); with per-example
variance, a group with fewer than ``min_shadows_variance`` shadows uses the pooled variance.
Every variance is floored at ``var_floor``.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax.scipy.stats import norm

from jaxsam.attacks import signals as _signals
from jaxsam.attacks._checks import check_choice, check_logits, check_signal

Array = Any

_LOG_2PI = float(np.log(2 * np.pi))


def auto_chunk(n: int, a: int, budget: int = 1 << 24) -> int:
    """Targets per chunk so that one chunk holds about ``budget`` float32 values."""
    return max(1, budget // max(1, n * a))


def _group_stats_t(x: jax.Array, w: jax.Array) -> tuple[jax.Array, jax.Array, jax.Array]:
    """Two-pass statistics of one group; x [A, n, M], w [1, n, M] (1 = in the group).

    Returns count [n], mean [A, n] (0 where count = 0), SS [A, n]. The model axis is the minor
    (contiguous) one, so the reductions vectorize on CPU.
    """
    count = jnp.sum(w, axis=-1)  # [1, n]
    mean = jnp.sum(w * x, axis=-1) / jnp.maximum(count, 1.0)
    ss = jnp.sum(w * jnp.square(x - mean[..., None]), axis=-1)
    return count[0], mean, ss


@functools.partial(jax.jit, static_argnames=("dtype",))
def _in_out_stats(signal: jax.Array, keep: jax.Array, dtype) -> tuple[tuple[jax.Array, ...], ...]:
    """IN and OUT statistics of a chunk of examples: signal [M, n, A], keep [M, n]."""
    x = jnp.transpose(signal, (2, 1, 0)).astype(dtype)  # [A, n, M]
    w = keep.T.astype(dtype)[None]  # [1, n, M]
    out = []
    for g in (w, 1.0 - w):
        count, mean, ss = _group_stats_t(x, g)
        out.append((count, mean.T, ss.T))
    return tuple(out)


def over_example_chunks(
    fn: Callable[[jax.Array, jax.Array], Any],
    signal: np.ndarray,
    keep: np.ndarray,
    chunk_examples: int | None = None,
) -> Any:
    """``fn(signal[:, chunk], keep[:, chunk])`` over chunks of examples, outputs joined on axis 0.

    ``signal`` [M, N, A] and ``keep`` [M, N] stay host arrays; only one chunk (about 16M values
    by default) is on the device at a time. Every output leaf of ``fn`` must have the chunk's
    examples as its leading axis.
    """
    m, n, a = signal.shape
    step = chunk_examples or max(1, (1 << 24) // (m * a))
    parts = [
        fn(jnp.asarray(signal[:, s0 : s0 + step]), jnp.asarray(keep[:, s0 : s0 + step]))
        for s0 in range(0, n, step)
    ]
    return jax.tree.map(lambda *xs: jnp.concatenate(xs, axis=0), *parts)


def group_stats(
    signal: np.ndarray, keep: np.ndarray, dtype, chunk_examples: int | None = None
) -> tuple[tuple[jax.Array, ...], tuple[jax.Array, ...]]:
    """IN and OUT group statistics over all M models, computed over examples in chunks.

    Only one chunk of the signal (about 16M values) is converted to ``dtype`` at a time, so peak
    memory stays near the size of the float32 signal itself.

    Args:
      signal: float32 [M, N, A].
      keep: bool [M, N].
      dtype: accumulation dtype (float64 needs ``jax.enable_x64``).
      chunk_examples: examples per chunk (None: about 16M values per chunk).

    Returns:
      ``(count [N], mean [N, A], SS [N, A])`` for IN, then for OUT; SS is the sum of squared
      deviations from the group mean, mean is 0 for an empty group.
    """
    stats = functools.partial(_in_out_stats, dtype=dtype)
    return over_example_chunks(stats, signal, keep, chunk_examples)


def _loo(obs, r, count, mean, ss):
    """Leave-one-out group statistics for a chunk of targets.

    obs [B, N, A]; r [B, N] (1.0 where the target is in this group). Returns count' [B, N],
    mean' [B, N, A] (garbage where count' = 0), SS' [B, N, A].
    """
    n1 = count[None] - r
    safe = jnp.maximum(n1, 1.0)[..., None]
    d = obs - mean[None]
    rr = r[..., None]
    mean1 = mean[None] - rr * d / safe
    ss1 = ss[None] - rr * jnp.square(d) * (count[None, :, None] / safe)
    ss1 = jnp.where(n1[..., None] > 0, jnp.maximum(ss1, 0.0), 0.0)
    return n1, mean1, ss1


def _group(obs, r, stats, loc, *, fix_variance, variance_mode, min_shadows, var_floor):
    """Location and variance [B, N, A] of one group for a chunk of targets."""
    count, mean, ss = stats
    n1, mean1, ss1 = _loo(obs, r, count, mean, ss)
    has = (n1 > 0)[..., None]
    total = jnp.maximum(jnp.sum(n1, axis=1), 1.0)  # [B]
    # Global (per target, per query) mean of the group: fallback location.
    gmean = jnp.sum(jnp.where(has, n1[..., None] * mean1, 0.0), axis=1) / total[:, None]  # [B, A]
    loc = mean1 if loc is None else loc
    location = jnp.where(has & jnp.isfinite(loc), loc, gmean[:, None, :])
    pooled = jnp.sum(ss1, axis=1) / total[:, None]  # [B, A]
    if variance_mode == "reference":
        a = obs.shape[-1]
        m1 = jnp.where(has, mean1, 0.0)
        grand = jnp.sum(n1[..., None] * m1, axis=(1, 2)) / (total * a)  # [B]
        between = jnp.sum(n1[..., None] * jnp.square(m1 - grand[:, None, None]), axis=(1, 2))
        ref = (jnp.sum(ss1, axis=(1, 2)) + between) / (total * a)  # [B]
        pooled = jnp.broadcast_to(ref[:, None], pooled.shape)
    if fix_variance:
        var = pooled[:, None, :]  # [B, 1, A]: log(var) is taken once per target and query
    else:
        per = ss1 / jnp.maximum(n1, 1.0)[..., None]
        var = jnp.where((n1 >= min_shadows)[..., None], per, pooled[:, None, :])
    return location, jnp.maximum(var, var_floor)


def _logpdf(x, mu, var):
    return -0.5 * (_LOG_2PI + jnp.log(var) + jnp.square(x - mu) / var)


@functools.partial(
    jax.jit,
    static_argnames=(
        "online",
        "fix_variance",
        "offline_test",
        "variance_mode",
        "min_shadows",
        "var_floor",
    ),
)
def _score_chunk(
    obs,
    kin,
    in_stats,
    out_stats,
    loc_in,
    loc_out,
    *,
    online,
    fix_variance,
    offline_test,
    variance_mode,
    min_shadows,
    var_floor,
):
    obs = obs.astype(in_stats[1].dtype)
    r_in = kin.astype(obs.dtype)
    kw = dict(
        fix_variance=fix_variance,
        variance_mode=variance_mode,
        min_shadows=min_shadows,
        var_floor=var_floor,
    )
    mu_out, var_out = _group(obs, 1.0 - r_in, out_stats, loc_out, **kw)
    if online:
        mu_in, var_in = _group(obs, r_in, in_stats, loc_in, **kw)
        if variance_mode == "reference" and fix_variance:
            var_out = var_in  # the reference code's choice, kept only in this mode
        per_query = _logpdf(obs, mu_in, var_in) - _logpdf(obs, mu_out, var_out)
    elif offline_test == "one_sided":
        per_query = -norm.logsf((obs - mu_out) / jnp.sqrt(var_out))
    else:
        per_query = -_logpdf(obs, mu_out, var_out)
    return jnp.mean(per_query, axis=-1).astype(jnp.float32)


def loo_median(signal: np.ndarray, member: np.ndarray, chunk_examples: int | None = None):
    """Leave-one-out median of each group: float32 [M, N, A], NaN where the group is empty.

    Target m's value at (n, a) is the median of the group's scores over all models but m.
    Sorting runs over chunks of examples; no loop over targets.
    """
    m, n, a = signal.shape
    out = np.empty(signal.shape, np.float32)
    step = chunk_examples or max(1, (1 << 22) // (m * a))
    idx_m = np.arange(m)[:, None, None]
    for s0 in range(0, n, step):
        s = signal[:, s0 : s0 + step]
        g = member[:, s0 : s0 + step]
        vals = np.where(g[..., None], s, np.inf)
        order = np.argsort(vals, axis=0, kind="stable")
        srt = np.take_along_axis(vals, order, axis=0)
        rank = np.empty_like(order)
        np.put_along_axis(rank, order, np.broadcast_to(idx_m, order.shape), axis=0)
        cnt = g.sum(0)[None, :, None]  # [1, n, 1]
        r = g[..., None].astype(np.int64)  # [M, n, 1]
        k = cnt - r
        lo, hi = (k - 1) // 2, k // 2
        lo = np.where(r.astype(bool) & (lo >= rank), lo + 1, lo)
        hi = np.where(r.astype(bool) & (hi >= rank), hi + 1, hi)
        lo, hi = np.clip(lo, 0, m - 1), np.clip(hi, 0, m - 1)
        med = 0.5 * (np.take_along_axis(srt, lo, 0) + np.take_along_axis(srt, hi, 0))
        out[:, s0 : s0 + step] = np.where(k > 0, med, np.nan)
    return out


def lira_from_signal(
    signal: Array,
    keep: Array,
    *,
    online: bool = True,
    fix_variance: bool = True,
    mean: str = "mean",
    offline_test: str = "one_sided",
    variance_mode: str = "pooled",
    chunk_size: int | None = None,
    min_shadows_variance: int = 2,
    var_floor: float = 1e-12,
    precision: str = "float64",
) -> np.ndarray:
    """LiRA scores from a precomputed signal (normally the logit-scaled confidence).

    Args:
      signal: float [M, N, A], target-model signal for every model, example and query.
      keep: bool [M, N], True where model m trained on example n.
      Other arguments: as :func:`lira`.

    Returns:
      numpy float32 [M, N]: target m's score for example n, higher = member.
    """
    check_choice("mean", mean, ("mean", "median"))
    check_choice("offline_test", offline_test, ("one_sided", "density"))
    check_choice("variance_mode", variance_mode, ("pooled", "reference"))
    check_choice("precision", precision, ("float64", "float32"))
    signal, keep = check_signal(signal, keep)
    with jax.enable_x64(precision == "float64"):
        return _lira_impl(
            signal,
            keep,
            online=online,
            fix_variance=fix_variance,
            mean=mean,
            offline_test=offline_test,
            variance_mode=variance_mode,
            chunk_size=chunk_size,
            min_shadows_variance=min_shadows_variance,
            var_floor=var_floor,
            dtype=jnp.float64 if precision == "float64" else jnp.float32,
        )


def _lira_impl(
    signal,
    keep,
    *,
    online,
    fix_variance,
    mean,
    offline_test,
    variance_mode,
    chunk_size,
    min_shadows_variance,
    var_floor,
    dtype,
):
    m, n, a = signal.shape
    in_stats, out_stats = group_stats(signal, keep, dtype)
    loc_in = loc_out = None
    if mean == "median":
        loc_out = loo_median(signal, ~keep)
        loc_in = loo_median(signal, keep) if online else None
    step = chunk_size or auto_chunk(n, a)
    out = np.empty((m, n), np.float32)
    for s0 in range(0, m, step):
        sl = slice(s0, s0 + step)
        out[sl] = np.asarray(
            _score_chunk(
                jnp.asarray(signal[sl]),
                jnp.asarray(keep[sl]),
                in_stats,
                out_stats,
                None if loc_in is None else jnp.asarray(loc_in[sl]),
                None if loc_out is None else jnp.asarray(loc_out[sl]),
                online=online,
                fix_variance=fix_variance,
                offline_test=offline_test,
                variance_mode=variance_mode,
                min_shadows=min_shadows_variance,
                var_floor=var_floor,
            )
        )
    return out


def lira(
    logits: Array,
    labels: Array,
    keep: Array,
    *,
    online: bool = True,
    fix_variance: bool = True,
    mean: str = "mean",
    offline_test: str = "one_sided",
    variance_mode: str = "pooled",
    chunk_size: int | None = None,
    min_shadows_variance: int = 2,
    var_floor: float = 1e-12,
    precision: str = "float64",
) -> np.ndarray:
    """LiRA membership scores for every model as the target, leave-one-out.

    Args:
      logits: float [M, N, A, C] (any float dtype; numpy, jax or a memory map).
      labels: int [N].
      keep: bool [M, N], True where model m trained on example n.
      online: use IN and OUT shadows (likelihood ratio); False: OUT shadows only.
      fix_variance: one (pooled) variance per group and query instead of per example.
      mean: ``"mean"`` (paper) or ``"median"`` as the Gaussian's location.
      offline_test: ``"one_sided"`` (paper: ``-log P_OUT[Z > s]``) or ``"density"``
        (reference code: ``-log pdf_OUT(s)``).
      variance_mode: ``"pooled"`` (pooled within-example variance, separate for IN and OUT) or
        ``"reference"`` (the reference code's spread around the grand mean; IN spread for both).
      chunk_size: targets scored per jitted call (None: about 16M values per chunk).
      min_shadows_variance: per-example variance needs this many shadows, else pooled.
      var_floor: lower bound on every variance.
      precision: ``"float64"`` (default; exact leave-one-out down-dates even for tiny groups)
        or ``"float32"`` (faster; fine with global variance and many shadows).

    Returns:
      numpy float32 [M, N]: target m's score for example n; higher = member. Model m never
      enters its own shadow statistics.

    Example:
      >>> scores = lira(logits, labels, keep)            # online, global variance
      >>> off = lira(logits, labels, keep, online=False)  # offline, one-sided
    """
    check_logits(logits, labels, keep)
    signal = _signals.compute_chunked(_signals.logit_scaled_confidence, logits, labels)
    return lira_from_signal(
        signal,
        keep,
        online=online,
        fix_variance=fix_variance,
        mean=mean,
        offline_test=offline_test,
        variance_mode=variance_mode,
        chunk_size=chunk_size,
        min_shadows_variance=min_shadows_variance,
        var_floor=var_floor,
        precision=precision,
    )
