"""Base optimizers (optim.base): each equals plain optax under vmap, trains, and SAM wraps it."""

from __future__ import annotations

import json
import re

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from jaxsam import config as config_lib
from jaxsam.errors import ConfigError
from jaxsam.optim import from_config, make_optimizer, registry
from jaxsam.plan import check_config

from .conftest import tiny_config

WD = 0.01
SCHEDULE = optax.join_schedules(
    [optax.linear_schedule(0.0, 0.05, 2), optax.cosine_decay_schedule(0.05, 8)], [2]
)

# base, base_args, the same optimizer written with optax alone (for one model).
CASES = [
    ("sgd", {}, lambda: optax.chain(optax.add_decayed_weights(WD), optax.sgd(SCHEDULE, 0.9))),
    (
        "nesterov",
        {},
        lambda: optax.chain(optax.add_decayed_weights(WD), optax.sgd(SCHEDULE, 0.9, nesterov=True)),
    ),
    (
        "adam",
        {"b2": 0.98},
        lambda: optax.chain(optax.add_decayed_weights(WD), optax.adam(SCHEDULE, b2=0.98)),
    ),
    ("adamw", {"b2": 0.98}, lambda: optax.adamw(SCHEDULE, b2=0.98, weight_decay=WD)),
    ("lamb", {"eps": 1e-5}, lambda: optax.lamb(SCHEDULE, eps=1e-5, weight_decay=WD)),
    # Any optax factory by name: without its own decay (coupled), and with it (its own).
    (
        "rmsprop",
        {"centered": True},
        lambda: optax.chain(optax.add_decayed_weights(WD), optax.rmsprop(SCHEDULE, centered=True)),
    ),
    ("lion", {"b2": 0.95}, lambda: optax.lion(SCHEDULE, b2=0.95, weight_decay=WD)),
]


def _params(key, m):
    """M models' parameters: a two-layer tree with leading axis M."""
    k1, k2 = jax.random.split(key)
    return {
        "dense": {"kernel": jax.random.normal(k1, (m, 5, 3)), "bias": jnp.zeros((m, 3))},
        "out": {"kernel": jax.random.normal(k2, (m, 3, 2))},
    }


def _loss(p, x):
    h = jnp.tanh(x @ p["dense"]["kernel"] + p["dense"]["bias"])
    return jnp.mean((h @ p["out"]["kernel"] - 1.0) ** 2)


def _one_model_steps(tx, params, x, steps):
    state = tx.init(params)
    for _ in range(steps):
        g = jax.grad(_loss)(params, x)
        u, state = tx.update(g, state, params, grad_fn=lambda q: jax.grad(_loss)(q, x))
        params = optax.apply_updates(params, u)
    return params


@pytest.mark.parametrize("base, args, plain", CASES, ids=[c[0] for c in CASES])
def test_base_under_vmap_equals_the_plain_optax_optimizer(base, args, plain):
    """from_config(optim.base=...) vmapped over 3 models; model 1 equals optax alone on it."""
    cfg = config_lib.from_dict(
        {"optim": {"base": base, "base_args": args, "weight_decay": WD, "momentum": 0.9}}
    )
    tx = from_config(cfg.optim, SCHEDULE)
    params = _params(jax.random.key(0), 3)
    x = jax.random.normal(jax.random.key(1), (3, 8, 5))  # each model its own batch
    steps = 4  # through the warm-up and into the decay
    got = jax.vmap(lambda p, xb: _one_model_steps(tx, p, xb, steps))(params, x)
    one = jax.tree.map(lambda a: a[1], params)
    want = _one_model_steps(optax.with_extra_args_support(plain()), one, x[1], steps)
    moved = jax.tree.map(lambda a, b: float(jnp.max(jnp.abs(a - b))), want, one)
    assert max(jax.tree.leaves(moved)) > 1e-3  # the steps did something
    for a, b in zip(jax.tree.leaves(got), jax.tree.leaves(want), strict=True):
        np.testing.assert_allclose(np.asarray(a[1]), np.asarray(b), rtol=2e-5, atol=2e-6)


