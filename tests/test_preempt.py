"""SIGTERM / SIGINT during ``jaxsam train``: checkpoint, say how to resume, exit non-zero.

Real ``python -m jaxsam`` subprocesses. A signal is sent from inside the child at a hook point
(after a given jitted call), so it lands at a known moment; one test sends it from outside at
an arbitrary moment, as a scheduler does.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from jaxsam import store
from jaxsam.bench import tiny_runs as runs

# Sends SIGNAL to this process COUNT times after jitted call K, then runs `jaxsam ARGS`.
CHILD = """
import os, signal, sys, time
from jaxsam import cli, hooks
k, count, sig = int(sys.argv[1]), int(sys.argv[2]), getattr(signal, sys.argv[3])
calls = [0]
def hook(value, **context):
    calls[0] += 1
    if calls[0] == k:
        for _ in range(count):
            os.kill(os.getpid(), sig)
            time.sleep(0.3)
    return value
with hooks.installed("train_call", hook):
    sys.exit(cli.main(sys.argv[4:]))
"""

# No checkpoint on the cadence: any checkpoint on disk was written because of the signal.
NO_CADENCE = {"train.checkpoint_every_steps": 0, "train.checkpoint_every_minutes": 0}


@pytest.fixture(scope="module")
def work(tmp_path_factory):
    work = tmp_path_factory.mktemp("preempt")
    runs.use_compilation_cache(work / "xla-cache")
    return work


def _child(args: list[str], k: int, count: int, sig: str = "SIGTERM"):
    cmd, env = runs._child_cmd([])
    cmd = [sys.executable, "-c", CHILD, str(k), str(count), sig, *args]
    return subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)


def _checkpoint_steps(out: Path) -> list[int]:
    d = out / "checkpoints"
    return sorted(int(p.name) for p in d.iterdir() if p.name.isdigit()) if d.is_dir() else []


@pytest.mark.parametrize("sig", ["SIGTERM", "SIGINT"])
def test_signal_writes_a_checkpoint_says_how_to_resume_and_resume_completes(work, sig):
    cfg = runs.write_config(work / f"config-{sig}.json", **NO_CADENCE)
    out = work / f"run-{sig}"
    proc = _child(runs.train_args(cfg, out), k=1, count=1, sig=sig)
    signum = getattr(signal, sig)
    assert proc.returncode == 128 + signum, proc.stderr[-2000:]
    assert f"jaxsam train --resume {out}" in proc.stderr
    assert _checkpoint_steps(out) == [2]  # the first call (2 steps) finished and was saved
    assert not store.is_complete(out)
    # The previous handlers are back and the resumed run completes.
    assert runs.resume(out) == 0
    assert store.is_complete(out)
    assert store.load_run(out).logits.shape[0] == 4


def test_resumed_run_after_sigterm_is_bitwise_the_uninterrupted_run(work):
    cfg = runs.write_config(work / "config-ref.json", **NO_CADENCE)
    ref = work / "ref"
    assert runs.run_child(runs.train_args(cfg, ref)) == 0
    out = work / "bitwise"
    assert _child(runs.train_args(cfg, out), k=2, count=1).returncode == 128 + signal.SIGTERM
    assert runs.resume(out) == 0
    assert runs.same_run(out, store.load_run(ref))


def test_second_signal_exits_at_once_without_a_checkpoint(work):
    cfg = runs.write_config(work / "config-twice.json", **NO_CADENCE)
    out = work / "twice"
    proc = _child(runs.train_args(cfg, out), k=1, count=2)
    assert proc.returncode == 128 + signal.SIGTERM, proc.stderr[-2000:]
    assert "exiting at once" in proc.stderr
    assert _checkpoint_steps(out) == []  # it did not wait to write one
    assert not store.is_complete(out)


def test_sigterm_from_outside_leaves_a_resumable_run(work):
    """A scheduler's SIGTERM at an arbitrary moment of a long run: non-zero, checkpoint, resume."""
    cfg = runs.write_config(work / "config-long.json", **{"train.epochs": 100, **NO_CADENCE})
    out = work / "long"
    cmd, env = runs._child_cmd(runs.train_args(cfg, out))
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 300
    while not (out / "run.json").exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    time.sleep(1.0)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=300)
    assert proc.returncode != 0 and proc.returncode > 0, err[-2000:]
    assert "--resume" in err
    assert _checkpoint_steps(out), "no checkpoint on disk after SIGTERM"
    info = json.loads((out / "run.json").read_text())
    assert info["status"] == "training"
    assert runs.resume(out) == 0
    assert store.is_complete(out)


def test_handlers_are_restored_after_training(tmp_path):
    from jaxsam.pipeline import train_and_export
    from tests.conftest import tiny_config

    before = {s: signal.getsignal(s) for s in (signal.SIGTERM, signal.SIGINT)}
    train_and_export(tiny_config(**{"train.epochs": 1}), tmp_path / "run")
    assert {s: signal.getsignal(s) for s in before} == before
