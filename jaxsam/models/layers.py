"""Building blocks shared by the conv nets: a convolution with two interchangeable forms.

``Conv`` keeps ``flax.linen.Conv``'s parameter layout (``kernel`` [kh, kw, C_in, C_out],
optional ``bias`` [C_out], both float32) and computes the same function in one of two forms:

- ``conv_impl="lax"``: ``lax.conv_general_dilated``. Fastest for ONE model. Under ``jax.vmap``
  over a model axis XLA turns it into a grouped convolution (feature_group_count = M), which is
  slow on CPU and on many GPU kernels.
- ``conv_impl="matmul"``: im2col. The kh*kw shifted views of the padded input are concatenated
  along channels ([B, H', W', kh*kw*C_in]) and multiplied with the reshaped kernel
  ([kh*kw*C_in, C_out]). Under vmap this is a batched matmul (dot_general with a batch
  dimension), which every backend runs well.

Both forms take the same parameters, so a model trained with one can be evaluated with the other.
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

CONV_IMPLS = ("lax", "matmul")


def _same_pads(size: int, k: int, s: int) -> tuple[int, int]:
    out = -(-size // s)
    total = max((out - 1) * s + k - size, 0)
    return total // 2, total - total // 2


def im2col_conv(x: jax.Array, kernel: jax.Array, stride: int) -> jax.Array:
    """SAME-padded convolution as one matmul.

    Args:
      x: [B, H, W, C_in].
      kernel: [kh, kw, C_in, C_out].
      stride: spatial stride (both axes).

    Returns:
      [B, ceil(H / stride), ceil(W / stride), C_out], same dtype as ``x``.
    """
    kh, kw, cin, cout = kernel.shape
    _, h, w, _ = x.shape
    if kh == 1 and kw == 1:
        return jnp.einsum("bhwc,cd->bhwd", x[:, ::stride, ::stride, :], kernel[0, 0])
    ph, pw = _same_pads(h, kh, stride), _same_pads(w, kw, stride)
    xp = jnp.pad(x, ((0, 0), ph, pw, (0, 0)))
    ho, wo = -(-h // stride), -(-w // stride)
    cols = [
        xp[:, i : i + (ho - 1) * stride + 1 : stride, j : j + (wo - 1) * stride + 1 : stride, :]
        for i in range(kh)
        for j in range(kw)
    ]
    patches = jnp.concatenate(cols, axis=-1)  # [B, ho, wo, kh*kw*cin], (i, j, c) order
    return jnp.einsum("bhwk,kd->bhwd", patches, kernel.reshape(kh * kw * cin, cout))


class Conv(nn.Module):
    """SAME-padded 2-D convolution, ``flax.linen.Conv`` parameter layout, two compute forms.

    Input [B, H, W, C_in] (any float dtype, cast to ``dtype``); output
    [B, ceil(H/stride), ceil(W/stride), features] in ``dtype``.
    """

    features: int
    kernel_size: int = 3
    stride: int = 1
    use_bias: bool = False
    conv_impl: str = "lax"
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        if self.conv_impl not in CONV_IMPLS:
            raise ValueError(f"conv_impl must be one of {CONV_IMPLS}, got {self.conv_impl!r}")
        k = self.kernel_size
        kernel = self.param(
            "kernel",
            nn.initializers.lecun_normal(),
            (k, k, x.shape[-1], self.features),
            jnp.float32,
        )
        x = x.astype(self.dtype)
        kernel = kernel.astype(self.dtype)
        if self.conv_impl == "matmul":
            y = im2col_conv(x, kernel, self.stride)
        else:
            y = jax.lax.conv_general_dilated(
                x,
                kernel,
                window_strides=(self.stride, self.stride),
                padding="SAME",
                dimension_numbers=("NHWC", "HWIO", "NHWC"),
            )
        if self.use_bias:
            bias = self.param("bias", nn.initializers.zeros, (self.features,), jnp.float32)
            y = y + bias.astype(self.dtype)
        return y


class ConvNet(nn.Module):
    """The fields every built-in conv net has, and its way of making a convolution.

    Attributes:
      num_classes: C, the logits width.
      width: channels of the first stage (each net documents its standard value).
      dtype: compute dtype of activations and convolutions (parameters stay float32).
      conv_impl: ``lax`` or ``matmul`` (:class:`Conv`), chosen by the execution plan.
    """

    num_classes: int
    width: int = 64
    dtype: Any = jnp.float32
    conv_impl: str = "lax"

    def conv(self, features: int, kernel: int = 3, stride: int = 1, **kw) -> Conv:
        return Conv(features, kernel, stride, conv_impl=self.conv_impl, dtype=self.dtype, **kw)


def batch_norm(train: bool, dtype: Any, name: str | None = None, zero_init: bool = False):
    """BatchNorm with per-model running statistics (the model axis is never reduced over).

    Statistics are computed in float32 whatever the compute dtype; momentum 0.9, eps 1e-5.
    """
    return nn.BatchNorm(
        use_running_average=not train,
        momentum=0.9,
        epsilon=1e-5,
        dtype=dtype,
        param_dtype=jnp.float32,
        scale_init=nn.initializers.zeros if zero_init else nn.initializers.ones,
        name=name,
    )


def dense_head(x: jax.Array, num_classes: int, dtype: Any) -> jax.Array:
    """Global average pool [B, H, W, C] -> linear head -> float32 logits [B, num_classes]."""
    x = jnp.mean(x.astype(jnp.float32), axis=(1, 2)).astype(dtype)
    return nn.Dense(num_classes, dtype=dtype, param_dtype=jnp.float32)(x).astype(jnp.float32)
