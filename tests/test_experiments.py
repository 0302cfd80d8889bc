"""Experiment commands end to end on tiny configs; spec files; tabular converter."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from experiments import run as run_lib
from experiments import spec as spec_lib
from experiments import tabular
from jaxsam.errors import ConfigError, DataError

CONFIGS = Path(__file__).resolve().parents[1] / "experiments" / "configs"
SPECS = sorted(CONFIGS.glob("*.json"))
TINY = {
    "masks.models": 4,
    "train.epochs": 1,
    "train.progress": False,
    "train.strategy": "vmap",  # "auto" would time every strategy first
}
DIGITS_TINY = {"data.pool_size": 300, "data.test_size": 100}


def _model_override(spec: spec_lib.Spec) -> dict:
    """Keeps the spec's model where this jaxsam has it, else the MLP; always tiny."""
    from jaxsam.models import MODELS

    name = spec.overrides.get("model.name", "mlp")
    return {"model.name": name if name in MODELS else "mlp", "model.width": 8, "model.depth": 1}


@pytest.mark.parametrize("path", SPECS, ids=[p.stem for p in SPECS])
def test_every_spec_parses_and_documents_its_command(path):
    spec = spec_lib.load(path)
    assert spec.command == f"python -m experiments.run experiments/configs/{path.name}"
    assert spec.description and spec.expected
    assert spec.baseline in spec.arms and len(spec.seeds) >= 3
    assert len(spec.arms) >= 2


def test_expected_experiments_exist():
    names = {p.stem for p in SPECS}
    for name in (
        "digits_sam_vs_sgd",
        "fashion_mnist_sam_vs_sgd",
        "cifar10_sam_vs_sgd",
        "cifar100_sam_vs_sgd",
        "digits_rho_sweep",
        "digits_sam_variants",
        "purchase100_sam_vs_sgd",
        "texas100_sam_vs_sgd",
        "fashion_mnist_cnn_sam_vs_sgd",
    ):
        assert name in names


def test_cnn_study_arm_configs_are_the_specs_arms_and_train_to_interpolation():
    """The committed per-arm configs are what the spec trains (drift fails here)."""
    from jaxsam import config as config_lib

    spec = spec_lib.load(CONFIGS / "fashion_mnist_cnn_sam_vs_sgd.json")
    arm_dir = CONFIGS / "fashion_mnist_cnn"
    assert sorted(p.stem for p in arm_dir.glob("*.json")) == sorted(
        spec_lib.slug(a) for a in spec.arms
    )
    for arm in spec.arms:
        stored = config_lib.load(arm_dir / f"{spec_lib.slug(arm)}.json")
        assert stored == spec.arm_config(arm, spec.seeds[0]), arm
    sgd, sam = (spec.arm_config(a, 0) for a in ("SGD", "SAM"))
    # Same everything but the optimizer name: the arms are paired.
    assert config_lib.replace(sam, **{"optim.name": "sgd"}) == sgd
    assert sgd.model.name == "cnn" and sgd.data.pool_size >= 5000 and sgd.masks.models >= 16


def test_write_configs_writes_one_loadable_config_per_arm(tmp_path, capsys):
    from jaxsam import config as config_lib

    spec_path = CONFIGS / "digits_sam_variants.json"
    assert run_lib.main([str(spec_path), "--write-configs", str(tmp_path)]) == 0
    spec = spec_lib.load(spec_path)
    printed = capsys.readouterr().out
    for arm in spec.arms:
        path = tmp_path / f"{spec_lib.slug(arm)}.json"
        assert f"wrote {path}" in printed
        assert config_lib.load(path) == spec.arm_config(arm, spec.seeds[0])


def test_arm_configs_pair_seeds_and_apply_overrides():
    spec = spec_lib.load(CONFIGS / "digits_rho_sweep.json")
    c = spec.arm_config("rho=0.2", 7)
    assert (c.optim.name, c.optim.rho, c.masks.seed, c.train.seed) == ("sam", 0.2, 7, 7)
    assert c.data.seed == 0  # one pool for all seeds
    assert spec.arm_config("SGD", 7).masks.seed == 7
    assert spec.run_dir(Path("o"), "rho=0.2", 7) == Path("o/seed7/rho_0.2")


