"""The ensemble state: M models' parameters, BatchNorm statistics and optimizer states, stacked."""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import flax.struct
import jax
import jax.numpy as jnp
import optax


@flax.struct.dataclass
class EnsembleState:
    """Stacked per-model state; every leaf has a leading model axis of size M.

    Attributes:
      step: scalar int32, training steps taken (shared by all models).
      params: parameter pytree, leaves [M, ...] float32 (master weights).
      batch_stats: BatchNorm running statistics, leaves [M, ...] (empty dict without BatchNorm).
      opt_state: optimizer state, leaves [M, ...].
    """

    step: jax.Array
    params: Any
    batch_stats: Any
    opt_state: Any

    @property
    def num_models(self) -> int:
        return int(jax.tree.leaves(self.params)[0].shape[0])


def model_keys(seed: int, num_models: int, purpose: int, first_model: int = 0) -> jax.Array:
    """One PRNG key per model for ``purpose`` (0 init, 1 data order, 2 augmentation): [M] keys.

    Row i gets the key of global model ``first_model + i``, so a wave or host that trains models
    ``[first_model, first_model + num_models)`` of a larger study draws their exact streams.

    Keys depend only on (seed, model index, purpose), so a model's stream is the same whether
    it trains alone, in a chunk, on another device, or after a resume.
    """
    base = jax.random.fold_in(jax.random.key(seed), purpose)
    return jax.vmap(lambda m: jax.random.fold_in(base, m))(first_model + jnp.arange(num_models))


def init_ensemble(
    model: nn.Module,
    tx: optax.GradientTransformation,
    num_models: int,
    input_shape: tuple[int, ...],
    seed: int,
    first_model: int = 0,
) -> EnsembleState:
    """Initialises M models, each from its own key, and their optimizer states.

    Args:
      model: a linen module taking ``(x [B, *input_shape], train: bool)``.
      tx: the optimizer (SAM family or plain optax).
      num_models: M.
      input_shape: shape of one input example (without batch).
      seed: run seed.
      first_model: global index of the first model (waves, hosts).
    """
    dummy = jnp.zeros((1, *input_shape), jnp.float32)

    def init_one(key):
        variables = model.init(key, dummy, train=False)
        params = variables["params"]
        batch_stats = variables.get("batch_stats", {})
        return params, batch_stats, tx.init(params)

    params, batch_stats, opt_state = jax.jit(jax.vmap(init_one))(
        model_keys(seed, num_models, 0, first_model)
    )
    return EnsembleState(
        step=jnp.zeros((), jnp.int32), params=params, batch_stats=batch_stats, opt_state=opt_state
    )
