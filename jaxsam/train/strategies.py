"""Execution strategies for the model axis: how a one-model function runs for M models.

A strategy turns ``fn(model_state, model_data, shared, step0, num_steps)`` written for ONE
model into a function over the stacked ensemble (leading axis M on ``model_state`` and
``model_data``; ``shared`` and ``step0`` are the same for every model). Outputs are stacked
the same way.

- ``vmap``: one jitted ``jax.vmap`` over all M models.
- ``chunked``: ``lax.map`` over chunks of ``chunk_size`` models, vmapped inside a chunk
  (bounds activation memory; M must be a multiple of the chunk size, or it is padded).
- ``loop``: the sequential baseline, a Python loop over M single-model jitted calls.
"""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp

from jaxsam.errors import ConfigError

STRATEGY_NAMES = ("vmap", "chunked", "loop")


def _vmap(fn: Callable) -> Callable:
    mapped = jax.vmap(fn, in_axes=(0, 0, None, None, None))
    return jax.jit(mapped, static_argnums=(4,), donate_argnums=(0,))


def _chunked(fn: Callable, chunk_size: int) -> Callable:
    def run(model_state, model_data, shared, step0, num_steps):
        m = jax.tree.leaves(model_state)[0].shape[0]
        chunks = -(-m // chunk_size)
        pad = chunks * chunk_size - m

        def split(a):
            if pad:
                a = jnp.concatenate([a, jnp.repeat(a[-1:], pad, axis=0)], axis=0)
            return a.reshape(chunks, chunk_size, *a.shape[1:])

        def body(args):
            st, dt = args
            return jax.vmap(fn, in_axes=(0, 0, None, None, None))(st, dt, shared, step0, num_steps)

        out = jax.lax.map(body, (jax.tree.map(split, model_state), jax.tree.map(split, model_data)))
        return jax.tree.map(lambda a: a.reshape(chunks * chunk_size, *a.shape[2:])[:m], out)

    return jax.jit(run, static_argnums=(4,), donate_argnums=(0,))


def _loop(fn: Callable) -> Callable:
    single = jax.jit(fn, static_argnums=(4,))

    def run(model_state, model_data, shared, step0, num_steps):
        m = jax.tree.leaves(model_state)[0].shape[0]
        outs = []
        for i in range(m):
            take = lambda a, i=i: a[i]  # noqa: E731
            outs.append(
                single(
                    jax.tree.map(take, model_state),
                    jax.tree.map(take, model_data),
                    shared,
                    step0,
                    num_steps,
                )
            )
        return jax.tree.map(lambda *xs: jnp.stack(xs), *outs)

    return run


def make_ensemble_fn(fn: Callable, strategy: str, num_models: int, chunk_size: int | None = None):
    """Wraps a one-model function ``fn`` into an ensemble function under ``strategy``."""
    if strategy in ("auto", "vmap"):
        return _vmap(fn)
    if strategy == "chunked":
        return _chunked(fn, chunk_size or max(1, min(num_models, 8)))
    if strategy == "loop":
        return _loop(fn)
    raise ConfigError(f"unknown strategy {strategy!r}; use one of {list(STRATEGY_NAMES)}")
