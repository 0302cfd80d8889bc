"""Resume in-process: call plans, crashes, damaged / foreign checkpoints, failing writes."""

import itertools
import shutil

import jax.numpy as jnp
import numpy as np
import pytest

from jaxsam import hooks, store
from jaxsam.bench import tiny_runs as runs
from jaxsam.errors import RunDirError
from jaxsam.pipeline import train_and_export
from jaxsam.store import checkpoints as ckpt_lib
from jaxsam.train.loop import _call_schedule
from jaxsam.train.state import EnsembleState

from .fault_harness import Crash, crash_at_call, crash_before_complete


@pytest.fixture(scope="module")
def ref(tmp_path_factory):
    """The uninterrupted tiny run (checkpoint every 2 steps, 2 steps per call, 8 steps)."""
    return train_and_export(runs.tiny_config(), tmp_path_factory.mktemp("ref") / "run")


@pytest.mark.parametrize(
    "spe, epochs, per_call", list(itertools.product([1, 4, 7], [1, 3], [None, 1, 2, 3, 5, 9]))
)
def test_resumed_call_plan_is_the_tail_of_the_uninterrupted_one(spe, epochs, per_call):
    total = spe * epochs
    full = _call_schedule(0, total, spe, per_call)
    assert sum(n for _, n in full) == total
    assert all(s // spe == (s + n - 1) // spe for s, n in full), "a call crosses an epoch"
    for i, (step0, _) in enumerate(full):
        # Checkpoints are only taken at call boundaries: resuming there replays the same calls.
        assert _call_schedule(step0, total, spe, per_call) == full[i:]


def test_crash_mid_training_then_resume_is_bitwise(ref, tmp_path):
    out = tmp_path / "run"
    with crash_at_call(3), pytest.raises(Crash):
        train_and_export(runs.tiny_config(), out)
    assert sorted(int(p.name) for p in (out / "checkpoints").iterdir()) == [2, 4]
    with pytest.raises(RunDirError, match="not complete"):
        store.load_run(out)
    assert runs.same_run(train_and_export(runs.tiny_config(), out, resume=True).path, ref)


@pytest.fixture(scope="module")
def crashed_in_export(tmp_path_factory):
    """A run that crashed after its last checkpoint, before COMPLETE (trained once)."""
    out = tmp_path_factory.mktemp("crashed") / "run"
    with crash_before_complete(), pytest.raises(Crash):
        train_and_export(runs.tiny_config(), out)
    return out


@pytest.mark.parametrize("damage", sorted(hooks.CHECKPOINT_DAMAGE))
def test_damaged_newest_checkpoint_falls_back_with_a_warning(
    ref, crashed_in_export, tmp_path, capsys, damage
):
    out = tmp_path / "run"
    shutil.copytree(crashed_in_export, out)
    newest = hooks.newest_checkpoint(out)
    assert newest.name == "8"
    hooks.CHECKPOINT_DAMAGE[damage](newest)
    run = train_and_export(runs.tiny_config(), out, resume=True)
    assert runs.same_run(run.path, ref)
    assert run.metrics["final_batch_loss"] == ref.metrics["final_batch_loss"]
    assert "checkpoint at step 8 is damaged" in capsys.readouterr().out


def test_damaged_checkpoint_warning_names_step(tmp_path, capsys):
    state = EnsembleState(jnp.int32(1), {"w": jnp.arange(600.0).reshape(3, 200)}, {}, ())
    manager = ckpt_lib.make_manager(tmp_path / "ckpt")
    for step in (1, 2):
        ckpt_lib.save(
            manager,
            state.replace(step=jnp.int32(step), params={"w": state.params["w"] * step}),
            failed_models=[1],
            fingerprint="f",
            losses=np.zeros(3),
            accuracies=np.ones(3),
        )
    manager.wait_until_finished()
    hooks.flip_checkpoint_byte(tmp_path / "ckpt" / "2")
    restored = ckpt_lib.restore_latest(ckpt_lib.make_manager(tmp_path / "ckpt"), state, "f")
    assert restored.step == 1 and restored.failed_models == [1]
    np.testing.assert_array_equal(restored.state.params["w"], state.params["w"])
    assert "checkpoint at step 2 is damaged" in capsys.readouterr().out
    assert not (tmp_path / "ckpt" / "2").exists(), "the damaged step would block a new save"
    with pytest.raises(RunDirError, match="fingerprint mismatch"):
        ckpt_lib.restore_latest(ckpt_lib.make_manager(tmp_path / "ckpt"), state, "other")


def test_every_checkpoint_damaged_restarts_from_scratch(ref, tmp_path, capsys):
    out = tmp_path / "run"
    with crash_at_call(3), pytest.raises(Crash):
        train_and_export(runs.tiny_config(), out)
    for ckpt in (out / "checkpoints").iterdir():
        hooks.truncate_checkpoint(ckpt)
    assert runs.same_run(train_and_export(runs.tiny_config(), out, resume=True).path, ref)
    assert capsys.readouterr().out.count("is damaged") == 2


@pytest.mark.slow  # end to end; restore_latest's refusal is tested above without training
def test_checkpoint_of_other_masks_is_refused(ref, tmp_path):
    out = tmp_path / "run"
    with crash_at_call(3), pytest.raises(Crash):
        train_and_export(runs.tiny_config(), out)
    other = tmp_path / "other"
    with crash_at_call(3), pytest.raises(Crash):
        train_and_export(runs.tiny_config(**{"train.seed": 7}), other)
    shutil.rmtree(out / "checkpoints")
    shutil.copytree(other / "checkpoints", out / "checkpoints")
    with pytest.raises(RunDirError, match="fingerprint mismatch"):
        train_and_export(runs.tiny_config(), out, resume=True)


def test_failing_checkpoint_write_keeps_the_last_good_one(ref, tmp_path):
    full_disk = hooks.raise_at(3, OSError(28, "No space left on device"))
    out = tmp_path / "run"
    with hooks.installed("checkpoint", full_disk):
        with pytest.raises(RunDirError, match=r"checkpoint at step 6 .* last good checkpoint"):
            train_and_export(runs.tiny_config(), out)
    assert sorted(int(p.name) for p in (out / "checkpoints").iterdir()) == [2, 4]
    assert runs.same_run(train_and_export(runs.tiny_config(), out, resume=True).path, ref)


def test_resume_of_a_run_killed_while_starting(ref, tmp_path, monkeypatch):
    out = tmp_path / "run"
    real = store.save_arrays

    def die_on_masks(path, tree):
        if path.name == "masks":
            raise Crash
        return real(path, tree)

    monkeypatch.setattr(store.lifecycle, "save_arrays", die_on_masks)
    with pytest.raises(Crash):
        train_and_export(runs.tiny_config(), out)
    monkeypatch.undo()
    assert (out / "config.json").exists() and not (out / "run.json").exists()
    assert runs.same_run(train_and_export(runs.tiny_config(), out, resume=True).path, ref)


_DAMAGED_READS = """
from pathlib import Path
import tempfile
import jax.numpy as jnp, numpy as np
from jaxsam import hooks
from jaxsam.store import arrays, checkpoints as ckpt_lib, masks
from jaxsam.train.state import EnsembleState

d = Path(tempfile.mkdtemp())
rng = np.random.default_rng(0)
params = {f"w{i}": jnp.asarray(rng.normal(size=(8, 256, 256)), jnp.float32) for i in range(6)}
state = EnsembleState(jnp.int32(1), params, {}, ())
manager = ckpt_lib.make_manager(d / "ckpt")
for step in (1, 2):
    ckpt_lib.save(manager, state.replace(step=jnp.int32(step)), failed_models=[],
                  fingerprint="f", losses=np.zeros(8), accuracies=np.ones(8))
manager.wait_until_finished()
hooks.truncate_checkpoint(d / "ckpt" / "2")
print("restored", ckpt_lib.restore_latest(ckpt_lib.make_manager(d / "ckpt"), state, "f").step)
keep = rng.random((64, 2000)) < 0.5
ids, labels = np.arange(2000), rng.integers(0, 10, 2000).astype(np.int32)
arrays.save_arrays(d / "masks", {"keep": keep, "ids": ids, "labels": labels})
biggest = max((d / "masks").rglob("d/*"), key=lambda f: f.stat().st_size)
data = bytearray(biggest.read_bytes())
data[len(data) // 2] ^= 0xFF
biggest.write_bytes(bytes(data))
print("repaired", masks.repair_masks(d, keep, ids, labels))
"""


def test_reading_damaged_checkpoints_and_masks_prints_only_the_warnings():
    # A failed orbax read used to leave ~200 lines behind the one-line warning: "Exception
    # ignored in: <coroutine ...>" per abandoned read, and "RuntimeError: Event loop is closed"
    # (printed by tensorstore's threads, so in a fresh process: pytest hooks neither in).
    import os
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    env = {**os.environ, "JAX_PLATFORMS": "cpu", "PYTHONPATH": str(root)}
    proc = subprocess.run(
        [sys.executable, "-c", _DAMAGED_READS], env=env, capture_output=True, text=True, timeout=300
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "restored 1" in proc.stdout and "repaired True" in proc.stdout, proc.stdout
    assert proc.stdout.count("warning: ") == 2, proc.stdout
    for noise in ("Traceback", "Exception ignored", "Event loop is closed", "never retrieved"):
        assert noise not in proc.stderr, proc.stderr[-2000:]


def test_abandoned_read_futures_are_dropped_and_other_asyncio_errors_kept(caplog):
    """1 run in 4 to 10 also printed asyncio's "Future exception was never retrieved" for the
    abandoned reads (logged, not raised); only those reports are dropped."""
    import logging
    import sys

    from jaxsam.store.files import quiet_failed_reads

    log = logging.getLogger("asyncio")
    read_error = ValueError('OUT_OF_RANGE: Error reading "opt_state.0" in OCDBT database')
    hooks = sys.unraisablehook, sys.excepthook, list(log.filters)
    try:
        with caplog.at_level(logging.ERROR, logger="asyncio"):
            with quiet_failed_reads() as quiet:
                quiet.failed = True  # the filter stays after a failed read: its futures come later
            log.error(
                "Future exception was never retrieved", exc_info=(ValueError, read_error, None)
            )
            log.error(
                "Future exception was never retrieved\nfuture: <Future exception=KeyError(1)>"
            )
            log.error("Task was destroyed but it is pending!")
    finally:  # the rest of this test process gets its hooks back
        sys.unraisablehook, sys.excepthook, log.filters[:] = hooks
    shown = [r.getMessage() for r in caplog.records]
    assert len(shown) == 2 and "KeyError" in shown[0] and "destroyed" in shown[1], shown
