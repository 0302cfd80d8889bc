"""Memory of one model's training: its state, and XLA's temporaries of the trainer's own pass.

The one estimator behind both ``jaxsam plan`` (:func:`jaxsam.plan.memory_estimate`, before anything
runs) and the ``auto`` strategy's memory cap (:func:`jaxsam.train.calibrate.per_model_bytes`).
Everything is computed from shapes: the state from ``jax.eval_shape`` of the trainer's
initialisation (:func:`jaxsam.train.state.init_ensemble`), the temporaries from XLA's
``memory_analysis`` of the trainer's forward and backward pass on one batch (the loss its step
differentiates, :func:`jaxsam.train.step.make_loss_fn`), lowered on abstract inputs and
compiled, never run. Nothing is allocated on a device.

Why the gradient pass and not the whole compiled step: the pass is where the activations live
(they are kept from the forward pass for the backward one), and its figure is stable across
backends. Compiled whole, the step's single-iteration loop lets XLA on the CPU fuse it below
its own activation memory, which a GPU or TPU does not reproduce; the optimizer's buffers are
parameter-sized and counted with the state.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from jaxsam.data.pool import Pool
from jaxsam.train.setup import TrainSetup
from jaxsam.train.state import init_ensemble


def tree_bytes(tree: Any) -> int:
    """Total bytes of a pytree of arrays or ``ShapeDtypeStruct``s."""
    return int(sum(math.prod(x.shape) * np.dtype(x.dtype).itemsize for x in jax.tree.leaves(tree)))


def tree_size(tree: Any) -> int:
    """Total number of elements of a pytree of arrays or ``ShapeDtypeStruct``s."""
    return int(sum(math.prod(x.shape) for x in jax.tree.leaves(tree)))


def dp_bytes(microbatch_size: int, params: Any) -> int:
    """DP-SGD's extra bytes per model: ``microbatch_size`` per-example gradients + the noise tree.

    Args:
      microbatch_size: examples whose gradients are live at once (``optim.dp.microbatch_size``
        after :func:`jaxsam.train.setup.make_dp_shape`).
      params: one model's parameter tree (arrays or ``ShapeDtypeStruct``s).
    """
    return (int(microbatch_size) + 1) * tree_bytes(params)


@dataclasses.dataclass(frozen=True)
class StepMemory:
    """One model's training memory.

    Attributes:
      params, batch_stats, opt_state: ``ShapeDtypeStruct`` trees of one model's state.
      temp_bytes: XLA's temporary bytes of one training call of one model (activations of the
        forward and backward passes, gradients, the optimizer's intermediates, the batch);
        None when not compiled, or when this jax build has no memory analysis.
      note: where ``temp_bytes`` comes from (or why it is missing).
    """

    params: Any
    batch_stats: Any
    opt_state: Any
    temp_bytes: int | None
    note: str

    @property
    def state_bytes(self) -> int:
        """Bytes of params + BatchNorm statistics + optimizer state of one model."""
        return tree_bytes((self.params, self.batch_stats, self.opt_state))


def _one(tree: Any) -> Any:
    """Shapes of model 0 of a stacked [1, ...] tree."""
    return jax.tree.map(lambda a: jax.ShapeDtypeStruct(a.shape[1:], a.dtype), tree)


def step_memory(
    setup: TrainSetup, pool: Pool, batch_size: int, *, compile_step: bool = True
) -> StepMemory:
    """One model's state shapes and the temporaries of the trainer's pass on one batch.

    Args:
      setup: the trainer's setup (:func:`jaxsam.train.setup.make_setup`).
      pool: the pool, or a pool of ``ShapeDtypeStruct`` arrays (only the shape of ``x`` is
        read: the step feeds the model float32 batches of ``x.shape[1:]``).
      batch_size: examples per step B.
      compile_step: compile the pass for ``temp_bytes`` (on the default device; wrap the call
        in ``jax.default_device`` to choose); False leaves it None.
    """
    from jaxsam.train.step import make_loss_fn

    input_shape = tuple(pool.x.shape[1:])
    stacked = jax.eval_shape(lambda: init_ensemble(setup.model, setup.tx, 1, input_shape, 0))
    state = _one((stacked.params, stacked.batch_stats, stacked.opt_state))
    if not compile_step:
        return StepMemory(*state, None, "not computed")
    grad = jax.value_and_grad(make_loss_fn(setup), has_aux=True)
    x = jax.ShapeDtypeStruct((batch_size, *input_shape), jnp.float32)
    y = jax.ShapeDtypeStruct((batch_size,), jnp.int32)
    try:
        compiled = jax.jit(grad).lower(state[0], state[1], x, y).compile()
        temp = int(compiled.memory_analysis().temp_size_in_bytes)
    except Exception as e:  # noqa: BLE001 - memory analysis is not available on every jax build
        return StepMemory(*state, None, f"unavailable ({type(e).__name__})")
    return StepMemory(*state, temp, "XLA memory analysis of one training pass")
