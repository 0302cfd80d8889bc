"""File digests of a finished run, the run-directory lock, and runs without a test split.

Exit codes and the lock are checked through real ``python -m jaxsam`` subprocesses.
"""

from __future__ import annotations

import json
import logging
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from jaxsam import cli, store
from jaxsam.bench import tiny_runs as runs
from jaxsam.errors import RunDirError, RunExistsError, WriteFailed
from jaxsam.pipeline import train_and_export
from jaxsam.store import checkpoints as ckpt_lib
from jaxsam.store.lock import other_writer
from jaxsam.train.loop import train_ensemble

from .fault_harness import cached_work_dir


@pytest.fixture(scope="module")
def work(tmp_path_factory):
    return cached_work_dir(tmp_path_factory, "integrity")


@pytest.fixture(scope="module")
def finished(work):
    """A finished tiny run (trained once); tests copy it before changing it."""
    return train_and_export(runs.tiny_config(), work / "finished").path


@pytest.fixture
def run_copy(finished, tmp_path):
    out = tmp_path / "run"
    shutil.copytree(finished, out)
    return out


def _jaxsam(*args: str, timeout: float = 600) -> subprocess.CompletedProcess:
    cmd, env = runs._child_cmd(list(args))
    return subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=timeout)


def _logit_files(run: Path) -> list[Path]:
    return sorted(p for p in (run / "logits").rglob("*") if p.is_file() and p.stat().st_size)


def _flip_a_byte(path: Path, offset: int | None = None) -> None:
    data = bytearray(path.read_bytes())
    i = len(data) // 2 if offset is None else offset
    data[i] ^= 0x01
    path.write_bytes(bytes(data))


# --- digests -------------------------------------------------------------------------------


def test_finished_run_records_a_digest_of_every_array_and_metadata_file(finished):
    files = json.loads((finished / store.DIGESTS).read_text())["files"]
    for name in ("config.json", "run.json", "logits.json", "metrics.json"):
        assert name in files
    assert any(n.startswith("masks/") for n in files)
    assert any(n.startswith("logits/") for n in files)
    assert store.verify_digests(finished)


def test_score_refuses_altered_logits_and_names_the_file(run_copy):
    victim = max(_logit_files(run_copy), key=lambda p: p.stat().st_size)
    _flip_a_byte(victim)
    proc = _jaxsam("score", str(run_copy), "--bootstrap", "0")
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert str(victim) in proc.stderr
    assert "Traceback" not in proc.stderr
    assert not (run_copy / "report.json").exists()


def test_every_altered_file_is_refused_and_no_verify_reads_it_anyway(run_copy):
    files = json.loads((run_copy / store.DIGESTS).read_text())["files"]
    for name in ("metrics.json", "logits.json"):
        text = (run_copy / name).read_text()
        (run_copy / name).write_text(text + " ")
        with pytest.raises(RunDirError, match=name):
            store.load_run(run_copy)
        (run_copy / name).write_text(text)
    mask_file = next(run_copy / n for n in sorted(files) if n.startswith("masks/"))
    original = mask_file.read_bytes()
    _flip_a_byte(mask_file, offset=len(original) - 1)
    with pytest.raises(RunDirError, match="sha256 mismatch"):
        store.load_run(run_copy)
    mask_file.write_bytes(original)
    victim = _logit_files(run_copy)[-1]
    _flip_a_byte(victim)
    with pytest.raises(RunDirError, match=str(victim)):
        store.load_run(run_copy)
    store.load_run(run_copy, verify=False)  # the only way around


def test_logits_copied_from_another_run_with_the_same_masks_are_refused(run_copy, tmp_path):
    other = train_and_export(runs.tiny_config(**{"train.seed": 1}), tmp_path / "other").path
    assert (
        store.read_run_info(other)["masks_fingerprint"]
        == store.read_run_info(run_copy)["masks_fingerprint"]
    )
    shutil.rmtree(run_copy / "logits")
    shutil.copytree(other / "logits", run_copy / "logits")
    with pytest.raises(RunDirError, match="logits"):
        store.load_run(run_copy)


def test_run_without_digests_still_loads_with_a_note(run_copy, capsys):
    (run_copy / store.DIGESTS).unlink()
    run = store.load_run(run_copy)
    assert run.logits.shape[0] == 4
    assert "not verified" in capsys.readouterr().err


def test_analyze_and_compare_verify_too(run_copy, capsys):
    _flip_a_byte(_logit_files(run_copy)[-1])
    for argv in (["analyze", str(run_copy)], ["compare", str(run_copy)]):
        assert cli.main(argv) == 2
        assert "sha256 mismatch" in capsys.readouterr().err
    assert cli.main(["compare", str(run_copy), "--no-verify"]) == 0


