"""The linear-theory closed forms reproduced to 1e-6, and the optax learners against them."""

from __future__ import annotations

import numpy as np
import pytest

from experiments.linear_theory import run as lt_run
from experiments.linear_theory import theory as th


@pytest.fixture(scope="module")
def problem():
    return th.make_problem(d=40, n=10, n_targets=60, n_major=4, seed=3)


@pytest.mark.parametrize("eta", [0.0, 0.5, 5.0])
def test_min_g_norm_formula_matches_kkt_solve(problem, eta):
    g = th.sam_metric(problem.sigma, eta)
    w = th.min_g_norm_interpolator(problem.x_train, problem.y_train, g)
    w_kkt = th.min_g_norm_kkt(problem.x_train, problem.y_train, g)
    np.testing.assert_allclose(w, w_kkt, atol=1e-6)
    np.testing.assert_allclose(problem.x_train @ w, problem.y_train, atol=1e-6)  # interpolates
    # Optimal: any other interpolator w + v (v in null(X)) has a larger G-norm.
    rng = np.random.default_rng(0)
    null = np.eye(40) - np.linalg.pinv(problem.x_train) @ problem.x_train
    for _ in range(5):
        v = null @ rng.normal(size=40)
        assert (w + v) @ g @ (w + v) > w @ g @ w


def test_g_from_training_gram_gives_min_norm(problem):
    # G = I + eta X'X/n (the empirical covariance) leaves the interpolator unchanged.
    x, y = problem.x_train, problem.y_train
    g = np.eye(40) + 3.0 * x.T @ x / x.shape[0]
    np.testing.assert_allclose(
        th.min_g_norm_interpolator(x, y, g), th.min_g_norm_interpolator(x, y, np.eye(40)), atol=1e-6
    )


def test_nonmember_moments_exact_by_linearity(problem):
    # The margin is affine in the noise: propagate the mean and each noise basis vector exactly.
    g = th.sam_metric(problem.sigma, 2.0)
    nm = th.nonmember_margin(
        problem.x_train, problem.y_train, problem.x_target, problem.y_target, g, problem.noise
    )
    x, y = problem.x_train, problem.y_train

    def margins(labels):
        return problem.y_target * (problem.x_target @ th.min_g_norm_kkt(x, labels, g))

    mean = margins(y)
    var = sum((margins(y + problem.noise * e) - mean) ** 2 for e in np.eye(y.size))
    np.testing.assert_allclose(nm.mean, mean, atol=1e-6)
    np.testing.assert_allclose(nm.var, var, atol=1e-6)


def test_advantages_match_brute_force_threshold_sweep(problem):
    nm = th.nonmember_margin(
        problem.x_train,
        problem.y_train,
        problem.x_target,
        problem.y_target,
        th.sam_metric(problem.sigma, 1.0),
        problem.noise,
    )
    z = th.member_z(nm)
    # LR: sweep every member score as a threshold (plus one below all of them).
    ts = np.concatenate([z, [z.min() - 1.0]])
    lr_brute = max(np.mean(z >= t) - th.upper_tail(t) for t in ts)
    assert th.lr_advantage(nm) == pytest.approx(max(lr_brute, 0.0), abs=1e-12)
    # Confidence: TPR is 1 below margin 1 and 0 above; scan a grid of thresholds.
    grid = np.linspace(-3, 1, 4001)
    fpr = [np.mean(th.upper_tail((t - nm.mean) / np.sqrt(nm.var))) for t in grid]
    conf_brute = max(1.0 - f for f in fpr)
    assert th.confidence_advantage(nm) == pytest.approx(conf_brute, abs=1e-12)


def test_monte_carlo_agrees_with_closed_form(problem):
    # Deterministic (seeded); tolerances are ~4 standard errors for 4000 draws.
    for eta in (0.0, 3.0):
        cf = th.closed_form_row(problem, eta)
        mc = lt_run.monte_carlo_row(problem, eta, draws=4000, seed=1)
        assert mc["nonmember_var_mean"] == pytest.approx(cf["nonmember_var_mean"], rel=0.05)
        assert mc["confidence_advantage"] == pytest.approx(cf["confidence_advantage"], abs=0.01)
        assert mc["lr_advantage"] == pytest.approx(cf["lr_advantage"], abs=0.01)
        assert mc["nonmember_accuracy"] == pytest.approx(cf["nonmember_accuracy"], abs=0.01)
    assert lt_run.member_margin_check(problem, 3.0) < 1e-9  # members are interpolated


def test_variance_falls_and_advantage_rises_with_eta():
    p = th.make_problem(seed=0)
    rows = [th.closed_form_row(p, e) for e in (0.0, 0.3, 3.0)]
    v = [r["nonmember_var_mean"] for r in rows]
    a = [r["confidence_advantage"] for r in rows]
    assert v[0] > v[1] > v[2] and a[0] < a[1] < a[2]


def _train_setup(problem, models=4):
    rng = np.random.default_rng(5)
    y = problem.y_train[None] + problem.noise * rng.normal(size=(models, problem.y_train.size))
    x = problem.x_train
    lmax = np.linalg.eigvalsh(x @ x.T / x.shape[0]).max()
    return x, y, lmax


def test_gd_and_preconditioned_descent_reach_their_interpolators(problem):
    from experiments.linear_theory import train as tr

    x, y, lmax = _train_setup(problem)
    w = tr.train(x, y, method="gd", lr=1.0 / lmax, steps=3000)
    want = np.stack([th.min_g_norm_interpolator(x, yr, np.eye(40)) for yr in y])
    np.testing.assert_allclose(w, want, atol=1e-3)
    g = th.sam_metric(problem.sigma, 2.0)
    ginv = np.linalg.inv(g)
    lg = np.linalg.eigvalsh(x @ ginv @ x.T / x.shape[0]).max()
    w = tr.train(x, y, method="precond", lr=1.0 / lg, steps=3000, ginv=ginv)
    want_g = np.stack([th.min_g_norm_interpolator(x, yr, g) for yr in y])
    np.testing.assert_allclose(w, want_g, atol=1e-3)
    assert np.max(np.abs(want_g - want)) > 0.05  # the two interpolators really differ


def test_project_sam_transform_stays_in_row_space(problem):
    from jaxsam.optim import sam

    assert callable(sam)
    from experiments.linear_theory import train as tr

    _, impl = tr.sam_transform(0.1, 0.05)
    assert impl == "jaxsam.optim.sam"
    x, y, lmax = _train_setup(problem)
    w = tr.train(x, y, method="sam", lr=1.0 / lmax, steps=3000, rho=0.05, cosine=True)
    want = np.stack([th.min_g_norm_interpolator(x, yr, np.eye(40)) for yr in y])
    np.testing.assert_allclose(w, want, atol=1e-3)


def test_reference_sam_step_is_two_pass(problem):
    import jax.numpy as jnp
    import optax

    from experiments.linear_theory import train as tr

    opt = tr._reference_sam(optax.sgd(0.1), rho=0.5)
    h = jnp.diag(jnp.array([1.0, 4.0]))
    grad_fn = lambda w: h @ w
    w = jnp.array([1.0, 1.0])
    g = grad_fn(w)
    upd, _ = opt.update(g, opt.init(w), w, grad_fn=grad_fn)
    e = 0.5 * g / jnp.linalg.norm(g)
    np.testing.assert_allclose(upd, -0.1 * (h @ (w + e)), rtol=1e-6)
