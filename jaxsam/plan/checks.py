"""The config checks that need the optimizer registry or the model code, and config vs data.

:func:`jaxsam.config.validate` checks types and ranges only (the config module imports no part
of jaxsam but :mod:`jaxsam.errors`). :func:`check_config` runs it and adds what needs more: the
optimizer's name and arguments (:mod:`jaxsam.optim.registry`), the model's name and the
``model.*`` keys that go with it, and what DP-SGD needs of the model and the optimizer.
:func:`check_compatible` checks the config against the loaded pool. Both raise before
anything is trained or written; every way into training runs them through
:func:`jaxsam.plan.make_plan`.
"""

from __future__ import annotations

import json

import numpy as np

from jaxsam import config as config_lib
from jaxsam.config import Config, ModelConfig
from jaxsam.data.pool import Pool
from jaxsam.data.sources import check_dataset
from jaxsam.errors import ConfigError, DataError
from jaxsam.models import CONV_MODELS
from jaxsam.optim import registry


def check_config(config: Config) -> Config:
    """Every check of ``config`` that needs no data: returns ``config`` or raises.

    :func:`jaxsam.config.validate` (types and ranges), then the dataset's name
    (:func:`jaxsam.data.sources.check_dataset`), the model's and the optimizer's.

    A custom model's code (``model.name = "package.module:attr"``) is not imported here; the
    plan step imports and checks it when it builds the model.

    Raises:
      ConfigError: naming the key, the value and the fix.
    """
    config_lib.validate(config)
    o = config.optim
    check_dataset(config.data.dataset)
    _check_model(config.model)
    config_lib.check_choice("optim.name", o.name, registry.names())
    registry.check_args(o.name, o.extra, prefix="optim.extra.", error=ConfigError)
    registry.check_base_args(o.base, o.base_args, prefix="optim.base_args.", error=ConfigError)
    if config.optim.dp.enabled:
        _check_dp(config)
    return config


def _check_model(mo: ModelConfig) -> None:
    """``model.name`` is a built-in model or an import path, with the keys that go with it."""
    from jaxsam.models import MODELS, custom

    if custom.is_import_path(mo.name):
        for key, value, default in (
            ("width", mo.width, None),
            ("depth", mo.depth, None),
            ("dtype", mo.dtype, "float32"),
        ):
            if value != default:
                raise ConfigError(
                    f"model.{key} = {value!r} applies to the built-in models only, and "
                    f"model.name = {mo.name!r} is your own; pass it in model.kwargs (e.g. "
                    f'model.kwargs = {{"{key}": {json.dumps(value)}}}) and leave '
                    f"model.{key} = {json.dumps(default)}"
                )
        return
    if mo.name not in MODELS:
        raise ConfigError(
            f"model.name = {mo.name!r} is not allowed; use one of {list(MODELS)}, or your own "
            "Flax model as an import path 'package.module:attr' (e.g. 'mymodule:Net')"
        )
    if mo.kwargs:
        raise ConfigError(
            f"model.kwargs = {mo.kwargs!r} is for custom models ('package.module:attr'); the "
            f"built-in model {mo.name!r} takes model.width / model.depth / model.dtype: leave "
            "model.kwargs empty"
        )


def _check_dp(config: Config) -> None:
    """What DP-SGD needs of the optimizer and of a built-in model (a custom model's BatchNorm
    is checked when the plan step builds it)."""
    from jaxsam.models import MODELS

    if registry.runs_fused_passes(config.optim):
        raise ConfigError(
            "optim.fused_passes does not support optim.dp (the two passes need their own noise "
            "draws); set optim.fused_passes = false"
        )
    if config.model.name in MODELS and _has_batch_norm(config.model):
        raise ConfigError(
            f"optim.dp needs a model without BatchNorm, and model.name = {config.model.name!r} "
            "has it (BatchNorm mixes the examples of a batch, so per-example gradients are not "
            "separable); use model.name = 'mlp' or 'cnn'"
        )


def _has_batch_norm(model: ModelConfig) -> bool:
    """Whether a built-in model keeps BatchNorm statistics (shapes only: nothing is allocated)."""
    import jax
    import jax.numpy as jnp

    from jaxsam.models import make_model

    net = make_model(model.name, 10, width=model.width, depth=model.depth, dtype=model.dtype)
    x = jax.ShapeDtypeStruct((1, 32, 32, 3), jnp.float32)
    shapes = jax.eval_shape(lambda x: net.init(jax.random.key(0), x, train=False), x)
    return "batch_stats" in shapes


def check_compatible(config: Config, pool: Pool) -> None:
    """Refuses data the config cannot train on, and labels the models cannot learn.

    Raises:
      ConfigError: query views or a convolutional model on tabular data.
      DataError: labels that are not integers or lie outside ``[0, num_classes)``.
    """
    d, name = config.data, pool.dataset
    if pool.kind != "image":
        if d.query_augment != 1:
            raise ConfigError(
                f"data.query_augment = {d.query_augment} queries mirrored and shifted images, "
                f"but {name} is tabular ([N, {int(np.prod(pool.input_shape))}] features); set "
                "data.query_augment = 1"
            )
        if config.model.name in CONV_MODELS:
            raise ConfigError(
                f"model.name = {config.model.name!r} is a convolutional net for images "
                f"[N, H, W, C], but {name} is tabular; use model.name = 'mlp'"
            )
    c = pool.num_classes
    for what, y in (("pool", pool.y), ("held-out", pool.test_y)):
        if not np.issubdtype(np.asarray(y).dtype, np.integer):
            raise DataError(
                f"{name}: the {what} labels are {np.asarray(y).dtype}, not integers; store "
                "class indices 0..C-1"
            )
        if y.size and (int(y.min()) < 0 or int(y.max()) >= c):
            raise DataError(
                f"{name}: the {what} labels must lie in [0, {c}) (num_classes = {c}); got "
                f"{int(y.min())}..{int(y.max())}: fix the labels or num_classes"
            )
