"""Per-model normalisation: vmap == stacked == separate runs; synced perturbations on devices."""

from __future__ import annotations

import textwrap

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from jaxsam.errors import ConfigError
from jaxsam.optim import asam, gsam, looksam, sam

from .conftest import assert_trees_close, run_on_host_devices

M, STEPS = 8, 3


def loss(p, x, y):
    h = jnp.tanh(x @ p["w1"] + p["b1"])
    logits = h @ p["w2"]
    return optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()


def ensemble():
    """M small MLPs with their own init and data; model m's data is scaled by 2**(m-4) so that
    the gradient norms differ by orders of magnitude across models."""
    keys = jax.random.split(jax.random.key(0), 4)
    params = {
        "w1": jax.random.normal(keys[0], (M, 4, 6)),
        "b1": jnp.zeros((M, 6)),
        "w2": jax.random.normal(keys[1], (M, 6, 3)),
    }
    scale = 2.0 ** (jnp.arange(M) - 4.0)
    x = jax.random.normal(keys[2], (M, 10, 4)) * scale[:, None, None]
    y = jax.random.randint(keys[3], (M, 10), 0, 3)
    return params, x, y


def make_step(tx):
    def step(params, state, x, y):
        g = jax.grad(loss)(params, x, y)
        grad_fn = lambda p: jax.grad(loss)(p, x, y)
        updates, state = tx.update(g, state, params, grad_fn=grad_fn)
        return optax.apply_updates(params, updates), state

    return step


def base():
    return optax.sgd(0.1, momentum=0.9)


FACTORIES = {
    "sam": lambda **kw: sam(base(), 0.3, **kw),
    "asam": lambda **kw: asam(base(), 0.5, eta=0.05, **kw),
    "gsam": lambda **kw: gsam(base(), 0.3, alpha=0.4, **kw),
    "looksam": lambda **kw: looksam(base(), 0.3, k=2, **kw),
}


def run_separate(make):
    params, x, y = ensemble()
    tx = make()
    step = jax.jit(make_step(tx))
    out = []
    for m in range(M):
        p = jax.tree.map(lambda a, m=m: a[m], params)
        s = tx.init(p)
        for _ in range(STEPS):
            p, s = step(p, s, x[m], y[m])
        out.append(p)
    return jax.tree.map(lambda *a: jnp.stack(a), *out)


def run_vmap(make):
    params, x, y = ensemble()
    tx = make()
    state = jax.vmap(tx.init)(params)
    step = jax.jit(jax.vmap(make_step(tx)))
    for _ in range(STEPS):
        params, state = step(params, state, x, y)
    return params


def run_stacked(make, stacked=True):
    params, x, y = ensemble()
    tx = make(stacked=stacked)
    state = tx.init(params)
    stacked_grad = jax.vmap(jax.grad(loss))

    @jax.jit
    def step(params, state):
        g = stacked_grad(params, x, y)
        updates, state = tx.update(g, state, params, grad_fn=lambda p: stacked_grad(p, x, y))
        return optax.apply_updates(params, updates), state

    for _ in range(STEPS):
        params, state = step(params, state)
    return params


@pytest.mark.parametrize("name", list(FACTORIES))
def test_vmap_equals_stacked_equals_separate_runs(name):
    make = FACTORIES[name]
    separate = run_separate(make)
    assert_trees_close(run_vmap(make), separate)
    assert_trees_close(run_stacked(make), separate)
    if name == "sam":
        # Control: one norm across the whole stacked ensemble (optax.contrib.sam's behaviour
        # on a stacked tree) gives a different result, so the test can see the difference.
        joint = run_stacked(make, stacked=False)
        assert np.abs(np.asarray(joint["w1"] - separate["w1"])).max() > 1e-3


