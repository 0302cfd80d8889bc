"""Resume continues exactly the run that was started; nothing half-written, nothing deleted by
mistake; never a write or delete through a link; names escaped in reports.

Tiny runs (4 MLPs, 8 steps, :mod:`jaxsam.bench.tiny_runs`); exit codes through real
``python -m jaxsam`` subprocesses.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

from jaxsam import hooks, store
from jaxsam.bench import tiny_runs as runs
from jaxsam.errors import ConfigError, DataError, RunDirError
from jaxsam.pipeline import train_and_export
from jaxsam.pipeline.score import score_run
from jaxsam.report import compare_table
from jaxsam.store import checkpoints as ckpt_lib
from jaxsam.train import calibrate

from .fault_harness import Crash, cached_work_dir, crash_at_call


@pytest.fixture(scope="module")
def work(tmp_path_factory):
    return cached_work_dir(tmp_path_factory, "safety")


@pytest.fixture(scope="module")
def ref(work):
    """The uninterrupted tiny run."""
    return train_and_export(runs.tiny_config(), work / "ref")


@pytest.fixture(scope="module")
def crashed(work):
    """The tiny run killed at its third call (checkpoints at steps 2 and 4)."""
    out = work / "crashed"
    with crash_at_call(3), pytest.raises(Crash):
        train_and_export(runs.tiny_config(), out)
    return out


@pytest.fixture
def crashed_copy(crashed, tmp_path):
    out = tmp_path / "run"
    shutil.copytree(crashed, out, symlinks=True)
    return out


@pytest.fixture
def run_copy(ref, tmp_path):
    out = tmp_path / "finished"
    shutil.copytree(ref.path, out, symlinks=True)
    return out


def _jaxsam(*args: str) -> subprocess.CompletedProcess:
    cmd, env = runs._child_cmd(list(args))
    return subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)


def _snapshot(root: Path) -> dict[str, bytes | str]:
    """Every entry under ``root`` (links as their target, files as their bytes)."""
    out: dict[str, bytes | str] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            p = Path(dirpath) / name
            rel = str(p.relative_to(root))
            if p.is_symlink():
                out[rel] = "link:" + os.readlink(p)
            elif p.is_file():
                out[rel] = p.read_bytes()
            else:
                out[rel] = "dir"
    return out


def _tabular_npz(path: Path, *, shift: float = 0.0, test_label: int | None = None) -> Path:
    """A 4-class tabular npz: 200 pool rows and 50 held-out rows of 8 float features."""
    rng = np.random.default_rng(0)
    y = rng.integers(0, 4, 250).astype(np.int64)
    x = (rng.normal(size=(250, 8)) + y[:, None]).astype(np.float32)
    x[:200, 0] += shift
    y_test = y[200:].copy()
    if test_label is not None:
        y_test[3] = test_label
    np.savez(path, x=x[:200], y=y[:200], x_test=x[200:], y_test=y_test, num_classes=4)
    return path


# --- 3. resume continues exactly the run that was started -------------------------------------


def test_resume_reuses_the_stored_plan_not_the_strategy_table(ref, crashed_copy, monkeypatch):
    stored = json.loads((crashed_copy / "plan.json").read_text())
    assert stored["strategy"] == "vmap" and stored["conv_impl"] == "lax"

    def table_changed(*args, **kwargs):
        raise AssertionError("a resumed run chose its plan again")

    monkeypatch.setattr(calibrate, "auto_execution", table_changed)
    run = train_and_export(runs.tiny_config(), crashed_copy, resume=True)
    assert runs.same_run(run.path, ref)
    assert json.loads((crashed_copy / "plan.json").read_text()) == stored


def test_a_damaged_plan_is_refused_by_name(crashed_copy):
    (crashed_copy / "plan.json").write_text('{"strategy": "warp"}')
    with pytest.raises(RunDirError, match="plan.json does not hold an execution plan"):
        train_and_export(runs.tiny_config(), crashed_copy, resume=True)


def test_resume_refuses_input_features_that_changed(tmp_path):
    data = _tabular_npz(tmp_path / "data.npz")
    cfg = runs.tiny_config(**{"data.dataset": f"npz:{data}"})
    out = tmp_path / "run"
    with crash_at_call(3), pytest.raises(Crash):
        train_and_export(cfg, out)
    _tabular_npz(data, shift=0.5)  # same ids and labels, other features
    with pytest.raises(RunDirError, match="input features .* differ"):
        train_and_export(cfg, out, resume=True)
    _tabular_npz(data)  # restored: the run continues
    assert store.load_run(train_and_export(cfg, out, resume=True).path).logits.shape[0] == 4


def test_damaged_masks_are_rebuilt_on_resume(ref, crashed_copy, capsys):
    wrong = store.load_masks(crashed_copy)
    store.save_arrays(crashed_copy / "masks", {**wrong, "keep": ~wrong["keep"]})
    run = train_and_export(runs.tiny_config(), crashed_copy, resume=True)
    assert "masks is damaged" in capsys.readouterr().out
    assert runs.same_run(run.path, ref)
    assert list((crashed_copy / "damaged").iterdir()), "the damaged masks are kept aside"


def test_complete_is_never_written_for_a_run_that_does_not_read_back(
    ref, crashed_copy, monkeypatch
):
    real = store.write_digests

    def digests_then_damage(path):
        files = real(path)
        masks = store.load_masks(path)
        store.save_arrays(path / "masks", {**masks, "keep": ~masks["keep"]})
        return files

    monkeypatch.setattr(store.lifecycle, "write_digests", digests_then_damage)
    with pytest.raises(RunDirError, match="does not read back, so it was not marked complete"):
        train_and_export(runs.tiny_config(), crashed_copy, resume=True)
    assert not (crashed_copy / "COMPLETE").exists()
    monkeypatch.undo()
    assert runs.same_run(train_and_export(runs.tiny_config(), crashed_copy, resume=True).path, ref)


# --- 5. nothing half-written, nothing deleted by mistake --------------------------------------


def test_query_views_on_tabular_data_fail_before_anything_is_written(tmp_path):
    data = _tabular_npz(tmp_path / "data.npz")
    out = tmp_path / "run"
    cfg = runs.tiny_config(**{"data.dataset": f"npz:{data}", "data.query_augment": 18})
    with pytest.raises(ConfigError, match="data.query_augment = 18 .* tabular"):
        train_and_export(cfg, out)
    assert not out.exists()
    cfg = runs.tiny_config(**{"data.dataset": f"npz:{data}", "model.name": "cnn"})
    with pytest.raises(ConfigError, match="convolutional"):
        train_and_export(cfg, out)
    assert not out.exists()


def test_held_out_labels_out_of_range_fail_before_anything_is_written(tmp_path):
    data = _tabular_npz(tmp_path / "data.npz", test_label=7)
    out = tmp_path / "run"
    with pytest.raises(DataError, match=r"held-out labels must lie in \[0, 4\)"):
        train_and_export(runs.tiny_config(**{"data.dataset": f"npz:{data}"}), out)
    assert not out.exists()


def test_too_little_disk_fails_before_the_run_directory_exists(tmp_path):
    out = tmp_path / "new" / "run"
    with hooks.installed("free_space", lambda free, **_: 1000):
        with pytest.raises(RunDirError, match="not enough disk space .* checkpoints.* logits"):
            train_and_export(runs.tiny_config(), out)
    assert not (tmp_path / "new").exists()


def test_disk_estimate_covers_what_a_run_writes(ref):
    from jaxsam.plan import make_plan

    est = make_plan(runs.tiny_config()).disk  # the estimate the plan step checks
    one_ckpt = max(store.dir_bytes(p) for p in (ref.path / "checkpoints").iterdir())
    written = store.dir_bytes(ref.path) + ckpt_lib.KEEP_CHECKPOINTS * one_ckpt  # at the peak
    assert est.total >= written


def test_overwrite_refuses_a_directory_jaxsam_did_not_write(tmp_path):
    mine = tmp_path / "mine"
    (mine / "thesis").mkdir(parents=True)
    (mine / "thesis" / "chapter1.tex").write_text("years of work")
    (mine / "config.json").write_text(json.dumps({"editor": "vim"}))
    before = _snapshot(mine)
    cfg = runs.write_config(tmp_path / "cfg.json")
    for extra in (["--overwrite"], []):
        proc = _jaxsam(*runs.train_args(cfg, mine), *extra)
        assert proc.returncode == 2, proc.stderr
        err = proc.stderr.strip().splitlines()[-1]
        assert "not a jaxsam run directory" in err
        assert "--overwrite" not in err, "the refusal must not recommend --overwrite"
        assert _snapshot(mine) == before


def test_overwrite_keeps_the_old_run_until_the_new_one_has_started(run_copy, monkeypatch):
    before = _snapshot(run_copy)
    with hooks.installed("free_space", lambda free, **_: 1000):
        with pytest.raises(RunDirError, match="not enough disk space"):
            train_and_export(runs.tiny_config(**{"optim.name": "sam"}), run_copy, overwrite=True)
    assert _snapshot(run_copy) == before

    real = store.start_run

    def dies_after_the_config(path, config, *args, **kwargs):
        store.write_json(path / "config.json", {"half": "written"})
        raise Crash

    monkeypatch.setattr(store.lifecycle, "start_run", dies_after_the_config)
    with pytest.raises(Crash):
        train_and_export(runs.tiny_config(**{"optim.name": "sam"}), run_copy, overwrite=True)
    assert _snapshot(run_copy) == before, "a failed start moves the old run back"
    monkeypatch.setattr(store.lifecycle, "start_run", real)
    assert store.load_run(run_copy).config.optim.name == "sgd"


def test_overwrite_replaces_a_jaxsam_run_and_leaves_nothing_aside(run_copy):
    run = train_and_export(runs.tiny_config(**{"train.seed": 3}), run_copy, overwrite=True)
    assert run.config.train.seed == 3
    assert not [p for p in run_copy.iterdir() if p.name.startswith(store.ASIDE_PREFIX)]


# --- 6. links ---------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["report.md", "plots", "scores", ".jaxsam.lock"])
def test_score_never_writes_through_a_link(run_copy, tmp_path, name):
    outside = tmp_path / "outside"
    outside.mkdir()
    target = outside / "victim"
    if name in ("plots", "scores"):
        target.mkdir()
        (target / "keep.txt").write_text("precious")
    else:
        target.write_text("precious")
    (run_copy / name).unlink(missing_ok=True)  # the copied lock file; the others are absent
    os.symlink(target, run_copy / name)
    before = _snapshot(outside)
    with pytest.raises(RunDirError, match=f"{name} is a symbolic link"):
        with store.run_lock(run_copy, "score", create=False):
            score_run(store.load_run(run_copy), ["loss"], bootstrap=0, write=True)
    assert _snapshot(outside) == before


def test_score_command_refuses_a_plots_link_with_exit_2(run_copy, tmp_path):
    outside = tmp_path / "outside"
    outside.mkdir()
    os.symlink(outside, run_copy / "plots")
    proc = _jaxsam("score", str(run_copy), "--attacks", "loss", "--bootstrap", "0")
    assert proc.returncode == 2 and "plots is a symbolic link" in proc.stderr
    assert not any(outside.iterdir())
    assert not (run_copy / "report.json").exists()


def test_a_json_write_never_follows_a_crafted_temporary_file(run_copy, tmp_path):
    victim = tmp_path / "victim.txt"
    victim.write_text("precious")
    os.symlink(victim, run_copy / ".run.json.tmp")  # the name the old writer used
    store.update_run_info(run_copy, note="x")
    assert victim.read_text() == "precious"
    assert store.read_run_info(run_copy)["note"] == "x"


def test_resume_never_deletes_through_a_checkpoints_link(crashed_copy, tmp_path):
    outside = tmp_path / "elsewhere"
    shutil.move(crashed_copy / "checkpoints", outside)
    (outside / "7").mkdir()  # someone else's folder
    os.symlink(outside, crashed_copy / "checkpoints")
    before = _snapshot(outside)
    with pytest.raises(RunDirError, match="checkpoints is a symbolic link"):
        train_and_export(runs.tiny_config(), crashed_copy, resume=True)
    assert _snapshot(outside) == before


def test_a_damaged_checkpoint_is_moved_aside_not_deleted(ref, crashed_copy, capsys):
    newest = hooks.newest_checkpoint(crashed_copy)
    hooks.flip_checkpoint_byte(newest)

    def files(d: Path) -> dict:
        return {str(p.relative_to(d)): p.read_bytes() for p in d.rglob("*") if p.is_file()}

    damaged = files(newest)
    assert runs.same_run(train_and_export(runs.tiny_config(), crashed_copy, resume=True).path, ref)
    assert "moved it to" in capsys.readouterr().out
    (kept,) = (crashed_copy / "damaged").iterdir()
    assert files(kept / newest.name) == damaged


def test_names_in_reports_are_escaped(run_copy, tmp_path):
    from jaxsam.report import escape_markdown

    evil = tmp_path / "r|n\n# injected <b>*x*"
    shutil.move(run_copy, evil)
    score_run(store.load_run(evil), ["loss"], bootstrap=0, write=True)
    page = (evil / "report.md").read_text()
    assert not any(line.startswith("# injected") for line in page.splitlines())
    assert page.splitlines()[0] == "# jaxsam report: r\\|n \\# injected \\<b\\>\\*x\\*"
    table = compare_table([("a|b\n# h", {}), ("ok", {})], markdown=True)
    header = table.splitlines()[0]
    assert header == "| metric | a\\|b \\# h | ok | diff (last - first) |"
    assert escape_markdown("lira_online [x](http://y)") == "lira\\_online \\[x\\]\\(http://y\\)"
