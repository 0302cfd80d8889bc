"""Per-model tree reductions shared by the SAM family.

Every reduction here is either over a whole pytree (one model; the default, also what each model
sees under ``jax.vmap``) or, with ``stacked=True``, over every axis but the leading model axis of
each leaf (an explicit ensemble [M, ...] that is not vmapped). Reductions are taken in at least
float32 so that bfloat16 parameters do not lose the norm.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import chex
import jax
import jax.numpy as jnp

PyTree = Any


def _acc_dtype(x: jax.Array) -> jnp.dtype:
    return jnp.promote_types(x.dtype, jnp.float32)


def _leaf_dot(a: jax.Array, b: jax.Array, stacked: bool) -> jax.Array:
    dtype = jnp.promote_types(_acc_dtype(a), _acc_dtype(b))
    prod = a.astype(dtype) * b.astype(dtype)
    if stacked:
        return jnp.sum(prod, axis=tuple(range(1, prod.ndim)))
    return jnp.sum(prod)


def tree_dot(
    a: PyTree, b: PyTree, *, stacked: bool, param_axis_name: str | None = None
) -> jax.Array:
    """Inner product <a, b> per model.

    Args:
      a: pytree of arrays.
      b: pytree with the same structure and shapes as ``a``.
      stacked: if True every leaf is [M, ...] and one product per model is returned.
      param_axis_name: a mapped axis over which the parameters themselves are split (each
        device holds a slice of every leaf); the partial products are summed over it.

    Returns:
      float32 (or wider) scalar, or [M] when ``stacked``.
    """
    parts = jax.tree.leaves(jax.tree.map(lambda x, y: _leaf_dot(x, y, stacked), a, b))
    if not parts:
        return jnp.zeros((), jnp.float32)
    total = sum(parts[1:], parts[0])
    if param_axis_name is not None:
        total = jax.lax.psum(total, param_axis_name)
    return total


def tree_norm(tree: PyTree, *, stacked: bool, param_axis_name: str | None = None) -> jax.Array:
    """Euclidean norm per model: scalar, or [M] when ``stacked``."""
    return jnp.sqrt(tree_dot(tree, tree, stacked=stacked, param_axis_name=param_axis_name))


def per_model(scale: jax.Array, leaf: jax.Array, stacked: bool) -> jax.Array:
    """Broadcast a per-model factor (scalar or [M]) against a leaf (any shape or [M, ...])."""
    if stacked:
        return scale.reshape((-1,) + (1,) * (leaf.ndim - 1))
    return scale


def check_stacked(tree: PyTree, name: str) -> None:
    """Raise ValueError unless every leaf of ``tree`` has the same leading (model) axis."""
    leaves = jax.tree.leaves(tree)
    if not leaves:
        return
    if any(jnp.ndim(x) == 0 for x in leaves):
        raise ValueError(
            f"stacked=True needs a leading model axis on every leaf of {name}, but a leaf is a "
            "scalar; stack the models along axis 0 or use stacked=False under jax.vmap."
        )
    sizes = {x.shape[0] for x in leaves}
    if len(sizes) != 1:
        raise ValueError(
            f"stacked=True needs one model-axis size on every leaf of {name}, got {sorted(sizes)};"
            " stack all models along axis 0 or use stacked=False under jax.vmap."
        )


def grads_only(out: Any, like: PyTree) -> PyTree:
    """Return the gradient tree from ``grad_fn``'s output, which is ``grads`` or ``(grads, aux)``.

    The auxiliary output (for example new BatchNorm statistics from the perturbed pass) is
    discarded on purpose: the clean pass owns the model state.
    """
    want = jax.tree.structure(like)
    if jax.tree.structure(out) == want:
        return out
    if isinstance(out, tuple) and len(out) == 2 and jax.tree.structure(out[0]) == want:
        return out[0]
    raise TypeError(
        "grad_fn must return grads with the structure of params, or (grads, aux); got "
        f"{jax.tree.structure(out)}. Return jax.grad(loss_fn, has_aux=...)(params)."
    )


def call_grad_fn(
    grad_fn: Callable[[PyTree], Any] | None, params: PyTree, like: PyTree, who: str
) -> PyTree:
    """Evaluate ``grad_fn(params)`` and keep only the gradients (cast to ``like``'s dtypes)."""
    if grad_fn is None:
        raise TypeError(
            f"{who}.update needs the keyword grad_fn (params -> grads or (grads, aux)); pass "
            "grad_fn=lambda p: jax.grad(loss_fn)(p) to tx.update."
        )
    g = grads_only(grad_fn(params), like)
    chex.assert_trees_all_equal_shapes(g, like)
    return jax.tree.map(lambda x, y: x.astype(y.dtype), g, like)


def pmean(tree: PyTree, axis_name: str | None) -> PyTree:
    """``lax.pmean`` over ``axis_name``, or the identity when it is None."""
    if axis_name is None:
        return tree
    return jax.lax.pmean(tree, axis_name)


def _varying_axes(x: jax.Array) -> frozenset:
    mat = getattr(jax.typeof(x), "manual_axis_type", None)
    return getattr(mat, "varying", frozenset())


def to_varying(tree: PyTree, axis_name: str | None) -> PyTree:
    """Mark every leaf as varying over ``axis_name`` (a no-op outside ``shard_map``).

    Under ``shard_map`` with ``check_vma=True``, the cotangent of a replicated (invariant) input
    is summed over the mesh axis automatically. Casting the perturbed parameters to varying
    keeps ``grad_fn``'s gradients per device, so that the explicit ``pmean`` over
    ``axis_name`` gives the mean over devices, the same as under ``pmap`` or
    ``check_vma=False``.
    """
    if axis_name is None or axis_name not in jax.sharding.get_abstract_mesh().manual_axes:
        return tree  # not under shard_map over this axis (vmap / pmap axis, or no axis)

    def cast(x: jax.Array) -> jax.Array:
        if axis_name in _varying_axes(x):
            return x
        return jax.lax.pcast(x, axis_name, to="varying")

    return jax.tree.map(cast, tree)


def safe_div(num: jax.Array, den: jax.Array) -> jax.Array:
    """``num / den`` where ``den > 0``, else 0 (a zero direction stays zero, even with eps = 0)."""
    ok = den > 0
    return jnp.where(ok, num / jnp.where(ok, den, 1.0), 0.0)


def all_finite(tree: PyTree) -> jax.Array:
    """bool []: every element of every leaf is finite (True for an empty tree)."""
    leaves = [jnp.all(jnp.isfinite(x)) for x in jax.tree.leaves(tree)]
    return jnp.all(jnp.stack(leaves)) if leaves else jnp.asarray(True)
