"""fused_update: both SAM passes in one lax.scan body; two-call numbers, less memory."""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from jaxsam.errors import ConfigError
from jaxsam.optim import asam, base_sgd, fused_update, gsam, looksam, sam

M, B = 4, 16

FACTORIES = {
    "sam": lambda: sam(base_sgd(0.1), 0.3),
    "sam_schedule": lambda: sam(base_sgd(0.1), optax.linear_schedule(0.0, 0.4, 3)),
    "asam": lambda: asam(base_sgd(0.1), 0.5, eta=0.05),
    "gsam": lambda: gsam(base_sgd(0.1), 0.3, alpha=0.4),
    "looksam": lambda: looksam(base_sgd(0.1), 0.3, k=2),
}


class TinyCNN(nn.Module):
    @nn.compact
    def __call__(self, x):
        x = nn.relu(nn.Conv(8, (3, 3))(x))
        x = nn.avg_pool(x, (2, 2), (2, 2))
        return nn.Dense(5)(x.reshape((x.shape[0], -1)))


def _problem():
    model = TinyCNN()
    kx, ky, kp = jax.random.split(jax.random.key(0), 3)
    x = jax.random.normal(kx, (M, B, 8, 8, 3))
    y = jax.random.randint(ky, (M, B), 0, 5)
    params = jax.vmap(lambda k: model.init(k, x[0, :1])["params"])(jax.random.split(kp, M))

    def loss_fn(p, x, y):
        logits = model.apply({"params": p}, x)
        return optax.softmax_cross_entropy_with_integer_labels(logits, y).mean(), logits

    return params, x, y, loss_fn


def _steps(tx, loss_fn, fused):
    def step(p, s, x, y):
        vg = jax.value_and_grad(loss_fn, has_aux=True)
        if fused:
            u, s, (loss, logits) = fused_update(tx, lambda q: vg(q, x, y), s, p)
        else:
            (loss, logits), g = vg(p, x, y)
            grad_fn = lambda q: jax.grad(loss_fn, has_aux=True)(q, x, y)  # noqa: E731
            u, s = tx.update(g, s, p, grad_fn=grad_fn)
        return optax.apply_updates(p, u), s, loss, logits

    return jax.jit(jax.vmap(step))


@pytest.mark.parametrize("name", sorted(FACTORIES))
def test_fused_equals_two_calls(name):
    params, x, y, loss_fn = _problem()
    tx = FACTORIES[name]()
    out = {}
    for fused in (False, True):
        p, s = params, jax.vmap(tx.init)(params)
        step = _steps(tx, loss_fn, fused)
        losses = []
        for _ in range(4):
            p, s, loss, logits = step(p, s, x, y)
            losses.append(loss)
        out[fused] = (p, jnp.stack(losses), logits)
    for a, b in zip(jax.tree.leaves(out[False]), jax.tree.leaves(out[True]), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
    # The loss and logits returned are the clean pass's: the loss at the pre-step parameters.
    p0, s0 = params, jax.vmap(tx.init)(params)
    _, _, loss0, logits0 = _steps(tx, loss_fn, True)(p0, s0, x, y)
    want_loss, want_logits = jax.vmap(loss_fn)(params, x, y)
    np.testing.assert_allclose(loss0, want_loss, rtol=1e-6)
    np.testing.assert_allclose(logits0, want_logits, rtol=1e-5, atol=1e-6)


def test_fused_needs_a_sam_family_transform():
    params, x, y, loss_fn = _problem()
    tx = optax.sgd(0.1)
    p0 = jax.tree.map(lambda a: a[0], params)
    with pytest.raises(ConfigError, match="SAM-family"):
        fused_update(
            tx, lambda q: jax.value_and_grad(loss_fn, has_aux=True)(q, x[0], y[0]), tx.init(p0), p0
        )


def test_fused_peak_memory_is_below_the_two_call_form():
    """XLA's own account of the compiled step: both passes share one set of activation buffers."""
    params, x, y, loss_fn = _problem()
    tx = FACTORIES["sam"]()
    state = jax.vmap(tx.init)(params)

    def peak(fn):
        m = fn.lower(params, state, x, y).compile().memory_analysis()
        if m is None:
            pytest.skip("this backend gives no memory analysis")
        return m.temp_size_in_bytes + m.output_size_in_bytes + m.argument_size_in_bytes

    def sgd_step(p, s, x, y):
        (loss, logits), g = jax.value_and_grad(loss_fn, has_aux=True)(p, x, y)
        return jax.tree.map(lambda a, b: a - 0.1 * b, p, g), s, loss, logits

    param_bytes = sum(a.nbytes for a in jax.tree.leaves(params))
    sgd = peak(jax.jit(jax.vmap(sgd_step)))
    two_calls, fused = peak(_steps(tx, loss_fn, False)), peak(_steps(tx, loss_fn, True))
    assert fused < two_calls
    # The goal: at most one parameter-sized buffer (per model) over SGD.
    assert fused - sgd <= param_bytes, (sgd, two_calls, fused, param_bytes)
