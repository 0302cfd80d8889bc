"""Straightforward per-target LiRA in NumPy: the reference for tests and the benchmark baseline.

One target at a time: its shadows are the other M - 1 models, and their statistics are
recomputed from scratch (O(M N A) per target, O(M^2 N A) for all). Slow by design; it supports
the mean or median location, pooled or per-example variance, equal (cut) or leave-one-out
groups, and both offline tests. It returns NaN where a target has no shadow in a group (the
fast path then falls back with ``equal_groups=False``, or raises).
"""

from __future__ import annotations

import numpy as np
from scipy.stats import norm


def _stats(x: np.ndarray, w: np.ndarray):
    """x [S, N, A] shadow scores, w [S, N] group weights -> count [N], mean, SS [N, A]."""
    cnt = w.sum(0)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = (w[..., None] * x).sum(0) / cnt[:, None]  # NaN for an empty group
    ss = np.nansum(w[..., None] * (x - mean) ** 2, axis=0)
    return cnt, mean, ss


def _cut(member: np.ndarray) -> np.ndarray:
    """The first ``min_n |group_n|`` shadows of the group at every example, in model order."""
    rank = np.cumsum(member, axis=0) - 1
    return member & (rank < member.sum(0).min())


def lira_one_target(
    signal: np.ndarray,
    keep: np.ndarray,
    target: int,
    *,
    online: bool = True,
    fix_variance: bool = True,
    equal_groups: bool = True,
    mean: str = "mean",
    offline_test: str = "one_sided",
) -> np.ndarray:
    """LiRA scores [N] (float64, higher = member) for one target, recomputing its shadows.

    With ``equal_groups`` the location (and per-example variance) comes from each group cut to
    its smallest size over the examples; a global variance always pools all shadows.

    Args:
      signal: float [M, N, A]; keep: bool [M, N]; target: index of the target model.
    """
    signal = np.asarray(signal, np.float64)
    others = np.arange(signal.shape[0]) != target
    x, k = signal[others], keep[others]
    obs = signal[target]
    out = []
    for member in (k, ~k):
        cut = _cut(member) if equal_groups else member
        cnt, loc, ss = _stats(x, cut.astype(np.float64))
        if mean == "median":
            loc = np.nanmedian(np.where(cut[..., None], x, np.nan), axis=0)
        if fix_variance:
            all_cnt, _, all_ss = _stats(x, member.astype(np.float64))
            var = np.broadcast_to(all_ss.sum(0) / all_cnt.sum(), loc.shape)
        else:
            with np.errstate(invalid="ignore", divide="ignore"):
                var = ss / cnt[:, None]
        out.append((loc, np.maximum(var, 1e-12)))
    (mi, vi), (mo, vo) = out
    if online:
        ll = norm.logpdf(obs, mi, np.sqrt(vi)) - norm.logpdf(obs, mo, np.sqrt(vo))
    elif offline_test == "one_sided":
        ll = -norm.logsf(obs, mo, np.sqrt(vo))
    else:
        ll = -norm.logpdf(obs, mo, np.sqrt(vo))
    return ll.mean(-1)


def lira_per_target(signal, keep, targets=None, **kw) -> np.ndarray:
    """Scores [len(targets), N] from :func:`lira_one_target`, one Python iteration per target."""
    targets = range(signal.shape[0]) if targets is None else targets
    return np.stack([lira_one_target(signal, keep, t, **kw) for t in targets])


def rmia_one_target(prob: np.ndarray, target: int, gamma: float = 1.0) -> np.ndarray:
    """Online RMIA scores [N] for one target with all pool points as the population z."""
    prob = np.asarray(prob, np.float64)
    others = np.arange(prob.shape[0]) != target
    ratio = (prob[target] / prob[others].mean(0)).mean(-1)
    rz = np.sort(ratio)
    return np.searchsorted(rz, ratio / gamma, side="right") / rz.size


def shadows_one_target(keep: np.ndarray, target: int, group: str, cut: bool) -> np.ndarray:
    """Target ``target``'s shadows of ``group`` (``"in"``/``"out"``): bool [M, N], never itself.

    Leave-one-out (``cut=False``): every other model of the group. Cut: at every example the
    first ``t`` of them in model order, ``t`` their smallest number over the examples.
    """
    member = np.asarray(keep, bool) if group == "in" else ~np.asarray(keep, bool)
    others = member & (np.arange(member.shape[0]) != target)[:, None]
    if not cut:
        return others
    return others & (np.cumsum(others, axis=0) <= others.sum(0).min())


def rmia_general_one_target(
    prob: np.ndarray,
    keep: np.ndarray,
    target: int,
    *,
    online: bool = True,
    cut: bool = False,
    a: float = 0.3,
    gamma: float = 1.0,
    population: np.ndarray | None = None,
) -> np.ndarray:
    """RMIA scores [N] for one target with IN+OUT (online) or OUT (offline) shadows chosen as
    :func:`shadows_one_target` does, the pool points ``population`` (default all) as z."""
    ratio = rmia_ratio_one_target(prob, keep, target, online=online, cut=cut, a=a)
    rz = ratio if population is None else ratio[population]
    return (rz[None, :] <= ratio[:, None] / gamma).mean(1)


def rmia_ratio_one_target(
    prob: np.ndarray, keep: np.ndarray, target: int, *, online: bool, cut: bool, a: float = 0.3
) -> np.ndarray:
    """RMIA's query-averaged ratio p(x | theta_target) / p(x) [N] in float64, its reference
    from the shadows :func:`shadows_one_target` chooses (online: IN and OUT; offline: OUT,
    ``((1 + a) mean + 1 - a) / 2``)."""
    prob = np.asarray(prob, np.float64)
    w = shadows_one_target(keep, target, "out", cut)
    if online:
        w = w | shadows_one_target(keep, target, "in", cut)
    mean = (prob * w[..., None]).sum(0) / w.sum(0)[:, None]
    ref = mean if online else 0.5 * ((1 + a) * mean + (1 - a))
    return (prob[target] / ref).mean(-1)


def calibrated_loss_one_target(
    loss: np.ndarray, keep: np.ndarray, target: int, *, cut: bool = False
) -> np.ndarray:
    """Calibrated loss scores [N] for one target: its OUT shadows' mean loss minus its own."""
    loss = np.asarray(loss, np.float64)
    w = shadows_one_target(keep, target, "out", cut)
    ref = (loss * w[..., None]).sum(0) / w.sum(0)[:, None]
    return (ref - loss[target]).mean(-1)
