"""A plain MLP for flattened inputs (digits, tabular data)."""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax.numpy as jnp


class MLP(nn.Module):
    """``depth`` hidden ReLU layers of ``width`` units, then a linear head.

    Input [B, ...] (flattened), output logits [B, num_classes] in float32.
    """

    num_classes: int
    width: int = 256
    depth: int = 2
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x: jnp.ndarray, train: bool = False) -> jnp.ndarray:
        del train
        x = x.reshape(x.shape[0], -1).astype(self.dtype)
        for _ in range(self.depth):
            x = nn.relu(nn.Dense(self.width, dtype=self.dtype)(x))
        return nn.Dense(self.num_classes, dtype=self.dtype)(x).astype(jnp.float32)
