"""Shared fixtures: tiny configs and one small trained run reused by several tests."""

from __future__ import annotations

import os

os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")

import pytest  # noqa: E402

from jaxsam import config as config_lib  # noqa: E402


def assert_trees_close(a, b, rtol=1e-5, atol=1e-6):
    """Every leaf of pytree ``a`` is close to the same leaf of ``b`` (numpy's allclose rule)."""
    import jax
    import numpy as np

    jax.tree.map(lambda x, y: np.testing.assert_allclose(x, y, rtol=rtol, atol=atol), a, b)


def run_on_host_devices(script: str, devices: int, timeout: float = 300) -> str:
    """Runs ``script`` in a fresh Python on ``devices`` forced CPU devices; returns its stdout.

    A fresh process because this one has already initialised jax with one CPU device. The
    repository root goes first on PYTHONPATH, so the child imports this checkout's jaxsam.
    """
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    env = dict(os.environ)
    flag = f"--xla_force_host_platform_device_count={devices}"
    env["XLA_FLAGS"] = (env.get("XLA_FLAGS", "") + " " + flag).strip()
    env["JAX_PLATFORMS"] = "cpu"
    env["PYTHONPATH"] = str(root) + os.pathsep + env.get("PYTHONPATH", "")
    proc = subprocess.run(
        [sys.executable, "-c", script],
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=root,
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    return proc.stdout


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
