"""DP-SGD (optim.dp): the mechanism per shadow model, its accounting, run.json and plan."""

from __future__ import annotations

import json
import math

import dp_accounting
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from dp_accounting import pld, rdp

from jaxsam import config as config_lib
from jaxsam.data import load_pool, make_masks
from jaxsam.data.masks import steps_per_epoch
from jaxsam.errors import ConfigError
from jaxsam.optim import dp as dp_lib
from jaxsam.plan import check_config
from jaxsam.train import train_ensemble

from .conftest import tiny_config

B = 8


def _loss(p, x, y):
    """A small regression model; x [b, 5], y [b]: (mean loss, predictions)."""
    pred = jnp.tanh(x @ p["w"] + p["b"]) @ p["v"]
    return jnp.mean((pred - y) ** 2), pred


def _params(key, m):
    k1, k2 = jax.random.split(key)
    return {
        "w": jax.random.normal(k1, (m, 5, 4)),
        "b": jnp.zeros((m, 4)),
        "v": jax.random.normal(k2, (m, 4)),
    }


def _plan(clip, noise, micro=B, capacity=B):
    return dp_lib.DPShape(clip, noise, B, capacity, micro, "shuffle", 1)


def _data(key, m):
    kx, ky = jax.random.split(key)
    return jax.random.normal(kx, (m, B, 5)) * 3, jax.random.normal(ky, (m, B))


def test_noise_zero_and_huge_clip_is_the_plain_mean_gradient_under_vmap():
    params = _params(jax.random.key(0), 3)
    x, y = _data(jax.random.key(1), 3)
    valid = jnp.ones(B, bool)
    fn = dp_lib.private_grad_fn(_loss, _plan(1e9, 0.0, micro=4))
    keys = jax.random.split(jax.random.key(2), 3)
    got, (values, _) = jax.vmap(lambda p, xb, yb, k: fn(p, xb, yb, valid, k))(params, x, y, keys)
    want = jax.vmap(jax.grad(lambda p, xb, yb: _loss(p, xb, yb)[0]))(params, x, y)
    # Summing B per-example gradients and differentiating the batch mean round differently:
    # about B * 2**-23 of the gradients' size, 2e-6 here (seen under another XLA codegen level).
    for a, b in zip(jax.tree.leaves(got), jax.tree.leaves(want), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5)
    assert values.shape == (3, B)


@pytest.mark.slow  # long: CI runs it in its `-m slow` phase
def test_tiny_clip_bounds_each_models_per_example_contribution():
    """Dropping (or wildly changing) one example moves each model's gradient by <= C / B."""
    clip = 1e-3
    params = _params(jax.random.key(0), 2)
    x, y = _data(jax.random.key(1), 2)
    fn = dp_lib.private_grad_fn(_loss, _plan(clip, 0.0, micro=2))
    key = jax.random.key(3)

    def norm(tree):
        return float(optax.tree.norm(tree))

    full = jnp.ones(B, bool)
    base = jax.vmap(lambda p, xb, yb: fn(p, xb, yb, full, key)[0])(params, x, y)
    for m in range(2):
        one = jax.tree.map(lambda a, m=m: a[m], params)
        g_m = jax.tree.map(lambda a, m=m: a[m], base)
        assert norm(g_m) <= B * clip / B + 1e-7  # the sum of B clipped gradients, over B
        raw = jax.grad(lambda p, m=m: _loss(p, x[m], y[m])[0])(one)
        assert norm(raw) > 100 * clip  # the bound is binding
        for i in range(B):
            drop = full.at[i].set(False)
            g_drop = fn(one, x[m], y[m], drop, key)[0]
            diff = jax.tree.map(lambda a, b: a - b, g_m, g_drop)
            assert norm(diff) <= clip / B * (1 + 1e-4)
            x_bad = x[m].at[i].multiply(1e4)
            g_bad = fn(one, x_bad, y[m].at[i].set(1e4), full, key)[0]
            diff = jax.tree.map(lambda a, b: a - b, g_m, g_bad)
            assert norm(diff) <= 2 * clip / B * (1 + 1e-4)


