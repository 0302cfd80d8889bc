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

    A fresh process because this one has already initialised jax with one CPU device.
    """
    return run_script(script, devices=devices, timeout=timeout)


def run_script(
    script: str,
    *,
    devices: int | None = None,
    cwd=None,
    inherit_pythonpath: bool = True,
    timeout: float = 300,
) -> str:
    """Runs ``script`` in a fresh CPU-only Python; asserts it exits 0 and returns its stdout.

    The repository root goes first on PYTHONPATH, so the child imports this checkout's jaxsam
    (``inherit_pythonpath=False``: the root alone). ``devices`` forces that many CPU devices;
    ``cwd`` defaults to the repository root.
    """
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    env = dict(os.environ)
    if devices is not None:
        flag = f"--xla_force_host_platform_device_count={devices}"
        env["XLA_FLAGS"] = (env.get("XLA_FLAGS", "") + " " + flag).strip()
    env["JAX_PLATFORMS"] = "cpu"
    rest = env.get("PYTHONPATH", "") if inherit_pythonpath else ""
    env["PYTHONPATH"] = str(root) + (os.pathsep + rest if rest else "")
    proc = subprocess.run(
        [sys.executable, "-c", script],
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=cwd or root,
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    return proc.stdout


# One persistent XLA compilation cache for the whole test run: most tests compile the same tiny
# programs, in this process, in pytest-xdist's other workers and in the `jaxsam` subprocesses
# they start. A positive size limit turns on jax's file lock, so that concurrent writers and
# readers of the cache never see half a file; it also makes every write list the directory, so
# only programs that took 0.25 s or more to compile are kept (caching each tiny op-by-op program
# too made the run slower, not faster).
_XLA_CACHE = {
    "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS": 0.25,
    "JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES": 0,
    "JAX_COMPILATION_CACHE_MAX_SIZE": 8 * 2**30,
}
# The tests' models are tiny, so compiling dominates their time: LLVM's optimisation level 0
# halves the compile time of a conv-net step (measured on the 2-core CPU: 14.6 s to 6.6 s for
# test_one_vmapped_step_equals_the_loop[cnn]); with four heavy-model tests moved to -m slow,
# the default run on 2 workers went from 13.4 to 6.3 minutes. It changes the machine code, not
# the HLO program (fusion and buffer assignment are the same), but it may round float32 sums
# differently in the last bits, as another XLA version would: tests that compare two
# computations allow for summation order, and the bitwise tests compare runs made under the
# same flags (subprocesses inherit them).
_XLA_FLAG = "--xla_backend_optimization_level=0"
_SAVED_ENV: dict[str, str | None] = {}
_CACHE_DIR: list[str] = []  # the controller's cache directory, removed at the end


def pytest_configure(config):
    """Points every process of the run at a fresh compilation cache (the controller only:
    xdist's workers and all subprocesses inherit its environment)."""
    if hasattr(config, "workerinput"):
        return
    import sys
    import tempfile

    _CACHE_DIR.append(tempfile.mkdtemp(prefix="jaxsam-tests-xla-"))
    settings = {
        "JAX_COMPILATION_CACHE_DIR": _CACHE_DIR[0],
        **_XLA_CACHE,
    }
    flags = os.environ.get("XLA_FLAGS", "")
    if "xla_backend_optimization_level" not in flags:
        settings["XLA_FLAGS"] = f"{flags} {_XLA_FLAG}".strip()
    for key, value in settings.items():
        _SAVED_ENV[key] = os.environ.get(key)
        os.environ[key] = str(value)
    if "jax" in sys.modules:  # imported already: the environment is read only at import
        import jax

        for key, value in settings.items():
            if key.startswith("JAX_"):  # XLA_FLAGS reach only the subprocesses then
                jax.config.update(key.lower(), value)


def pytest_unconfigure(config):
    if hasattr(config, "workerinput") or not _CACHE_DIR:
        return
    import shutil

    shutil.rmtree(_CACHE_DIR.pop(), ignore_errors=True)
    for key, value in _SAVED_ENV.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value


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


def one_line_error(capsys, fragment: str) -> str:
    """The captured stderr of a refused command: one line, no traceback, holding ``fragment``."""
    err = capsys.readouterr().err.strip()
    assert "Traceback" not in err and len(err.splitlines()) == 1, err
    assert fragment in err, err
    return err


def unscored_copy(run_path, dest):
    """A copy of the run directory ``run_path`` at ``dest`` without its scores, reports and
    analysis (as training leaves it before ``jaxsam score``)."""
    import shutil
    from pathlib import Path

    dest = Path(dest)
    shutil.copytree(run_path, dest)
    for name in ("report.json", "report.md", "scores", "analysis.json", "plots"):
        p = dest / name
        shutil.rmtree(p) if p.is_dir() else p.unlink(missing_ok=True)
    return dest


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory):
    """A finished tiny SGD run directory (trained once per session)."""
    from jaxsam.pipeline import train_and_export

    out = tmp_path_factory.mktemp("runs") / "sgd"
    return train_and_export(tiny_config(), out)


@pytest.fixture
def numpy_path(monkeypatch):
    """A context switch: ``with numpy_path(): ...`` runs the code without the kernels."""
    import contextlib

    @contextlib.contextmanager
    def off():
        monkeypatch.setenv("JAXSAM_NO_NUMBA", "1")
        try:
            yield
        finally:
            monkeypatch.delenv("JAXSAM_NO_NUMBA")

    return off
