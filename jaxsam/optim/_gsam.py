"""GSAM (Zhuang et al. 2022): SAM plus an ascent on the surrogate gap, orthogonal to it."""

from __future__ import annotations

from typing import Any

import jax
import optax

from jaxsam.optim import _family, _perturb, _tree

PyTree = Any


def _gsam_rule(alpha: float | jax.Array) -> _family.Rule:
    """g_GSAM = g_p - alpha * (g - <g, unit(g_p)> unit(g_p)), with the global clean g."""

    def rule(step: _family.Step) -> tuple[PyTree, tuple]:
        where, g = step.where, step.clean
        g_p = step.perturbed()
        unit_p = where.scale(g_p, _tree.safe_div(1.0, where.norm(g_p) + step.eps))
        along = where.dot(g, unit_p)
        g_perp = jax.tree.map(lambda a, b: a - b, g, where.scale(unit_p, along))
        return jax.tree.map(lambda a, b: a - alpha * b, g_p, g_perp), ()

    return rule


@_family.takes_shared
def gsam(
    base_optimizer: optax.GradientTransformation,
    rho: float | optax.Schedule = 0.05,
    alpha: float = 0.1,
    **shared: Any,
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
      alpha: weight >= 0 of the gap-ascent term (paper: 0.01 to 0.3 depending on the task).
      **shared: ``eps``, ``stacked``, ``axis_name``, ``sync_perturbation`` and
        ``param_axis_name``, as in :func:`jaxsam.optim.sam` (same defaults).
        The decomposition always uses the global (``pmean``-ed) clean gradient.

    Returns:
      An ``optax.GradientTransformationExtraArgs``; state is :class:`SAMState`.

    Raises:
      ValueError: a negative ``rho``, ``alpha`` or ``eps``.

    References:
      Zhuang et al., Surrogate Gap Minimization Improves Sharpness-Aware Training, ICLR 2022.
      The decomposition follows big_vision's ``gsam_gradient``.
    """
    eps, where = _family.shared("gsam", shared)
    _perturb.check_nonnegative(alpha, "alpha", "gsam")
    return _family.build("gsam", base_optimizer, rho, eps=eps, where=where, rule=_gsam_rule(alpha))
