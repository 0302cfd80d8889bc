"""Both gradient passes of a SAM-family step through one ``lax.scan`` body (less memory).

A SAM step evaluates the gradient twice: at ``w`` and at ``w + e``. Written as two calls in one
jitted program (``value_and_grad`` then ``tx.update(..., grad_fn=...)``), XLA gives each pass
its own activation buffers; for a convolutional net that costs as much extra memory as two
plain SGD steps compiled into one program (about 14% of the step's temporaries for the small
CNN of ``jaxsam bench sam``, tens of parameter-sized buffers per model). Running both passes as
the two iterations of one ``lax.scan`` body makes them share one set of buffers, so the peak is
that of one SGD step plus the perturbed parameters.

>>> def value_and_grad_fn(p):                      # one evaluation: (value, grads)
...     return jax.value_and_grad(loss_fn, has_aux=True)(p, batch)
>>> updates, opt_state, (loss, aux) = fused_update(tx, value_and_grad_fn, opt_state, params)

``value`` (loss, BatchNorm statistics, logits, ...) is returned from the clean pass, the
BatchNorm rule of docs/sam.md. The numbers equal the two-call form; the only difference is
where XLA places the buffers.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import optax

from jaxsam.optim import _perturb, _tree

PyTree = Any


def _probe(
    tx: optax.GradientTransformationExtraArgs,
    grads: PyTree,
    opt_state: optax.OptState,
    params: PyTree,
    extra_args: dict,
) -> tuple[PyTree, _perturb.Sharding]:
    """(ascent point, sharding) of the one SAM-family transform inside ``tx`` for ``grads``.

    Traces ``tx.update`` with an :class:`AscentProbe` as ``grad_fn``; everything but the recorded
    point is discarded (dead code for XLA).
    """
    probe = _perturb.AscentProbe()
    tx.update(grads, opt_state, params, grad_fn=probe, **extra_args)
    if len(probe.points) != 1:
        raise TypeError(
            "fused_update needs exactly one jaxsam SAM-family transform (sam, asam, gsam, "
            f"looksam) in tx, possibly inside optax.chain or inject_hyperparams; found "
            f"{len(probe.points)}. For other optimizers call tx.update with the gradients."
        )
    return probe.points[0], probe.shardings[0]


def fused_update(
    tx: optax.GradientTransformationExtraArgs,
    value_and_grad_fn: Callable[[PyTree], tuple[Any, PyTree]],
    opt_state: optax.OptState,
    params: PyTree,
    **extra_args: Any,
) -> tuple[PyTree, optax.OptState, Any]:
    """One SAM-family step with both gradient evaluations in one ``lax.scan`` body.

    Args:
      tx: a transform from :func:`jaxsam.optim.sam`, ``asam``, ``gsam`` or ``looksam``, alone or
        inside wrappers that forward extra arguments to it outside a ``lax.cond``
        (``optax.chain``, ``optax.inject_hyperparams``). Wrappers that call it inside a
        ``lax.cond`` (``optax.apply_if_finite``, ``optax.MultiSteps``) belong around the base
        optimizer instead, e.g. ``sam(optax.apply_if_finite(base, 5))``.
      value_and_grad_fn: ``params -> (value, grads)``; ``value`` is any pytree (e.g. ``(loss,
        aux)`` from ``jax.value_and_grad(..., has_aux=True)``), ``grads`` has the structure of
        ``params``.
      opt_state: ``tx``'s state.
      params: the parameters w (a pytree; [M, ...] leaves with ``stacked=True``).
      **extra_args: passed on to ``tx.update``.

    Returns:
      ``(updates, new_opt_state, value)`` with ``value`` from the clean pass at ``params``.
      ``updates`` equal ``tx.update(grads, opt_state, params, grad_fn=...)`` with the same two
      gradients. LookSAM's reuse steps still evaluate the second gradient (as under vmap).

    Raises:
      TypeError: ``tx`` holds no SAM-family transform, more than one, or one behind a
        ``lax.cond``.

    With ``axis_name`` under ``shard_map``, both passes are evaluated at parameters cast to
    varying over that axis, so that ``grads`` are per device, as the two-call form expects.
    """
    zeros = jax.tree.map(jnp.zeros_like, params)
    # The transform's sharding is static: learn it once, from a probe that XLA drops.
    _, where = _probe(tx, zeros, opt_state, params, extra_args)
    params_v = _tree.to_varying(params, where.axis_name)

    def one_pass(carry: tuple[PyTree, PyTree], i: jax.Array):
        # Pass 0 at params itself, pass 1 at the transform's ascent point for the clean grads.
        g_prev, g_clean = carry
        ascent, _ = _probe(tx, g_prev, opt_state, params, extra_args)
        point = jax.tree.map(lambda p, a: jnp.where(i == 0, p, a), params_v, ascent)
        value, grads = value_and_grad_fn(point)
        g_clean = jax.tree.map(lambda new, old: jnp.where(i == 0, new, old), grads, g_clean)
        return (grads, g_clean), value

    init = _tree.to_varying((zeros, zeros), where.axis_name)
    try:
        (adv_grads, clean_grads), values = jax.lax.scan(one_pass, init, jnp.arange(2))
    except jax.errors.UnexpectedTracerError as err:
        raise TypeError(
            "fused_update cannot reach the SAM-family transform in tx: a wrapper calls it inside "
            "lax.cond (optax.apply_if_finite, optax.MultiSteps), so its ascent point is not "
            "visible. Put the wrapper around the base optimizer instead, e.g. "
            "sam(optax.apply_if_finite(base, 5)), or use the two-call form."
        ) from err
    updates, opt_state = tx.update(
        clean_grads, opt_state, params, grad_fn=lambda _: adv_grads, **extra_args
    )
    return updates, opt_state, jax.tree.map(lambda x: x[0], values)
