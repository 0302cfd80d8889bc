"""Shared fixtures: tiny configs and one small trained run reused by several tests."""

from __future__ import annotations

import os

os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")

import pytest  # noqa: E402

from jaxsam import config as config_lib  # noqa: E402


@pytest.fixture(autouse=True, scope="session")
def _private_strategy_table(tmp_path_factory):
    """Keep the tests' `auto` calibrations out of the user's ~/.cache/jaxsam (and vice versa)."""
    old = os.environ.get("JAXSAM_CACHE_DIR")
    os.environ["JAXSAM_CACHE_DIR"] = str(tmp_path_factory.mktemp("jaxsam_cache"))
    yield
    if old is None:
        os.environ.pop("JAXSAM_CACHE_DIR", None)
    else:
        os.environ["JAXSAM_CACHE_DIR"] = old


def tiny_config(**overrides) -> config_lib.Config:
    """4 MLPs on a 300-example digits pool, 3 epochs: trains in a few seconds on a CPU."""
    base = {
        "data.pool_size": 300,
        "data.test_size": 100,
        "masks.models": 4,
        "model.width": 64,
        "train.epochs": 3,
        "train.batch_size": 32,
        "train.progress": False,
        "optim.learning_rate": 0.1,
    }
    base.update(overrides)
    return config_lib.replace(config_lib.Config(), **base)


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory):
    """A finished tiny SGD run directory (trained once per session)."""
    from jaxsam.train import train_and_export

    out = tmp_path_factory.mktemp("runs") / "sgd"
    return train_and_export(tiny_config(), out)
