"""Strategies and the auto plan: every strategy trains the same models as the loop baseline."""

import dataclasses
import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxsam import config as config_lib
from jaxsam.data.masks import make_masks
from jaxsam.data.pool import make_pool
from jaxsam.models import MODELS, with_conv_impl
from jaxsam.train import calibrate
from jaxsam.train.logits import make_logits_fn
from jaxsam.train.setup import make_setup
from jaxsam.train.state import init_ensemble, model_keys
from jaxsam.train.step import make_train_steps
from jaxsam.train.strategies import Execution, make_ensemble_fn

WIDTH = {"mlp": 16, "cnn": 4, "resnet18": 2, "wrn16_4": 4, "wrn28_2": 2, "resnet9": 2}


def tiny(name="cnn", m=3, optim="sgd", strategy="auto", **extra):
    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, (24, 8, 8, 3), dtype=np.uint8)
    y = rng.integers(0, 4, 24).astype(np.int32)
    pool = make_pool(x, y, num_classes=4, kind="image", dataset="synthetic", test_split=None)
    over = {
        "model.name": name,
        "model.width": WIDTH[name],
        "masks.models": m,
        "train.batch_size": 4,
        "train.epochs": 1,
        "train.progress": False,
        "optim.name": optim,
        "train.strategy": strategy,
        "data.train_augment": "flip_crop",
        **extra,
    }
    cfg = config_lib.replace(config_lib.Config(), **over)
    keep = make_masks(m, pool.size, 0.5, 0)
    return cfg, pool, keep, make_setup(cfg, pool, keep)


def run_plan(cfg, pool, keep, setup, plan, steps=1):
    setup = dataclasses.replace(
        setup, model=with_conv_impl(setup.model, plan.conv_impl), execution=plan
    )
    m = keep.shape[0]
    st = init_ensemble(setup.model, setup.tx, m, pool.input_shape, 0)
    fn = make_train_steps(setup, jnp.asarray(pool.mean), jnp.asarray(pool.std), "image", 4)
    efn = make_ensemble_fn(fn, plan.strategy, plan.chunk_size)
    data = (jnp.asarray(keep), model_keys(0, m, 1), model_keys(0, m, 2))
    shared = (jnp.asarray(pool.x), jnp.asarray(pool.y))
    state, hist = efn((st.params, st.batch_stats, st.opt_state), data, shared, jnp.int32(0), steps)
    return setup, state, hist


def assert_trees_close(a, b, rtol=1e-3, atol=3e-4):
    # im2col and lax convs sum in different orders; BatchNorm over 4 tiny images amplifies it
    # (ResNet-9 with SGD, 2 steps: one of 162 weights 1.3e-4 apart under LLVM -O0). A wrong
    # padded model, chunk or key moves the weights by 1e-2 or more.
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True):
        np.testing.assert_allclose(np.asarray(x), np.asarray(y), rtol=rtol, atol=atol)


# ~20-60 s of CPU compile each: -m slow. ResNet-9's BatchNorm under vmap stays in the default
# run through its SAM case in test_every_strategy_equals_the_loop (chunks vmap their models).
HEAVY = ("resnet18", "wrn16_4", "wrn28_2", "resnet9")


@pytest.mark.parametrize(
    "name", [pytest.param(n, marks=pytest.mark.slow) if n in HEAVY else n for n in sorted(MODELS)]
)
def test_one_vmapped_step_equals_the_loop(name):
    cfg, pool, keep, setup = tiny(name, m=2)
    _, loop_state, loop_hist = run_plan(cfg, pool, keep, setup, Execution("loop"))
    _, vmap_state, vmap_hist = run_plan(cfg, pool, keep, setup, Execution("vmap"))
    assert_trees_close(vmap_state, loop_state)
    np.testing.assert_allclose(vmap_hist[0], loop_hist[0], rtol=1e-5)
    big = max(jax.tree.leaves(loop_state[0]), key=lambda a: a.size)  # a conv/dense kernel
    assert not np.allclose(big[0], big[1])  # the two models really differ (own init, own data)


@functools.cache
def _loop_reference(name, optim):
    cfg, pool, keep, setup = tiny(name, m=3, optim=optim)
    return run_plan(cfg, pool, keep, setup, Execution("loop"), steps=2)[1:]


@pytest.mark.parametrize(
    "name,optim,plan",
    [
        ("cnn", "sgd", Execution("vmap", "matmul")),
        # M = 3: one padded model, with BN (the SAM case below covers the same path by default)
        pytest.param("resnet9", "sgd", Execution("chunked", "matmul", 2), marks=pytest.mark.slow),
        ("cnn", "sgd", Execution("chunked", "lax", 1)),
        ("cnn", "sgd", Execution("sharded", "matmul")),  # one device here; 4 in test_sharding.py
        ("resnet9", "sam", Execution("chunked", "matmul", 2)),
    ],
    ids=lambda v: v.describe() if isinstance(v, Execution) else v,
)
def test_every_strategy_equals_the_loop(name, optim, plan):
    ref, ref_hist = _loop_reference(name, optim)
    cfg, pool, keep, setup = tiny(name, m=3, optim=optim)
    _, got, hist = run_plan(cfg, pool, keep, setup, plan, steps=2)
    assert_trees_close(got, ref)
    np.testing.assert_allclose(hist[0], ref_hist[0], rtol=1e-4)


