"""SAM family as optax transforms (placeholder: plain SAM until the full family lands)."""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import optax


class SAMState(NamedTuple):
    base: optax.OptState


def sam(base_optimizer, rho=0.05, eps=1e-12):
    def init(params):
        return SAMState(base_optimizer.init(params))

    def update(grads, state, params=None, *, grad_fn, **extra):
        del extra
        sq = sum(jnp.sum(jnp.square(g)) for g in jax.tree.leaves(grads))
        scale = rho / (jnp.sqrt(sq) + eps)
        perturbed = jax.tree.map(lambda p, g: p + scale * g, params, grads)
        out = grad_fn(perturbed)
        sam_grads = out[0] if isinstance(out, tuple) else out
        updates, base = base_optimizer.update(sam_grads, state.base, params)
        return updates, SAMState(base)

    return optax.GradientTransformationExtraArgs(init, update)
