"""The SAM family against closed forms, reductions, optax.contrib.sam and optax wrappers."""

from __future__ import annotations

import inspect

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from jaxsam.errors import ConfigError
from jaxsam.optim import asam, gsam, is_sam_family, looksam, sam

from .conftest import assert_trees_close

LR, MOM = 0.1, 0.9

# A separable quadratic over a two-leaf tree: L(w) = sum 0.5 * a * w^2 - b * w (elementwise).
A = {"u": np.array([1.0, 3.0, 0.5]), "v": np.array([[2.0, 0.2], [1.5, 4.0]])}
B = {"u": np.array([0.3, -1.0, 2.0]), "v": np.array([[1.0, 0.0], [-0.5, 0.7]])}
W0 = {"u": np.array([1.0, -2.0, 0.5]), "v": np.array([[0.3, 1.2], [-0.7, 0.1]])}


def quad_loss(w):
    return sum(jnp.sum(0.5 * A[k] * w[k] ** 2 - B[k] * w[k]) for k in ("u", "v")).astype(
        jnp.float32
    )


def flat(tree):
    return np.concatenate([np.asarray(tree[k], np.float64).ravel() for k in ("u", "v")])


A_F, B_F, W0_F = flat(A), flat(B), flat(W0)


def grad_np(w):
    return A_F * w - B_F


def unit(x, eps=1e-12):
    return x / (np.linalg.norm(x) + eps)


def reference(variant, steps, rho=0.05, **kw):
    """Naive float64 trajectory of a variant with SGD(LR, momentum MOM) as base optimizer."""
    w, m = W0_F.copy(), np.zeros_like(W0_F)
    g_v = np.zeros_like(W0_F)
    for t in range(steps):
        r = rho(t) if callable(rho) else rho
        g = grad_np(w)
        if variant == "sgd":
            d = g
        elif variant == "sam":
            d = grad_np(w + r * unit(g))
        elif variant == "asam":
            tw = np.abs(w) + kw["eta"]
            d = grad_np(w + r * tw * tw * g / (np.linalg.norm(tw * g) + 1e-12))
        elif variant == "gsam":
            gp = grad_np(w + r * unit(g))
            up = unit(gp)
            d = gp - kw["alpha"] * (g - np.dot(g, up) * up)
        elif variant == "looksam":
            if t % kw["k"] == 0:
                d = grad_np(w + r * unit(g))
                ug = unit(g)
                g_v = d - np.dot(d, ug) * ug
            else:
                d = g + kw["alpha"] * np.linalg.norm(g) / (np.linalg.norm(g_v) + 1e-12) * g_v
        m = MOM * m + d
        w = w - LR * m
    return w


def run_jax(tx, steps, loss=quad_loss, w0=W0):
    params = jax.tree.map(lambda x: jnp.asarray(x, jnp.float32), w0)
    state = tx.init(params)

    @jax.jit
    def step(params, state):
        g = jax.grad(loss)(params)
        updates, state = tx.update(g, state, params, grad_fn=jax.grad(loss))
        return optax.apply_updates(params, updates), state

    for _ in range(steps):
        params, state = step(params, state)
    return params, state


def base():
    return optax.sgd(LR, momentum=MOM)


VARIANTS = {
    "sam": (lambda rho: sam(base(), rho), {}),
    "asam": (lambda rho: asam(base(), rho, eta=0.1), {"eta": 0.1}),
    "gsam": (lambda rho: gsam(base(), rho, alpha=0.3), {"alpha": 0.3}),
    "looksam": (lambda rho: looksam(base(), rho, k=3, alpha=0.7), {"k": 3, "alpha": 0.7}),
}


@pytest.mark.parametrize("name", list(VARIANTS))
def test_closed_form_on_quadratic_over_steps(name):
    make, kw = VARIANTS[name]
    params, state = run_jax(make(0.2), steps=7)
    want = reference(name, 7, rho=0.2, **kw)
    np.testing.assert_allclose(flat(params), want, rtol=2e-5, atol=2e-6)
    assert int(state.count) == 7
    # The variant must differ from SGD, or the test would not see the ascent step at all.
    assert np.abs(want - reference("sgd", 7)).max() > 1e-3


