"""Per-model data order, computed on the device from the membership mask.

Each model m walks through its own training subset ``{i : keep[m, i]}`` in a fresh random order
every epoch. Subset sizes differ between models (masks fix the per-example count, not the
per-model one), so an epoch has ``steps_per_epoch = ceil(max_m |subset_m| / B)`` steps
(:func:`jaxsam.data.masks.steps_per_epoch`) and a
model with a smaller subset wraps around to the start of its own order for the last few
examples of the epoch.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp


def epoch_order(order_key: jax.Array, keep_row: jax.Array, epoch: jax.Array) -> jax.Array:
    """One model's order for ``epoch``: its IN indices first, shuffled, then the OUT ones.

    Args:
      order_key: the model's data-order key.
      keep_row: bool [N].
      epoch: scalar int.

    Returns:
      int32 [N]; the first ``keep_row.sum()`` entries are the model's training examples.
    """
    u = jax.random.uniform(jax.random.fold_in(order_key, epoch), keep_row.shape)
    return jnp.argsort(jnp.where(keep_row, u, u + 2.0)).astype(jnp.int32)


def batch_indices(order: jax.Array, num_in: jax.Array, step_in_epoch: jax.Array, batch_size: int):
    """Pool indices [B] of one model's batch number ``step_in_epoch`` within the epoch."""
    pos = (step_in_epoch * batch_size + jnp.arange(batch_size)) % jnp.maximum(num_in, 1)
    return order[pos]
