import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxsam.data import load_pool, make_masks
from jaxsam.data.masks import steps_per_epoch
from jaxsam.errors import DivergenceError
from jaxsam.train import train_ensemble
from jaxsam.train.batches import batch_indices, epoch_order
from jaxsam.train.state import model_keys

from .conftest import tiny_config


def test_batches_come_only_from_the_models_own_subset():
    keep = make_masks(6, 50, 0.5, seed=1)
    b = 4
    spe = steps_per_epoch(keep, b)
    keys = model_keys(0, 6, 1)
    for m in range(6):
        for epoch in range(2):
            order = epoch_order(keys[m], jnp.asarray(keep[m]), jnp.int32(epoch))
            n_in = int(keep[m].sum())
            seen = np.concatenate(
                [
                    np.asarray(batch_indices(order, jnp.int32(n_in), jnp.int32(s), b))
                    for s in range(spe)
                ]
            )
            assert keep[m, seen].all(), "a batch used an example the model must not train on"
            assert set(seen) == set(np.flatnonzero(keep[m])), "an epoch missed an example"


def test_data_order_differs_between_models_and_epochs():
    keep = np.ones((2, 40), bool)
    keys = model_keys(0, 2, 1)
    o00 = epoch_order(keys[0], jnp.asarray(keep[0]), 0)
    o10 = epoch_order(keys[1], jnp.asarray(keep[1]), 0)
    o01 = epoch_order(keys[0], jnp.asarray(keep[0]), 1)
    assert not np.array_equal(o00, o10) and not np.array_equal(o00, o01)


def test_models_beat_chance_on_points_they_did_not_train_on(tiny_run):
    m = tiny_run.metrics
    assert min(m["out_accuracy"]) > 0.5  # 10 classes: chance is 0.1
    assert min(m["train_accuracy"]) > 0.8
    assert all(a is not None and a > 0.5 for a in m["heldout_accuracy"])


def test_each_model_has_its_own_initialisation(tiny_run):
    lg = tiny_run.logits
    assert not np.allclose(lg[0], lg[1])


@pytest.mark.parametrize("optimizer", ["sgd", "sam"])
def test_vmap_equals_sequential_loop(optimizer):
    cfg = tiny_config(**{"optim.name": optimizer, "train.epochs": 1, "data.pool_size": 120})
    pool = load_pool(cfg.data)
    keep = make_masks(3, pool.size, 0.5, 0)
    a = train_ensemble(cfg, pool, keep)
    b = train_ensemble(
        tiny_config(
            **{
                "optim.name": optimizer,
                "train.epochs": 1,
                "data.pool_size": 120,
                "train.strategy": "loop",
            }
        ),
        pool,
        keep,
    )
    for x, y in zip(jax.tree.leaves(a.state.params), jax.tree.leaves(b.state.params), strict=True):
        np.testing.assert_allclose(np.asarray(x), np.asarray(y), rtol=2e-5, atol=2e-6)


def test_sam_and_sgd_share_masks_and_init_but_differ():
    pool = load_pool(tiny_config().data)
    keep = make_masks(2, pool.size, 0.5, 0)
    sgd = train_ensemble(tiny_config(**{"train.epochs": 1}), pool, keep)
    sam = train_ensemble(tiny_config(**{"train.epochs": 1, "optim.name": "sam"}), pool, keep)
    leaf = lambda r: np.asarray(jax.tree.leaves(r.state.params)[0])  # noqa: E731
    assert not np.allclose(leaf(sgd), leaf(sam))


def test_nan_loss_stops_with_model_step_and_learning_rate():
    cfg = tiny_config(**{"optim.learning_rate": 1e6, "optim.momentum": 0.0, "train.epochs": 2})
    pool = load_pool(cfg.data)
    keep = make_masks(4, pool.size, 0.5, 0)
    with pytest.raises(DivergenceError, match=r"model \d+ diverged at step \d+ \(learning rate"):
        train_ensemble(cfg, pool, keep)


@pytest.mark.slow  # long: CI runs it in its `-m slow` phase
def test_fused_passes_train_the_same_models():
    """optim.fused_passes only changes where XLA puts the buffers: same params and BN stats."""
    over = {
        "optim.name": "sam",
        "train.epochs": 1,
        "data.pool_size": 120,
        "model.name": "resnet9",
        "model.width": 4,
        "masks.models": 2,
        "train.strategy": "vmap",
    }
    pool = load_pool(tiny_config(**over).data)
    keep = make_masks(2, pool.size, 0.5, 0)
    a = train_ensemble(tiny_config(**over), pool, keep)
    with pytest.warns(UserWarning, match="fused_passes=true runs both SAM passes"):  # on a CPU
        b = train_ensemble(tiny_config(**over, **{"optim.fused_passes": True}), pool, keep)
    assert jax.tree.leaves(a.state.batch_stats)  # the BatchNorm rule is exercised
    for x, y in zip(jax.tree.leaves(a.state), jax.tree.leaves(b.state), strict=True):
        np.testing.assert_allclose(np.asarray(x), np.asarray(y), rtol=1e-4, atol=1e-5)