def test_one_step_by_hand():
    """One SAM step on L(w) = 0.5 ||w||^2 written out: g = w, e = rho w/||w||, w' = w - lr (w+e)."""
    loss = lambda w: 0.5 * jnp.sum(w**2)
    w = jnp.array([3.0, 4.0])  # ||w|| = 5
    tx = sam(optax.sgd(0.1), rho=0.5)
    updates, _ = tx.update(w, tx.init(w), w, grad_fn=jax.grad(loss))
    # e = 0.5 * [3, 4] / 5 = [0.3, 0.4]; grad at w + e = [3.3, 4.4]; update = -0.1 * that.
    np.testing.assert_allclose(updates, [-0.33, -0.44], rtol=1e-6)


@pytest.mark.parametrize("name", list(VARIANTS))
def test_rho_zero_is_base_optimizer(name):
    make, _ = VARIANTS[name]
    params, _ = run_jax(make(0.0), steps=5)
    np.testing.assert_allclose(flat(params), reference("sgd", 5), rtol=2e-5, atol=2e-6)


def test_rho_schedule_uses_step_count():
    sched = optax.linear_schedule(0.5, 0.0, transition_steps=4)
    params, _ = run_jax(sam(base(), sched), steps=6)
    want = reference("sam", 6, rho=lambda t: float(sched(t)))
    np.testing.assert_allclose(flat(params), want, rtol=2e-5, atol=2e-6)


# A small nonlinear problem for reductions and optax agreement.
def mlp_problem(seed=0):
    k1, k2, k3, k4 = jax.random.split(jax.random.key(seed), 4)
    params = {
        "w1": jax.random.normal(k1, (5, 8)) * 0.5,
        "b1": jnp.zeros(8),
        "w2": jax.random.normal(k2, (8, 3)) * 0.5,
        "b2": jnp.zeros(3),
    }
    x = jax.random.normal(k3, (16, 5))
    y = jax.random.randint(k4, (16,), 0, 3)

    def loss(p):
        h = jnp.tanh(x @ p["w1"] + p["b1"])
        logits = h @ p["w2"] + p["b2"]
        return optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()

    return params, loss


def run_mlp(tx, steps, seed=0, opaque=False):
    params, loss = mlp_problem(seed)
    state = tx.init(params)
    grad_fn = (lambda p, _: jax.grad(loss)(p)) if opaque else jax.grad(loss)

    @jax.jit
    def step(params, state):
        updates, state = tx.update(jax.grad(loss)(params), state, params, grad_fn=grad_fn)
        return optax.apply_updates(params, updates), state

    for _ in range(steps):
        params, state = step(params, state)
    return params


def test_gsam_alpha_zero_and_looksam_k1_are_sam():
    want = run_mlp(sam(base(), 0.1), 6)
    assert_trees_close(run_mlp(gsam(base(), 0.1, alpha=0.0), 6), want)
    assert_trees_close(run_mlp(looksam(base(), 0.1, k=1), 6), want)
    # and they do differ once the extra terms are on
    other = run_mlp(gsam(base(), 0.1, alpha=0.5), 6)
    assert np.abs(other["w1"] - want["w1"]).max() > 1e-4


def test_matches_optax_contrib_sam_opaque_over_20_steps():
    rho = 0.1
    ours = run_mlp(sam(base(), rho), 20)
    adv = optax.chain(optax.contrib.normalize(), optax.sgd(rho))
    theirs = run_mlp(
        optax.contrib.sam(base(), adv, sync_period=2, opaque_mode=True), 20, opaque=True
    )
    assert_trees_close(ours, theirs, rtol=1e-5, atol=1e-6)
    plain = run_mlp(base(), 20)
    assert np.abs(ours["w1"] - plain["w1"]).max() > 1e-3