def test_a_checkpoint_without_its_digest_is_not_trusted(tmp_path, capsys):
    from jaxsam.data import load_pool, make_masks

    config = runs.tiny_config()
    pool = load_pool(config.data)
    keep = make_masks(4, pool.size, 0.5, 0)
    train_ensemble(config, pool, keep, run_dir=tmp_path)
    newest = max((tmp_path / "checkpoints").iterdir(), key=lambda p: int(p.name))
    meta_file = newest / "meta" / "metadata"
    meta = json.loads(meta_file.read_text())
    del meta["digest"]
    meta_file.write_text(json.dumps(meta))
    fp = ckpt_lib.fingerprint(
        store.masks_fingerprint(pool.origin()["fingerprint"], keep), 0, config
    )
    from jaxsam.train.setup import make_setup
    from jaxsam.train.state import init_ensemble

    setup = make_setup(config, pool, keep, None)
    like = init_ensemble(setup.model, setup.tx, 4, pool.input_shape, 0, 0)
    restored = ckpt_lib.Checkpoints(tmp_path, config, fp).restore(like)
    assert restored is not None and restored.step < int(newest.name)
    assert "no digest" in capsys.readouterr().out


# --- lock ----------------------------------------------------------------------------------

# Holds RUN's lock until killed, printing "locked" once it has it.
HOLDER = """
import sys, time
from jaxsam import store
with store.run_lock(sys.argv[1], "train"):
    print("locked", flush=True)
    time.sleep(600)
"""


def _hold_lock(path: Path) -> subprocess.Popen:
    proc = subprocess.Popen(
        [sys.executable, "-c", HOLDER, str(path)], stdout=subprocess.PIPE, text=True
    )
    assert proc.stdout.readline().strip() == "locked"
    return proc


def _release(holder: subprocess.Popen) -> None:
    """Kills a :func:`_hold_lock` process (the kernel drops its lock) and closes its pipe."""
    holder.kill()
    holder.wait()
    holder.stdout.close()


def test_second_train_overwrite_while_training_exits_2_and_names_the_holder(work):
    cfg = runs.write_config(work / "long.json", **{"train.epochs": 100})
    out = work / "busy"
    cmd, env = runs._child_cmd(runs.train_args(cfg, out))
    first = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 300
        while not (out / "run.json").exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        config_before = (out / "config.json").read_text()
        # The same command again: told another process writes R (before any other advice),
        # and never advised to resume a run that is still training.
        again = _jaxsam(*runs.train_args(cfg, out))
        assert again.returncode == 2, again.stderr[-2000:]
        err = again.stderr.strip().splitlines()[-1]
        assert f"another process is writing {out}" in err and f"pid {first.pid}" in err
        assert "since" in err and "host" in err
        assert "--resume" not in err and "--overwrite" not in err
        second = _jaxsam(*runs.train_args(cfg, out), "--overwrite", "--set", "optim.name=sam")
        assert second.returncode == 2, second.stderr[-2000:]
        assert f"pid {first.pid}" in second.stderr and "since" in second.stderr
        resume = _jaxsam("train", "--resume", str(out))
        assert resume.returncode == 2 and f"pid {first.pid}" in resume.stderr
        assert first.poll() is None, "the first run was disturbed"
        assert (out / "config.json").read_text() == config_before
    finally:
        first.send_signal(signal.SIGKILL)
        first.wait()
        first.stderr.close()


def test_a_live_unfinished_run_names_its_writer_before_any_advice(run_copy):
    """check_run_dir on an unfinished run that another process holds: the holder, not resume."""
    (run_copy / store.COMPLETE).unlink()  # an unfinished run of this config
    cfg = runs.tiny_config()
    with pytest.raises(RunExistsError, match="unfinished run"):
        store.check_run_dir(run_copy, cfg)  # nobody writes it: resume is the right advice
    holder = _hold_lock(run_copy)
    try:
        for overwrite in (False, True):
            with pytest.raises(RunDirError) as e:
                store.check_run_dir(run_copy, cfg, overwrite=overwrite)
            msg = str(e.value)
            assert not isinstance(e.value, RunExistsError)
            assert msg.startswith(f"another process is writing {run_copy}")
            assert f"pid {holder.pid}" in msg and "--resume" not in msg
        with pytest.raises(RunDirError, match=f"another process is writing .*pid {holder.pid}"):
            train_and_export(cfg, run_copy, resume=True)
    finally:
        _release(holder)
    assert other_writer(run_copy) is None  # the holder's lock went with it


def test_overwrite_names_the_files_jaxsam_did_not_write_in_a_run(run_copy):
    (run_copy / "notes.txt").write_text("mine")
    with pytest.raises(RunDirError) as e:
        store.check_run_dir(run_copy, runs.tiny_config(**{"optim.name": "sam"}), overwrite=True)
    msg = str(e.value)
    assert "files jaxsam did not write: notes.txt;" in msg
    assert "not a jaxsam run directory" not in msg and (run_copy / "notes.txt").exists()


