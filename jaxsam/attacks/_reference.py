"""The one reference-group rule of every attack that compares a target with other models.

LiRA (online and offline), RMIA (online and offline) and the calibrated loss attack compare
target m's output on example n with other models' outputs on n: an IN group (models that
trained on n) and an OUT group (models that did not), never m itself. The rule: **the sizes of
those groups must not depend on m's own membership of n.** Otherwise a signal-free study looks
like leakage (or like its absence): with exact k-of-M masks, leave-one-out groups hold k - 1 IN
and M - k OUT models when m is a member, k IN and M - k - 1 OUT when it is not.

Two ways to satisfy it, chosen by ``equal_groups`` (the same keyword in every attack):

* **cut** (``True``): every target's group is cut to the smallest size it has over the target's
  examples, keeping the lowest-indexed models (:func:`jaxsam.attacks._lira_groups.cut_to_smallest`).
  With exact k-of-M masks: k - 1 IN and M - k - 1 OUT, i.e. one model dropped from the larger
  group. Always unbiased, since the size is one number per target; it discards shadows when the
  IN counts vary.
* **leave-one-out** (``False``): every other model. Unbiased where the other models'
  memberships are independent of the target's (independent, Bernoulli masks); biased where the
  mask construction ties them (exact k-of-M, paired masks).
* ``"auto"`` (the default) decides from the masks (:func:`resolve`): leave-one-out when they
  look independent (:func:`membership_dependence` at most :data:`INDEPENDENT_BELOW`), cut
  otherwise.

With ``"auto"`` or ``True`` a target left with too few shadows raises a
:class:`jaxsam.errors.TooFewModelsError` that names the smallest M that works; ``False`` keeps
each attack's old fallbacks (documented with the attack).
"""

from __future__ import annotations

import dataclasses
import functools
import math

import jax
import jax.numpy as jnp
import numpy as np

from jaxsam.attacks import _kernels, _tiles
from jaxsam.attacks._lira_groups import ShadowSets, shadow_sets
from jaxsam.errors import ConfigError, TooFewModelsError, on_command_line, option

# "auto" treats masks as independent when a target's absence adds at most this many shadows to
# its own group on average (exact k-of-M masks: 1; independent masks: 0 up to noise).
INDEPENDENT_BELOW = 0.25


def check_equal_groups(value: object) -> None:
    """Raises ConfigError unless ``value`` is ``"auto"``, True or False."""
    if value != "auto" and not isinstance(value, bool):
        raise ConfigError(
            f"equal_groups={value!r} is unknown; choose 'auto' (decide from the masks), True "
            "(cut the groups to equal sizes) or False (leave-one-out)"
        )


def membership_dependence(keep: np.ndarray) -> float:
    """How many shadows a target's absence adds to its own group, on average over targets.

    For target m, the mean number of *other* models IN at m's OUT examples minus that at m's
    IN examples; averaged over the targets that have both. Exact k-of-M (and paired) masks give
    exactly 1: there the others' memberships are tied to the target's. Independent masks give 0
    up to sampling noise (about ``sqrt(4 pkeep (1 - pkeep) M / N / M)``).

    Args:
      keep: bool [M, N].

    Returns:
      The dependence (0.0 when no target has both IN and OUT examples).
    """
    keep = np.asarray(keep, bool)
    if _kernels.available():
        # others = counts - keep: over IN examples sum(counts) - n_in, over OUT sum(counts)
        n_in, n_out, s_in, s_out = _kernels.dependence_rows(keep).T
        both = (n_in > 0) & (n_out > 0)
        if not both.any():
            return 0.0
        mean_in = (s_in[both] - n_in[both]) / n_in[both]
        return float(np.mean(s_out[both] / n_out[both] - mean_in))
    others = keep.sum(axis=0)[None, :] - keep  # [M, N]: other models IN
    n_in, n_out = keep.sum(axis=1), (~keep).sum(axis=1)
    both = (n_in > 0) & (n_out > 0)
    if not both.any():
        return 0.0
    mean_in = (others * keep).sum(axis=1)[both] / n_in[both]
    mean_out = (others * ~keep).sum(axis=1)[both] / n_out[both]
    return float(np.mean(mean_out - mean_in))