@pytest.mark.parametrize("make", [sam, asam, gsam, looksam])
def test_zero_gradient_stays_finite(make):
    w = {"a": jnp.zeros(3), "b": jnp.ones((2, 2))}
    zero_grad = lambda p: jax.tree.map(jnp.zeros_like, p)
    tx = make(base())
    state = tx.init(w)
    for _ in range(3):
        updates, state = tx.update(zero_grad(w), state, w, grad_fn=zero_grad)
        assert all(bool(jnp.all(jnp.isfinite(u))) for u in jax.tree.leaves(updates))
        assert all(bool(jnp.all(u == 0)) for u in jax.tree.leaves(updates))
    assert all(bool(jnp.all(jnp.isfinite(s))) for s in jax.tree.leaves(state))


def test_nan_gradient_is_caught_by_apply_if_finite():
    loss = lambda w: 0.5 * jnp.sum(w**2)
    tx = optax.apply_if_finite(sam(base(), 0.05), max_consecutive_errors=3)
    w = jnp.array([1.0, 2.0])
    state = tx.init(w)
    bad = jnp.array([jnp.nan, 1.0])
    updates, state = jax.jit(lambda g, s, w: tx.update(g, s, w, grad_fn=jax.grad(loss)))(
        bad, state, w
    )
    np.testing.assert_array_equal(updates, 0.0)
    assert int(state.notfinite_count) == 1 and int(state.inner_state.count) == 0
    updates, state = tx.update(jax.grad(loss)(w), state, w, grad_fn=jax.grad(loss))
    assert int(state.notfinite_count) == 0 and int(state.inner_state.count) == 1
    assert bool(jnp.all(jnp.isfinite(updates))) and float(jnp.abs(updates).sum()) > 0


def test_grad_fn_with_aux_and_unknown_extra_args():
    loss = lambda w: (0.5 * jnp.sum(w**2), {"stats": jnp.sum(w)})
    w = jnp.array([3.0, 4.0])
    tx = sam(optax.sgd(0.1), rho=0.5)
    grad_aux = jax.grad(loss, has_aux=True)
    updates, _ = tx.update(w, tx.init(w), w, grad_fn=grad_aux, value=1.0, step=3)
    np.testing.assert_allclose(updates, [-0.33, -0.44], rtol=1e-6)


def test_missing_grad_fn_and_bad_config_raise():
    """Library misuse raises ValueError/TypeError as optax does, never the CLI's ConfigError."""
    w = jnp.ones(2)
    tx = sam(optax.sgd(0.1))
    triple = lambda p: (p, p, p)  # noqa: E731
    cases = [
        (TypeError, "grad_fn", lambda: tx.update(w, tx.init(w), w)),
        (ValueError, "rho", lambda: sam(optax.sgd(0.1), rho=-1.0)),
        (ValueError, "k must", lambda: looksam(optax.sgd(0.1), k=0)),
        (TypeError, "grad_fn must return", lambda: tx.update(w, tx.init(w), w, grad_fn=triple)),
        (ValueError, "params", lambda: tx.update(w, tx.init(w), None, grad_fn=lambda p: p)),
    ]
    for kind, match, call in cases:
        with pytest.raises(kind, match=match) as err:
            call()
        assert not isinstance(err.value, ConfigError), match


def test_is_sam_family():
    assert is_sam_family(sam(base())) and is_sam_family(looksam(base()))
    assert not is_sam_family(base())
    assert is_sam_family("gsam") and not is_sam_family("sgd")
    # Recognised through wrappers: the SAM-family state is inside theirs.
    assert is_sam_family(optax.chain(sam(base())))
    assert is_sam_family(optax.chain(optax.clip(1.0), gsam(base()), optax.scale(0.5)))
    assert is_sam_family(optax.inject_hyperparams(sam)(base(), rho=0.1))
    assert is_sam_family(optax.apply_if_finite(looksam(base()), 3))
    assert not is_sam_family(optax.chain(base(), optax.scale(0.5)))


# ---------------------------------------------------------------- composition with optax


