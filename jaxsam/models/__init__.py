"""Flax linen models written so that many copies batch well over a leading model axis."""

from __future__ import annotations

from collections.abc import Callable

import flax.linen as nn
import jax.numpy as jnp

from jaxsam.models.mlp import MLP


def _mlp(num_classes: int, width: int, depth: int, dtype) -> nn.Module:
    return MLP(num_classes=num_classes, width=width, depth=depth, dtype=dtype)


MODELS: dict[str, Callable[..., nn.Module]] = {"mlp": _mlp}


def make_model(
    name: str, num_classes: int, *, width: int = 256, depth: int = 2, dtype: str = "float32"
) -> nn.Module:
    """Builds model ``name``; ``dtype`` is the compute dtype (params stay float32)."""
    from jaxsam.errors import ConfigError

    if name not in MODELS:
        raise ConfigError(f"unknown model {name!r}; use one of {sorted(MODELS)}")
    return MODELS[name](num_classes, width, depth, jnp.dtype(dtype))
