"""Build an optimizer from its registry names: a base optimizer, alone or inside a SAM variant."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import jax
import jax.numpy as jnp
import optax

from jaxsam.optim import registry
from jaxsam.optim._family import SAMState
from jaxsam.optim._looksam import LookSAMState

if TYPE_CHECKING:
    from jaxsam.config import OptimConfig


def base_sgd(
    learning_rate: float | optax.Schedule,
    *,
    momentum: float = 0.9,
    weight_decay: float = 0.0,
    nesterov: bool = False,
) -> optax.GradientTransformationExtraArgs:
    """SGD with heavy-ball momentum and coupled (L2, PyTorch-style) weight decay.

    The update is ``-lr * m`` with ``m = momentum * m + g + weight_decay * w``. ``momentum=0``
    is plain SGD with no momentum buffer.
    """
    parts = []
    if weight_decay:
        parts.append(optax.add_decayed_weights(weight_decay))
    parts.append(
        optax.sgd(learning_rate, momentum=momentum if momentum else None, nesterov=nesterov)
    )
    return optax.chain(*parts)


def make_base(
    name: str,
    *,
    learning_rate: float | optax.Schedule,
    momentum: float = 0.9,
    weight_decay: float = 0.0,
    base_args: Mapping[str, Any] | None = None,
) -> optax.GradientTransformation:
    """The base optimizer ``name`` (:data:`jaxsam.optim.registry.BASES` or an optax factory).

    The factory is called as ``factory(learning_rate=learning_rate, **base_args)`` plus the
    keywords the name fixes (``nesterov``) and those it takes from the arguments here
    (``momentum`` for sgd/nesterov; ``weight_decay`` where the factory has its own decay, e.g.
    adamw, lamb, lion). Any other base gets coupled decay: ``optax.add_decayed_weights`` before
    it, so ``weight_decay * w`` joins the gradient (not the SAM ascent direction, which is
    taken on the loss gradient alone).

    Args:
      name: a base name.
      learning_rate: float or optax schedule of the step (warm-up included), for every base.
      momentum: heavy-ball momentum of sgd / nesterov (ignored by other bases: set their own
        keyword, e.g. ``b1``, in ``base_args``).
      weight_decay: >= 0; coupled or decoupled per base (``registry.BASES[name].decay``).
      base_args: the factory's other keywords, checked against its signature.

    Raises:
      ValueError: unknown base, or keywords its factory does not take
        (:func:`jaxsam.optim.registry.check_base_args`).
    """
    base_args = dict(base_args or {})
    registry.check_base_args(name, base_args)
    spec = registry.base_entry(name)
    supplied = {"momentum": momentum, "weight_decay": weight_decay}
    kwargs = {**spec.fixed, **base_args, **{k: supplied[k] for k in spec.from_config}}
    tx = spec.load()(learning_rate=learning_rate, **kwargs)
    if weight_decay and "weight_decay" not in spec.from_config:
        tx = optax.chain(optax.add_decayed_weights(weight_decay), tx)
    return tx


def make_optimizer(
    name: str,
    *,
    learning_rate: float | optax.Schedule,
    momentum: float = 0.9,
    weight_decay: float = 0.0,
    rho: float | optax.Schedule | None = None,
    nesterov: bool = False,
    base: str = "sgd",
    base_args: Mapping[str, Any] | None = None,
    **variant_kwargs: Any,
) -> optax.GradientTransformationExtraArgs:
    """Return the optimizer named ``name`` (the SAM variant) on the base optimizer ``base``.

    Every result takes ``update(grads, state, params, grad_fn=...)``; ``name="sgd"`` (no SAM
    wrapper) ignores ``grad_fn`` (it is never traced, so passing it costs nothing).

    Args:
      name: a name of :data:`jaxsam.optim.registry.REGISTRY` (``sgd`` = the base alone).
      learning_rate: float or optax schedule of the step.
      momentum: heavy-ball momentum of the sgd / nesterov base (0 disables it).
      weight_decay: weight decay of the base (coupled for sgd, nesterov and adam, decoupled
        for adamw and lamb; see :func:`make_base`), never in the ascent direction.
      rho: SAM-family radius (float or schedule); None takes the variant's default (0.05 for
        sam/gsam/looksam, 0.5 for asam). Rejected for ``sgd`` unless None.
      nesterov: Nesterov momentum in the sgd base (the same as ``base="nesterov"``).
      base: the base optimizer (:func:`make_base`): ``sgd``, ``nesterov``, ``adam``, ``adamw``,
        ``lamb`` or an optax optimizer factory by name.
      base_args: keywords of the base's factory, e.g. ``{"b2": 0.98}``.
      **variant_kwargs: passed to the variant (``eta`` for asam, ``alpha`` for gsam, ``k`` and
        ``alpha`` for looksam, and ``eps``, ``stacked``, ``axis_name`` ... for all).

    Raises:
      ValueError: unknown name or base, or keywords the base's factory does not take.
      TypeError: ``rho`` or variant arguments for ``sgd``, or arguments the variant does not
        take.
    """
    spec = registry.entry(name)
    if nesterov and base == "sgd":
        base = "nesterov"
    base_tx = make_base(
        base,
        learning_rate=learning_rate,
        momentum=momentum,
        weight_decay=weight_decay,
        base_args=base_args,
    )
    if not spec.sam_family:
        if variant_kwargs or rho is not None:
            given = sorted(variant_kwargs) + (["rho"] if rho is not None else [])
            family = [n for n in registry.names() if registry.is_sam_family(n)]
            raise TypeError(
                f"optimizer {name!r} takes no SAM arguments, got {given}; drop them"
                " or pick one of " + ", ".join(family) + "."
            )
        return optax.with_extra_args_support(base_tx)
    kwargs = dict(variant_kwargs)
    if rho is not None:
        kwargs["rho"] = rho
    try:
        return spec.load()(base_tx, **kwargs)
    except TypeError as err:
        raise TypeError(
            f"bad arguments for optimizer {name!r}: {err}; see help(jaxsam.optim.{name})."
        ) from None


def from_config(
    optim: OptimConfig, learning_rate: float | optax.Schedule
) -> optax.GradientTransformationExtraArgs:
    """The optimizer of a config's ``optim`` section (the trainer's and ``jaxsam plan``'s).

    ``optim.rho`` goes to SAM-family entries only (a config always carries a ``rho``, also for
    ``sgd``); ``optim.extra`` are the entry's keywords and ``optim.base_args`` the base's,
    validated by the config already.
    """
    rho = optim.rho if registry.is_sam_family(optim.name) else None
    return make_optimizer(
        optim.name,
        learning_rate=learning_rate,
        momentum=optim.momentum,
        weight_decay=optim.weight_decay,
        rho=rho,
        base=optim.base,
        base_args=optim.base_args,
        **optim.extra,
    )


def _is_sam_state(node: Any) -> bool:
    return isinstance(node, SAMState | LookSAMState)


def is_sam_family(tx_or_name: str | optax.GradientTransformation, params: Any = None) -> bool:
    """True when the optimizer needs ``grad_fn`` in ``update`` (holds a SAM-family transform).

    Accepts a config name or a transformation. A transformation is recognised by its state: the
    state of a SAM-family transform is a :class:`SAMState` or :class:`LookSAMState`, and wrappers
    keep the inner states (``optax.chain``, ``inject_hyperparams``, ``apply_if_finite``,
    ``MultiSteps``), so ``is_sam_family(optax.chain(sam(...), ...))`` is True. The state's shapes
    are traced with ``jax.eval_shape`` (nothing is allocated) on ``params``, default a float32
    vector of one element; pass ``params`` (arrays or ``jax.ShapeDtypeStruct``) when ``tx.init``
    needs a particular tree, e.g. under ``optax.masked`` with a mask tree.
    """
    if isinstance(tx_or_name, str):
        return registry.is_sam_family(tx_or_name)
    like = jax.ShapeDtypeStruct((1,), jnp.float32) if params is None else params
    state = jax.eval_shape(tx_or_name.init, like)
    nodes = jax.tree.leaves(state, is_leaf=_is_sam_state)
    return any(_is_sam_state(node) for node in nodes)