def test_composes_with_chain_and_weight_decay():
    wd = 0.01
    # weight decay inside the base: the ascent direction is the loss gradient only
    tx = sam(optax.chain(optax.add_decayed_weights(wd), optax.sgd(LR)), rho=0.2)
    params, _ = run_jax(optax.chain(tx, optax.scale(0.5)), steps=4)
    w = W0_F.copy()
    for _ in range(4):
        g = grad_np(w)
        d = grad_np(w + 0.2 * unit(g)) + wd * w
        w = w - 0.5 * LR * d
    np.testing.assert_allclose(flat(params), w, rtol=2e-5, atol=2e-6)


def test_composes_with_inject_hyperparams():
    tx = optax.inject_hyperparams(sam)(base(), rho=0.2)
    params, state = run_jax(tx, steps=5)
    np.testing.assert_allclose(flat(params), reference("sam", 5, rho=0.2), rtol=2e-5, atol=2e-6)
    assert float(state.hyperparams["rho"]) == pytest.approx(0.2)
    # a looksam k injected as an array still runs the k-step cycle
    tx = optax.inject_hyperparams(looksam)(base(), rho=0.2, k=3, alpha=0.7)
    params, _ = run_jax(tx, steps=7)
    want = reference("looksam", 7, rho=0.2, k=3, alpha=0.7)
    np.testing.assert_allclose(flat(params), want, rtol=2e-5, atol=2e-6)


def test_composes_with_schedules_in_base_and_rho():
    lr = optax.exponential_decay(LR, transition_steps=1, decay_rate=0.8)
    rho = optax.linear_schedule(0.3, 0.1, transition_steps=3)
    params, _ = run_jax(sam(optax.sgd(lr), rho), steps=5)
    w = W0_F.copy()
    for t in range(5):
        g = grad_np(w)
        w = w - float(lr(t)) * grad_np(w + float(rho(t)) * unit(g))
    np.testing.assert_allclose(flat(params), w, rtol=2e-5, atol=2e-6)


def test_composes_with_multisteps():
    """MultiSteps(k=2): the SAM step runs on the mean clean gradient of two micro-batches."""
    tx = optax.MultiSteps(sam(optax.sgd(LR), rho=0.2), every_k_schedule=2)
    targets = [jnp.array([1.0, 0.0]), jnp.array([0.0, 2.0])]
    loss_at = lambda c: lambda w: 0.5 * jnp.sum((w - c) ** 2)
    w = jnp.array([0.5, 0.5])
    state = tx.init(w)
    step = jax.jit(
        lambda w, s, c: tx.update(jax.grad(loss_at(c))(w), s, w, grad_fn=jax.grad(loss_at(c)))
    )
    u1, state = step(w, state, targets[0])
    np.testing.assert_array_equal(u1, 0.0)
    u2, state = step(w, state, targets[1])
    w_np = np.array([0.5, 0.5])
    g_mean = ((w_np - [1, 0]) + (w_np - [0, 2])) / 2
    g_adv = (w_np + 0.2 * unit(g_mean)) - [0, 2]  # grad_fn of the last micro-batch
    np.testing.assert_allclose(u2, -LR * g_adv, rtol=1e-5)


