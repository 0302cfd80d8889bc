"""jaxsam plan: byte counts against a direct count, SAM's buffer, fits and times."""

from __future__ import annotations

import json

import pytest

from jaxsam import config as config_lib
from jaxsam import plan as plan_lib
from jaxsam.cli import main

from .conftest import tiny_config


def _mlp_params(d_in: int, width: int, depth: int, classes: int) -> int:
    sizes = [d_in] + [width] * depth + [classes]
    return sum(a * b + b for a, b in zip(sizes, sizes[1:], strict=False))


@pytest.mark.parametrize("width,depth", [(64, 2), (32, 3)])
def test_mlp_params_match_a_direct_count(width, depth):
    cfg = tiny_config(**{"model.width": width, "model.depth": depth})
    p = plan_lib.memory_estimate(cfg, activations=False)
    expected = _mlp_params(8 * 8 * 1, width, depth, 10)
    assert p.num_params == expected
    assert p.param_bytes == 4 * expected
    assert p.batch_stats_bytes == 0
    # SGD with momentum keeps one trace per parameter (plus scalar counters, if any).
    assert 4 * expected <= p.opt_state_bytes <= 4 * expected + 64
    assert p.grad_bytes == p.param_bytes
    assert p.sam_bytes == 0 and p.gradient_evaluations_per_step == 1


def test_sam_adds_one_param_sized_buffer():
    sgd = plan_lib.memory_estimate(tiny_config(), activations=False)
    sam = plan_lib.memory_estimate(tiny_config(**{"optim.name": "sam"}), activations=False)
    assert sam.sam_bytes == sgd.param_bytes
    extra_state = sam.opt_state_bytes - sgd.opt_state_bytes
    assert sam.state_bytes - sgd.state_bytes == sgd.param_bytes + extra_state
    assert sam.gradient_evaluations_per_step == 2


def test_activation_memory_is_positive_and_grows_with_width():
    small = plan_lib.memory_estimate(tiny_config(**{"model.width": 32}))
    big = plan_lib.memory_estimate(tiny_config(**{"model.width": 512}))
    assert small.activation_bytes_per_example is not None
    assert 0 < small.activation_bytes_per_example < big.activation_bytes_per_example
    # At least the hidden activations of the forward pass are kept for the backward one.
    assert big.activation_bytes_per_example >= 4 * 512 * 2


def test_models_per_device_and_steps():
    cfg = tiny_config()
    p = plan_lib.memory_estimate(cfg, activations=False)
    assert p.bytes_per_model == p.state_bytes
    gib = 1.0
    expected = int((0.9 * gib * plan_lib.GiB - p.pool_bytes) // p.state_bytes)
    assert p.models_per_device(gib) == expected
    assert p.pool_bytes == 300 * 64 + 4 * 300  # uint8 images + int32 labels
    assert p.model_examples == 4 * p.steps * 32
    assert p.steps == p.steps_per_epoch * cfg.train.epochs


def test_time_estimate_from_a_bench_table():
    p = plan_lib.memory_estimate(tiny_config(), activations=False)
    rows = [
        {"model": "mlp", "strategy": "loop", "model_examples_per_s": 1000.0, "backend": "cpu"},
        {"model": "mlp", "strategy": "auto", "model_examples_per_s": 4000.0, "backend": "cpu"},
        {"model": "cnn", "strategy": "auto", "model_examples_per_s": 9.0, "backend": "cpu"},
    ]
    (sgd,) = plan_lib.time_estimates(p, "mlp", False, rows)
    assert sgd["strategy"] == "auto" and sgd["seconds"] == pytest.approx(p.model_examples / 4000)
    (sam,) = plan_lib.time_estimates(p, "mlp", True, rows)
    assert sam["seconds"] == pytest.approx(2 * sgd["seconds"])
    assert plan_lib.time_estimates(p, "wrn", False, rows) == []


def test_plan_command(tmp_path, capsys):
    cfg = tmp_path / "c.json"
    cfg.write_text(json.dumps(config_lib.to_dict(tiny_config())))
    assert main(["plan", "--config", str(cfg), "--device-memory", "16"]) == 0
    out = capsys.readouterr().out
    assert "parameters per model" in out and "no benchmark table" in out
    table = tmp_path / "t.json"
    table.write_text(
        json.dumps(
            [{"model": "mlp", "strategy": "auto", "model_examples_per_s": 1e5, "backend": "gpu"}]
        )
    )
    assert main(["plan", "--config", str(cfg), "--bench-table", str(table), "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["params"] == _mlp_params(64, 64, 2, 10)
    assert data["time"][0]["backend"] == "gpu"


@pytest.mark.parametrize("kind,added", [("noise", 20), ("duplicate", 20), ("mislabel", 0)])
def test_plan_counts_the_canaries_an_audit_adds(kind, added):
    audit = {"masks.models": 8, "audit.canaries": 20, "audit.kind": kind, "audit.targets": 3}
    plain = plan_lib.memory_estimate(tiny_config(**{"masks.models": 8}), activations=False)
    shapes = plan_lib.memory_estimate(tiny_config(**audit), activations=False)
    loaded = plan_lib.make_plan(tiny_config(**audit)).memory  # built from the data itself
    assert shapes.pool_size == loaded.pool_size == plain.pool_size + added
    assert shapes.pool_bytes == loaded.pool_bytes == plain.pool_bytes + added * (64 + 4)
    assert shapes.steps_per_epoch == loaded.steps_per_epoch


def test_shapes_only_plan_of_a_known_dataset_counts_added_canaries():
    name = next(iter(plan_lib.KNOWN_DATASETS))
    base = {"data.dataset": name, "data.pool_size": 1000, "masks.models": 4}
    plain = plan_lib.memory_estimate(tiny_config(**base), activations=False)
    audit = {**base, "audit.canaries": 50, "audit.kind": "noise", "audit.targets": 2}
    with_c = plan_lib.memory_estimate(tiny_config(**audit), activations=False)
    assert with_c.pool_size == plain.pool_size + 50 == 1050


def test_a_batch_larger_than_every_training_subset_is_warned_about(capsys):
    # Legal (it trains), but each batch repeats a model's ~150 examples hundreds of times.
    from jaxsam.plan import make_plan

    make_plan(tiny_config(**{"train.batch_size": 100000}))
    out = capsys.readouterr().out
    assert "warning: train.batch_size = 100000 is larger than every model's training subset" in out
    largest = out.split("(at most ")[1].split(" examples")[0]
    assert 100 < int(largest) < 200 and f"set train.batch_size to at most {largest}" in out
    make_plan(tiny_config())  # batch 32: no warning
    assert "warning" not in capsys.readouterr().out
    make_plan(tiny_config(**{"train.batch_size": int(largest) + 10}))  # under twice: no warning
    assert "warning" not in capsys.readouterr().out