def _spread(x: np.ndarray) -> dict:
    return {"min": int(x.min()), "median": float(np.median(x)), "max": int(x.max())}


def detect_design(keep: np.ndarray) -> dict:
    """What the masks look like: exact k-of-M, independent (Bernoulli), or dependent.

    Returns:
      JSON-ready ``{"design", "dependence", "pkeep", "in_models": {min, median, max}}``:
      ``design`` is ``"exact"`` when every example is IN in the same number of models,
      ``"bernoulli"`` when the counts vary and :func:`membership_dependence` is at most
      :data:`INDEPENDENT_BELOW`, and ``"dependent"`` otherwise (e.g. exact masks with some
      models left out).
    """
    keep = np.asarray(keep, bool)
    counts = _kernels.column_counts(keep)
    dep = membership_dependence(keep)
    if (counts == counts[0]).all():
        design = "exact"
    else:
        design = "bernoulli" if dep <= INDEPENDENT_BELOW else "dependent"
    return {
        "design": design,
        "dependence": dep,
        "pkeep": float(counts.sum() / max(keep.size, 1)),
        "in_models": _spread(counts),
    }


@dataclasses.dataclass(frozen=True)
class Rule:
    """A resolved reference-group rule.

    Attributes:
      requested: what was asked for: ``"auto"``, True or False.
      cut: True: groups cut to equal sizes; False: leave-one-out.
      strict: refuse (TooFewModelsError) where a target has too few shadows; False only for an
        explicit ``equal_groups=False``, which keeps the attacks' old fallbacks.
      design: :func:`detect_design` of the masks.
    """

    requested: str | bool
    cut: bool
    strict: bool
    design: dict

    @property
    def name(self) -> str:
        """``"cut"`` or ``"leave_one_out"``."""
        return "cut" if self.cut else "leave_one_out"

    def sets(self, keep: np.ndarray, group: str) -> ShadowSets:
        """The shadow sets of ``group`` (``"in"`` or ``"out"``) of every target."""
        return shadow_sets(keep, group, self.cut)

    def report(self, keep: np.ndarray, groups: tuple[str, ...] = ("in", "out")) -> dict:
        """JSON-ready ``{"equal_groups", "rule", "design", "sizes": {group: {min, median,
        max}}}``: ``sizes`` counts each target's shadows at each example under the rule."""
        return {
            "equal_groups": self.requested,
            "rule": self.name,
            "design": self.design,
            "sizes": {g: _spread(self.sets(keep, g).sizes()) for g in groups},
        }


def resolve(equal_groups: str | bool, keep: np.ndarray) -> Rule:
    """The rule ``equal_groups`` (``"auto"``, True or False) gives on masks ``keep`` [M, N].

    ``"auto"`` cuts unless the masks look independent (:func:`detect_design` says
    ``"bernoulli"``): exact k-of-M masks, and exact masks with models left out, are cut.
    """
    check_equal_groups(equal_groups)
    design = detect_design(keep)
    cut = design["design"] != "bernoulli" if equal_groups == "auto" else bool(equal_groups)
    return Rule(equal_groups, cut, equal_groups is not False, design)


def smallest_exact_models(pkeep: float, need_in: int, need_out: int, need_any: int = 0) -> int:
    """Smallest M whose exact k-of-M masks (k = round(pkeep M)) give every target, cut,
    ``need_in`` IN, ``need_out`` OUT and ``need_any`` shadows in all (k - 1 IN, M - k - 1 OUT)."""
    for m in range(2, 100_000):
        k = round(pkeep * m)
        if 0 < k < m and k - 1 >= need_in and m - k - 1 >= need_out and m - 2 >= need_any:
            return m
    raise ConfigError(f"pkeep={pkeep} leaves no usable number of models")