def test_weight_decay_is_coupled_or_decoupled_as_registered():
    """A zero gradient: coupled decay goes through Adam's normalisation, AdamW's does not."""
    w = jnp.array([2.0, -4.0])
    zero = jnp.zeros(2)
    lr = 0.1

    def first_update(base):
        tx = make_optimizer("sgd", learning_rate=lr, weight_decay=WD, base=base)
        return np.asarray(tx.update(zero, tx.init(w), w)[0])

    # AdamW: lr * wd * w, exactly proportional to w.
    np.testing.assert_allclose(first_update("adamw"), -lr * WD * np.asarray(w), rtol=1e-5)
    # Adam with coupled decay: the decay gradient wd*w is normalised: -lr * sign(w).
    np.testing.assert_allclose(first_update("adam"), -lr * np.sign(np.asarray(w)), rtol=1e-4)
    assert "decoupled" in registry.BASES["adamw"].decay
    assert registry.BASES["adam"].decay.startswith("coupled")


@pytest.mark.parametrize(
    "base, lr", [("sgd", 0.1), ("nesterov", 0.1), ("adam", 0.01), ("adamw", 0.01), ("lamb", 0.1)]
)
def test_each_base_trains_a_tiny_ensemble(base, lr):
    from jaxsam.data import load_pool, make_masks
    from jaxsam.train import train_ensemble

    over = {
        "optim.base": base,
        "optim.learning_rate": lr,
        "masks.models": 2,
        "train.strategy": "vmap",
    }
    cfg = tiny_config(**over)
    pool = load_pool(cfg.data)
    keep = make_masks(2, pool.size, 0.5, 0)
    result = train_ensemble(cfg, pool, keep)
    assert not result.failed_models
    assert np.all(np.isfinite(result.losses)) and np.all(result.losses < np.log(10) * 0.6)
    assert np.all(result.train_acc > 0.5)  # 10 classes: chance is 0.1
    # The optimizer state is the base's: Adam-type bases hold two moment trees per model.
    moments = sum(x.size for x in jax.tree.leaves(result.state.opt_state))
    params = sum(x.size for x in jax.tree.leaves(result.state.params))
    assert moments >= (2 if base in ("adam", "adamw", "lamb") else 1) * params


def test_sam_wraps_adam_one_step_equals_hand_written_two_pass():
    """optim.name=sam + optim.base=adam: two steps equal SAM ascent + Adam written in numpy."""
    rho, lr, b1, b2, eps = 1.0, 0.05, 0.9, 0.98, 1e-8
    loss = lambda w: jnp.sum(jnp.cos(w) * jnp.arange(1.0, 5.0)) + 0.1 * jnp.sum(w**2)
    grad = jax.grad(loss)
    w0 = jnp.array([0.3, -1.0, 2.0, 0.5])
    tx = make_optimizer(
        "sam", learning_rate=lr, weight_decay=0.0, rho=rho, base="adam", base_args={"b2": b2}
    )
    w, state = w0, tx.init(w0)
    for _ in range(2):
        u, state = tx.update(grad(w), state, w, grad_fn=grad)
        w = optax.apply_updates(w, u)

    ref = np.asarray(w0, np.float64)
    m = np.zeros(4)
    v = np.zeros(4)
    for t in (1, 2):
        g = np.asarray(grad(jnp.asarray(ref, jnp.float32)), np.float64)
        e = rho * g / (np.linalg.norm(g) + 1e-12)  # pass 1: the ascent
        g_sam = np.asarray(grad(jnp.asarray(ref + e, jnp.float32)), np.float64)  # pass 2
        m = b1 * m + (1 - b1) * g_sam
        v = b2 * v + (1 - b2) * g_sam**2
        m_hat, v_hat = m / (1 - b1**t), v / (1 - b2**t)
        ref = ref - lr * m_hat / (np.sqrt(v_hat) + eps)
    np.testing.assert_allclose(np.asarray(w), ref, rtol=1e-5, atol=1e-6)
    # Not the same as Adam without SAM.
    plain = make_optimizer("sgd", learning_rate=lr, weight_decay=0.0, base="adam")
    wp, sp = w0, plain.init(w0)
    for _ in range(2):
        u, sp = plain.update(grad(wp), sp, wp)
        wp = optax.apply_updates(wp, u)
    assert np.max(np.abs(np.asarray(wp) - ref)) > 1e-2


