"""Which shadows each target is compared against (host-side, [M, N] masks only).

The sets behind the one reference-group rule of every attack (:mod:`jaxsam.attacks._reference`
decides which of the two below applies).

Target m's group at example n is a set of *other* models: the IN group holds models that trained
on n, the OUT group models that did not.

* Leave-one-out (``equal_groups=False``): all other models. With exact k-of-M masks the
  target's own group is then one shadow short (k - 1 IN when it is a member, M - k - 1 OUT when
  it is not), which biases the score against members even without any signal.
* Cut (``equal_groups=True``): each of target m's groups is cut to the smallest size it has over
  m's examples, keeping the lowest-indexed shadows. The sizes then depend neither on the example
  nor on m's membership; with exact k-of-M masks they are k - 1 IN and M - k - 1 OUT, i.e. the
  one shadow that the target's absence adds to a group is dropped. Only the other models' masks
  decide the cut (m's own mask never does).

Both are described by :class:`ShadowSets`: a few candidate sets per group, each a prefix (in model
order) of the group at every example, and for every (target, example) the candidate that holds
the target's shadows, plus whether the target itself is in it (its value is then left out by a
down-date). The statistics of each candidate are computed once over all models.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from jaxsam.attacks import _kernels


@dataclasses.dataclass(frozen=True)
class ShadowSets:
    """Candidate shadow sets of one group and each target's choice among them.

    Attributes:
      masks: bool [J, M, N]: candidate j holds model i at example n.
      pick: int [M, N] (int16 or int32): the candidate holding target m's shadows at example n.
      inside: bool [M, N]: target m itself is in that candidate (and must be left out).
      counts: int64 [J, N] or None: each candidate's number of models at each example, where
        the code that built the sets knows it (otherwise counted from ``masks`` when asked).
      summary: int64 [M, 3] or None: :meth:`size_summary`, where the code that built the sets
        knows it (otherwise computed when asked).
    """

    masks: np.ndarray
    pick: np.ndarray
    inside: np.ndarray
    counts: np.ndarray | None = None
    summary: np.ndarray | None = None
    _memo: dict = dataclasses.field(default_factory=dict, init=False, repr=False, compare=False)

    def candidate_counts(self) -> np.ndarray:
        """Each candidate's number of models at each example, int64 [J, N] (computed once)."""
        if "counts" not in self._memo:
            given = self.counts
            if given is None:
                given = np.stack([_kernels.column_counts(mk) for mk in self.masks])
            self._memo["counts"] = np.asarray(given, np.int64)
        return self._memo["counts"]

    def sizes(self) -> np.ndarray:
        """Number of shadows of every target at every example, int [M, N] (read-only; computed
        once, when first asked: the attacks' checks need only :meth:`size_summary`)."""
        if "sizes" not in self._memo:
            counts = self.candidate_counts()
            if _kernels.available():
                out = _kernels.shadow_sizes(counts, self.pick, self.inside)
            else:
                small = _kernels.small_int(max(self.masks.shape[1], int(counts.max(initial=0))))
                out = np.broadcast_to(counts[0].astype(small), self.pick.shape)
                for j in range(1, counts.shape[0]):  # a few candidates: selects, not a gather
                    out = np.where(self.pick == j, counts[j].astype(small), out)
                out = out - self.inside.astype(small)
            out.flags.writeable = False
            self._memo["sizes"] = out
        return self._memo["sizes"]

    def size_summary(self) -> np.ndarray:
        """Per target the fewest, the most and the total of its shadows over the examples,
        int64 [M, 3] (computed once; one compiled sweep that never writes the [M, N] sizes)."""
        if "summary" not in self._memo:
            if self.summary is not None:
                out = np.array(self.summary, np.int64)
            elif "sizes" in self._memo or not _kernels.available():
                size = self.sizes()
                out = np.stack(
                    [size.min(axis=1), size.max(axis=1), size.sum(axis=1, dtype=np.int64)], axis=1
                ).astype(np.int64)
            else:
                out = _kernels.size_summary(self.candidate_counts(), self.pick, self.inside)
            out.flags.writeable = False
            self._memo["summary"] = out
        return self._memo["summary"]


def leave_one_out(member: np.ndarray) -> ShadowSets:
    """All other models of the group: one candidate (the whole group), the target left out."""
    m, n = member.shape
    return ShadowSets(member[None], np.zeros((m, n), np.int16 if m < 2**15 else np.int32), member)


def cut_to_smallest(member: np.ndarray) -> ShadowSets:
    """Every target's group cut to its smallest leave-one-out size over its examples.

    Target m keeps, at every example, the first ``t_m`` models of the group other than itself (in
    model order), ``t_m = min_n |group_n \\ {m}|``. With exact k-of-M masks ``t_m`` is k - 1 for
    the IN group and M - k - 1 for the OUT group, for every target.
    """
    if _kernels.available():
        masks, pick, inside, counts, t = _kernels.cut_sets(member)
        # every target has exactly t[m] shadows at every example: its summary without a sweep
        summary = np.stack([t, t, t * member.shape[1]], axis=1)
        return ShadowSets(masks, pick, inside, counts, summary)
    shadows = member.sum(axis=0)[None, :] - member  # [M, N]: group size without the target
    return _prefixes(member, shadows.min(axis=1, keepdims=True))