def test_score_is_refused_while_another_process_holds_the_lock(run_copy):
    holder = _hold_lock(run_copy)
    try:
        proc = _jaxsam("score", str(run_copy), "--bootstrap", "0")
        assert proc.returncode == 2
        assert f"pid {holder.pid}" in proc.stderr and "in use" in proc.stderr
    finally:
        _release(holder)
    # A dead holder never blocks: its lock went with it.
    assert (run_copy / store.LOCK_FILE).exists()
    assert _jaxsam("score", str(run_copy), "--bootstrap", "0").returncode == 0
    assert (run_copy / "report.json").exists()


def test_lock_is_reentrant_in_one_process_and_released_after(tmp_path):
    with store.run_lock(tmp_path, "train"), store.run_lock(tmp_path, "score"):
        pass
    holder = _hold_lock(tmp_path)  # another process can take it now
    _release(holder)


def test_waves_lock_their_own_work_directory(tmp_path):
    from jaxsam.store import waves as wave_store

    work = wave_store.work_dir(tmp_path, 0, 2)
    holder = _hold_lock(work)
    try:
        with store.run_lock(wave_store.work_dir(tmp_path, 2, 4), "train"):  # another wave: free
            pass
        with pytest.raises(RunDirError, match="in use"):
            with store.run_lock(work, "train"):
                pass
    finally:
        _release(holder)


def test_score_of_a_missing_directory_creates_nothing(tmp_path):
    proc = _jaxsam("score", str(tmp_path / "nope"))
    assert proc.returncode == 2 and "does not exist" in proc.stderr
    assert not (tmp_path / "nope").exists()


# --- data.test_split=null ------------------------------------------------------------------


def test_no_test_split_trains_and_scores(work):
    cfg = runs.write_config(work / "no-test.json", **{"data.test_size": None})
    out = work / "no-test"
    proc = _jaxsam(*runs.train_args(cfg, out), "--set", "data.test_split=null")
    assert proc.returncode == 0, proc.stderr[-3000:]
    run = store.load_run(out)
    assert run.test_logits.shape[1] == 0 and run.test_logits.ndim == 4
    assert run.test_labels.shape == (0,)
    assert run.metrics["mean_heldout_accuracy"] is None
    assert np.isfinite(run.logits).all()
    proc = _jaxsam("score", str(out), "--bootstrap", "0")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert json.loads((out / "report.json").read_text())["accuracy"]["heldout"] is None


def test_a_test_size_without_a_test_split_is_refused_clearly(work):
    cfg = runs.write_config(work / "no-test-size.json")  # data.test_size = 50
    out = work / "no-test-size"
    proc = _jaxsam(*runs.train_args(cfg, out), "--set", "data.test_split=null")
    assert proc.returncode == 2
    assert "data.test_size" in proc.stderr and "data.test_split is null" in proc.stderr
    assert not out.exists(), "a refused config left a directory behind"


# --- a failed asynchronous save at close -------------------------------------------------------


class _ManagerFailingAtClose:
    """An orbax manager whose failed background write is reported only by ``close``: orbax
    does this when ``wait_until_finished`` already raised the error once."""

    def wait_until_finished(self):
        pass

    def close(self):
        raise OSError(28, "No space left on device")


@pytest.fixture
def failing_close(tmp_path):
    """Checkpoints with step 2 good and step 4 pending, whose manager fails at close."""
    ckpts = ckpt_lib.Checkpoints(tmp_path, runs.tiny_config(), "fp")
    ckpts.manager.close()
    ckpts.manager, ckpts.pending, ckpts.last_good = _ManagerFailingAtClose(), 4, 2
    yield ckpts
    logging.getLogger("absl").removeFilter(ckpts._log_filter)  # a failed save leaves both on
    sys.unraisablehook = ckpts._unraisable


def test_close_during_another_error_keeps_that_error_and_stays_quiet(failing_close):
    """While another error leaves the loop, a save failure reported by orbax's ``close`` must
    not replace it (a CI failure: a bare OSError, then 36 lines of thread tracebacks)."""
    failing_close.close(raise_errors=False)  # returns: the error on its way out is reported
    assert failing_close.last_good == 2, "a save whose close failed is not good"
    assert failing_close._log_filter in logging.getLogger("absl").filters, "late reports dropped"


def test_close_at_a_normal_end_reports_a_save_failure_held_back_until_close(failing_close):
    with pytest.raises(WriteFailed, match=r"step 4 .*disk is full.*\(step 2\) is intact"):
        failing_close.close(raise_errors=True)
