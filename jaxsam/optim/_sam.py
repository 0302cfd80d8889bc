"""SAM (Foret et al. 2021) and ASAM (Kwon et al. 2021) as one-call optax transforms."""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax

from jaxsam.optim import _perturb

PyTree = Any


class SAMState(NamedTuple):
    """State of :func:`sam` and :func:`asam`.

    Attributes:
      count: int32 [] number of updates taken (the step that a ``rho`` schedule sees). Under
        ``jax.vmap`` it is per model, [M] from the outside.
      base_state: state of the base optimizer.
    """

    count: jax.Array
    base_state: optax.OptState


def mark_sam_family(
    tx: optax.GradientTransformationExtraArgs, ascent_point: _perturb.AscentPoint
) -> None:
    """Tag ``tx.update`` so that :func:`jaxsam.optim.is_sam_family` recognises it.

    ``ascent_point(grads, state, params)`` is the point at which ``update`` evaluates
    ``grad_fn``; :func:`jaxsam.optim.fused_update` uses it to run both passes in one body.
    """
    tx.update.jaxsam_needs_grad_fn = True  # type: ignore[attr-defined]
    tx.update.jaxsam_ascent_point = ascent_point  # type: ignore[attr-defined]


def _make(
    who: str,
    base_optimizer: optax.GradientTransformation,
    rho: float | optax.Schedule,
    eta: float | None,
    eps: float,
    where: _perturb.Sharding,
) -> optax.GradientTransformationExtraArgs:
    _perturb.check_rho(rho)
    base = optax.with_extra_args_support(base_optimizer)

    def init_fn(params: PyTree) -> SAMState:
        if where.stacked:
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
        del extra_args  # optax convention: unknown extra arguments are ignored.
        g_dir, _ = where.clean(grads)
        g_adv = _perturb.perturbed_grads(
            g_dir,
            params,
            _perturb.rho_at(rho, state.count),
            grad_fn,
            eps=eps,
            eta=eta,
            where=where,
            who=who,
        )
        updates, base_state = base.update(g_adv, state.base_state, params)
        return updates, SAMState(count=optax.safe_increment(state.count), base_state=base_state)

    tx = optax.GradientTransformationExtraArgs(init_fn, update_fn)
    mark_sam_family(tx, _perturb.ascent_point(rho, eps, eta, where))
    return tx


def sam(
    base_optimizer: optax.GradientTransformation,
    rho: float | optax.Schedule = 0.05,
    *,
    eps: float = 1e-12,
    stacked: bool = False,
    axis_name: str | None = None,
    sync_perturbation: bool = True,
    param_axis_name: str | None = None,
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
      eps: added to the gradient norm; a zero gradient gives a zero perturbation, not NaN.
      stacked: parameters are an explicit ensemble with a leading model axis [M, ...] that is
        not vmapped; norms are per model. ``grad_fn`` must then map stacked params to stacked
        grads. Equal to ``stacked=False`` under ``jax.vmap``.
      axis_name: data-parallel axis name under ``shard_map``/``pmap`` (batch split, params
        replicated). The gradient at the perturbed point is ``pmean``-ed over it.
      sync_perturbation: with ``axis_name``: True perturbs every device with the global mean
        gradient (the single-device step on the whole batch); False perturbs each device with
        its own gradient (m-sharpness, as google-research/sam).
      param_axis_name: axis over which each parameter leaf is split; squared norms are
        ``psum``-ed over it so that the norm is that of the whole model.

    Returns:
      An ``optax.GradientTransformationExtraArgs`` whose ``update(grads, state, params, *,
      grad_fn, **extra)`` takes the clean gradients ``grads`` at ``params`` and ``grad_fn(p)``
      returning the gradients at ``p`` (or ``(grads, aux)``; ``aux`` is dropped).

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
    where = _perturb.Sharding(stacked, axis_name, sync_perturbation, param_axis_name)
    return _make("sam", base_optimizer, rho, None, eps, where)


def asam(
    base_optimizer: optax.GradientTransformation,
    rho: float | optax.Schedule = 0.5,
    eta: float = 0.01,
    *,
    eps: float = 1e-12,
    stacked: bool = False,
    axis_name: str | None = None,
    sync_perturbation: bool = True,
    param_axis_name: str | None = None,
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
      eta: offset that keeps zero weights movable (paper: 0.01).
      eps, stacked, axis_name, sync_perturbation, param_axis_name: as in :func:`sam`.

    Returns:
      An ``optax.GradientTransformationExtraArgs``; see :func:`sam` for ``update``.

    References:
      Kwon et al., ASAM: Adaptive Sharpness-Aware Minimization for Scale-Invariant Learning of
      Deep Neural Networks, ICML 2021.
    """
    where = _perturb.Sharding(stacked, axis_name, sync_perturbation, param_axis_name)
    return _make("asam", base_optimizer, rho, eta, eps, where)
