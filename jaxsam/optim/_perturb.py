"""The ascent step shared by the SAM family: normalise, perturb, take the gradient there."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import optax

from jaxsam.errors import ConfigError
from jaxsam.optim import _tree

PyTree = Any
GradFn = Callable[[PyTree], Any]
AscentPoint = Callable[[PyTree, Any, PyTree], PyTree]


@dataclasses.dataclass(frozen=True)
class Sharding:
    """Where the reductions of one SAM step run. All fields are static (names, flags).

    Attributes:
      stacked: leaves carry a leading model axis [M, ...] that is not vmapped; every norm and
        inner product is per model (over all axes but 0).
      axis_name: data-parallel axis (batch split over devices, parameters replicated). The
        perturbed gradients are averaged over it before the base optimizer, and with
        ``sync_perturbation`` the clean gradients too, before they are normalised.
      sync_perturbation: with ``axis_name``: True = one perturbation from the global gradient
        (equals the single-device step on the whole batch); False = each device perturbs with
        its own gradient (m-sharpness, m = per-device batch).
      param_axis_name: axis over which every parameter leaf is split (each device holds a
        slice); squared norms and inner products are summed over it.
    """

    stacked: bool = False
    axis_name: str | None = None
    sync_perturbation: bool = True
    param_axis_name: str | None = None

    def norm(self, tree: PyTree) -> jax.Array:
        return _tree.tree_norm(tree, stacked=self.stacked, param_axis_name=self.param_axis_name)

    def dot(self, a: PyTree, b: PyTree) -> jax.Array:
        return _tree.tree_dot(a, b, stacked=self.stacked, param_axis_name=self.param_axis_name)

    def scale(self, tree: PyTree, factor: jax.Array) -> PyTree:
        """Multiply each model's slice of ``tree`` by its entry of ``factor`` (scalar or [M])."""
        return jax.tree.map(
            lambda x: (x * _tree.per_model(factor, x, self.stacked)).astype(x.dtype), tree
        )

    def clean(self, grads: PyTree) -> tuple[PyTree, PyTree]:
        """Return (gradient to perturb with, global clean gradient)."""
        global_grads = _tree.pmean(grads, self.axis_name)
        return (global_grads if self.sync_perturbation else grads), global_grads


def check_rho(rho: Any, name: str = "rho") -> None:
    """Reject a negative constant rho (schedules and traced values are not checked)."""
    if isinstance(rho, (int, float)) and not isinstance(rho, bool) and rho < 0:
        raise ConfigError(f"{name} must be >= 0, got {rho}; pass a non-negative radius.")


def rho_at(rho: float | optax.Schedule, count: jax.Array) -> jax.Array:
    """The radius at step ``count`` (a constant or an optax schedule of the step)."""
    value = rho(count) if callable(rho) else rho
    return jnp.asarray(value, jnp.float32)


def ascent(
    grads: PyTree,
    params: PyTree,
    rho: jax.Array,
    *,
    eps: float | jax.Array,
    eta: float | jax.Array | None,
    where: Sharding,
) -> PyTree:
    """The perturbed parameters ``w + e`` of SAM (``eta=None``) or ASAM (``eta`` given).

    SAM:  e = rho * g / (||g|| + eps).
    ASAM: T = |w| + eta (elementwise); e = rho * T^2 g / (||T g|| + eps).

    Args:
      grads: gradient tree g, same shapes as ``params`` (per model, or [M, ...] when stacked).
      params: parameter tree w.
      rho: radius, float32 scalar.
      eps: added to the norm so that g = 0 gives e = 0 instead of NaN.
      eta: ASAM's offset in T, or None for plain SAM.
      where: the reduction layout.

    Returns:
      The perturbed parameters, with the dtypes of ``params``.
    """
    if eta is None:
        direction = grads
        weighted = grads
    else:
        t = jax.tree.map(lambda w: jnp.abs(w) + eta, params)
        weighted = jax.tree.map(lambda ti, g: ti * g, t, grads)
        direction = jax.tree.map(lambda ti, tg: ti * tg, t, weighted)
    factor = rho / (where.norm(weighted) + eps)
    return jax.tree.map(
        lambda w, d: (w + d * _tree.per_model(factor, d, where.stacked)).astype(w.dtype),
        params,
        direction,
    )


def perturbed_grads(
    grads: PyTree,
    params: PyTree,
    rho: jax.Array,
    grad_fn: GradFn | None,
    *,
    eps: float | jax.Array,
    eta: float | jax.Array | None,
    where: Sharding,
    who: str,
) -> PyTree:
    """Gradient at the perturbed point, averaged over ``where.axis_name`` if set."""
    if params is None:
        raise ConfigError(f"{who}.update needs params; call tx.update(grads, state, params, ...).")
    if where.stacked:
        _tree.check_stacked(params, "params")
    w_adv = ascent(grads, params, rho, eps=eps, eta=eta, where=where)
    w_adv = _tree.to_varying(w_adv, where.axis_name)
    g_adv = _tree.call_grad_fn(grad_fn, w_adv, grads, who)
    return _tree.pmean(g_adv, where.axis_name)


def ascent_point(
    rho: float | optax.Schedule, eps: float, eta: float | None, where: Sharding
) -> AscentPoint:
    """``(grads, state, params) -> w + e``: the point where a SAM-family update calls ``grad_fn``.

    ``state`` is the transform's state (its ``count`` drives a ``rho`` schedule). Zero
    ``grads`` give exactly ``params`` (the perturbation is ``rho * 0 / (0 + eps)``).
    """

    def point(grads: PyTree, state: Any, params: PyTree) -> PyTree:
        g_dir, _ = where.clean(grads)
        return ascent(g_dir, params, rho_at(rho, state.count), eps=eps, eta=eta, where=where)

    return point