def _prefixes(member: np.ndarray, t: np.ndarray) -> ShadowSets:
    """Target m's shadows at n: the first ``t[m]`` models of the group other than m.

    That set is the first ``t`` models of the group when m is not among the first ``t + 1``, and
    the first ``t + 1`` models without m otherwise. Candidates are the prefixes of lengths that
    occur (per example, relative to the shortest one), so there are few of them.
    """
    t = np.broadcast_to(t, member.shape).astype(np.int32)
    rank = np.cumsum(member, axis=0, dtype=np.int32) - 1  # position of model i within the group
    inside = member & (rank <= t)
    length = t + inside
    base = length.min(axis=0)  # [N]
    offset = length - base
    used = np.flatnonzero(np.bincount(offset.ravel()))  # the offsets that occur, ascending
    masks = np.stack([member & (rank < base + j) for j in used])
    lookup = np.zeros(used[-1] + 1, np.int32)
    lookup[used] = np.arange(used.size)
    return ShadowSets(masks, lookup[offset], inside)


def distinct_masks(families: list[ShadowSets]) -> tuple[list, list, np.ndarray]:
    """The candidate sets of several families without repeats.

    Returns the S distinct masks (bool [M, N] each, views of the inputs: nothing is copied),
    per family the index of each of its candidates among them (int32 [J_i]), and the
    distinct masks' sizes at every example (int64 [S, N], the families' own counts).
    """
    unique: list[np.ndarray] = []
    counts: list[np.ndarray] = []  # per distinct mask, its models per example: most pairs
    ids = []  # differ there, which spares the comparison of the masks themselves
    for fam in families:
        idx = []
        for mk, c in zip(fam.masks, fam.candidate_counts(), strict=True):
            hit = next(
                (
                    i
                    for i, u in enumerate(unique)
                    if np.array_equal(counts[i], c) and _kernels.same_masks(u, mk)
                ),
                None,
            )
            if hit is None:
                unique.append(mk)
                counts.append(c)
                hit = len(unique) - 1
            idx.append(hit)
        ids.append(np.asarray(idx, np.int32))
    return unique, ids, np.stack(counts)


def shadow_sets(keep: np.ndarray, group: str, equal_groups: bool) -> ShadowSets:
    """The shadow sets of ``group`` (``"in"`` or ``"out"``) for every target."""
    member = keep if group == "in" else ~keep
    return cut_to_smallest(member) if equal_groups else leave_one_out(member)


def _spread(x: np.ndarray) -> dict:
    return {"min": int(x.min()), "median": float(np.median(x)), "max": int(x.max())}


def shadow_counts(keep: np.ndarray) -> dict:
    """How many IN and OUT models each example has, and what LiRA's equal groups keep.

    Args:
      keep: bool [M, N] of the scored models.

    Returns:
      JSON-ready ``{"exact": bool, "per_example": {"in": {min, median, max}, "out": {...}},
      "lira_equal_groups": {"in": {...}, "out": {...}}}``. ``per_example`` counts the models
      that trained (IN) or did not train (OUT) on each example; a target sees one fewer in its
      own group. ``exact`` is True when every example is IN in the same number of models
      (k-of-M masks). ``lira_equal_groups`` is the size of each target's cut groups (the
      smallest leave-one-out size over its examples, :func:`cut_to_smallest`), over targets.
    """
    keep = np.asarray(keep, bool)
    n_in = keep.sum(axis=0)
    out = {"exact": bool((n_in == n_in[0]).all()), "per_example": {}, "lira_equal_groups": {}}
    for group, member in (("in", keep), ("out", ~keep)):
        count = member.sum(axis=0)
        out["per_example"][group] = _spread(count)
        out["lira_equal_groups"][group] = _spread((count[None, :] - member).min(axis=1))
    return out


def loo_median_chunk(s: np.ndarray, g: np.ndarray) -> np.ndarray:
    """Median of the group ``g`` without the target, for every target: s [M, n, A], g [M, n].

    Returns float [M, n, A]; NaN where the target has no shadow in the group. Sorting is done
    once per example; target m's median skips its own rank when it is in the group.
    """
    m = s.shape[0]
    idx_m = np.arange(m)[:, None, None]
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
    return np.where(k > 0, med, np.nan)


def shadow_median(
    signal: np.ndarray, sets: ShadowSets, chunk_examples: int | None = None
) -> np.ndarray:
    """Median of every target's shadows: float32 [M, N, A], NaN where it has none.

    Args:
      signal: float32 [M, N, A]; sets: the group's ShadowSets; chunk_examples: examples sorted
        at a time (None: about 4M values per chunk).
    """
    m, n, a = signal.shape
    out = np.empty(signal.shape, np.float32)
    step = chunk_examples or max(1, (1 << 22) // (m * a))
    for s0 in range(0, n, step):
        sl = slice(s0, s0 + step)
        pick = sets.pick[:, sl, None]
        med = np.zeros(signal[:, sl].shape, np.float64)
        for j, mask in enumerate(sets.masks):
            med = np.where(pick == j, loo_median_chunk(signal[:, sl], mask[:, sl]), med)
        out[:, sl] = med
    return out
