"""From a config to the pieces the loop needs: model, optimizer, schedule, step counts."""

from __future__ import annotations

import dataclasses
import warnings
from typing import Any

import flax.linen as nn
import numpy as np
import optax

from jaxsam.config import Config
from jaxsam.data.augment import resolve_train_augment
from jaxsam.data.masks import steps_per_epoch
from jaxsam.data.pool import Pool
from jaxsam.models import custom, is_conv_net, make_model
from jaxsam.optim import registry
from jaxsam.optim.factory import from_config


@dataclasses.dataclass(frozen=True)
class TrainSetup:
    """Everything derived from (config, pool, masks) that the training loop uses."""

    model: nn.Module
    tx: optax.GradientTransformationExtraArgs
    schedule: optax.Schedule
    steps_per_epoch: int
    total_steps: int
    augment: str
    has_batch_norm: bool
    # The model convolves (built-in: by name; a custom model: traced). The auto strategy
    # measures loop vs vmap for conv nets only.
    conv_net: bool = False
    # Both SAM passes in one lax.scan body (optim.fused_passes; False for plain SGD).
    fused_passes: bool = False
    # train.label_smoothing: the training loss's target smoothing (never the logits').
    label_smoothing: float = 0.0
    # DP-SGD's static shape (jaxsam.optim.dp.DPShape), None without optim.dp.
    dp: Any = None
    # The resolved execution plan (jaxsam.train.strategies.Execution); None until
    # jaxsam.train.calibrate.resolve_execution has run (then ``model`` uses its ``conv_impl``).
    execution: Any = None


def make_schedule(config: Config, total_steps: int, spe: int) -> optax.Schedule:
    """The learning-rate schedule over ``total_steps`` (linear warm-up, then the named decay)."""
    o = config.optim
    warmup = min(int(round(o.warmup_epochs * spe)), max(total_steps - 1, 0))
    decay_steps = max(total_steps - warmup, 1)
    if o.schedule == "constant":
        main = optax.constant_schedule(o.learning_rate)
    elif o.schedule == "linear":
        main = optax.linear_schedule(o.learning_rate, 0.0, decay_steps)
    else:
        main = optax.cosine_decay_schedule(o.learning_rate, decay_steps)
    if warmup == 0:
        return main
    return optax.join_schedules(
        [optax.linear_schedule(0.0, o.learning_rate, warmup), main], [warmup]
    )


def make_dp_shape(config: Config, pool_size: int, total_steps: int):
    """The :class:`jaxsam.optim.dp.DPShape` of ``config``, or None without ``optim.dp``.

    The Poisson capacity is bounded with the pool size ``N`` (every model's training set is at
    most ``N``), so that every wave or host of a study gets the same capacity.
    """
    from jaxsam.optim import dp as dp_lib

    d, b = config.optim.dp, config.train.batch_size
    if not d.enabled:
        return None
    dp_lib.require_libraries()
    if d.sampling == "poisson":
        tail = dp_lib.TAIL_SHARE * d.delta
        capacity = dp_lib.poisson_capacity(np.array([pool_size]), b, total_steps, tail)
    else:
        capacity = b
    micro = min(d.microbatch_size or capacity, capacity)
    capacity = -(-capacity // micro) * micro  # a whole number of microbatches
    return dp_lib.DPShape(
        clip_norm=float(d.clip_norm),
        noise_multiplier=float(d.noise_multiplier),
        batch_size=b,
        capacity=int(capacity),
        microbatch_size=int(micro),
        sampling=d.sampling,
        releases_per_step=2 if registry.is_sam_family(config.optim.name) else 1,
    )


def build_model(config: Config, pool: Pool) -> tuple[nn.Module, bool]:
    """The config's model for ``pool`` and whether it keeps BatchNorm statistics.

    A custom model (``model.name = "package.module:attr"``) is imported, built as
    ``attr(num_classes, **model.kwargs)`` and checked from shapes alone
    (:func:`jaxsam.models.custom.check`: call signature, logits ``[B, C]``, collections, no
    BatchNorm under DP-SGD). Training calls this before anything is written
    (:func:`jaxsam.plan.make_plan`), so a missing package or a bad factory is a
    :class:`~jaxsam.errors.ConfigError` naming the import path.
    """
    import jax
    import jax.numpy as jnp

    m = config.model
    model = make_model(
        m.name, pool.num_classes, width=m.width, depth=m.depth, dtype=m.dtype, kwargs=m.kwargs
    )
    if custom.is_import_path(m.name):
        dp = config.optim.dp.enabled
        shape = tuple(pool.input_shape)
        has_bn = custom.check(m.name, model, shape, pool.num_classes, needs_per_example_grads=dp)
        return model, has_bn
    shapes = jax.eval_shape(
        lambda: model.init(jax.random.key(0), jnp.zeros((1, *pool.input_shape)), train=False)
    )
    return model, "batch_stats" in shapes


def make_setup(config: Config, pool: Pool, keep: np.ndarray, spe: int | None = None) -> TrainSetup:
    """Builds model, optimizer and schedule for ``config`` on ``pool`` with masks ``keep``.

    ``spe`` pins the steps per epoch (a wave or host training a slice of a study passes the
    full study's value, so its models take exactly the steps of a full run).
    """
    spe = spe or steps_per_epoch(keep, config.train.batch_size)
    total = spe * config.train.epochs
    schedule = make_schedule(config, total, spe)
    o = config.optim
    tx = from_config(o, schedule)
    m = config.model
    model, has_bn = build_model(config, pool)
    conv = is_conv_net(m.name, model, tuple(pool.input_shape))
    import jax

    if registry.runs_fused_passes(o) and conv and jax.default_backend() == "cpu":
        warnings.warn(
            "optim.fused_passes=true runs both SAM passes in one loop body, where XLA:CPU "
            f"executes {m.name}'s convolutions several times slower (docs/sam.md); unless "
            "memory is the limit, leave it false on the CPU",
            stacklevel=2,
        )
    return TrainSetup(
        model=model,
        tx=tx,
        schedule=schedule,
        steps_per_epoch=spe,
        total_steps=total,
        augment=resolve_train_augment(config.data.train_augment, pool.kind, pool.dataset),
        has_batch_norm=has_bn,
        conv_net=conv,
        fused_passes=registry.runs_fused_passes(o),
        label_smoothing=float(config.train.label_smoothing),
        dp=make_dp_shape(config, pool.size, total),
    )