def test_noise_has_the_stated_scale_and_differs_between_models():
    sigma, clip = 3.0, 0.5
    params = _params(jax.random.key(0), 2)
    x, y = _data(jax.random.key(1), 2)
    valid = jnp.ones(B, bool)
    clean = dp_lib.private_grad_fn(_loss, _plan(clip, 0.0))
    noisy = dp_lib.private_grad_fn(_loss, _plan(clip, sigma))
    keys = jax.random.split(jax.random.key(5), 2)
    a = jax.vmap(lambda p, xb, yb, k: clean(p, xb, yb, valid, k)[0])(params, x, y, keys)
    b = jax.vmap(lambda p, xb, yb, k: noisy(p, xb, yb, valid, k)[0])(params, x, y, keys)
    pairs = zip(jax.tree.leaves(b), jax.tree.leaves(a), strict=True)
    z = np.concatenate([np.asarray(u - v).reshape(2, -1) for u, v in pairs], axis=1)  # [M, P]
    assert abs(z.std() / (sigma * clip / B) - 1) < 0.35  # 28 noise draws per model
    assert not np.allclose(z[0], z[1])


def test_poisson_batches_take_only_training_examples_at_rate_q():
    keep = jnp.asarray(np.random.default_rng(0).random(400) < 0.5)
    n = int(keep.sum())
    q = 16 / n
    counts = []
    for s in range(200):
        idx, valid = dp_lib.poisson_batch(jax.random.key(s), keep, q, 48)
        assert bool(jnp.all(keep[idx[valid]]))
        assert len(set(np.asarray(idx[valid]).tolist())) == int(valid.sum())  # no repeats
        counts.append(int(valid.sum()))
    assert abs(np.mean(counts) - 16) < 1.0 and np.std(counts) > 2  # Binomial(n, q), not fixed


def test_capacity_bounds_the_overflow_chance():
    from scipy import stats

    cap = dp_lib.poisson_capacity(np.array([1000, 5000]), 64, 2000, 1e-7)
    assert cap > 64
    for n in (1000, 5000):
        assert 2000 * stats.binom.sf(cap, n, 64 / n) <= 1e-7
    assert 2000 * stats.binom.sf(cap - 8, 5000, 64 / 5000) > 1e-7  # not wastefully large


def test_epsilon_decreases_as_noise_grows():
    eps = [dp_lib.epsilon(s, 0.01, 1000, 1e-5) for s in (0.6, 0.8, 1.0, 2.0, 4.0)]
    assert all(a > b for a, b in zip(eps, eps[1:], strict=False)), eps
    assert dp_lib.epsilon(0.0, 0.01, 1000, 1e-5) == math.inf


@pytest.mark.parametrize("accountant", ["pld", "rdp"])
@pytest.mark.parametrize("name", ["sgd", "sam"])
def test_run_epsilon_agrees_with_the_library_called_directly(accountant, name):
    over = {
        "optim.dp.clip_norm": 1.0,
        "optim.dp.noise_multiplier": 1.1,
        "optim.dp.accountant": accountant,
        "optim.name": name,
    }
    cfg = tiny_config(**over)
    keep = make_masks(4, 300, 0.5, 0)
    rec = dp_lib.privacy_record(cfg, keep)
    q = cfg.train.batch_size / keep.sum(axis=1).min()
    steps = steps_per_epoch(keep, cfg.train.batch_size) * cfg.train.epochs
    # SAM releases two noisy gradients per step on one batch: Gaussian, sigma / sqrt(2).
    sigma = 1.1 / math.sqrt(2) if name == "sam" else 1.1
    acc = pld.PLDAccountant() if accountant == "pld" else rdp.RdpAccountant()
    event = dp_accounting.PoissonSampledDpEvent(q, dp_accounting.GaussianDpEvent(sigma))
    acc.compose(event, steps)
    want = acc.get_epsilon(1e-5 * (1 - dp_lib.TAIL_SHARE))
    assert rec["epsilon"] == pytest.approx(want, rel=1e-9)
    assert rec["delta"] == 1e-5 and rec["sampling"] == "poisson"
    assert rec["sampling_rate"] == pytest.approx(q) and rec["steps"] == steps
    assert accountant in rec["accountant"].lower()