def smallest_independent_models(pkeep: float, need_in: int, need_out: int, n: int) -> int:
    """Smallest M at which independent masks leave, with probability 95% or more, every one of
    ``n`` examples ``need_in + 1`` IN and ``need_out + 1`` OUT models (leave-one-out then gives
    every target enough shadows)."""
    for m in range(2, 100_000):
        pmf = [math.comb(m, c) * pkeep**c * (1 - pkeep) ** (m - c) for c in range(m + 1)]
        short = sum(
            p
            for c, p in enumerate(pmf)
            if (need_in and c <= need_in) or (need_out and m - c <= need_out)
        )
        if (1.0 - min(short, 1.0)) ** n >= 0.95:
            return m
    raise ConfigError(f"pkeep={pkeep} leaves no usable number of models")


def sparse_masks_warning(
    keep: np.ndarray | None,
    *,
    design: str,
    pkeep: float,
    models: int | None = None,
    examples: int | None = None,
) -> str | None:
    """A warning, before training, when the masks will leave some example fewer than 2 IN or
    2 OUT models: the leave-one-out attacks (LiRA, RMIA, the calibrated loss attack) then
    refuse to score (TooFewModelsError). None when the masks are fine.

    Args:
      keep: bool [M, N], the masks themselves, or None to judge from the design alone
        (``exact``: every example in round(pkeep M) models; ``bernoulli``: for 95% of draws).
      design: ``exact`` or ``bernoulli`` (``masks.design``); pkeep: the masks' pkeep;
      models, examples: M and N (taken from ``keep`` when it is given).
    """
    exact = design == "exact"

    def smallest() -> int:
        if exact:
            return smallest_exact_models(pkeep, 1, 1)
        return smallest_independent_models(pkeep, 1, 1, examples)

    if keep is not None:
        models, examples = np.shape(keep)
        counts = np.asarray(keep).sum(axis=0)
        short = int(np.count_nonzero((counts < 2) | (models - counts < 2)))
        if not short:
            return None
        what, best = f"{short} of the {examples} examples are", smallest()
    elif models >= (best := smallest()):
        return None
    elif exact:
        what = "every example is"
    else:
        what = "some examples will most likely be"
    return (
        f"{what} in fewer than 2 or more than M - 2 of the masks.models = {models} models "
        f"(masks.design = {design!r}, pkeep = {pkeep:g}): LiRA, RMIA and the calibrated loss "
        f"attack will refuse to score this run; use masks.models >= {best}"
        + ("" if exact else " (enough for 95% of draws) or masks.design = 'exact'")
    )


def check_sizes(
    keep: np.ndarray,
    sets: dict[str, ShadowSets],
    rule: Rule,
    attack: str,
    need: dict[str, int],
    hint: str = "",
) -> None:
    """Raises TooFewModelsError naming the smallest M that works, if a target has too few
    shadows under ``rule`` (no check when the rule is not strict).

    Args:
      keep: bool [M, N]; sets: group name (``"in"``, ``"out"``) -> its ShadowSets; rule: the
        resolved rule; attack: the attack and its options, for the message; need: the shadows
        every target needs at every example, per group name, and ``"any"`` for the two groups
        together (online RMIA); hint: another fix, appended to "train more models".
    """
    if not rule.strict:
        return
    least = {}  # the groups' smallest sizes (sizes are never negative: need 0 always holds)
    for group, s in sets.items():
        if need.get(group, 0) > 0 or "any" in need:
            least[group] = int(s.size_summary()[:, 0].min())
    sizes = {}  # the [M, N] sizes, only where a message or the two groups' total needs them
    if "any" in need and sum(least.values()) < need["any"]:  # else every total is enough
        total = np.zeros(keep.shape, np.int32)
        for s in sets.values():
            np.add(total, s.sizes(), out=total, casting="unsafe")
        sizes["any"], least["any"] = total, int(total.min())
    for group, low in least.items():
        if low < need.get(group, 0):
            size = sizes[group] if group in sizes else sets[group].sizes()
            tgt, ex = np.unravel_index(np.argmin(size), size.shape)
            raise TooFewModelsError(_message(keep, rule, attack, need, group, tgt, ex, size, hint))


