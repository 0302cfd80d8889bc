"""make_optimizer: names, errors, and equality with the directly built transforms."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from jaxsam.errors import ConfigError
from jaxsam.optim import OPTIMIZERS, gsam, is_sam_family, make_optimizer, sam
from jaxsam.plan import check_config

LOSS = lambda w: jnp.sum(jnp.cos(w) * jnp.arange(1.0, 5.0)) + 0.1 * jnp.sum(w**2)
W0 = jnp.array([0.3, -1.0, 2.0, 0.5])


def trajectory(tx, steps=4):
    w, state = W0, tx.init(W0)
    for _ in range(steps):
        u, state = tx.update(jax.grad(LOSS)(w), state, w, grad_fn=jax.grad(LOSS))
        w = optax.apply_updates(w, u)
    return w


def test_names():
    assert OPTIMIZERS == ("sgd", "sam", "asam", "gsam", "looksam")
    for name in OPTIMIZERS:
        tx = make_optimizer(name, learning_rate=0.1)
        assert isinstance(tx, optax.GradientTransformationExtraArgs)
        assert np.all(np.isfinite(trajectory(tx, 2)))
        assert is_sam_family(name) == (name != "sgd")


def test_unknown_name_lists_allowed():
    """Library errors (ValueError/TypeError, as optax raises), not the CLI's ConfigError."""
    cases = [
        (ValueError, "sgd, sam, asam, gsam, looksam", dict(name="adamw")),
        (TypeError, "looksam", dict(name="looksam", beta=3)),
        (TypeError, "sgd", dict(name="sgd", alpha=0.1)),
        (TypeError, "sgd.*rho", dict(name="sgd", rho=0.05)),
    ]
    for kind, match, kwargs in cases:
        with pytest.raises(kind, match=match) as err:
            make_optimizer(learning_rate=0.1, **kwargs)
        assert not isinstance(err.value, ConfigError), kwargs


def test_sgd_matches_hand_written_momentum_and_weight_decay():
    lr, mom, wd = 0.05, 0.9, 0.01
    got = trajectory(make_optimizer("sgd", learning_rate=lr, momentum=mom, weight_decay=wd))
    w, m = np.asarray(W0, np.float64), 0.0
    for _ in range(4):
        g = np.asarray(jax.grad(LOSS)(jnp.asarray(w, jnp.float32)), np.float64) + wd * w
        m = mom * m + g
        w = w - lr * m
    np.testing.assert_allclose(got, w, rtol=1e-5, atol=1e-6)


def test_variants_equal_direct_construction_with_schedule():
    lr = optax.cosine_decay_schedule(0.1, 10)
    base = optax.chain(optax.add_decayed_weights(1e-3), optax.sgd(lr, momentum=0.9, nesterov=True))
    got = make_optimizer("sam", learning_rate=lr, weight_decay=1e-3, nesterov=True, rho=0.1)
    np.testing.assert_allclose(trajectory(got), trajectory(sam(base, 0.1)), rtol=1e-6)
    got = make_optimizer("gsam", learning_rate=lr, weight_decay=1e-3, nesterov=True, alpha=0.2)
    np.testing.assert_allclose(trajectory(got), trajectory(gsam(base, alpha=0.2)), rtol=1e-6)


def test_momentum_zero_has_no_buffer():
    tx = make_optimizer("sgd", learning_rate=0.1, momentum=0.0)
    assert sum(x.size for x in jax.tree.leaves(tx.init(W0))) == 0


def test_registry_is_the_one_table():
    """Every entry builds, and its spec is what config validation enforces."""
    from jaxsam import config as config_lib
    from jaxsam.optim import registry

    assert registry.names() == OPTIMIZERS
    for name, entry in registry.REGISTRY.items():
        assert is_sam_family(name) == entry.sam_family
        assert is_sam_family(make_optimizer(name, learning_rate=0.1)) == entry.sam_family
        extra = {key: arg.low for key, arg in entry.args.items()}
        cfg = config_lib.from_dict({"optim": {"name": name, "extra": extra}})
        assert registry.runs_fused_passes(cfg.optim) is False
        for key, arg in entry.args.items():
            bad = {**extra, key: arg.low - 1}
            with pytest.raises(ConfigError, match=f"optim.extra.{key} = .* is out of range"):
                check_config(config_lib.from_dict({"optim": {"name": name, "extra": bad}}))
            with pytest.raises(ValueError, match=f"^{key} = .* is out of range") as err:
                registry.check_args(name, bad)
            assert not isinstance(err.value, ConfigError)


def test_a_new_entry_reaches_config_factory_and_plan(monkeypatch):
    """One place to add an optimizer: the registry. Config, make_optimizer and plan follow."""
    from jaxsam import config as config_lib
    from jaxsam import plan as plan_lib
    from jaxsam.optim import registry

    new = registry.Entry(
        "sam_eps", "jaxsam.optim._sam:sam", {"eps": registry.Arg(float, 0.0, None, ">= 0")}, True
    )
    monkeypatch.setattr(registry, "REGISTRY", {**registry.REGISTRY, "sam_eps": new})
    with pytest.raises(ConfigError, match="optim.extra.eps = -1"):
        check_config(config_lib.from_dict({"optim": {"name": "sam_eps", "extra": {"eps": -1}}}))
    over = {"optim": {"name": "sam_eps", "extra": {"eps": 0.0}, "fused_passes": True}}
    cfg = config_lib.from_dict({**over, "masks": {"models": 2}, "train": {"epochs": 1}})
    assert registry.runs_fused_passes(cfg.optim)
    tx = make_optimizer("sam_eps", learning_rate=0.1, eps=0.0)
    assert is_sam_family(tx) and np.all(np.isfinite(trajectory(tx, 2)))
    plan = plan_lib.memory_estimate(cfg, activations=False)
    assert plan.sam_bytes == plan.param_bytes and plan.gradient_evaluations_per_step == 2


def test_config_layer_loads_no_array_library():
    """config is the bottom layer: reading the registry must not import jax or optax."""
    import subprocess
    import sys

    code = "import sys, jaxsam.config; print(sorted({'jax', 'optax'} & set(sys.modules)))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]", out.stdout + out.stderr
