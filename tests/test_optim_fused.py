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

from .conftest import run_on_host_devices

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
    with pytest.raises(TypeError, match="SAM-family") as err:
        fused_update(
            tx, lambda q: jax.value_and_grad(loss_fn, has_aux=True)(q, x[0], y[0]), tx.init(p0), p0
        )
    assert not isinstance(err.value, ConfigError)


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


def _quadratic():
    loss = lambda w: jnp.sum(jnp.cos(w) * jnp.arange(1.0, 5.0)) + 0.1 * jnp.sum(w**2)  # noqa: E731
    return loss, jnp.array([0.3, -1.0, 2.0, 0.5])


def _fused_and_two_calls(tx, loss, w, steps=3):
    vg = jax.value_and_grad(loss)
    fused = jax.jit(lambda s, w: fused_update(tx, vg, s, w)[:2])
    out = []
    for use_fused in (True, False):
        p, s = w, tx.init(w)
        for _ in range(steps):
            if use_fused:
                u, s = fused(s, p)
            else:
                u, s = tx.update(jax.grad(loss)(p), s, p, grad_fn=jax.grad(loss))
            p = optax.apply_updates(p, u)
        out.append(p)
    return out


def test_fused_with_eps_zero_is_finite():
    """eps = 0: the clean pass is at params itself, not at the ascent point of a zero gradient."""
    loss, w = _quadratic()
    fused, two = _fused_and_two_calls(sam(base_sgd(0.1), 0.2, eps=0.0), loss, w)
    assert bool(jnp.all(jnp.isfinite(fused)))
    np.testing.assert_allclose(fused, two, rtol=1e-6)
    assert float(jnp.abs(fused - w).max()) > 1e-3


@pytest.mark.parametrize(
    "make",
    [
        lambda: optax.chain(optax.clip_by_global_norm(0.5), sam(base_sgd(0.1), 0.2)),
        lambda: optax.chain(gsam(base_sgd(0.1), 0.2, alpha=0.3), optax.scale(0.5)),
        lambda: optax.inject_hyperparams(sam)(base_sgd(0.1), rho=0.2),
        lambda: optax.inject_hyperparams(looksam)(base_sgd(0.1), rho=0.2, k=2),
    ],
    ids=["chain_clip_sam", "chain_gsam_scale", "inject_sam", "inject_looksam"],
)
def test_fused_through_chain_and_inject_hyperparams(make):
    loss, w = _quadratic()
    fused, two = _fused_and_two_calls(make(), loss, w, steps=4)
    np.testing.assert_allclose(fused, two, rtol=1e-6, atol=1e-7)


def test_fused_behind_lax_cond_wrapper_is_a_clear_error():
    loss, w = _quadratic()
    tx = optax.apply_if_finite(sam(base_sgd(0.1), 0.2), 3)
    with pytest.raises(TypeError, match="around the base optimizer"):
        fused_update(tx, jax.value_and_grad(loss), tx.init(w), w)


SHARD_MAP_FUSED = """
import jax, jax.numpy as jnp, numpy as np, optax
from jax.sharding import Mesh, PartitionSpec as P
from jaxsam.optim import base_sgd, fused_update, gsam, sam

assert jax.device_count() == 2, jax.devices()
mesh = Mesh(np.array(jax.devices()), ("d",))
k = jax.random.split(jax.random.key(3), 3)
params = {"w": jax.random.normal(k[0], (5, 3)), "b": jnp.zeros(3)}
X, Y = jax.random.normal(k[1], (8, 5)), jax.random.randint(k[2], (8,), 0, 3)

def loss(p, x, y):
    return optax.softmax_cross_entropy_with_integer_labels(x @ p["w"] + p["b"], y).mean()

def run(tx, fused):
    def step(p, s, x, y):
        if fused:
            u, s, _ = fused_update(tx, jax.value_and_grad(lambda q: loss(q, x, y)), s, p)
        else:  # the documented two-call form: per-device gradients of the per-device loss
            g = jax.grad(loss)(jax.lax.pcast(p, "d", to="varying"), x, y)
            u, s = tx.update(g, s, p, grad_fn=lambda q: jax.grad(loss)(q, x, y))
        return u, s
    f = jax.jit(jax.shard_map(step, mesh=mesh, in_specs=(P(), P(), P("d"), P("d")),
                              out_specs=(P(), P())))
    return f(params, tx.init(params), X, Y)[0]

for make in (lambda: sam(base_sgd(0.1), 0.2, axis_name="d"),
             lambda: gsam(base_sgd(0.1), 0.2, 0.3, axis_name="d")):
    tx = make()
    fused, two = run(tx, True), run(tx, False)
    for a, b in zip(jax.tree.leaves(fused), jax.tree.leaves(two)):
        ratio = float(jnp.linalg.norm(a) / jnp.linalg.norm(b))
        print("ratio", ratio)
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7)
print("FUSED_SHARD_MAP_OK")
"""


@pytest.mark.multidevice
def test_fused_under_shard_map_equals_two_calls_on_two_devices():
    """check_vma=True: without the cast to varying the fused update was 2.000x too large."""
    assert "FUSED_SHARD_MAP_OK" in run_on_host_devices(SHARD_MAP_FUSED, 2)