def test_dp_configs_refused_with_the_key():
    cases = [
        ({"optim": {"dp": {"noise_multiplier": 1.0}}}, "optim.dp.clip_norm is null"),
        ({"optim": {"dp": {"clip_norm": -1.0}}}, "optim.dp.clip_norm"),
        ({"optim": {"dp": {"clip_norm": 1.0, "delta": 1.5}}}, "optim.dp.delta"),
        ({"optim": {"dp": {"clip_norm": 1.0, "sampling": "x"}}}, "optim.dp.sampling"),
        ({"optim": {"dp": {"clip_norm": 1.0, "accountant": "x"}}}, "optim.dp.accountant"),
        ({"optim": {"dp": {"clip_norm": 1.0, "microbatch_size": 0}}}, "optim.dp.microbatch_size"),
        ({"optim": {"dp": {"clip": 1.0}}}, "unknown config key optim.dp.clip"),
        (
            {"optim": {"name": "sam", "fused_passes": True, "dp": {"clip_norm": 1.0}}},
            "optim.fused_passes does not support optim.dp",
        ),
        (
            {"model": {"name": "resnet9", "width": 4}, "optim": {"dp": {"clip_norm": 1.0}}},
            "optim.dp needs a model without BatchNorm",
        ),
    ]
    for data, fragment in cases:
        with pytest.raises(ConfigError, match=fragment.replace(".", r"\.")):
            check_config(config_lib.from_dict(data))


def test_plan_counts_per_example_gradients_by_microbatch():
    from jaxsam import plan as plan_lib

    plain = plan_lib.memory_estimate(tiny_config())
    whole = plan_lib.memory_estimate(tiny_config(**{"optim.dp.clip_norm": 1.0}))
    micro = plan_lib.memory_estimate(
        tiny_config(**{"optim.dp.clip_norm": 1.0, "optim.dp.microbatch_size": 4})
    )
    assert plain.dp_bytes == 0 and plain.dp_microbatch is None
    assert whole.dp_capacity >= tiny_config().train.batch_size
    assert whole.dp_bytes == (whole.dp_capacity + 1) * whole.param_bytes
    assert micro.dp_bytes == 5 * micro.param_bytes and micro.dp_capacity % 4 == 0
    assert whole.bytes_per_model > micro.bytes_per_model
    assert whole.bytes_per_model > plain.bytes_per_model


def test_auto_memory_cap_counts_per_example_gradients_like_plan():
    """auto's per-model need grows with DP's per-example gradients, by plan's dp_bytes."""
    from jaxsam import plan as plan_lib
    from jaxsam.train import calibrate
    from jaxsam.train.setup import make_setup

    def need(cfg):
        pool = load_pool(cfg.data)
        keep = make_masks(cfg.masks.models, pool.size, 0.5, 0)
        setup = make_setup(cfg, pool, keep)
        return calibrate.per_model_bytes(setup, cfg, pool, keep)

    dp = {"optim.dp.clip_norm": 1.0, "optim.dp.microbatch_size": 16}
    plain, private = need(tiny_config()), need(tiny_config(**dp))
    extra = plan_lib.memory_estimate(tiny_config(**dp)).dp_bytes
    assert extra > 0 and private >= plain + extra  # x1.25 headroom on top