def test_each_models_perturbation_has_norm_rho_under_vmap():
    """On L(w) = 0.5||w||^2 with base sgd(1), update = -(w + e), so e = -update - w."""
    rho = 0.05
    scales = jnp.array([1e-3, 1.0, 10.0, 1e3])
    w = {"a": jnp.ones((4, 3)) * scales[:, None], "b": jnp.ones((4, 2, 2)) * scales[:, None, None]}
    tx = sam(optax.sgd(1.0), rho=rho)
    grad = jax.grad(lambda p: 0.5 * sum(jnp.sum(v**2) for v in jax.tree.leaves(p)))

    def one(p, s):
        return tx.update(grad(p), s, p, grad_fn=grad)[0]

    updates = jax.jit(jax.vmap(one))(w, jax.vmap(tx.init)(w))
    e = jax.tree.map(lambda u, p: -u - p, updates, w)
    norms = jnp.sqrt(sum(jnp.sum(v.reshape(4, -1) ** 2, axis=1) for v in jax.tree.leaves(e)))
    np.testing.assert_allclose(norms, rho, rtol=2e-3)


def test_stacked_rejects_ragged_leading_axis():
    tx = sam(optax.sgd(0.1), stacked=True)
    with pytest.raises(ValueError, match="model-axis") as err:
        tx.init({"a": jnp.ones((3, 2)), "b": jnp.ones((4,))})
    assert not isinstance(err.value, ConfigError)


def test_axis_name_under_vmap_collectives_equals_whole_batch():
    """A vmap axis with collectives (pmap-style data parallelism) syncs like a device axis."""
    params, x, y = ensemble()
    p = jax.tree.map(lambda a: a[0], params)
    xs, ys = x[0].reshape(5, 2, 4), y[0].reshape(5, 2)  # 5 "devices" of 2 examples each
    tx = sam(base(), 0.3, axis_name="b")

    def shard(xb, yb):
        g = jax.grad(loss)(p, xb, yb)
        return tx.update(g, tx.init(p), p, grad_fn=lambda q: jax.grad(loss)(q, xb, yb))[0]

    per_device = jax.vmap(shard, axis_name="b")(xs, ys)
    tx1 = sam(base(), 0.3)
    want, _ = tx1.update(
        jax.grad(loss)(p, x[0], y[0]),
        tx1.init(p),
        p,
        grad_fn=lambda q: jax.grad(loss)(q, x[0], y[0]),
    )
    for i in range(5):
        assert_trees_close(jax.tree.map(lambda a, i=i: a[i], per_device), want)


