"""The ascent step shared by the SAM family: normalise, perturb, take the gradient there."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax

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

    def all_finite(self, tree: PyTree) -> jax.Array:
        """bool []: no NaN or inf anywhere in ``tree`` (over all slices of ``param_axis_name``)."""
        finite = _tree.all_finite(tree)
        if self.param_axis_name is None:
            return finite
        bad = jax.lax.psum(jnp.logical_not(finite).astype(jnp.int32), self.param_axis_name)
        return bad == 0

    def clean(self, grads: PyTree) -> tuple[PyTree, PyTree]:
        """Return (gradient to perturb with, global clean gradient)."""
        global_grads = _tree.pmean(grads, self.axis_name)
        return (global_grads if self.sync_perturbation else grads), global_grads


def check_nonnegative(value: Any, name: str, who: str) -> None:
    """Reject a negative (or NaN) constant: a float or a concrete array, any shape.

    Schedules (callables) and traced values (``optax.inject_hyperparams`` under ``jit``) are not
    checked: they have no value yet.

    Raises:
      ValueError: some element of ``value`` is negative or NaN.
    """
    if value is None or callable(value):
        return
    try:
        arr = np.asarray(value, dtype=np.float64)
    except (jax.errors.TracerArrayConversionError, jax.errors.ConcretizationTypeError):
        return
    except (TypeError, ValueError) as err:
        raise TypeError(f"{who}: {name} must be a number, got {value!r}") from err
    if not np.all(arr >= 0):
        raise ValueError(f"{who}: {name} must be >= 0, got {value!r}; pass a non-negative value.")


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
      eps: added to the norm. A zero gradient gives e = 0 for every eps >= 0 (the factor is
        defined as 0 where ``||g|| + eps`` is 0), so ``eps = 0`` is allowed.
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
    factor = _tree.safe_div(rho, where.norm(weighted) + eps)
    return jax.tree.map(
        lambda w, d: (w + d * _tree.per_model(factor, d, where.stacked)).astype(w.dtype),
        params,
        direction,
    )


class AscentProbe:
    """A stand-in ``grad_fn`` that asks a SAM-family update where it would take the gradient.

    Passed as ``tx.update(..., grad_fn=probe)``, it reaches the SAM-family transform through
    optax's extra arguments (``optax.chain``, ``optax.inject_hyperparams`` and other wrappers
    forward them). The transform then calls :meth:`record` with its ascent point ``w + e`` (cast
    to varying over its ``axis_name``) and its :class:`Sharding`, and goes on with the zero
    gradients that calling the probe returns; the caller keeps the recorded point and discards
    the rest of the update.
    :func:`jaxsam.optim.fused_update` uses this to run both gradient passes in one body.

    Attributes:
      points: the recorded ascent points, one per SAM-family transform reached.
      shardings: their :class:`Sharding` (static).
    """

    def __init__(self) -> None:
        self.points: list[PyTree] = []
        self.shardings: list[Sharding] = []

    def record(self, point: PyTree, where: Sharding) -> None:
        self.points.append(point)
        self.shardings.append(where)

    def __call__(self, params: PyTree) -> PyTree:
        return jax.tree.map(jnp.zeros_like, params)


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
    w_adv = ascent(grads, params, rho, eps=eps, eta=eta, where=where)
    w_adv = _tree.to_varying(w_adv, where.axis_name)
    g_adv = _tree.call_grad_fn(grad_fn, w_adv, grads, who)
    return _tree.pmean(g_adv, where.axis_name)
