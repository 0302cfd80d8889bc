"""Residual conv nets for CIFAR-scale images: ResNet-18, Wide ResNets, a fast ResNet-9.

Every convolution is a :class:`jaxsam.models.layers.Conv` so that ``conv_impl="matmul"`` turns
all of them into matmuls (what the ``vmap_matmul`` strategy needs). BatchNorm statistics are
per model: under a model axis each model keeps and updates its own ``batch_stats``.

Input [B, H, W, C] float; output float32 logits [B, num_classes].
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxsam.models.layers import Conv, ConvNet, batch_norm, dense_head


class _Block(nn.Module):
    """What both residual blocks hold: output channels, stride, conv form and dtype."""

    features: int
    stride: int
    conv_impl: str
    dtype: Any

    def conv(self, features: int, kernel: int = 3, stride: int = 1) -> Conv:
        return Conv(features, kernel, stride, conv_impl=self.conv_impl, dtype=self.dtype)

    def reshapes(self, x: jax.Array) -> bool:
        """Whether the shortcut needs a 1x1 projection (channels or resolution change)."""
        return x.shape[-1] != self.features or self.stride != 1


class BasicBlock(_Block):
    """Post-activation ResNet basic block (two 3x3 convs), 1x1 projection when shapes change."""

    @nn.compact
    def __call__(self, x: jax.Array, train: bool) -> jax.Array:
        y = nn.relu(batch_norm(train, self.dtype)(self.conv(self.features, 3, self.stride)(x)))
        y = batch_norm(train, self.dtype, zero_init=True)(self.conv(self.features)(y))
        if self.reshapes(x):
            x = batch_norm(train, self.dtype)(self.conv(self.features, 1, self.stride)(x))
        return nn.relu(x + y)


def _stages(x, block, widths, blocks: int, train: bool, conv_impl: str, dtype) -> jax.Array:
    """Residual stages: ``blocks`` blocks per width, the first of each later stage strided."""
    for i, features in enumerate(widths):
        for j in range(blocks):
            stride = 2 if (i > 0 and j == 0) else 1
            x = block(features, stride, conv_impl, dtype)(x, train)
    return x


class ResNet18(ConvNet):
    """ResNet-18, CIFAR variant: 3x3 stem without max-pool, stages of 2 blocks with
    ``width * (1, 2, 4, 8)`` channels (standard width 64, about 0.56 GFLOP forward at 32x32)."""

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
        x = self.conv(self.width)(x)
        x = nn.relu(batch_norm(train, self.dtype)(x))
        widths = [self.width * mult for mult in (1, 2, 4, 8)]
        x = _stages(x, BasicBlock, widths, 2, train, self.conv_impl, self.dtype)
        return dense_head(x, self.num_classes, self.dtype)


class WideBlock(_Block):
    """Pre-activation wide-ResNet block (BN-ReLU-conv twice), 1x1 projection on shape change."""

    @nn.compact
    def __call__(self, x: jax.Array, train: bool) -> jax.Array:
        o = nn.relu(batch_norm(train, self.dtype)(x))
        y = self.conv(self.features, 3, self.stride)(o)
        y = self.conv(self.features)(nn.relu(batch_norm(train, self.dtype)(y)))
        if self.reshapes(x):
            x = self.conv(self.features, 1, self.stride)(o)
        return x + y


class WideResNet(ConvNet):
    """WRN-``depth``-k: a 16-channel stem, three stages of ``(depth - 4) / 6`` blocks with
    ``width * (1, 2, 4)`` channels (``width = 16 k``), final BN-ReLU, pool, linear head."""

    depth: int = 16

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
        n = (self.depth - 4) // 6
        x = self.conv(16)(x)
        widths = [self.width * mult for mult in (1, 2, 4)]
        x = _stages(x, WideBlock, widths, n, train, self.conv_impl, self.dtype)
        x = nn.relu(batch_norm(train, self.dtype)(x))
        return dense_head(x, self.num_classes, self.dtype)


class ResNet9(ConvNet):
    """Fast ResNet-9 (Page's DAWNBench / airbench family): conv-BN-ReLU stem, three stages of
    ``width * (2, 4, 8)`` channels with max-pools, residual pairs after stages 1 and 3, global
    max-pool, linear head scaled by 1/8."""

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
        def cbr(h, f, pool=False):
            h = self.conv(f)(h)
            if pool:
                h = nn.max_pool(h, (2, 2), strides=(2, 2))
            return nn.relu(batch_norm(train, self.dtype)(h))

        w = self.width
        x = cbr(x, w)
        x = cbr(x, 2 * w, pool=True)
        x = x + cbr(cbr(x, 2 * w), 2 * w)
        x = cbr(x, 4 * w, pool=True)
        x = cbr(x, 8 * w, pool=True)
        x = x + cbr(cbr(x, 8 * w), 8 * w)
        x = jnp.max(x.astype(jnp.float32), axis=(1, 2)).astype(self.dtype)
        out = nn.Dense(self.num_classes, use_bias=False, dtype=self.dtype)(x)
        return out.astype(jnp.float32) * 0.125