@pytest.mark.parametrize(
    "plan", [Execution("loop"), Execution("chunked", "matmul", 2), Execution("sharded")]
)
def test_logits_under_each_strategy_equal_vmap(plan):
    cfg, pool, keep, setup = tiny("cnn", m=3)
    setup, state, _ = run_plan(cfg, pool, keep, setup, Execution("vmap"))
    params, stats = state[0], state[1]
    mean, std = jnp.asarray(pool.mean), jnp.asarray(pool.std)
    ref = make_logits_fn(setup, mean, std, "image", 2)(params, stats, jnp.asarray(pool.x[:5]))
    other = dataclasses.replace(
        setup, execution=plan, model=with_conv_impl(setup.model, plan.conv_impl)
    )
    got = make_logits_fn(other, mean, std, "image", 2)(params, stats, jnp.asarray(pool.x[:5]))
    assert got.shape == (3, 5, 2, 4)
    np.testing.assert_allclose(np.asarray(got), np.asarray(ref), rtol=1e-4, atol=1e-5)


def test_auto_measures_once_then_reads_the_table(tmp_path, monkeypatch):
    monkeypatch.setenv("JAXSAM_CACHE_DIR", str(tmp_path))
    cfg, pool, keep, setup = tiny("cnn", m=2)
    first = calibrate.resolve_execution(setup, cfg, pool, keep).execution
    assert first.source == "calibrated"
    assert first.strategy in ("loop", "vmap") and first.conv_impl in ("lax", "matmul")
    assert (tmp_path / calibrate.TABLE_NAME).is_file()
    second = calibrate.resolve_execution(setup, cfg, pool, keep).execution
    assert second.source == "cache"
    assert (second.strategy, second.conv_impl) == (first.strategy, first.conv_impl)


def test_calibration_times_only_the_candidates_the_table_lacks(tmp_path, monkeypatch):
    # The bench records the loop's rate; calibration must not time the loop again.
    monkeypatch.setenv("JAXSAM_CACHE_DIR", str(tmp_path))
    cfg, pool, keep, setup = tiny("cnn", m=2)
    calibrate.record(cfg, pool, 2, {"loop+lax": 1e-6})
    timed = []
    real = calibrate.time_execution

    def spy(setup_, config, pool_, keep_, plan, *a, **k):
        timed.append(f"{plan.strategy}+{plan.conv_impl}")
        return real(setup_, config, pool_, keep_, plan, *a, **k)

    monkeypatch.setattr(calibrate, "time_execution", spy)
    got = calibrate.calibrate(setup, cfg, pool, keep, 2)
    assert timed == ["vmap+lax", "vmap+matmul"]
    assert got["rates"]["loop+lax"] == 1e-6 and got["best"] != "loop+lax"
    assert set(got["compile_s"]) == {"vmap+lax", "vmap+matmul"}
    assert all(v >= 0 for v in got["compile_s"].values())
    assert calibrate.calibrate(setup, cfg, pool, keep, 2)["cached"]


def test_calibration_stops_at_its_budget_and_keeps_the_capped_entry(tmp_path, monkeypatch):
    monkeypatch.setenv("JAXSAM_CACHE_DIR", str(tmp_path))
    cfg, pool, keep, setup = tiny("cnn", m=2)
    got = calibrate.calibrate(setup, cfg, pool, keep, 2, budget_s=0.0)
    assert list(got["rates"]) == ["loop+lax"]  # the first candidate is always measured
    assert got["capped"] == ["vmap+lax", "vmap+matmul"] and got["best"] == "loop+lax"
    again = calibrate.calibrate(setup, cfg, pool, keep, 2, budget_s=0.0)
    assert again["cached"] and again["rates"] == got["rates"]


def test_time_plan_parts_reports_compilation_apart_from_the_steady_rate():
    cfg, pool, keep, setup = tiny("mlp", m=2)
    t = calibrate.time_execution(setup, cfg, pool, keep, Execution("vmap"), 2)
    assert t.rate > 0 and t.warmup_s >= t.compile_s >= 0
    # A fresh program compiles: the warm-up is slower than one steady call.
    assert t.compile_s > 0


def test_auto_chunks_when_memory_allows_fewer_models(monkeypatch):
    cfg, pool, keep, setup = tiny("mlp", m=5)
    monkeypatch.setattr(calibrate, "memory_cap", lambda *a: 2)
    plan = calibrate.resolve_execution(setup, cfg, pool, keep).execution
    assert (plan.strategy, plan.chunk_size) == ("chunked", 2)
    _, got, _ = run_plan(cfg, pool, keep, setup, plan)
    _, ref, _ = run_plan(cfg, pool, keep, setup, Execution("loop"))
    assert_trees_close(got, ref)


def test_memory_cap_divides_free_memory_by_one_models_need(monkeypatch):
    cfg, pool, keep, setup = tiny("cnn", m=2)
    need = calibrate.per_model_bytes(setup, cfg, pool, keep)
    assert need > sum(
        a.nbytes
        for a in jax.tree.leaves(setup.model.init(jax.random.key(0), jnp.zeros((1, 8, 8, 3))))
    )
    monkeypatch.setattr(calibrate, "free_device_memory", lambda *a: 10 * need)
    assert calibrate.memory_cap(setup, cfg, pool, keep) == 5


@pytest.mark.parametrize(
    "strategy,expected",
    [
        ("vmap", ("vmap", "lax")),
        ("vmap_matmul", ("vmap", "matmul")),
        ("loop", ("loop", "lax")),
        ("chunked", ("chunked", "matmul")),
        ("sharded", ("sharded", "matmul")),
    ],
)
def test_explicit_strategies_resolve_to_their_plan(strategy, expected):
    cfg, pool, keep, setup = tiny("cnn", strategy=strategy)
    resolved = calibrate.resolve_execution(setup, cfg, pool, keep)
    assert (resolved.execution.strategy, resolved.execution.conv_impl) == expected
    assert resolved.model.conv_impl == expected[1]