SHARD_MAP_SCRIPT = textwrap.dedent(
    """
    import jax, jax.numpy as jnp, numpy as np, optax
    from jax.sharding import Mesh, PartitionSpec as P
    from jaxsam.optim import sam, gsam, looksam

    assert jax.device_count() == 4, jax.devices()
    mesh = Mesh(np.array(jax.devices()), ("d",))
    k = jax.random.split(jax.random.key(1), 3)
    params = {"w": jax.random.normal(k[0], (5, 3)), "b": jnp.zeros(3)}
    X = jax.random.normal(k[1], (16, 5))
    Y = jax.random.randint(k[2], (16,), 0, 3)

    def loss(p, x, y):
        return optax.softmax_cross_entropy_with_integer_labels(x @ p["w"] + p["b"], y).mean()

    def close(a, b):
        jax.tree.map(lambda u, v: np.testing.assert_allclose(u, v, rtol=1e-5, atol=1e-6), a, b)

    def far(a, b):
        assert max(float(jnp.abs(u - v).max()) for u, v in zip(jax.tree.leaves(a),
                   jax.tree.leaves(b))) > 1e-4

    def single(tx, steps=3):
        p, s = params, tx.init(params)
        for _ in range(steps):
            g = jax.grad(loss)(p, X, Y)
            u, s = tx.update(g, s, p, grad_fn=lambda q: jax.grad(loss)(q, X, Y))
            p = optax.apply_updates(p, u)
        return p

    def sharded(tx, steps=3, per_device=True):
        def step(p, s, x, y):
            if per_device:
                # Varying params: gradients are per device (each on its own 4 examples).
                g = jax.grad(loss)(jax.lax.pcast(p, "d", to="varying"), x, y)
                grad_fn = lambda q: jax.grad(loss)(q, x, y)
            else:
                # Replicated params: shard_map psums their cotangents, so scale the local
                # mean loss by 1/4 and the gradients are already the global ones.
                local = lambda q: loss(q, x, y) / 4
                g, grad_fn = jax.grad(local)(p), jax.grad(local)
            u, s = tx.update(g, s, p, grad_fn=grad_fn)
            return optax.apply_updates(p, u), s
        f = jax.jit(jax.shard_map(step, mesh=mesh, in_specs=(P(), P(), P("d"), P("d")),
                                  out_specs=(P(), P())))
        p, s = params, tx.init(params)
        for _ in range(steps):
            p, s = f(p, s, X, Y)
        return p

    base = lambda: optax.sgd(0.1, momentum=0.9)
    # 1. synced perturbation == single device on the whole batch
    for make in (lambda **kw: sam(base(), 0.2, **kw), lambda **kw: gsam(base(), 0.2, 0.3, **kw),
                 lambda **kw: looksam(base(), 0.2, k=2, **kw)):
        want = single(make())
        close(sharded(make(axis_name="d")), want)
        close(sharded(make(), per_device=False), want)

    # 2. m-sharpness: each device perturbs with its own gradient; perturbed grads averaged
    msharp = sharded(sam(base(), 0.2, axis_name="d", sync_perturbation=False), steps=1)
    p, tx = params, optax.sgd(0.1, momentum=0.9)
    g_adv = []
    for xs, ys in zip(jnp.split(X, 4), jnp.split(Y, 4)):
        g = jax.grad(loss)(p, xs, ys)
        n = optax.tree.norm(g)
        e = jax.tree.map(lambda v: 0.2 * v / (n + 1e-12), g)
        g_adv.append(jax.grad(loss)(optax.apply_updates(p, e), xs, ys))
    g_adv = jax.tree.map(lambda *a: sum(a) / 4, *g_adv)
    u, _ = tx.update(g_adv, tx.init(p), p)
    close(msharp, optax.apply_updates(p, u))
    far(msharp, sharded(sam(base(), 0.2, axis_name="d"), steps=1))

    # 3. parameters split over devices: psum of squared norms == single-device norm
    a = jnp.linspace(0.5, 3.0, 8); b = jnp.linspace(-1.0, 1.0, 8)
    qloss = lambda w: jnp.sum(0.5 * a * w**2 - b * w)
    w0 = jnp.linspace(1.0, -1.0, 8)
    def qstep(w, s, a_, b_):
        ql = lambda v: jnp.sum(0.5 * a_ * v**2 - b_ * v)
        u, s = tx_q.update(jax.grad(ql)(w), s, w, grad_fn=jax.grad(ql))
        return optax.apply_updates(w, u), s
    tx_q = sam(optax.sgd(0.1), 0.3, param_axis_name="d")
    f = jax.jit(jax.shard_map(qstep, mesh=mesh, in_specs=(P("d"), P(), P("d"), P("d")),
                              out_specs=(P("d"), P())))
    w, s = w0, tx_q.init(w0)
    for _ in range(3):
        w, s = f(w, s, a, b)
    tx_1 = sam(optax.sgd(0.1), 0.3)
    w1, s1 = w0, tx_1.init(w0)
    for _ in range(3):
        u, s1 = tx_1.update(jax.grad(qloss)(w1), s1, w1, grad_fn=jax.grad(qloss))
        w1 = optax.apply_updates(w1, u)
    close(w, w1)
    print("SHARD_MAP_OK")
    """
)


@pytest.mark.multidevice
@pytest.mark.slow  # long: CI runs it in its `-m slow` phase
def test_shard_map_on_four_host_devices():
    assert "SHARD_MAP_OK" in run_on_host_devices(SHARD_MAP_SCRIPT, 4)
