"""GSAM (Zhuang et al. 2022): SAM plus an ascent on the surrogate gap, orthogonal to it."""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import optax

from jaxsam.optim import _perturb
from jaxsam.optim._sam import SAMState, mark_sam_family

PyTree = Any


def gsam(
    base_optimizer: optax.GradientTransformation,
    rho: float | optax.Schedule = 0.05,
    alpha: float = 0.1,
    *,
    eps: float = 1e-12,
    stacked: bool = False,
    axis_name: str | None = None,
    sync_perturbation: bool = True,
    param_axis_name: str | None = None,
) -> optax.GradientTransformationExtraArgs:
    r"""Surrogate-gap guided SAM: one ``update`` call is one whole GSAM step.

    With clean gradient :math:`g` and SAM gradient :math:`g_p = \nabla L(w + \rho g /
    (\lVert g\rVert + \epsilon))`, split :math:`g` into its parts along and across
    :math:`\hat g_p = g_p / (\lVert g_p \rVert + \epsilon)`:

    .. math::
      g_\perp = g - \langle g, \hat g_p \rangle\, \hat g_p, \qquad
      g_{GSAM} = g_p - \alpha\, g_\perp .

    Descending :math:`g_{GSAM}` minimises the perturbed loss while the :math:`-\alpha g_\perp`
    part raises the clean loss without changing the perturbed one, shrinking the surrogate gap
    :math:`h = L(w+e) - L(w)`. ``alpha = 0`` is SAM. The paper ties ``rho`` to the learning
    rate; pass a schedule for that, e.g. ``rho=lambda t: rho_max * lr(t) / lr_max``.

    Args:
      base_optimizer: optimizer that consumes the GSAM gradient.
      rho: ascent radius, or a schedule of the step count.
      alpha: weight of the gap-ascent term (paper: 0.01 to 0.3 depending on the task).
      eps, stacked, axis_name, sync_perturbation, param_axis_name: as in :func:`jaxsam.optim.sam`.
        The decomposition always uses the global (``pmean``-ed) clean gradient.

    Returns:
      An ``optax.GradientTransformationExtraArgs``; state is :class:`SAMState`.

    References:
      Zhuang et al., Surrogate Gap Minimization Improves Sharpness-Aware Training, ICLR 2022.
      The decomposition follows big_vision's ``gsam_gradient``.
    """
    _perturb.check_rho(rho)
    where = _perturb.Sharding(stacked, axis_name, sync_perturbation, param_axis_name)
    base = optax.with_extra_args_support(base_optimizer)

    def init_fn(params: PyTree) -> SAMState:
        if stacked:
            _perturb._tree.check_stacked(params, "params")
        return SAMState(count=jnp.zeros([], jnp.int32), base_state=base.init(params))

    def update_fn(
        grads: PyTree,
        state: SAMState,
        params: PyTree | None = None,
        *,
        grad_fn: _perturb.GradFn | None = None,
        **extra_args: Any,
    ) -> tuple[PyTree, SAMState]:
        del extra_args
        g_dir, g = where.clean(grads)
        g_p = _perturb.perturbed_grads(
            g_dir,
            params,
            _perturb.rho_at(rho, state.count),
            grad_fn,
            eps=eps,
            eta=None,
            where=where,
            who="gsam",
        )
        unit_p = where.scale(g_p, 1.0 / (where.norm(g_p) + eps))
        along = where.dot(g, unit_p)
        g_perp = jax.tree.map(lambda a, b: a - b, g, where.scale(unit_p, along))
        g_gsam = jax.tree.map(lambda a, b: a - alpha * b, g_p, g_perp)
        updates, base_state = base.update(g_gsam, state.base_state, params)
        return updates, SAMState(count=optax.safe_increment(state.count), base_state=base_state)

    tx = optax.GradientTransformationExtraArgs(init_fn, update_fn)
    mark_sam_family(tx, _perturb.ascent_point(rho, eps, None, where))
    return tx