@pytest.mark.parametrize(
    "optim, fragment",
    [
        ({"base": "adamx"}, "optim.base = 'adamx' is not a base optimizer"),
        ({"base": "chain"}, "optim.base = 'chain' is not a base optimizer"),
        ({"base": "adam", "base_args": {"b3": 0.9}}, "optim.base_args.b3 is not a keyword of"),
        ({"base": "adam", "base_args": {"b2": 1.0}}, "optim.base_args.b2 = 1.0 is out of range"),
        ({"base": "adam", "base_args": {"b1": "x"}}, "optim.base_args.b1 = 'x' has the wrong type"),
        ({"base": "rmsprop", "base_args": {"centered": 1}}, "optim.base_args.centered = 1"),
        ({"base": "adamw", "base_args": {"weight_decay": 0.1}}, "from optim.weight_decay"),
        ({"base": "adam", "base_args": {"learning_rate": 0.1}}, "optim.base_args.learning_rate"),
        ({"base": "sgd", "base_args": {"nesterov": True}}, "optim.base_args.nesterov"),
        ({"base": "sgd", "base_args": {"momentum": 0.5}}, "from optim.momentum"),
        ({"base": "adam", "base_args": [1]}, "optim.base_args = [1] has the wrong type"),
        ({"base": 3}, "optim.base = 3 has the wrong type"),
    ],
)
def test_bad_base_configs_name_the_key(optim, fragment):
    with pytest.raises(ConfigError, match=re.escape(fragment)):
        check_config(config_lib.from_dict({"optim": optim}))


def test_library_errors_are_value_errors_not_config_errors():
    with pytest.raises(ValueError, match="b3 is not a keyword of optax.adam") as err:
        make_optimizer("sgd", learning_rate=0.1, base="adam", base_args={"b3": 1.0})
    assert not isinstance(err.value, ConfigError)


def test_old_config_without_base_means_heavy_ball_sgd(tmp_path):
    """A config.json written before optim.base existed loads as the sgd base, unchanged."""
    old = config_lib.to_dict(tiny_config())
    del old["optim"]["base"], old["optim"]["base_args"]
    path = tmp_path / "config.json"
    path.write_text(json.dumps(old))
    cfg = config_lib.load(path)
    assert cfg.optim.base == "sgd" and cfg.optim.base_args == {}
    assert cfg == tiny_config()
    w = jnp.array([0.5, -1.0])
    g = jnp.array([0.2, 0.3])
    tx = from_config(cfg.optim, 0.1)
    ref = optax.chain(optax.add_decayed_weights(cfg.optim.weight_decay), optax.sgd(0.1, 0.9))
    np.testing.assert_allclose(tx.update(g, tx.init(w), w)[0], ref.update(g, ref.init(w), w)[0])


def test_plan_counts_the_base_state():
    """jaxsam plan reads the optimizer state of the base: Adam holds twice SGD's momentum."""
    from jaxsam import plan as plan_lib

    sgd = plan_lib.memory_estimate(tiny_config(), activations=False)
    adam = plan_lib.memory_estimate(tiny_config(**{"optim.base": "adam"}), activations=False)
    assert sgd.param_bytes <= sgd.opt_state_bytes < 1.1 * sgd.param_bytes  # + a step count
    assert adam.opt_state_bytes >= 2 * sgd.param_bytes


def test_a_run_dir_from_before_optim_base_is_still_this_config(tmp_path):
    """Resume and --out compare the stored config.json with keys added since at their default."""
    from jaxsam import store
    from jaxsam.errors import RunDirError

    old = config_lib.to_dict(tiny_config())
    del old["optim"]["base"], old["optim"]["base_args"]
    (tmp_path / "config.json").write_text(json.dumps(old))
    with pytest.raises(RunDirError, match="holds an unfinished run of this config"):
        store.prepare_run_dir(tmp_path, tiny_config())
    with pytest.raises(RunDirError, match="holds a different run"):
        store.prepare_run_dir(tmp_path, tiny_config(**{"optim.base": "adam"}))


def test_cli_trains_adamw_under_sam(tmp_path, capsys):
    """Interface: jaxsam train --config FILE --set optim.base=adamw --set optim.name=sam."""
    from jaxsam import cli

    cfg = tiny_config(**{"train.epochs": 1, "data.pool_size": 120, "masks.models": 2})
    path = tmp_path / "c.json"
    path.write_text(json.dumps(config_lib.to_dict(cfg)))
    argv = ["train", "--config", str(path), "--out", str(tmp_path / "run"), "--no-progress"]
    sets = ["optim.base=adamw", "optim.name=sam", "optim.learning_rate=0.01"]
    assert cli.main(argv + [x for s in sets for x in ("--set", s)]) == 0
    saved = config_lib.load(tmp_path / "run" / "config.json")
    assert (saved.optim.base, saved.optim.name) == ("adamw", "sam")
    capsys.readouterr()
    bad = ["--set", "optim.base=adamx", "--out", str(tmp_path / "bad")]
    assert cli.main(["train", "--config", str(path), *bad]) == 2
    assert "optim.base = 'adamx' is not a base optimizer" in capsys.readouterr().err
    assert not (tmp_path / "bad").exists()
