"""Build an optimizer from its registry name: plain SGD or a member of the SAM family."""

from __future__ import annotations

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


def make_optimizer(
    name: str,
    *,
    learning_rate: float | optax.Schedule,
    momentum: float = 0.9,
    weight_decay: float = 0.0,
    rho: float | optax.Schedule | None = None,
    nesterov: bool = False,
    **variant_kwargs: Any,
) -> optax.GradientTransformationExtraArgs:
    """Return the optimizer named ``name``, built on :func:`base_sgd`.

    Every result takes ``update(grads, state, params, grad_fn=...)``; plain SGD ignores
    ``grad_fn`` (it is never traced, so passing it costs nothing).

    Args:
      name: a name of :data:`jaxsam.optim.registry.REGISTRY`.
      learning_rate: float or optax schedule of the step.
      momentum: heavy-ball momentum of the base SGD (0 disables it).
      weight_decay: coupled L2 weight decay in the base SGD (not in the ascent direction).
      rho: SAM-family radius (float or schedule); None takes the variant's default (0.05 for
        sam/gsam/looksam, 0.5 for asam). Rejected for ``sgd`` unless None.
      nesterov: Nesterov momentum in the base SGD.
      **variant_kwargs: passed to the variant (``eta`` for asam, ``alpha`` for gsam, ``k`` and
        ``alpha`` for looksam, and ``eps``, ``stacked``, ``axis_name`` ... for all).

    Raises:
      ValueError: unknown name.
      TypeError: ``rho`` or variant arguments for ``sgd``, or arguments the variant does not
        take.
    """
    spec = registry.entry(name)
    base = base_sgd(learning_rate, momentum=momentum, weight_decay=weight_decay, nesterov=nesterov)
    if not spec.sam_family:
        if variant_kwargs or rho is not None:
            given = sorted(variant_kwargs) + (["rho"] if rho is not None else [])
            family = [n for n in registry.names() if registry.is_sam_family(n)]
            raise TypeError(
                f"optimizer {name!r} takes no SAM arguments, got {given}; drop them"
                " or pick one of " + ", ".join(family) + "."
            )
        return optax.with_extra_args_support(base)
    kwargs = dict(variant_kwargs)
    if rho is not None:
        kwargs["rho"] = rho
    try:
        return spec.load()(base, **kwargs)
    except TypeError as err:
        raise TypeError(
            f"bad arguments for optimizer {name!r}: {err}; see help(jaxsam.optim.{name})."
        ) from None


def from_config(
    optim: OptimConfig, learning_rate: float | optax.Schedule
) -> optax.GradientTransformationExtraArgs:
    """The optimizer of a config's ``optim`` section (the trainer's and ``jaxsam plan``'s).

    ``optim.rho`` goes to SAM-family entries only (a config always carries a ``rho``, also for
    ``sgd``); ``optim.extra`` are the entry's keywords, validated by the config already.
    """
    rho = optim.rho if registry.is_sam_family(optim.name) else None
    return make_optimizer(
        optim.name,
        learning_rate=learning_rate,
        momentum=optim.momentum,
        weight_decay=optim.weight_decay,
        rho=rho,
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
