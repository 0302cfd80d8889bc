"""LookSAM (Liu et al. 2022): a SAM gradient every k steps, its sharpness part reused between."""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax

from jaxsam.optim import _family, _perturb, _tree

PyTree = Any


class LookSAMState(NamedTuple):
    """State of :func:`looksam`.

    Attributes:
      count: int32 [] updates taken; a SAM step runs when ``count % k == 0``. A step whose
        gradient for the base optimizer is not finite is not counted (and keeps ``g_v``).
      base_state: state of the base optimizer.
      g_v: the sharpness direction from the last SAM step (the part of the SAM gradient
        orthogonal to the clean gradient); same shapes and dtypes as the gradients. This is the
        one extra parameter-sized buffer LookSAM keeps.
    """

    count: jax.Array
    base_state: optax.OptState
    g_v: PyTree


def _noise_tol(tree: PyTree) -> float:
    """The default guard: 100 x the machine epsilon of the gradients' dtype (float32: 1.2e-5)."""
    leaves = jax.tree.leaves(tree)
    dtype = jnp.result_type(*leaves) if leaves else jnp.float32
    return 100.0 * float(jnp.finfo(dtype).eps)


def _looksam_rule(k: int | jax.Array, alpha: float | jax.Array, tol: float | None) -> _family.Rule:
    """A SAM step (storing g_v) when ``count % k == 0``, else a reuse of the stored g_v."""

    def rule(step: _family.Step) -> tuple[PyTree, tuple]:
        where, g, eps = step.where, step.clean, step.eps
        (g_v_stored,) = step.extra
        g_v_old = jax.tree.map(lambda v, x: v.astype(x.dtype), g_v_stored, g)
        g_norm = where.norm(g)

        def sam_step(_: None) -> tuple[PyTree, PyTree]:
            g_s = step.perturbed()
            unit = where.scale(g, _tree.safe_div(1.0, g_norm + eps))
            g_v = jax.tree.map(lambda a, b: a - b, g_s, where.scale(unit, where.dot(g_s, unit)))
            # The noise guard (see the docstring): a g_v within rounding of zero is zero.
            rel = _noise_tol(g_s) if tol is None else tol
            real = (where.norm(g_v) > rel * where.norm(g_s)) & (step.rho > 0)
            return g_s, where.scale(g_v, real.astype(jnp.float32))

        def reuse_step(_: None) -> tuple[PyTree, PyTree]:
            factor = alpha * _tree.safe_div(g_norm, where.norm(g_v_old) + eps)
            g_s = jax.tree.map(lambda a, b: a + b, g, where.scale(g_v_old, factor))
            return g_s, g_v_old

        is_sam = jnp.asarray(step.count % k == 0)
        g_s, g_v = jax.lax.cond(is_sam, sam_step, reuse_step, None)
        return g_s, (jax.tree.map(lambda v, old: v.astype(old.dtype), g_v, g_v_stored),)

    return rule


@_family.takes_shared
def looksam(
    base_optimizer: optax.GradientTransformation,
    rho: float | optax.Schedule = 0.05,
    k: int = 5,
    alpha: float = 0.7,
    *,
    tol: float | None = None,
    **shared: Any,
) -> optax.GradientTransformationExtraArgs:
    r"""LookSAM: one ``update`` call is one step; ``grad_fn`` runs on every k-th step only.

    On steps with ``count % k == 0`` it takes the SAM gradient
    :math:`g_s = \nabla L(w + \rho g / (\lVert g\rVert + \epsilon))` and stores its part
    orthogonal to the clean gradient, with :math:`\hat g = g / (\lVert g \rVert + \epsilon)`:

    .. math::
      g_v = g_s - \langle g_s, \hat g \rangle\, \hat g .

    On the other k - 1 steps it reuses that sharpness direction with the fresh clean gradient:

    .. math::
      g_s \approx g + \alpha\, \frac{\lVert g \rVert}{\lVert g_v \rVert + \epsilon}\, g_v ,

    and hands :math:`g_s` to the base optimizer in both cases. ``k = 1`` is SAM.

    The noise guard: the reuse step rescales :math:`g_v` to length :math:`\alpha \lVert g
    \rVert` whatever its size, so a :math:`g_v` made of float32 rounding (at a tiny ``rho``,
    e.g. early in a warm-up from 0) would become a full-size step in a noise direction. A SAM
    step therefore stores :math:`g_v = 0` when :math:`\lVert g_v \rVert \le \tau \lVert g_s
    \rVert` with :math:`\tau` = ``tol`` (and always at ``rho = 0``); the reuse steps are then
    plain base steps on :math:`g`. ``rho = 0`` is exactly the base optimizer.

    The choice is a ``lax.cond`` on the step counter. Without vmap, and with ``stacked=True``,
    the reuse steps really skip the second gradient. Under ``jax.vmap`` the counter is batched,
    ``lax.cond`` becomes a select and both branches run: same numbers, no saving. To save time
    on an ensemble use ``stacked=True`` (or vmap only the gradient computation inside
    ``grad_fn``).

    Args:
      base_optimizer: optimizer that consumes the LookSAM gradient.
      rho: ascent radius, or a schedule of the step count.
      k: period of the SAM steps, int >= 1 (paper: 5).
      alpha: weight >= 0 of the reused sharpness direction (paper: 0.7).
      tol: relative size below which a new :math:`g_v` counts as rounding noise and is stored
        as zero; None (default) is 100 x the machine epsilon of the gradients' dtype (1.2e-5
        in float32; docs/sam.md has the measurement). 0 keeps every nonzero :math:`g_v`.
      **shared: ``eps``, ``stacked``, ``axis_name``, ``sync_perturbation`` and
        ``param_axis_name``, as in :func:`jaxsam.optim.sam` (same defaults).

    Returns:
      An ``optax.GradientTransformationExtraArgs`` with :class:`LookSAMState`.

    Raises:
      ValueError: ``k`` not an integer >= 1, or a negative ``rho``, ``alpha``, ``tol``, ``eps``.

    References:
      Liu et al., Towards Efficient and Scalable Sharpness-Aware Minimization, CVPR 2022.
    """
    if isinstance(k, (int, float)) and (k < 1 or int(k) != k):
        raise ValueError(f"looksam: k must be an integer >= 1, got {k}; k=1 is plain SAM.")
    _perturb.check_nonnegative(alpha, "alpha", "looksam")
    _perturb.check_nonnegative(tol, "tol", "looksam")
    eps, where = _family.shared("looksam", shared)
    return _family.build(
        "looksam",
        base_optimizer,
        rho,
        eps=eps,
        where=where,
        rule=_looksam_rule(k, alpha, tol),
        state_cls=LookSAMState,
        init_extra=lambda params: (jax.tree.map(jnp.zeros_like, params),),
    )
