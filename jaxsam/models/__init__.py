"""Flax linen models written so that many copies batch well over a leading model axis.

Every model takes ``(x [B, H, W, C] or [B, D] float, train: bool)`` and returns float32 logits
[B, num_classes]; ``dtype`` is the compute dtype (parameters stay float32 master weights).
Conv nets take ``conv_impl`` (``lax`` or ``matmul``, see :mod:`jaxsam.models.layers`); the
parameters are the same under both, so a run may switch form between training and inference.

``width`` / ``depth`` of ``None`` select each model's standard size (:data:`STANDARD`).

A name of the form ``package.module:attr`` is your own model (:mod:`jaxsam.models.custom`):
``attr(num_classes, **kwargs)`` builds it; ``width``, ``depth`` and ``dtype`` belong to the
built-in models and are not passed to it (set them in ``model.kwargs``).
"""

from __future__ import annotations

from collections.abc import Callable

import flax.linen as nn
import jax.numpy as jnp

from jaxsam.models import custom
from jaxsam.models.cnn import SmallCNN
from jaxsam.models.layers import CONV_IMPLS
from jaxsam.models.mlp import MLP
from jaxsam.models.resnet import ResNet9, ResNet18, WideResNet

# name -> (standard width, standard depth); depth is fixed by the name for ResNets/WRNs.
STANDARD: dict[str, tuple[int, int]] = {
    "mlp": (256, 2),
    "cnn": (32, 3),
    "resnet18": (64, 18),
    "wrn16_4": (64, 16),
    "wrn28_2": (32, 28),
    "resnet9": (64, 9),
}


def _mlp(num_classes, width, depth, dtype, conv_impl):
    del conv_impl
    return MLP(num_classes=num_classes, width=width, depth=depth, dtype=dtype)


def _cnn(num_classes, width, depth, dtype, conv_impl):
    return SmallCNN(num_classes, width=width, depth=depth, dtype=dtype, conv_impl=conv_impl)


def _resnet18(num_classes, width, depth, dtype, conv_impl):
    del depth
    return ResNet18(num_classes, width=width, dtype=dtype, conv_impl=conv_impl)


def _wrn(wrn_depth: int):
    def build(num_classes, width, depth, dtype, conv_impl):
        del depth
        return WideResNet(
            num_classes, depth=wrn_depth, width=width, dtype=dtype, conv_impl=conv_impl
        )

    return build


def _resnet9(num_classes, width, depth, dtype, conv_impl):
    del depth
    return ResNet9(num_classes, width=width, dtype=dtype, conv_impl=conv_impl)


MODELS: dict[str, Callable[..., nn.Module]] = {
    "mlp": _mlp,
    "cnn": _cnn,
    "resnet18": _resnet18,
    "wrn16_4": _wrn(16),
    "wrn28_2": _wrn(28),
    "resnet9": _resnet9,
}

CONV_MODELS = ("cnn", "resnet18", "wrn16_4", "wrn28_2", "resnet9")


def make_model(
    name: str,
    num_classes: int,
    *,
    width: int | None = None,
    depth: int | None = None,
    dtype: str = "float32",
    conv_impl: str = "lax",
    kwargs: dict | None = None,
) -> nn.Module:
    """Builds model ``name``.

    Args:
      name: a key of :data:`MODELS`, or ``package.module:attr`` (imported: your own model,
        built as ``attr(num_classes, **kwargs)``; ``width``, ``depth``, ``dtype`` and
        ``conv_impl`` are not passed to it).
      num_classes: C, the logits width.
      width: hidden width (MLP) or channels of the first stage (conv nets); ``None``: standard.
      depth: hidden layers (MLP) or conv layers (CNN); ignored where the name fixes it.
      dtype: compute dtype, ``float32`` or ``bfloat16`` (params stay float32).
      conv_impl: ``lax`` (grouped under vmap) or ``matmul`` (im2col; batched matmul under vmap).
      kwargs: ``model.kwargs``, keyword arguments of a custom model (built-in models take none).
    """
    from jaxsam.errors import ConfigError

    if custom.is_import_path(name):
        return custom.build(name, num_classes, kwargs)
    if name not in MODELS:
        raise ConfigError(
            f"unknown model {name!r}; use one of {sorted(MODELS)} or an import path "
            "'package.module:attr' naming your own Flax model"
        )
    if kwargs:
        raise ConfigError(
            f"model.kwargs = {kwargs!r} is for custom models ('package.module:attr'); the "
            f"built-in {name!r} takes model.width / model.depth / model.dtype: empty model.kwargs"
        )
    if conv_impl not in CONV_IMPLS:
        raise ConfigError(f"unknown conv_impl {conv_impl!r}; use one of {list(CONV_IMPLS)}")
    std_width, std_depth = STANDARD[name]
    return MODELS[name](
        num_classes,
        std_width if width is None else width,
        std_depth if depth is None else depth,
        jnp.dtype(dtype),
        conv_impl,
    )


def is_conv_net(name: str, model: nn.Module, input_shape: tuple[int, ...]) -> bool:
    """Whether the model convolves: by name for built-in models (:data:`CONV_MODELS`), else by
    tracing its forward pass on ``[1, *input_shape]`` (:func:`custom.uses_convolutions`)."""
    if name in MODELS:
        return name in CONV_MODELS
    return custom.uses_convolutions(model, input_shape)


def with_conv_impl(model: nn.Module, conv_impl: str) -> nn.Module:
    """The same model (same parameter tree) computing its convolutions as ``conv_impl``."""
    if hasattr(model, "conv_impl"):
        return model.clone(conv_impl=conv_impl)
    return model


__all__ = [
    "CONV_MODELS",
    "MODELS",
    "STANDARD",
    "custom",
    "is_conv_net",
    "make_model",
    "with_conv_impl",
]