def test_cli_plan_prints_dp_memory(tmp_path, capsys):
    from jaxsam.cli import main

    sets = ["--set", "optim.dp.clip_norm=1.0", "--set", "optim.dp.microbatch_size=4"]
    assert main(["plan", *sets, "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["dp"]["microbatch"] == 4 and out["bytes"]["dp_per_example_gradients"] > 0
    assert main(["plan", *sets]) == 0
    assert "DP-SGD per-example grads" in capsys.readouterr().out


def test_noise_zero_huge_clip_trains_like_sgd():
    """optim.dp with sigma = 0, C huge and shuffled batches is the SGD run, under vmap."""
    over = {"train.epochs": 1, "data.pool_size": 120, "masks.models": 2, "train.strategy": "vmap"}
    cfg = tiny_config(**over)
    pool = load_pool(cfg.data)
    keep = make_masks(2, pool.size, 0.5, 0)
    sgd = train_ensemble(cfg, pool, keep)
    dp = {"optim.dp.clip_norm": 1e9, "optim.dp.sampling": "shuffle", "optim.dp.microbatch_size": 8}
    private = train_ensemble(tiny_config(**over, **dp), pool, keep)
    leaves = jax.tree.leaves(sgd.state.params), jax.tree.leaves(private.state.params)
    for a, b in zip(*leaves, strict=True):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(sgd.losses, private.losses, rtol=1e-4)


def test_cli_dp_run_records_epsilon_in_run_json(tmp_path, capsys):
    """Interface: --set optim.dp.noise_multiplier=1.0 --set optim.dp.clip_norm=1.0, then
    run.json dp.epsilon. SAM on top: the ascent is taken on the noisy gradient."""
    from jaxsam import cli

    cfg = tiny_config(**{"train.epochs": 1, "data.pool_size": 120, "masks.models": 2})
    path = tmp_path / "c.json"
    path.write_text(json.dumps(config_lib.to_dict(cfg)))
    out = tmp_path / "run"
    sets = [
        "optim.dp.noise_multiplier=1.0",
        "optim.dp.clip_norm=1.0",
        "optim.name=sam",
        "train.strategy=vmap",
    ]
    argv = ["train", "--config", str(path), "--out", str(out), "--no-progress"]
    assert cli.main(argv + [x for s in sets for x in ("--set", s)]) == 0
    rec = json.loads((out / "run.json").read_text())["dp"]
    assert set(rec) >= {"epsilon", "delta", "accountant", "sampling"}
    assert rec["epsilon"] > 0 and math.isfinite(rec["epsilon"]) and rec["delta"] == 1e-5
    assert rec["releases_per_step"] == 2
    assert f"DP-SGD epsilon {rec['epsilon']:.3g} at delta 1e-05" in capsys.readouterr().out
    import jaxsam

    run = jaxsam.load_run(out)
    assert np.all(np.isfinite(run.logits))
    assert cli.main(["score", str(out), "--attacks", "loss"]) == 0
    report = json.loads((out / "report.json").read_text())
    assert report["run"]["dp"]["epsilon"] == rec["epsilon"]  # the report carries the guarantee
    assert "DP-SGD epsilon" in (out / "report.md").read_text()


def test_a_missing_dp_library_stops_training_not_scoring(monkeypatch, tmp_path):
    """Training a DP run needs jax-privacy and dp-accounting; reading its config does not."""
    import importlib.util

    from jaxsam.pipeline import train_and_export

    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == "jax_privacy" else real(name)
    )
    cfg = tiny_config(**{"optim.dp.clip_norm": 1.0, "optim.dp.noise_multiplier": 1.0})
    assert config_lib.from_dict(config_lib.to_dict(cfg)) == cfg  # load_run validates like this
    keep = make_masks(4, 300, 0.5, 0)
    with pytest.raises(ConfigError, match="optim.dp needs the jax-privacy package"):
        train_and_export(cfg, tmp_path / "run")
    assert not any(tmp_path.iterdir())  # nothing written
    with pytest.raises(ConfigError, match="optim.dp needs the jax-privacy package"):
        dp_lib.header_fields(cfg, keep)  # the run header's guarantee needs the libraries
