"""SIGKILL a real ``python -m jaxsam train`` subprocess, resume it, compare logits bitwise.

The children share a persistent XLA compilation cache (the same executables, so the same bits)
to keep this file short on a small CPU.
"""

import random
import signal

import pytest

from jaxsam import store
from jaxsam.bench import tiny_runs as runs


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    work = tmp_path_factory.mktemp("faults")
    runs.use_compilation_cache(work / "xla-cache")
    cfg = runs.write_config(work / "config.json")
    seconds = runs.warm_seconds(cfg, work)
    ref = store.load_run(work / "ref")
    ref.logits  # noqa: B018
    return work, cfg, ref, seconds


def _chain(setup, name: str, seed: int, stages: list[str]) -> int:
    """Kills a run at each stage in turn (``random``: a random time), resumes, compares."""
    work, cfg, ref, seconds = setup
    rng = random.Random(seed)
    out = work / name
    kills = 0
    first = True
    for stage in stages:
        if stage == "random":
            assert first, "a random-time kill starts the chain"
            landed = runs.run_and_kill_after(
                runs.train_args(cfg, out), out, rng.uniform(0, seconds)
            )[0]
        else:
            args = runs.train_args(cfg, out) if first else ["train", "--resume", str(out)]
            landed = runs.run_child([*args, "--no-progress"], stage) == -signal.SIGKILL
        first = False
        if not landed:  # the run finished before this kill point
            break
        kills += 1
        if runs.looks_complete(out):
            # Killed after COMPLETE was written (while the process was exiting): then it must
            # really be the whole run.
            assert stage == "random", f"killed at {stage}, the run looked complete"
            break
    if not runs.looks_complete(out):
        runs.resume(out)
    assert runs.same_run(out, ref), "the resumed run's logits differ from the reference"
    return kills


def test_sigkill_in_training_save_and_export_then_resume_is_bitwise(setup):
    rng = random.Random(0)
    stages = [f"train:{rng.randint(1, 3)}", "save:1", "export", "finish"]
    assert _chain(setup, "chain", 0, stages) == 4


@pytest.mark.slow  # the same kill-and-resume path as above, at a random time
def test_sigkill_at_a_random_time_then_resume_is_bitwise(setup):
    _chain(setup, "random", 1, ["random", f"save:{random.Random(1).randint(1, 2)}"])


@pytest.mark.slow
@pytest.mark.parametrize("seed", range(2, 8))
def test_sigkill_at_more_random_times(setup, seed):
    _chain(setup, f"random-{seed}", seed, ["random"])


def test_a_real_full_disk_under_an_async_checkpoint_write_then_resume(setup):
    """A 16 MiB tmpfs filled while the first checkpoint's write is in flight: exit 2 with one
    line, no COMPLETE; after freeing space, --resume ends bitwise equal (root only)."""
    from . import fault_harness as faults

    work, cfg, ref, _ = setup
    ok, note = faults.real_full_disk(work, cfg, ref)
    if ok is None:
        pytest.skip(note)
    assert ok, note


def test_full_disk_case_is_skipped_not_passed_without_root(setup, monkeypatch):
    from . import fault_harness as faults

    work, cfg, ref, _ = setup
    monkeypatch.setattr(faults.os, "geteuid", lambda: 1000)
    ok, note = faults.real_full_disk(work, cfg, ref)
    assert ok is None and "root" in note
