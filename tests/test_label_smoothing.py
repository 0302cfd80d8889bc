"""train.label_smoothing: the training loss changes; the exported logits do not."""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxsam import config as config_lib
from jaxsam import store
from jaxsam.data import load_pool, make_masks
from jaxsam.data.augment import normalize
from jaxsam.errors import ConfigError
from jaxsam.train import train_ensemble
from jaxsam.train.batches import batch_indices, epoch_order
from jaxsam.train.loop import export_logits
from jaxsam.train.setup import make_setup
from jaxsam.train.state import init_ensemble, model_keys
from jaxsam.train.step import cross_entropy, make_train_steps

from .conftest import tiny_config

S = 0.1


def test_cross_entropy_with_smoothing_is_the_mixture():
    logits = jax.random.normal(jax.random.key(0), (6, 4)) * 3
    labels = jnp.array([0, 1, 2, 3, 0, 1])
    logp = np.asarray(jax.nn.log_softmax(logits))
    ce = -logp[np.arange(6), np.asarray(labels)]
    want = (1 - S) * ce + S * (-logp.mean(axis=1))
    np.testing.assert_allclose(cross_entropy(logits, labels, S), want, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(cross_entropy(logits, labels), ce, rtol=1e-5, atol=1e-6)


def _first_step_loss(cfg, pool, keep):
    """Loss of model 0's first training step (before its update), and its batch's logits."""
    setup = make_setup(cfg, pool, keep)
    mean, std = jnp.asarray(pool.mean), jnp.asarray(pool.std)
    b = cfg.train.batch_size
    steps = make_train_steps(setup, mean, std, pool.kind, b)
    state = init_ensemble(setup.model, setup.tx, 1, pool.input_shape, cfg.train.seed)
    model_state = jax.tree.map(lambda a: a[0], (state.params, state.batch_stats, state.opt_state))
    keep_row = jnp.asarray(keep[0])
    order_key, aug_key = model_keys(cfg.train.seed, 1, 1)[0], model_keys(cfg.train.seed, 1, 2)[0]
    shared = (jnp.asarray(pool.x), jnp.asarray(pool.y))
    _, (loss, _) = steps(model_state, (keep_row, order_key, aug_key), shared, jnp.int32(0), 1)
    # The same batch by hand (digits: no train-time augmentation).
    assert setup.augment == "none"
    order = epoch_order(order_key, keep_row, jnp.int32(0))
    idx = batch_indices(order, jnp.sum(keep_row.astype(jnp.int32)), jnp.int32(0), b)
    x = normalize(jnp.asarray(pool.x)[idx], mean, std, pool.kind)
    logits = setup.model.apply({"params": model_state[0]}, x, train=True)
    return float(loss[0]), np.asarray(jax.nn.log_softmax(logits)), np.asarray(pool.y)[idx]


def test_label_smoothing_changes_the_training_loss():
    cfg0 = tiny_config(**{"masks.models": 2})
    pool = load_pool(cfg0.data)
    keep = make_masks(2, pool.size, 0.5, 0)
    plain, logp, y = _first_step_loss(cfg0, pool, keep)
    smooth, logp_s, _ = _first_step_loss(
        config_lib.replace(cfg0, **{"train.label_smoothing": S}), pool, keep
    )
    np.testing.assert_array_equal(logp, logp_s)  # same init, same batch
    ce = -logp[np.arange(len(y)), y]
    np.testing.assert_allclose(plain, ce.mean(), rtol=1e-5)
    want = ((1 - S) * ce + S * (-logp.mean(axis=1))).mean()
    np.testing.assert_allclose(smooth, want, rtol=1e-5)
    assert abs(smooth - plain) > 1e-3


def test_label_smoothing_never_reaches_the_exported_logits():
    """The export path reads the model only: with or without smoothing in the setup, the
    same parameters give the same raw logits (not smoothed probabilities)."""
    cfg = tiny_config(**{"train.label_smoothing": S, "train.epochs": 1, "masks.models": 2})
    pool = load_pool(cfg.data)
    keep = make_masks(2, pool.size, 0.5, 0)
    result = train_ensemble(cfg, pool, keep)
    assert result.setup.label_smoothing == S
    pool_logits, test_logits = export_logits(result, pool, 1)
    unsmoothed = dataclasses.replace(
        result, setup=dataclasses.replace(result.setup, label_smoothing=0.0)
    )
    again, again_test = export_logits(unsmoothed, pool, 1)
    np.testing.assert_array_equal(pool_logits, again)
    np.testing.assert_array_equal(test_logits, again_test)
    params0 = jax.tree.map(lambda a: a[1], result.state.params)
    x = normalize(jnp.asarray(pool.x), jnp.asarray(pool.mean), jnp.asarray(pool.std), pool.kind)
    raw = np.asarray(result.setup.model.apply({"params": params0}, x, train=False))
    np.testing.assert_allclose(pool_logits[1, :, 0, :], raw, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("value", [-0.1, 1.0, 1.5])
def test_label_smoothing_out_of_range_names_the_key(value):
    with pytest.raises(ConfigError, match="train.label_smoothing"):
        config_lib.from_dict({"train": {"label_smoothing": value}})


def test_cli_set_label_smoothing(tmp_path):
    from jaxsam import cli

    cfg = tiny_config(**{"train.epochs": 1, "data.pool_size": 120, "masks.models": 2})
    out = tmp_path / "run"
    argv = ["train", "--out", str(out), "--no-progress", "--set", "train.label_smoothing=0.1"]
    path = tmp_path / "c.json"
    path.write_text(__import__("json").dumps(config_lib.to_dict(cfg)))
    assert cli.main(argv + ["--config", str(path)]) == 0
    assert config_lib.load(out / "config.json").train.label_smoothing == 0.1


def test_added_keys_at_their_default_keep_old_fingerprints():
    """A checkpoint of a run started before optim.base / train.label_smoothing existed still
    matches: the fingerprint hashes the config without added keys at their default."""
    from jaxsam.store import checkpoints as checkpoint

    stable = store.stable_dict(tiny_config())
    assert "label_smoothing" not in stable["train"] and "base" not in stable["optim"]
    a = checkpoint.fingerprint("m", 0, tiny_config())
    assert a != checkpoint.fingerprint("m", 0, tiny_config(**{"train.label_smoothing": S}))
    assert a != checkpoint.fingerprint("m", 0, tiny_config(**{"optim.base": "adam"}))
