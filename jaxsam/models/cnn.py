"""A small CNN (no BatchNorm): the cheap conv net of membership-inference papers."""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxsam.models.layers import ConvNet


class SmallCNN(ConvNet):
    """``depth`` 3x3 conv + ReLU layers (``width``, then ``2 * width`` channels), 2x2 max-pool
    after each while the feature map is larger than 4x4, global average pool, a ReLU layer of
    ``2 * width`` units and a linear head.

    Input [B, H, W, C] float; output float32 logits [B, num_classes].
    """

    width: int = 32
    depth: int = 3

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
        del train
        x = x.astype(self.dtype)
        for d in range(self.depth):
            ch = self.width if d == 0 else 2 * self.width
            x = nn.relu(self.conv(ch, use_bias=True)(x))
            if x.shape[1] > 4:
                x = nn.max_pool(x, (2, 2), strides=(2, 2))
        x = jnp.mean(x.astype(jnp.float32), axis=(1, 2)).astype(self.dtype)
        x = nn.relu(nn.Dense(2 * self.width, dtype=self.dtype, param_dtype=jnp.float32)(x))
        out = nn.Dense(self.num_classes, dtype=self.dtype, param_dtype=jnp.float32)(x)
        return out.astype(jnp.float32)
