"""SAM (Foret et al. 2021) and ASAM (Kwon et al. 2021) as one-call optax transforms."""

from __future__ import annotations

from typing import Any

import optax

from jaxsam.optim import _family

PyTree = Any


def _sam_rule(step: _family.Step) -> tuple[PyTree, tuple]:
    """SAM and ASAM hand the perturbed gradient itself to the base optimizer."""
    return step.perturbed(), ()


@_family.takes_shared
def sam(
    base_optimizer: optax.GradientTransformation,
    rho: float | optax.Schedule = 0.05,
    **shared: Any,
) -> optax.GradientTransformationExtraArgs:
    r"""Sharpness-Aware Minimization: one ``update`` call is one whole SAM step.

    With clean gradient :math:`g = \nabla L(w)` (the ``grads`` argument)

    .. math::
      e = \rho\, g / (\lVert g \rVert_2 + \epsilon), \qquad
      g_{SAM} = \nabla L(w + e),

    and :math:`g_{SAM}` is handed to ``base_optimizer``. The norm is per model: over the whole
    tree (each model under ``jax.vmap``), or over all axes but 0 with ``stacked=True``.

    Args:
      base_optimizer: the optimizer that consumes the SAM gradient (e.g. ``optax.sgd``; weight
        decay belongs here, so that it is not part of the ascent direction).
      rho: ascent radius >= 0, or an optax schedule of the step count. ``rho=0`` gives exactly
        the base optimizer fed with ``grad_fn(params)``.
      **shared: the keyword-only arguments the whole family (``asam``, ``gsam``, ``looksam``)
        shares; the signature lists them with their defaults:
      eps: >= 0 (default 1e-12), added to the gradient norm; a zero gradient gives a zero
        perturbation, not NaN, for every eps (also 0).
      stacked: (default False) parameters are an explicit ensemble with a leading model axis
        [M, ...] that is not vmapped; norms are per model. ``grad_fn`` must then map stacked
        params to stacked grads. Equal to ``stacked=False`` under ``jax.vmap``.
      axis_name: (default None) data-parallel axis name under ``shard_map``/``pmap`` (batch
        split, params replicated). The gradient at the perturbed point is ``pmean``-ed over it.
      sync_perturbation: (default True) with ``axis_name``: True perturbs every device with the
        global mean gradient (the single-device step on the whole batch); False perturbs each
        device with its own gradient (m-sharpness, as google-research/sam).
      param_axis_name: (default None) axis over which each parameter leaf is split; squared
        norms are ``psum``-ed over it so that the norm is that of the whole model.

    Returns:
      An ``optax.GradientTransformationExtraArgs`` whose ``update(grads, state, params, *,
      grad_fn, **extra)`` takes the clean gradients ``grads`` at ``params`` and ``grad_fn(p)``
      returning the gradients at ``p`` (or ``(grads, aux)``; ``aux`` is dropped). The other
      extra arguments go to ``base_optimizer``. State: :class:`SAMState`.

    Raises:
      ValueError: a negative ``rho`` or ``eps`` (a number or an array).
      TypeError: a keyword that is none of the above.

    Example:
      >>> import jax, jax.numpy as jnp, optax
      >>> from jaxsam.optim import sam
      >>> loss = lambda w: jnp.sum(w ** 2)
      >>> tx = sam(optax.sgd(0.1), rho=0.05)
      >>> w = jnp.ones(3); state = tx.init(w)
      >>> u, state = tx.update(jax.grad(loss)(w), state, w, grad_fn=jax.grad(loss))
      >>> w = optax.apply_updates(w, u)

    References:
      Foret et al., Sharpness-Aware Minimization for Efficiently Improving Generalization,
      ICLR 2021.
    """
    eps, where = _family.shared("sam", shared)
    return _family.build("sam", base_optimizer, rho, eps=eps, where=where, rule=_sam_rule)


@_family.takes_shared
def asam(
    base_optimizer: optax.GradientTransformation,
    rho: float | optax.Schedule = 0.5,
    eta: float = 0.01,
    **shared: Any,
) -> optax.GradientTransformationExtraArgs:
    r"""Adaptive SAM: the ascent step in the scale-invariant metric :math:`T_w = |w| + \eta`.

    .. math::
      T = |w| + \eta, \qquad
      e = \rho\, T^2 g / (\lVert T g \rVert_2 + \epsilon), \qquad
      g_{ASAM} = \nabla L(w + e),

    all products elementwise. Every leaf is treated as a weight; the reference code uses
    :math:`T = 1` for biases, a difference that is small in practice.

    Args:
      base_optimizer: optimizer that consumes the ASAM gradient.
      rho: ascent radius (ASAM's radii are larger than SAM's; 0.5 on CIFAR-10 in the paper),
        or a schedule.
      eta: offset >= 0 that keeps zero weights movable (paper: 0.01).
      **shared: ``eps``, ``stacked``, ``axis_name``, ``sync_perturbation`` and
        ``param_axis_name``, as in :func:`sam` (same defaults).

    Returns:
      An ``optax.GradientTransformationExtraArgs``; see :func:`sam` for ``update``.

    References:
      Kwon et al., ASAM: Adaptive Sharpness-Aware Minimization for Scale-Invariant Learning of
      Deep Neural Networks, ICML 2021.
    """
    eps, where = _family.shared("asam", shared)
    return _family.build("asam", base_optimizer, rho, eps=eps, where=where, rule=_sam_rule, eta=eta)