def test_overrides_seeds_arms_and_bad_input():
    spec = spec_lib.load(CONFIGS / "digits_rho_sweep.json")
    sets = spec_lib.parse_sets(["train.epochs=2", "data.pool_size=null", "model.name=mlp"])
    assert sets == {"train.epochs": 2, "data.pool_size": None, "model.name": "mlp"}
    s2 = spec_lib.with_overrides(spec, sets, (5,), ["rho=0.1"])
    assert list(s2.arms) == ["SGD", "rho=0.1"] and s2.seeds == (5,)
    assert s2.arm_config("rho=0.1", 5).train.epochs == 2
    alone = spec_lib.with_overrides(spec, arms=["rho=0.1"], keep_baseline=False)
    assert list(alone.arms) == ["rho=0.1"] and alone.baseline == "rho=0.1"
    with pytest.raises(ConfigError, match="--arms"):
        spec_lib.with_overrides(spec, keep_baseline=False)
    with pytest.raises(ConfigError):
        spec_lib.parse_sets(["train.epochs"])
    with pytest.raises(ConfigError):
        spec_lib.with_overrides(spec, arms=["nope"])
    with pytest.raises(ConfigError):
        spec_lib.from_dict({"arms": {"A": {}}, "baseline": "B"}, "x")
    with pytest.raises(ConfigError):
        spec_lib.from_dict({"arms": {"A": {}}, "typo": 1}, "x")


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory):
    """One XLA compilation cache for the module's runs (they share most programs)."""
    return tmp_path_factory.mktemp("jax_cache")


def _run_tiny(spec_name, tmp_path, seeds=(0,), extra=None, arms=None, cache=None):
    spec = spec_lib.load(CONFIGS / f"{spec_name}.json")
    sets = {**TINY, **_model_override(spec), **(extra or {})}
    spec = spec_lib.with_overrides(spec, sets, seeds, arms)
    logs = []
    out = tmp_path / spec_name
    res = run_lib.run_experiment(spec, out, progress=False, cache_dir=cache, log=logs.append)
    return spec, res, logs, out


def _check_result(res, out, arms, seeds):
    assert res["arms"] == arms
    assert json.loads((out / "results.json").read_text())["arms"] == arms
    table = (out / "table.md").read_text()
    assert "OUT (pool non-member) accuracy %" in table and "mean FZ memorization" in table
    assert (out / "privacy_utility.png").is_file() and res["privacy_utility"]
    for a in arms:
        assert res["seeds"][a] == list(seeds)
        for s in seeds:
            assert (out / f"seed{s}" / spec_lib.slug(a) / "report.json").is_file()
        acc = res["summary"][a]["out_accuracy"]
        assert acc["n"] == len(seeds) and 0.0 <= acc["mean"] <= 1.0
        auc = res["summary"][a]["lira_online/auc"]
        assert auc["n"] == len(seeds) and 0.0 <= auc["mean"] <= 1.0


@pytest.fixture(scope="module")
def digits_experiment(tmp_path_factory, cache_dir):
    """The digits SAM-vs-SGD experiment, tiny, at two seeds (trained once per module)."""
    tmp = tmp_path_factory.mktemp("exp")
    return _run_tiny("digits_sam_vs_sgd", tmp, seeds=(0, 1), extra=DIGITS_TINY, cache=cache_dir)


def test_digits_sam_vs_sgd_end_to_end_and_reuse(digits_experiment):
    spec, res, logs, out = digits_experiment
    _check_result(res, out, ["SGD", "SAM"], (0, 1))
    d = res["diff"]["SAM"]["lira_online/auc"]
    assert d["n"] == 2 and d["seeds"] == [0, 1]
    expected = np.mean(
        np.subtract(
            res["summary"]["SAM"]["lira_online/auc"]["values"],
            res["summary"]["SGD"]["lira_online/auc"]["values"],
        )
    )
    assert d["mean"] == pytest.approx(expected)
    assert all("trained" in m for m in logs)
    # The two seeds differ (different masks), so the aggregation has something to aggregate.
    assert len(set(res["summary"]["SGD"]["lira_online/auc"]["values"])) == 2
    # Second call reuses the finished runs and their reports.
    logs2 = []
    res2 = run_lib.run_experiment(spec, out, progress=False, log=logs2.append)
    assert all("reused" in m for m in logs2)
    assert res2["summary"] == res["summary"]


def test_interrupted_run_is_resumed(tmp_path, cache_dir):
    spec, res, _, out = _run_tiny(
        "digits_sam_vs_sgd", tmp_path, extra={**DIGITS_TINY, "train.epochs": 2}, arms=["SGD"]
    )
    run_dir = out / "seed0" / "sgd"
    (run_dir / "COMPLETE").unlink()  # as if the job had died before finishing
    (run_dir / "report.json").unlink()
    logs = []
    res2 = run_lib.run_experiment(spec, out, progress=False, cache_dir=cache_dir, log=logs.append)
    assert (run_dir / "COMPLETE").is_file() and "trained" in logs[0]
    assert res2["summary"]["SGD"]["out_accuracy"]["mean"] == pytest.approx(
        res["summary"]["SGD"]["out_accuracy"]["mean"], abs=1e-6
    )


def test_compile_cache_is_restored_and_a_configured_one_is_kept(tmp_path):
    import jax

    configured = jax.config.jax_compilation_cache_dir  # the test run's own (conftest.py)
    with run_lib.compile_cache(tmp_path / "kept"):
        assert jax.config.jax_compilation_cache_dir == configured
    jax.config.update("jax_compilation_cache_dir", None)
    try:
        with run_lib.compile_cache(tmp_path / "c"):
            assert jax.config.jax_compilation_cache_dir == str(tmp_path / "c")
        assert jax.config.jax_compilation_cache_dir is None
    finally:
        jax.config.update("jax_compilation_cache_dir", configured)


