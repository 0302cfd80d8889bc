"""Build an optimizer from its config name: plain SGD or a member of the SAM family."""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import optax

from jaxsam.optim._family import SAMState
from jaxsam.optim._gsam import gsam
from jaxsam.optim._looksam import LookSAMState, looksam
from jaxsam.optim._sam import asam, sam

OPTIMIZERS: tuple[str, ...] = ("sgd", "sam", "asam", "gsam", "looksam")
SAM_FAMILY: tuple[str, ...] = ("sam", "asam", "gsam", "looksam")

_VARIANTS = {"sam": sam, "asam": asam, "gsam": gsam, "looksam": looksam}


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
      name: one of :data:`OPTIMIZERS`.
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
    if name not in OPTIMIZERS:
        raise ValueError(f"unknown optimizer {name!r}; choose one of {', '.join(OPTIMIZERS)}.")
    base = base_sgd(learning_rate, momentum=momentum, weight_decay=weight_decay, nesterov=nesterov)
    if name == "sgd":
        if variant_kwargs or rho is not None:
            given = sorted(variant_kwargs) + (["rho"] if rho is not None else [])
            raise TypeError(
                f"optimizer 'sgd' takes no SAM arguments, got {given}; drop them"
                " or pick one of " + ", ".join(SAM_FAMILY) + "."
            )
        return optax.with_extra_args_support(base)
    kwargs = dict(variant_kwargs)
    if rho is not None:
        kwargs["rho"] = rho
    try:
        return _VARIANTS[name](base, **kwargs)
    except TypeError as err:
        raise TypeError(
            f"bad arguments for optimizer {name!r}: {err}; see help(jaxsam.optim.{name})."
        ) from None


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
        return tx_or_name in SAM_FAMILY
    like = jax.ShapeDtypeStruct((1,), jnp.float32) if params is None else params
    state = jax.eval_shape(tx_or_name.init, like)
    nodes = jax.tree.leaves(state, is_leaf=_is_sam_state)
    return any(_is_sam_state(node) for node in nodes)
