"""``train`` says which execution plan it runs, and warns about a known-slow explicit choice."""

import json
import types

from jaxsam import cli
from jaxsam import config as config_lib
from jaxsam.train import calibrate
from jaxsam.train.strategies import Execution

from .conftest import tiny_config


def test_train_prints_the_plan_auto_chose(tmp_path, capsys):
    cfg = tmp_path / "c.json"
    cfg.write_text(json.dumps(config_lib.to_dict(tiny_config(**{"train.epochs": 1}))))
    assert cli.main(["train", "--config", str(cfg), "--out", str(tmp_path / "run")]) == 0
    out = capsys.readouterr().out
    assert "plan: vmap+lax (auto: rule)" in out  # an MLP: vmap without measuring


def _conv_config(strategy: str):
    return tiny_config(**{"model.name": "cnn", "train.strategy": strategy})


def _write_table(monkeypatch, tmp_path, config, pool, rates: dict, k: int = 4):
    monkeypatch.setenv("JAXSAM_CACHE_DIR", str(tmp_path))
    key = calibrate._table_key(config, pool, k)
    table = {key: {"best": max(rates, key=rates.get), "rates": rates}}
    calibrate.cache_path().write_text(json.dumps(table))


POOL = types.SimpleNamespace(input_shape=(8, 8, 1))
RATES = {"loop+lax": 100.0, "vmap+lax": 50.0, "vmap+matmul": 300.0}


def test_explicit_strategy_known_to_be_6x_slower_is_warned(monkeypatch, tmp_path, capsys):
    config = _conv_config("vmap")
    _write_table(monkeypatch, tmp_path, config, POOL, RATES)
    plan = calibrate.explicit_execution(config)
    warning = calibrate.slow_choice_warning(plan, config, POOL, num_models=4)
    assert warning is not None
    assert "train.strategy=vmap (vmap+lax) ran 6.0x slower than vmap+matmul" in warning
    calibrate.announce_execution(plan, config, POOL, 4)
    out = capsys.readouterr().out.splitlines()
    assert out[0] == "plan: vmap+lax (train.strategy)" and out[1].startswith("warning: ")


def test_no_warning_when_close_unknown_or_auto(monkeypatch, tmp_path):
    config = _conv_config("loop")  # 3x slower than the best: warned
    _write_table(monkeypatch, tmp_path, config, POOL, RATES)
    assert calibrate.slow_choice_warning(calibrate.explicit_execution(config), config, POOL, 4)
    fast = _conv_config("vmap_matmul")  # the best itself
    assert calibrate.slow_choice_warning(calibrate.explicit_execution(fast), fast, POOL, 4) is None
    auto = _conv_config("auto")
    assert (
        calibrate.slow_choice_warning(Execution("vmap", "lax", None, "cache"), auto, POOL, 4)
        is None
    )
    other = tiny_config(**{"model.name": "cnn", "train.strategy": "vmap", "model.width": 8})
    # Another width: the table knows nothing of it.
    assert (
        calibrate.slow_choice_warning(calibrate.explicit_execution(other), other, POOL, 4) is None
    )