def test_cli_main_tabulates_and_reports_errors(digits_experiment, capsys):
    _, res, _, out = digits_experiment
    argv = [str(CONFIGS / "digits_sam_vs_sgd.json"), "--out", str(out), "--no-train"]
    argv += [f"--set={k}={json.dumps(v)}" for k, v in {**TINY, **DIGITS_TINY}.items()]
    assert run_lib.main(argv + ["--seeds", "0,1,2"]) == 0
    text = capsys.readouterr().out
    assert "SAM - SGD" in text and "lira_online AUC %" in text
    assert "seeds per arm: SGD 2, SAM 2" in text  # seed 2 was never trained
    assert run_lib.main([str(out / "missing.json")]) == 2
    assert "does not exist" in capsys.readouterr().err


@pytest.mark.parametrize(
    "spec_name, arms",
    [("digits_rho_sweep", ["rho=0.05", "rho=0.5"]), ("digits_sam_variants", ["GSAM", "LookSAM"])],
    ids=["rho_sweep", "variants"],
)
def test_arms_end_to_end(tmp_path, cache_dir, spec_name, arms):
    _, res, _, out = _run_tiny(spec_name, tmp_path, arms=arms, extra=DIGITS_TINY, cache=cache_dir)
    _check_result(res, out, ["SGD", *arms], (0,))
    assert set(res["diff"]) == set(arms)


def test_tabular_end_to_end_on_synthetic_npz(tmp_path, cache_dir):
    rng = np.random.default_rng(0)
    x = (rng.random((200, 24)) < 0.3).astype(np.uint8)
    y = (x[:, :5].argmax(1) + 5 * (x[:, 5] > 0)).astype(np.int32)  # learnable, 10 classes
    path = tmp_path / "purchase_tiny.npz"
    np.savez(path, x=x, y=y, num_classes=np.int64(10))
    extra = {"data.dataset": f"npz:{path}", "data.pool_size": 120, "data.test_size": 40}
    _, res, _, out = _run_tiny("purchase100_sam_vs_sgd", tmp_path, extra=extra, cache=cache_dir)
    _check_result(res, out, ["SGD", "SAM"], (0,))


@pytest.mark.slow  # long: CI runs it in its `-m slow` phase
def test_cifar_command_path_on_fake_pool(tmp_path, cache_dir):
    rng = np.random.default_rng(1)
    path = tmp_path / "fake_cifar.npz"
    np.savez(
        path,
        x=rng.integers(0, 256, (48, 32, 32, 3), dtype=np.uint8),
        y=rng.integers(0, 10, 48).astype(np.int32),
        x_test=rng.integers(0, 256, (16, 32, 32, 3), dtype=np.uint8),
        y_test=rng.integers(0, 10, 16).astype(np.int32),
        num_classes=np.int64(10),
    )
    spec, res, _, out = _run_tiny(
        "cifar10_sam_vs_sgd", tmp_path, extra={"data.dataset": f"npz:{path}"}, cache=cache_dir
    )
    _check_result(res, out, ["SGD", "SAM"], (0,))
    # The CIFAR spec's own settings survive: two query views, the flip+crop pool.
    assert spec.overrides["data.query_augment"] == 2
    from jaxsam.store import load_run

    run = load_run(out / "seed0" / "sam")
    assert run.logits.shape == (4, 48, 2, 10)


def test_tabular_converter_purchase_and_texas(tmp_path):
    rng = np.random.default_rng(0)
    feats = (rng.random((6, 5)) < 0.5).astype(int)
    labels = np.array([1, 2, 3, 1, 2, 3])
    raw = tmp_path / "dataset_purchase"
    np.savetxt(raw, np.column_stack([labels, feats]), fmt="%d", delimiter=",")
    out = tmp_path / "p.npz"
    assert tabular.main(["purchase", str(raw), str(out)]) == 0
    with np.load(out) as z:
        np.testing.assert_array_equal(z["x"], feats)
        np.testing.assert_array_equal(z["y"], labels - 1)
        assert z["x"].dtype == np.uint8 and int(z["num_classes"]) == 3
    f, lab = tmp_path / "feats", tmp_path / "labels"
    np.savetxt(f, feats, fmt="%d", delimiter=",")
    np.savetxt(lab, labels, fmt="%d")
    arrays = tabular.texas_to_arrays(f, lab)
    np.testing.assert_array_equal(arrays["x"], feats)
    np.testing.assert_array_equal(arrays["y"], labels - 1)
    np.savetxt(lab, labels[:4], fmt="%d")
    with pytest.raises(DataError):
        tabular.texas_to_arrays(f, lab)
    assert tabular.main(["purchase", str(tmp_path / "nope"), str(out)]) == 2
