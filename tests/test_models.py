"""Models: shapes, dtypes, per-model BatchNorm, matmul-form conv == lax conv, vmap == loop."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxsam.models import MODELS, make_model, with_conv_impl
from jaxsam.models.layers import im2col_conv

WIDTH = {"mlp": 16, "cnn": 4, "resnet18": 4, "wrn16_4": 4, "wrn28_2": 2, "resnet9": 4}


def _init(name, conv_impl="lax", dtype="float32", hw=8):
    model = make_model(name, 10, width=WIDTH[name], dtype=dtype, conv_impl=conv_impl)
    x = jax.random.normal(jax.random.key(1), (3, hw, hw, 3))
    return model, model.init(jax.random.key(0), x, train=False), x


HEAVY = ("resnet18", "wrn16_4", "wrn28_2")  # 10-20 s each on the CPU: -m slow


@pytest.mark.parametrize(
    "name", [pytest.param(n, marks=pytest.mark.slow) if n in HEAVY else n for n in sorted(MODELS)]
)
def test_forward_shape_dtype_and_train_mode(name):
    model, variables, x = _init(name)
    out = model.apply(variables, x, train=False)
    assert out.shape == (3, 10) and out.dtype == jnp.float32
    assert np.isfinite(np.asarray(out)).all()
    if "batch_stats" in variables:
        out_t, upd = model.apply(variables, x, train=True, mutable=["batch_stats"])
        assert out_t.shape == (3, 10)
        before = jax.tree.leaves(variables["batch_stats"])
        after = jax.tree.leaves(upd["batch_stats"])
        assert any(not np.allclose(a, b) for a, b in zip(before, after, strict=True))


@pytest.mark.parametrize(
    "name", ["cnn", "resnet9", pytest.param("wrn16_4", marks=pytest.mark.slow)]
)
def test_matmul_conv_form_computes_the_same_function(name):
    model, variables, x = _init(name)
    a = model.apply(variables, x, train=False)
    b = with_conv_impl(model, "matmul").apply(variables, x, train=False)
    np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("k,stride,hw", [(3, 1, 7), (3, 2, 8), (3, 2, 7), (1, 2, 8), (5, 1, 6)])
def test_im2col_matches_lax_conv(k, stride, hw):
    x = jax.random.normal(jax.random.key(0), (2, hw, hw, 3))
    w = jax.random.normal(jax.random.key(1), (k, k, 3, 5))
    ref = jax.lax.conv_general_dilated(
        x, w, (stride, stride), "SAME", dimension_numbers=("NHWC", "HWIO", "NHWC")
    )
    np.testing.assert_allclose(np.asarray(im2col_conv(x, w, stride)), ref, rtol=1e-5, atol=1e-5)


def test_bfloat16_keeps_float32_params_and_float32_logits():
    model, variables, x = _init("resnet9", dtype="bfloat16")
    assert all(a.dtype == jnp.float32 for a in jax.tree.leaves(variables["params"]))
    out = model.apply(variables, x, train=False)
    ref_model, _, _ = _init("resnet9")
    ref = ref_model.apply(variables, x, train=False)
    assert out.dtype == jnp.float32
    np.testing.assert_allclose(np.asarray(out), np.asarray(ref), rtol=0.1, atol=0.1)


def test_standard_sizes_and_unknown_name():
    from jaxsam.errors import ConfigError

    assert make_model("wrn28_2", 10).width == 32 and make_model("wrn28_2", 10).depth == 28
    with pytest.raises(ConfigError, match="unknown model"):
        make_model("vgg", 10)
