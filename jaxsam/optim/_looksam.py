"""LookSAM (Liu et al. 2022): a SAM gradient every k steps, its sharpness part reused between."""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax

from jaxsam.errors import ConfigError
from jaxsam.optim import _perturb
from jaxsam.optim._sam import mark_sam_family

PyTree = Any


class LookSAMState(NamedTuple):
    """State of :func:`looksam`.

    Attributes:
      count: int32 [] updates taken; a SAM step runs when ``count % k == 0``.
      base_state: state of the base optimizer.
      g_v: the sharpness direction from the last SAM step (the part of the SAM gradient
        orthogonal to the clean gradient); same shapes and dtypes as the gradients. This is the
        one extra parameter-sized buffer LookSAM keeps.
    """

    count: jax.Array
    base_state: optax.OptState
    g_v: PyTree


def looksam(
    base_optimizer: optax.GradientTransformation,
    rho: float | optax.Schedule = 0.05,
    k: int = 5,
    alpha: float = 0.7,
    *,
    eps: float = 1e-12,
    stacked: bool = False,
    axis_name: str | None = None,
    sync_perturbation: bool = True,
    param_axis_name: str | None = None,
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

    and hands :math:`g_s` to the base optimizer in both cases. ``k = 1`` is SAM. At
    :math:`\rho = 0` the stored :math:`g_v` is set to exactly zero (it is zero in exact
    arithmetic; rounding noise would otherwise be rescaled to length :math:`\alpha\lVert g
    \rVert`), so ``rho = 0`` is the base optimizer.

    The choice is a ``lax.cond`` on the step counter. Without vmap, and with ``stacked=True``,
    the reuse steps really skip the second gradient. Under ``jax.vmap`` the counter is batched,
    ``lax.cond`` becomes a select and both branches run: same numbers, no saving. To save time
    on an ensemble use ``stacked=True`` (or vmap only the gradient computation inside
    ``grad_fn``).

    Args:
      base_optimizer: optimizer that consumes the LookSAM gradient.
      rho: ascent radius, or a schedule of the step count.
      k: period of the SAM steps, int >= 1 (paper: 5).
      alpha: weight of the reused sharpness direction (paper: 0.7).
      eps, stacked, axis_name, sync_perturbation, param_axis_name: as in :func:`jaxsam.optim.sam`.

    Returns:
      An ``optax.GradientTransformationExtraArgs`` with :class:`LookSAMState`.

    References:
      Liu et al., Towards Efficient and Scalable Sharpness-Aware Minimization, CVPR 2022.
    """
    _perturb.check_rho(rho)
    if isinstance(k, (int, float)) and (k < 1 or int(k) != k):
        raise ConfigError(f"looksam k must be an integer >= 1, got {k}; k=1 is plain SAM.")
    where = _perturb.Sharding(stacked, axis_name, sync_perturbation, param_axis_name)
    base = optax.with_extra_args_support(base_optimizer)

    def init_fn(params: PyTree) -> LookSAMState:
        if stacked:
            _perturb._tree.check_stacked(params, "params")
        return LookSAMState(
            count=jnp.zeros([], jnp.int32),
            base_state=base.init(params),
            g_v=jax.tree.map(jnp.zeros_like, params),
        )

    def update_fn(
        grads: PyTree,
        state: LookSAMState,
        params: PyTree | None = None,
        *,
        grad_fn: _perturb.GradFn | None = None,
        **extra_args: Any,
    ) -> tuple[PyTree, LookSAMState]:
        del extra_args
        g_dir, g = where.clean(grads)
        g_v_old = jax.tree.map(lambda v, x: v.astype(x.dtype), state.g_v, g)
        g_norm = where.norm(g)

        rho_t = _perturb.rho_at(rho, state.count)

        def sam_step(_: None) -> tuple[PyTree, PyTree]:
            g_s = _perturb.perturbed_grads(
                g_dir,
                params,
                rho_t,
                grad_fn,
                eps=eps,
                eta=None,
                where=where,
                who="looksam",
            )
            unit = where.scale(g, 1.0 / (g_norm + eps))
            g_v = jax.tree.map(lambda a, b: a - b, g_s, where.scale(unit, where.dot(g_s, unit)))
            # At rho = 0, g_s = g and g_v is rounding noise that the reuse step would blow up
            # to length alpha * ||g||; it is exactly zero in exact arithmetic, so make it so.
            g_v = where.scale(g_v, (rho_t > 0).astype(jnp.float32))
            return g_s, g_v

        def reuse_step(_: None) -> tuple[PyTree, PyTree]:
            factor = alpha * g_norm / (where.norm(g_v_old) + eps)
            g_s = jax.tree.map(lambda a, b: a + b, g, where.scale(g_v_old, factor))
            return g_s, g_v_old

        is_sam = jnp.asarray(state.count % k == 0)
        g_s, g_v = jax.lax.cond(is_sam, sam_step, reuse_step, None)
        updates, base_state = base.update(g_s, state.base_state, params)
        new_state = LookSAMState(
            count=optax.safe_increment(state.count),
            base_state=base_state,
            g_v=jax.tree.map(lambda v, old: v.astype(old.dtype), g_v, state.g_v),
        )
        return updates, new_state

    tx = optax.GradientTransformationExtraArgs(init_fn, update_fn)
    mark_sam_family(tx, _perturb.ascent_point(rho, eps, None, where))
    return tx
