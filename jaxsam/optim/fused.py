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

from jaxsam.errors import ConfigError

PyTree = Any


def fused_update(
    tx: optax.GradientTransformationExtraArgs,
    value_and_grad_fn: Callable[[PyTree], tuple[Any, PyTree]],
    opt_state: optax.OptState,
    params: PyTree,
    **extra_args: Any,
) -> tuple[PyTree, optax.OptState, Any]:
    """One SAM-family step with both gradient evaluations in one ``lax.scan`` body.

    Args:
      tx: a transform from :func:`jaxsam.optim.sam`, ``asam``, ``gsam`` or ``looksam`` (any
        ``optax.chain`` around one is not supported: call this on the SAM transform itself).
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
    """
    point = getattr(tx.update, "jaxsam_ascent_point", None)
    if point is None:
        raise ConfigError(
            "fused_update needs a jaxsam SAM-family transform (sam, asam, gsam, looksam); "
            "for other optimizers call tx.update with the gradients directly"
        )

    def one_pass(carry: tuple[PyTree, PyTree], i: jax.Array):
        # Pass 0: g_prev = 0, so the point is params itself; pass 1: the ascent point.
        g_prev, g_clean = carry
        value, grads = value_and_grad_fn(point(g_prev, opt_state, params))
        g_clean = jax.tree.map(lambda new, old: jnp.where(i == 0, new, old), grads, g_clean)
        return (grads, g_clean), value

    zeros = jax.tree.map(jnp.zeros_like, params)
    (adv_grads, clean_grads), values = jax.lax.scan(one_pass, (zeros, zeros), jnp.arange(2))
    updates, opt_state = tx.update(
        clean_grads, opt_state, params, grad_fn=lambda _: adv_grads, **extra_args
    )
    return updates, opt_state, jax.tree.map(lambda x: x[0], values)