def _message(keep, rule, attack, need, group, tgt, ex, size, hint) -> str:
    m, n = keep.shape
    pkeep = float(keep.mean())
    counts = keep.sum(axis=0)
    k = int(counts[ex])
    exact = rule.design["design"] == "exact"
    label = "IN and OUT" if group == "any" else group.upper()
    how = "after equalising the groups" if rule.cut else "leave-one-out"
    text = (
        f"{attack} needs at least {need[group]} {label} shadow(s) for every target and example "
        f"({how}, equal_groups={rule.requested!r}), but target {tgt} gets {int(size[tgt, ex])} "
        f"at example {ex} (which is in {k} of M={m} models). "
    )
    n_in, n_out = need.get("in", 0), need.get("out", 0)
    if group == "any":
        n_in = n_out = 0  # either group will do: one model of each suffices
    if not exact:
        wanted = (
            " and ".join(
                f"{c + 1} {g}" for g, c in (("IN", n_in), ("OUT", n_out)) if g.lower() in need
            )
            or "1 IN and 1 OUT"
        )
        text += (
            f"The masks are not exact k-of-M (examples are in {int(counts.min())} to "
            f"{int(counts.max())} models): every example needs {wanted} models, so leave out the "
            f"examples with fewer (imported logits: import them again with "
            f"`{option('drop_sparse')}`) or add models. "
        )
    try:
        if rule.cut:
            best = smallest_exact_models(pkeep, n_in, n_out, need.get("any", 0))
            text += f"With exact masks and pkeep={pkeep:.2f} the smallest M that works is {best}: "
        else:
            best = smallest_independent_models(pkeep, n_in, n_out, n)
            text += (
                f"With independent masks, pkeep={pkeep:.2f} and N={n} examples the smallest M "
                f"that works (for 95% of draws) is {best}: "
            )
    except ConfigError:  # no M works: the masks (all IN, or all OUT) leave no group to compare
        side = "IN" if pkeep >= 0.5 else "OUT"
        return text + (
            f"The masks put {pkeep:.1%} of the (model, example) pairs in the models' training "
            f"sets, so almost every example is {side} in every model and no number of models "
            "works: the masks must leave every example in some models and out of others "
            "(masks.pkeep strictly between 0 and 1, 0.5 as usual)."
        )
    text += "train more models" + (f", or {hint}" if hint else "")
    off = "--equal-groups off" if on_command_line() else "equal_groups=False"
    return text + f". ({off} keeps the leave-one-out groups with fallbacks, biased on exact masks.)"


