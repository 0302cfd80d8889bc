"""The one builder behind sam, asam, gsam and looksam: a variant is a rule on top of it.

Every SAM-family transform does the same things around its own rule: check the parameters,
average the clean gradient over devices, find the radius of this step, hand the result to the
base optimizer (with the extra arguments it may need), count the step. A variant supplies only
``rule(step) -> (gradient for the base optimizer, new variant state)``; see :class:`Step`.
"""

from __future__ import annotations

import dataclasses
import inspect
from collections.abc import Callable, Mapping
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax

from jaxsam.optim import _perturb, _tree

PyTree = Any


class SAMState(NamedTuple):
    """State of :func:`sam`, :func:`asam` and :func:`gsam`.

    Attributes:
      count: int32 [] number of updates taken (the step that a ``rho`` schedule sees). Under
        ``jax.vmap`` it is per model, [M] from the outside. A step whose gradient for the base
        optimizer is not finite is not counted.
      base_state: state of the base optimizer.
    """

    count: jax.Array
    base_state: optax.OptState


class Step(NamedTuple):
    """What a variant's rule sees in one ``update`` call.

    Attributes:
      grads: the gradient to perturb with: the global clean gradient, or this device's own with
        ``sync_perturbation=False``.
      clean: the global (``pmean``-ed over ``axis_name``) clean gradient g.
      params: the parameters w.
      rho: float32 [] radius of this step.
      count: int32 [] steps taken before this one.
      extra: the variant's own state fields after ``count`` and ``base_state`` (a tuple).
      perturbed: ``() -> grad L(w + e)``, the SAM gradient at this step's ascent point (averaged
        over ``axis_name``); a rule calls it at most once, where it needs it.
      where: the reduction layout.
      eps: the variant's epsilon.
    """

    grads: PyTree
    clean: PyTree
    params: PyTree
    rho: jax.Array
    count: jax.Array
    extra: tuple
    perturbed: Callable[[], PyTree]
    where: _perturb.Sharding
    eps: float


Rule = Callable[[Step], tuple[PyTree, tuple]]

# The epsilon added to a variant's norms unless it is given one.
DEFAULT_EPS = 1e-12

# The keywords every SAM variant takes after its own, with their defaults: ``eps`` and the
# fields of :class:`jaxsam.optim._perturb.Sharding` (documented at :func:`jaxsam.optim.sam`).
SHARED = (
    inspect.Parameter(
        "eps", inspect.Parameter.KEYWORD_ONLY, default=DEFAULT_EPS, annotation="float"
    ),
    *(
        inspect.Parameter(
            f.name, inspect.Parameter.KEYWORD_ONLY, default=f.default, annotation=f.type
        )
        for f in dataclasses.fields(_perturb.Sharding)
    ),
)


def takes_shared(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Gives a variant ``fn(own parameters, **shared)`` the signature with :data:`SHARED`.

    ``inspect.signature(fn)`` (and so ``help``, and ``optax.inject_hyperparams``, which binds
    the call to it) then lists the variant's own parameters followed by the keyword-only
    shared ones with their defaults, one definition for the whole family.
    """
    sig = inspect.signature(fn)
    own = [p for p in sig.parameters.values() if p.kind is not inspect.Parameter.VAR_KEYWORD]
    fn.__signature__ = sig.replace(parameters=[*own, *SHARED])
    return fn


def shared(who: str, keywords: Mapping[str, Any]) -> tuple[float, _perturb.Sharding]:
    """``(eps, where)`` from a variant's :data:`SHARED` keywords (defaults where not given).

    Raises:
      TypeError: a keyword that is not one of :data:`SHARED` (as Python says it of a function
        without ``**kwargs``).
    """
    names = {p.name for p in SHARED}
    unknown = sorted(set(keywords) - names)
    if unknown:
        raise TypeError(f"{who}() got an unexpected keyword argument {unknown[0]!r}")
    layout = {key: value for key, value in keywords.items() if key != "eps"}
    return keywords.get("eps", DEFAULT_EPS), _perturb.Sharding(**layout)


def build(
    who: str,
    base_optimizer: optax.GradientTransformation,
    rho: float | optax.Schedule,
    *,
    eps: float,
    where: _perturb.Sharding,
    rule: Rule,
    eta: float | None = None,
    state_cls: type = SAMState,
    init_extra: Callable[[PyTree], tuple] = lambda params: (),
) -> optax.GradientTransformationExtraArgs:
    """A SAM-family transform: the shared step around ``rule``.

    Args:
      who: the variant's name, for error messages.
      base_optimizer: the optimizer that consumes the rule's gradient.
      rho: radius >= 0 (float, array) or an optax schedule of the step count.
      eps: >= 0, added to the norms of the variant.
      where: sharding layout (static).
      rule: ``Step -> (gradient for the base optimizer, new extra state tuple)``.
      eta: ASAM's metric offset, None for the Euclidean ascent.
      state_cls: a NamedTuple ``(count, base_state, *extra)``.
      init_extra: ``params -> extra`` state fields at init.

    Returns:
      An ``optax.GradientTransformationExtraArgs``. ``update(grads, state, params, *, grad_fn,
      **extra_args)`` forwards ``extra_args`` (e.g. ``value=`` for
      ``optax.contrib.reduce_on_plateau``) to the base optimizer, as optax's own wrappers do.
      When the gradient for the base optimizer has a non-finite entry, the variant's own state
      (``count``, LookSAM's ``g_v``) is kept, so that an ``optax.apply_if_finite`` around the base
      optimizer skips the whole step.
    """
    _perturb.check_nonnegative(rho, "rho", who)
    _perturb.check_nonnegative(eps, "eps", who)
    _perturb.check_nonnegative(eta, "eta", who)
    base = optax.with_extra_args_support(base_optimizer)

    def init_fn(params: PyTree) -> Any:
        if where.stacked:
            _tree.check_stacked(params, "params")
        return state_cls(jnp.zeros([], jnp.int32), base.init(params), *init_extra(params))

    def update_fn(
        grads: PyTree,
        state: Any,
        params: PyTree | None = None,
        *,
        grad_fn: _perturb.GradFn | None = None,
        **extra_args: Any,
    ) -> tuple[PyTree, Any]:
        if params is None:
            raise ValueError(
                f"{who}.update needs params; call tx.update(grads, state, params, grad_fn=...)."
            )
        if where.stacked:
            _tree.check_stacked(params, "params")
        g_dir, g = where.clean(grads)
        rho_t = _perturb.rho_at(rho, state.count)
        if isinstance(grad_fn, _perturb.AscentProbe):
            # Answer the probe here, outside any lax.cond of the rule, then go on with zeros.
            point = _perturb.ascent(g_dir, params, rho_t, eps=eps, eta=eta, where=where)
            grad_fn.record(_tree.to_varying(point, where.axis_name), where)

        def perturbed() -> PyTree:
            return _perturb.perturbed_grads(
                g_dir, params, rho_t, grad_fn, eps=eps, eta=eta, where=where, who=who
            )

        old_extra = tuple(state[2:])
        step = Step(g_dir, g, params, rho_t, state.count, old_extra, perturbed, where, eps)
        g_base, new_extra = rule(step)
        finite = where.all_finite(g_base)
        updates, base_state = base.update(g_base, state.base_state, params, **extra_args)
        count = jnp.where(finite, optax.safe_increment(state.count), state.count)
        kept = jax.tree.map(lambda new, old: jnp.where(finite, new, old), new_extra, old_extra)
        return updates, state_cls(count, base_state, *kept)

    return optax.GradientTransformationExtraArgs(init_fn, update_fn)