def test_flax_batchnorm_loop_keeps_clean_pass_statistics():
    """The docs example: BatchNorm statistics come from the clean pass, grad_fn's aux is dropped."""
    import flax.linen as nn

    class Net(nn.Module):
        @nn.compact
        def __call__(self, x, train):
            x = nn.BatchNorm(use_running_average=not train, momentum=0.5)(nn.Dense(4)(x))
            return nn.Dense(3)(nn.relu(x))

    model = Net()
    x = jax.random.normal(jax.random.key(0), (8, 5))
    y = jnp.arange(8) % 3
    variables = model.init(jax.random.key(1), x, train=False)
    params, stats = variables["params"], variables["batch_stats"]
    tx = sam(optax.sgd(0.1), rho=0.5)
    opt_state = tx.init(params)

    def loss_fn(p):
        logits, new = model.apply(
            {"params": p, "batch_stats": stats}, x, train=True, mutable=["batch_stats"]
        )
        return optax.softmax_cross_entropy_with_integer_labels(logits, y).mean(), new["batch_stats"]

    (_, new_stats), grads = jax.value_and_grad(loss_fn, has_aux=True)(params)
    grad_fn = jax.grad(loss_fn, has_aux=True)
    updates, _ = tx.update(grads, opt_state, params, grad_fn=grad_fn)
    # The statistics the loop keeps are those of the clean pass ...
    _, clean_stats = loss_fn(params)
    assert_trees_close(new_stats, clean_stats)
    # ... and the update is the SAM one (gradient at the perturbed point, not the clean one).
    g_norm = optax.tree.norm(grads)
    w_adv = jax.tree.map(lambda w, g: w + 0.5 * g / g_norm, params, grads)
    want = jax.tree.map(lambda g: -0.1 * g, grad_fn(w_adv)[0])
    assert_trees_close(updates, want, rtol=1e-5, atol=1e-7)


# ---------------------------------------------------------------- regressions (issue 13, point 6)


def test_extra_args_reach_the_base_optimizer():
    """``value=`` for reduce_on_plateau is forwarded, as optax's own wrappers forward it."""
    plateau = optax.contrib.reduce_on_plateau(patience=1, factor=0.5, accumulation_size=1)
    for make in (sam, asam, gsam, looksam):
        tx = make(optax.chain(optax.sgd(LR), plateau))
        params = jnp.ones(3)
        state = tx.init(params)
        loss = lambda w: 0.5 * jnp.sum(w**2)  # noqa: E731
        for value in (3.0, 5.0):
            _, state = tx.update(
                jax.grad(loss)(params), state, params, grad_fn=jax.grad(loss), value=value
            )
        plateau_state = state.base_state[1]
        assert float(plateau_state.best_value) == 3.0, make.__name__
        assert float(plateau_state.scale) == 0.5, make.__name__  # one step without progress


def test_negative_hyperparameters_are_rejected():
    cases = [
        ("eta", lambda: asam(base(), 0.5, eta=-0.01)),
        ("alpha", lambda: gsam(base(), 0.05, alpha=-0.1)),
        ("alpha", lambda: looksam(base(), 0.05, alpha=-0.7)),
        ("rho", lambda: sam(base(), rho=jnp.asarray(-0.05))),
        ("rho", lambda: sam(base(), rho=np.array([0.05, -0.05]))),
        ("rho", lambda: gsam(base(), rho=float("nan"))),
        ("eps", lambda: sam(base(), eps=-1e-12)),
    ]
    for name, call in cases:
        with pytest.raises(ValueError, match=name) as err:
            call()
        assert not isinstance(err.value, ConfigError)
    sam(base(), rho=jnp.asarray(0.0))  # zero and arrays of non-negative values are fine


@pytest.mark.parametrize("make", [sam, asam, gsam, looksam], ids=lambda f: f.__name__)
def test_variants_take_the_shared_keywords_of_sam_and_refuse_others(make):
    """Every variant takes eps / stacked / axis_name / ... as ``**shared``, and its signature
    (which optax.inject_hyperparams binds to) lists them keyword-only with their defaults."""
    params = inspect.signature(make).parameters
    shared = {k: p.default for k, p in params.items() if p.kind is p.KEYWORD_ONLY}
    shared.pop("tol", None)  # looksam's own
    assert shared == {
        "eps": 1e-12,
        "stacked": False,
        "axis_name": None,
        "sync_perturbation": True,
        "param_axis_name": None,
    }
    assert not any(p.kind is p.VAR_KEYWORD for p in params.values())
    with pytest.raises(ValueError, match="eps"):
        make(base(), 0.05, eps=-1e-12)
    with pytest.raises(
        TypeError, match=rf"{make.__name__}\(\) got an unexpected keyword.*'stackd'"
    ):
        make(base(), 0.05, stackd=True)
    w = {"w": jnp.ones((2, 3))}
    with pytest.raises(ValueError):  # stacked=True reaches the init check: [M, ...] leaves
        make(base(), 0.05, stacked=True).init({"w": jnp.ones(())})
    make(base(), 0.05, stacked=True, eps=0.0).init(w)