def candidate_sums(
    signal: np.ndarray, masks: np.ndarray, chunk_examples: int | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Count and sum of every candidate set of models at every example, in float64.

    A float32 signal is summed by XLA over tiles of examples (one read pass, the signal shared
    without a copy where :func:`jaxsam.attacks._tiles.device_view` allows); any other dtype by
    NumPy in float64.

    Args:
      signal: float [M, N, A]; masks: bool [J, M, N] (set j holds model m at example n);
      chunk_examples: examples per chunk (None: about 2M values per tile).

    Returns:
      ``count`` float64 [J, N] and ``sums`` float64 [J, N, A].
    """
    m, n, a = signal.shape
    count = masks.sum(axis=1).astype(np.float64)
    if np.asarray(signal[:0]).dtype != np.float32:
        return count, _numpy_sums(signal, masks, chunk_examples)
    parents = _parents(masks)
    roots = [j for j, p in enumerate(parents) if p is None]
    step = min(n, chunk_examples or _tiles.tile_shape(m, n, a)[1])
    sums = np.empty((masks.shape[0], n, a), np.float64)
    if _kernels.available():  # compiled sums of the roots, read as float32
        sig = np.ascontiguousarray(signal, np.float32)
        sums[roots] = _kernels.set_sums(sig, masks[roots], count[roots])
    else:
        with jax.enable_x64(True):
            dmasks = jnp.asarray(masks[roots])

            def one(t):
                got = np.asarray(_sums_tile(t.load(), t.at, dmasks, t.start[1], step=step))
                s0 = t.start[1] + t.skip[1]
                sums[roots, s0 : t.start[1] + step] = got[:, t.skip[1] :]

            _tiles.map_tiles(one, _tiles.tiles(signal, m, step, _tiles.device_view(signal)))
    cols = np.arange(n)
    while any(p is not None for p in parents):
        for j, p in enumerate(parents):
            if p is not None and parents[p] is None:  # the parent's sums are done
                extra = masks[p] & ~masks[j]  # [M, N]: at most one model per example
                drop = np.where(extra.any(axis=0)[:, None], signal[extra.argmax(axis=0), cols], 0)
                sums[j] = sums[p] - drop
                parents[j] = None
    return count, sums


def _parents(masks: np.ndarray) -> list[int | None]:
    """For each set, another set that holds it plus one model at some examples (at most one
    per example), or None; a set's sums are then its parent's minus that model's values."""
    out: list[int | None] = []
    for j, mj in enumerate(masks):
        parent = None
        for p, mp in enumerate(masks):
            if p != j and not (mj & ~mp).any() and (mp & ~mj).sum(axis=0).max() == 1:
                parent = p
                break
        out.append(parent)
    return out


@functools.partial(jax.jit, static_argnames=("step",))
def _sums_tile(src, at, masks, start, *, step):
    """Sums float64 [J, step, A] of J sets on one tile of examples (one variadic reduce)."""
    x = _tiles.cut(src, at, (masks.shape[1], step)).astype(jnp.float64)
    w = jax.lax.dynamic_slice_in_dim(masks, start, step, 2)[..., None]  # [J, M, step, 1]
    return jnp.stack(_tiles.sums([jnp.where(w[j], x, 0.0) for j in range(w.shape[0])], 0))


def _numpy_sums(signal, masks, chunk_examples):
    m, n, a = signal.shape
    sums = np.empty((masks.shape[0], n, a), np.float64)
    step = chunk_examples or max(1, (1 << 22) // (m * a))
    for s0 in range(0, n, step):
        sl = slice(s0, s0 + step)
        w = np.moveaxis(masks[:, :, sl], 2, 0).astype(np.float64)  # [n, J, M]
        x = np.moveaxis(np.asarray(signal[:, sl], np.float64), 1, 0)  # [n, M, A]
        sums[:, sl] = np.moveaxis(w @ x, 0, 1)
    return sums


def target_sums(
    obs: np.ndarray, count: np.ndarray, sums: np.ndarray, sets: ShadowSets, targets: slice
) -> tuple[np.ndarray, np.ndarray]:
    """Each target's shadow count [B, N] and sum [B, N, A] (its own value removed), float64.

    Args:
      obs: float [B, N, A], the targets' own values; count, sums: :func:`candidate_sums` of
        ``sets.masks``; sets: the group's ShadowSets; targets: the B targets' rows.
    """
    pick, inside = sets.pick[targets], sets.inside[targets].astype(np.float64)
    cols = np.arange(count.shape[1])[None, :]
    n1 = count[pick, cols] - inside
    s1 = sums[pick, cols] - inside[..., None] * np.asarray(obs, np.float64)
    return n1, s1
