"""Trains the linear model of :mod:`experiments.linear_theory.theory` with optax (float32).

Many models at once: ``jax.vmap`` over R label-noise draws, ``lax.scan`` over full-batch steps
from zero initialisation on the square loss ``|Xw - y|^2 / (2n)``. Three learners:

* ``gd``: ``optax.sgd`` (converges to the minimum-norm interpolator, G = I);
* ``precond``: ``optax.sgd`` after a fixed ``G^-1`` preconditioner (converges to the min-G-norm
  interpolator: gradient descent in the G geometry);
* ``sam``: ``jaxsam.optim.sam(optax.sgd(lr), rho=rho)``, one ``update(..., grad_fn=f)`` per SAM
  step. If the project's transform is not importable, a two-pass reference step is used and the
  result says so (``sam_impl``).
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax


def _loss(w, x, y):
    r = x @ w - y
    return 0.5 * jnp.mean(r**2)


def preconditioner(ginv: np.ndarray) -> optax.GradientTransformation:
    """Multiplies the (vector) gradient by a fixed matrix ``G^-1``."""
    p = jnp.asarray(ginv, jnp.float32)

    def init(params):
        del params
        return optax.EmptyState()

    def update(updates, state, params=None):
        del params
        return p @ updates, state

    return optax.GradientTransformation(init, update)


class _RefSamState(NamedTuple):
    base: optax.OptState


def _reference_sam(base: optax.GradientTransformation, rho: float, eps: float = 1e-12):
    """Two-pass SAM used only when ``jaxsam.optim.sam`` is not importable."""

    def init(params):
        return _RefSamState(base.init(params))

    def update(grads, state, params, *, grad_fn, **extra):
        del extra
        e = rho * grads / (jnp.linalg.norm(grads) + eps)
        g_adv = grad_fn(params + e)
        upd, new = base.update(g_adv, state.base, params)
        return upd, _RefSamState(new)

    return optax.GradientTransformationExtraArgs(init, update)


def sam_transform(
    lr: float | optax.Schedule, rho: float
) -> tuple[optax.GradientTransformationExtraArgs, str]:
    """The project's SAM around ``optax.sgd(lr)``, or the reference step; and which one."""
    try:
        from jaxsam.optim import sam
    except ImportError:
        return _reference_sam(
            optax.sgd(lr), rho
        ), "reference two-pass SAM (jaxsam.optim.sam absent)"
    return sam(optax.sgd(lr), rho=rho), "jaxsam.optim.sam"


def train(
    x: np.ndarray,
    y: np.ndarray,
    *,
    method: str,
    lr: float,
    steps: int,
    ginv: np.ndarray | None = None,
    rho: float = 0.05,
    cosine: bool = False,
    opt: optax.GradientTransformation | None = None,
) -> np.ndarray:
    """Trains R linear models (one per row of ``y``) from zero; returns float32 ``[R, d]``.

    Args:
      x: ``[n, d]`` shared inputs; y: ``[R, n]`` per-model labels.
      method: "gd", "precond" (needs ``ginv``) or "sam" (uses ``rho``, or a given ``opt``).
      lr: learning rate; steps: full-batch steps; cosine: decay the rate to 0 over the steps
        (SAM with a fixed rho and rate oscillates around the interpolating set instead of
        reaching it).
    """
    xj = jnp.asarray(x, jnp.float32)
    rate = optax.cosine_decay_schedule(lr, steps) if cosine else lr
    if method == "gd":
        opt = optax.sgd(rate)
    elif method == "precond":
        opt = optax.chain(preconditioner(ginv), optax.sgd(rate))
    elif method == "sam":
        opt = opt if opt is not None else sam_transform(rate, rho)[0]
    else:
        raise ValueError(f"unknown method {method!r}; use gd, precond or sam.")

    def fit(yr):
        grad_fn = jax.grad(lambda w: _loss(w, xj, yr))
        w0 = jnp.zeros(x.shape[1], jnp.float32)

        def step(carry, _):
            w, st = carry
            g = grad_fn(w)
            if method == "sam":
                upd, st = opt.update(g, st, w, grad_fn=grad_fn)
            else:
                upd, st = opt.update(g, st, w)
            return (optax.apply_updates(w, upd), st), None

        (w, _), _ = jax.lax.scan(step, (w0, opt.init(w0)), None, length=steps)
        return w

    return np.asarray(jax.jit(jax.vmap(fit))(jnp.asarray(y, jnp.float32)))