def test_looksam_at_tiny_rho_takes_base_steps_not_noise_steps():
    """At rho = 1e-9, g_v is float32 rounding; stretched to alpha*||g|| it would be a noise step."""
    params, state = run_jax(looksam(base(), rho=1e-9, k=3, alpha=0.7), steps=6)
    np.testing.assert_allclose(flat(params), reference("sgd", 6), rtol=2e-5, atol=2e-6)
    assert all(float(jnp.abs(v).max()) == 0.0 for v in jax.tree.leaves(state.g_v))
    # Above the noise floor the guard keeps g_v: LookSAM is still LookSAM.
    params, state = run_jax(looksam(base(), rho=1e-2, k=3, alpha=0.7), steps=6)
    want = reference("looksam", 6, rho=1e-2, k=3, alpha=0.7)
    np.testing.assert_allclose(flat(params), want, rtol=1e-4, atol=1e-5)
    assert np.abs(want - reference("sgd", 6)).max() > 1e-3


def test_looksam_noise_guard_tolerance_is_explicit():
    """tol=0 keeps even a rounding-size g_v; the default drops it."""
    _, kept = run_jax(looksam(base(), rho=1e-9, k=3, tol=0.0), steps=1)
    _, dropped = run_jax(looksam(base(), rho=1e-9, k=3), steps=1)
    assert max(float(jnp.abs(v).max()) for v in jax.tree.leaves(kept.g_v)) > 0.0
    assert max(float(jnp.abs(v).max()) for v in jax.tree.leaves(dropped.g_v)) == 0.0


@pytest.mark.parametrize("make", [sam, asam, gsam, lambda b: looksam(b, k=2)])
def test_nan_only_at_perturbed_point_is_skipped_by_apply_if_finite_on_the_base(make):
    """apply_if_finite around the base sees the SAM gradient; the SAM step keeps its own state."""
    loss = lambda w: 0.5 * jnp.sum((w - 1.0) ** 2)  # noqa: E731
    nan_there = lambda w: jax.grad(loss)(w) * jnp.nan  # noqa: E731
    tx = make(optax.apply_if_finite(optax.sgd(LR, momentum=MOM), max_consecutive_errors=3))
    w = jnp.array([2.0, -1.0, 0.5])
    state0 = tx.init(w)
    for _ in range(2):  # warm up: nonzero momentum (and g_v); looksam's step 2 is a SAM step
        warm_u, state0 = tx.update(jax.grad(loss)(w), state0, w, grad_fn=jax.grad(loss))
        w = optax.apply_updates(w, warm_u)
    clean = jax.grad(loss)(w)
    updates, state = jax.jit(lambda s: tx.update(clean, s, w, grad_fn=nan_there))(state0)
    np.testing.assert_array_equal(updates, 0.0)
    assert int(state.base_state.notfinite_count) == 1
    # Nothing of the bad step stays behind: count, momentum (and LookSAM's g_v) as before it.
    inner, inner0 = state.base_state.inner_state, state0.base_state.inner_state
    for a, b in zip(jax.tree.leaves(inner), jax.tree.leaves(inner0), strict=True):
        np.testing.assert_array_equal(a, b)
    assert int(state.count) == int(state0.count) == 2
    for a, b in zip(jax.tree.leaves(state[2:]), jax.tree.leaves(state0[2:]), strict=True):
        np.testing.assert_array_equal(a, b)
    # The next good step is the step that would have been taken without the bad one.
    good, _ = tx.update(clean, state, w, grad_fn=jax.grad(loss))
    want, _ = tx.update(clean, state0, w, grad_fn=jax.grad(loss))
    np.testing.assert_allclose(good, want, rtol=1e-6)
    assert bool(jnp.all(jnp.isfinite(good))) and float(jnp.abs(good).sum()) > 0
