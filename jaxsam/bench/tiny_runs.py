"""Tiny runs in child processes: start, kill, resume and compare them bitwise.

What ``jaxsam bench faults`` and the reliability tests share: a tiny config (4 MLPs on 200
digits, 2 epochs of 4 steps, 2 steps per jitted call, a checkpoint every 2 steps), ``python -m
jaxsam`` children that may be SIGKILLed at a fault hook point (:data:`jaxsam.bench.faults.
KILL_POINTS`) or at a time, and the bitwise comparison of a resumed run with a reference.
Children share a persistent XLA compilation cache (:func:`use_compilation_cache`): a cached
executable is the same machine code, so results stay bitwise and children skip most compiles.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

# The tiny study (see the module docstring).
TINY = {
    "data.pool_size": 200,
    "data.test_size": 50,
    "masks.models": 4,
    "model.width": 32,
    "train.epochs": 2,
    "train.batch_size": 32,
    "train.steps_per_call": 2,
    "train.checkpoint_every_steps": 2,
    "train.progress": False,
}


def tiny_config(**overrides):
    """The :data:`TINY` config with ``overrides`` (dotted keys)."""
    from jaxsam import config as config_lib

    return config_lib.replace(config_lib.Config(), **{**TINY, **overrides})


def write_config(path: Path, **overrides) -> Path:
    from jaxsam import config as config_lib

    path.write_text(json.dumps(config_lib.to_dict(tiny_config(**overrides))))
    return path


_CACHE_DIR: list[str] = []  # a persistent XLA cache shared by the children (same executables)


def use_compilation_cache(directory: Path) -> None:
    """Makes every child process share the persistent compilation cache in ``directory``."""
    _CACHE_DIR[:] = [str(directory)]


def _child_cmd(args: list[str], kill_at: str | None = None) -> tuple[list[str], dict]:
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(
            [str(Path(__file__).parents[2]), os.environ.get("PYTHONPATH", "")]
        ),
    }
    env.setdefault("JAX_PLATFORMS", "cpu")
    if _CACHE_DIR:
        env["JAX_COMPILATION_CACHE_DIR"] = _CACHE_DIR[0]
        env["JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS"] = "0"
        env["JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES"] = "0"
    child = ["jaxsam"] if kill_at is None else ["jaxsam.bench.faults", "--child", kill_at, "--"]
    return [sys.executable, "-m", *child, *args], env


def train_args(config_file: Path, out: Path) -> list[str]:
    return ["train", "--config", str(config_file), "--out", str(out), "--no-progress"]


def run_child(args: list[str], kill_at: str | None = None, timeout: float = 600) -> int:
    """Runs ``jaxsam ARGS`` in a subprocess (killed at ``kill_at``); returns its exit status."""
    cmd, env = _child_cmd(args, kill_at)
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=timeout)
    if proc.returncode not in (0, -signal.SIGKILL):
        raise RuntimeError(f"{' '.join(cmd)} failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    return proc.returncode


def run_child_status(args: list[str], kill_at: str | None = None) -> tuple[int, str]:
    """Runs ``jaxsam ARGS`` in a subprocess (see :func:`run_child`); returns its exit status and
    its stderr, whatever the status."""
    cmd, env = _child_cmd(args, kill_at)
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    return proc.returncode, proc.stderr


def run_and_kill_after(args: list[str], out: Path, delay: float | None) -> tuple[bool, float]:
    """Starts ``jaxsam ARGS``; SIGKILLs it ``delay`` s after ``out/run.json`` appears.

    Returns whether the kill landed (False: the process had already finished) and the seconds
    from ``run.json`` appearing to the process's end. ``delay=None`` never kills (timing run).
    """
    cmd, env = _child_cmd(args)
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    while not (out / "run.json").exists() and proc.poll() is None:
        time.sleep(0.02)
    t1 = time.monotonic()
    time.sleep(delay or 0.0)
    landed = delay is not None and proc.poll() is None
    if landed:
        proc.send_signal(signal.SIGKILL)
    if proc.wait(timeout=600) != 0 and delay is None:
        raise RuntimeError(f"jaxsam {' '.join(args)} failed ({proc.returncode})")
    return landed, time.monotonic() - t1


def warm_seconds(cfg_file: Path, work: Path) -> float:
    """Trains the reference ``work/ref``; returns how long a compile-cached rerun runs (the
    window, from ``run.json`` appearing to the end, in which random kills land)."""
    run_and_kill_after(train_args(cfg_file, work / "ref"), work / "ref", None)
    seconds = run_and_kill_after(train_args(cfg_file, work / "timing"), work / "timing", None)[1]
    shutil.rmtree(work / "timing", ignore_errors=True)
    return seconds


def resume(out: Path, kill_at: str | None = None) -> int:
    return run_child(["train", "--resume", str(out), "--no-progress"], kill_at)


def looks_complete(out: Path) -> bool:
    """Whether ``load_run`` accepts ``out`` (with its logits)."""
    from jaxsam import store
    from jaxsam.errors import RunDirError

    try:
        store.load_run(out).logits  # noqa: B018
    except RunDirError:
        return False
    return True


def bitwise_equal(a: np.ndarray, b: np.ndarray) -> bool:
    """Same shape, dtype and bits (NaNs included)."""
    a, b = np.asarray(a), np.asarray(b)
    return a.shape == b.shape and a.dtype == b.dtype and a.tobytes() == b.tobytes()


def same_run(out: Path, ref) -> bool:
    """Whether run ``out`` has bitwise the reference's masks, logits and failed models."""
    from jaxsam import store

    run = store.load_run(out)
    return (
        bitwise_equal(run.keep, ref.keep)
        and bitwise_equal(run.logits, ref.logits)
        and bitwise_equal(run.test_logits, ref.test_logits)
        and run.failed_models == ref.failed_models
    )
