"""One-line errors with exit status 2 for input that used to crash or pass silently.

Each case was a traceback (or a wrong result) before: damaged run headers, garbage config
files, huge integers, path-like dataset names, empty or non-finite data, a full disk under
``score``. In-process cases call :func:`jaxsam.cli.main`; the exit status of the real command
and the full-disk case run ``python -m jaxsam`` in a subprocess.
"""

import json
import os
import shutil
import subprocess
import sys
import uuid
from pathlib import Path

import numpy as np
import pytest

from jaxsam import cli, store
from jaxsam import config as config_lib
from jaxsam.data.pool import make_pool
from jaxsam.errors import DataError

from .conftest import one_line_error, tiny_config

ROOT = Path(__file__).parents[1]


def _edit_json(path: Path, edit) -> None:
    data = json.loads(path.read_text())
    edit(data)
    path.write_text(json.dumps(data))


def _del(key):
    return lambda d: d.pop(key)


def _set(key, value):
    return lambda d: d.__setitem__(key, value)


@pytest.mark.parametrize(
    "name, edit, fragment",
    [
        ("run.json", _del("models"), "run.json has no 'models' key"),
        ("run.json", _del("pool"), "run.json has no 'pool' key"),
        ("run.json", _del("masks_fingerprint"), "no 'masks_fingerprint'"),
        ("run.json", _set("examples", "300"), "'examples' = '300', not a JSON int"),
        ("run.json", _set("failed_models", [7]), "index 7 outside [0, 4)"),
        ("run.json", _set("failed_models", [-1]), "index -1 outside [0, 4)"),
        ("run.json", _set("failed_models", "1"), "not a list of model indices"),
        ("run.json", _set("failed_models", [1.0]), "not a list of model indices"),
        ("run.json", _set("failed_models", [1, 1]), "a repeated index"),
        ("logits.json", _del("query_names"), "logits.json has no 'query_names'"),
        ("logits.json", _set("query_names", 3), "logits.json has no 'query_names'"),
    ],
)
def test_damaged_run_header_is_one_line_exit_2(tiny_run, tmp_path, capsys, name, edit, fragment):
    copy = tmp_path / "run"
    shutil.copytree(tiny_run.path, copy)
    for f in ("report.json", "report.md"):
        (copy / f).unlink(missing_ok=True)
    _edit_json(copy / name, edit)
    assert cli.main(["score", str(copy), "--no-verify"]) == 2
    one_line_error(capsys, fragment)
    assert not (copy / "report.json").exists()


def test_all_models_failed_names_them(tiny_run, tmp_path, capsys):
    copy = tmp_path / "run"
    shutil.copytree(tiny_run.path, copy)
    _edit_json(copy / "run.json", _set("failed_models", [0, 1, 2, 3]))
    assert cli.main(["score", str(copy), "--no-verify"]) == 2
    one_line_error(capsys, "0 of 4 models are left to score")


def _deep(path):
    path.write_text("[" * 100_000 + "]" * 100_000)


def _binary(path):
    path.write_bytes(bytes(range(128, 256)) * 3)


def _huge_int(path):
    path.write_text('{"masks": {"models": ' + "9" * 5000 + "}}")


@pytest.mark.parametrize(
    "write, fragment",
    [
        (_binary, "is not a text file"),
        (_deep, "nests JSON deeper than"),
        (_huge_int, "cannot be read as JSON (Exceeds the limit"),
    ],
)
def test_garbage_config_file_is_one_line_exit_2(tmp_path, capsys, write, fragment):
    cfg = tmp_path / "c.json"
    write(cfg)
    out = tmp_path / "run"
    assert cli.main(["train", "--config", str(cfg), "--out", str(out)]) == 2
    one_line_error(capsys, fragment)
    assert not out.exists()


@pytest.mark.parametrize(
    "assignment, fragment",
    [
        ("masks.models=100000000", "masks.models = 100000000 is out of range"),
        ("masks.models=" + "9" * 40, "masks.models = 9999999999999999999999999"),
        ("masks.models=1e8", "write the integer 100000000"),
        ("train.batch_size=" + "9" * 30, "at most 2**31 - 1"),
        ("train.epochs=" + "9" * 5000, "cannot be read"),
        ("data.dataset=../../etc/passwd", "neither 'digits' nor a tensorflow-datasets name"),
        ("data.dataset=/etc/passwd", "'npz:FILE'"),
        ("data.dataset=npz:", "names no file"),
    ],
)
def test_bad_set_values_are_one_line_exit_2(tmp_path, capsys, assignment, fragment):
    out = tmp_path / "run"
    assert cli.main(["train", "--set", assignment, "--out", str(out), "--no-progress"]) == 2
    err = one_line_error(capsys, fragment)
    assert len(err) < 400  # a 5000-digit value is not echoed back whole
    assert not out.exists()


def test_tfds_names_with_configs_and_versions_still_validate():
    for name in ("cifar10", "mnist:3.*.*", "cifar10_corrupted/brightness_1", "svhn_cropped"):
        config_lib.replace(config_lib.Config(), **{"data.dataset": name})


@pytest.mark.parametrize("content", [b"\xff\xfe\x00garbage", b"{not json"])
def test_garbage_config_json_inside_out_is_refused_untouched(tmp_path, capsys, content):
    out = tmp_path / "run"
    out.mkdir()
    (out / "config.json").write_bytes(content)
    cfg = tmp_path / "c.json"
    cfg.write_text(json.dumps(config_lib.to_dict(tiny_config())))
    assert cli.main(["train", "--config", str(cfg), "--out", str(out), "--no-progress"]) == 2
    one_line_error(capsys, "holds no readable jaxsam run")
    assert [p.name for p in out.iterdir() if p.name != store.LOCK_FILE] == ["config.json"]
    assert (out / "config.json").read_bytes() == content


def _npz_train(tmp_path, capsys, **arrays) -> str:
    path = tmp_path / "d.npz"
    np.savez(path, **arrays)
    out = tmp_path / "run"
    argv = ["train", "--out", str(out), "--no-progress", "--set", f"data.dataset=npz:{path}"]
    argv += ["--set", "data.test_split=null", "--set", "masks.models=4"]
    assert cli.main(argv) == 2
    return capsys.readouterr().err


def test_npz_without_rows_is_one_line_exit_2(tmp_path, capsys):
    err = _npz_train(tmp_path, capsys, x=np.zeros((0, 5), np.float32), y=np.zeros(0, np.int64))
    assert "x holds no examples" in err and "Traceback" not in err


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_non_finite_features_are_named_at_load_not_blamed_on_the_learning_rate(
    tmp_path, capsys, bad
):
    x = np.random.default_rng(0).normal(size=(120, 6)).astype(np.float32)
    x[7, 4] = bad
    err = _npz_train(tmp_path, capsys, x=x, y=np.arange(120) % 3)
    assert "NaN or infinite (the first at row 7, feature 4)" in err, err
    assert "learning rate" not in err and len(err.strip().splitlines()) == 1


def test_make_pool_checks_held_out_features_too():
    x = np.zeros((10, 3), np.float32)
    tx = x.copy()
    tx[2, 1] = np.nan
    with pytest.raises(DataError, match="arrays/test: 1 input value"):
        make_pool(x, np.arange(10) % 2, test_x=tx, test_y=np.arange(10) % 2)


def _cli(*args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "JAX_PLATFORMS": "cpu"}
    cmd = [sys.executable, "-m", "jaxsam", *args]
    return subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)


def test_exit_status_2_and_one_line_from_the_real_command(tiny_run, tmp_path):
    copy = tmp_path / "run"
    shutil.copytree(tiny_run.path, copy)
    _edit_json(copy / "run.json", _del("models"))
    proc = _cli("score", str(copy))
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.strip().splitlines() == [
        f"jaxsam score: error: {copy}/run.json has no 'models' key; the run header is damaged "
        "or was edited: restore it or rerun the job"
    ]


def _can_mount_tmpfs() -> bool:
    return hasattr(os, "geteuid") and os.geteuid() == 0 and shutil.which("mount") is not None


@pytest.fixture
def small_disk(tmp_path):
    """A 1 MiB tmpfs mounted at ``tmp_path/disk`` (root only), unmounted afterwards."""
    if not _can_mount_tmpfs():
        pytest.skip("mounting a tmpfs needs root")
    disk = tmp_path / f"disk-{uuid.uuid4().hex[:6]}"
    disk.mkdir()
    mount = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(disk)])
    if mount.returncode != 0:
        pytest.skip("this machine does not allow mounting a tmpfs")
    try:
        yield disk
    finally:
        subprocess.run(["umount", "-l", str(disk)])


@pytest.mark.parametrize("left_kb", [40, 160])  # fails at scores/ (orbax) / at report.json
def test_score_on_a_full_disk_is_one_line_and_keeps_the_run(tiny_run, small_disk, left_kb):
    run = small_disk / "run"
    shutil.copytree(tiny_run.path, run, ignore=shutil.ignore_patterns("report*", "scores", "plots"))
    free = shutil.disk_usage(small_disk).free
    (small_disk / "fill").write_bytes(b"\0" * max(free - left_kb * 1024, 0))
    before = sorted(p.name for p in run.iterdir())
    proc = _cli("score", str(run))
    assert proc.returncode == 2, proc.stderr[-2000:]
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "the disk is full" in lines[0], proc.stderr[-3000:]
    assert sorted(p.name for p in run.iterdir() if p.name != store.LOCK_FILE) == [
        n for n in before if n != store.LOCK_FILE
    ]


def test_roc_legend_lies_outside_the_curves(tmp_path, monkeypatch):
    """The legend must not cover any part of the axes (curves at FPR 1e-3..1e-2 included)."""
    from jaxsam import plots

    seen = {}
    real_save = plots._save

    def keep(fig, path):
        fig.canvas.draw()
        ax = fig.axes[0]
        seen["legend"] = ax.get_legend().get_window_extent()
        seen["axes"] = ax.get_window_extent()
        return real_save(fig, path)

    monkeypatch.setattr(plots, "_save", keep)
    fpr = np.logspace(-5, 0, 50)
    curves = {
        f"run {i} lira_online": (fpr, np.minimum(1, fpr ** (0.5 + 0.1 * i))) for i in range(5)
    }
    plots.plot_roc(curves, tmp_path / "roc.png", title="t")
    legend, axes = seen["legend"], seen["axes"]
    assert legend.y1 <= axes.y0, (legend, axes)  # entirely below the plotting area
    assert (tmp_path / "roc.png").is_file()


def test_demo_reruns_into_the_same_out_when_only_progress_or_sgd_rho_changed(tmp_path, capsys):
    out = tmp_path / "demo"
    base = ["demo", "--out", str(out), "--optimizers", "sgd", "--models", "4", "--epochs", "1"]
    base += ["--pool-size", "200"]
    assert cli.main(base) == 0
    capsys.readouterr()
    assert cli.main([*base, "--no-progress", "--rho", "0.2"]) == 0
    assert "already trained with this config; rescoring" in capsys.readouterr().out
    # A key that changes results is still refused.
    assert cli.main([*base, "--seed", "1"]) == 2
    assert "different run" in capsys.readouterr().err


def test_plan_names_the_standard_size_instead_of_none(capsys):
    assert cli.main(["plan", "--set", "model.name=mlp"]) == 0
    head = capsys.readouterr().out.splitlines()[0]
    assert "None" not in head and "width 256 (standard), depth 2 (standard)" in head


def test_tensorflow_and_absl_notes_are_silenced_but_errors_still_show(monkeypatch):
    import logging

    from jaxsam.data import tfds_source

    monkeypatch.delenv("TF_CPP_MIN_LOG_LEVEL", raising=False)
    absl_log = logging.getLogger("absl")
    monkeypatch.setattr(absl_log, "level", logging.NOTSET)
    records = []
    handler = logging.Handler()
    handler.emit = records.append
    absl_log.addHandler(handler)
    try:
        tfds_source.quiet_tensorflow_logs()
        absl_log.warning("OpenCV is not installed")
        absl_log.error("a real error")
    finally:
        absl_log.removeHandler(handler)
    assert os.environ["TF_CPP_MIN_LOG_LEVEL"] == "2"
    assert [r.getMessage() for r in records] == ["a real error"]


def test_score_summary_names_the_attack_of_its_auc(tiny_run, tmp_path, capsys):
    copy = tmp_path / "run"
    shutil.copytree(tiny_run.path, copy)
    assert cli.main(["score", str(copy), "--attacks", "loss", "--bootstrap", "0"]) == 0
    assert ", loss AUC 0." in capsys.readouterr().out


def test_bench_faults_counts_only_kills_that_interrupted_work():
    from .fault_harness import classify_kill

    assert classify_kill(landed=True, complete=False) == "fault"
    assert classify_kill(landed=True, complete=True) == "after_complete"  # was "survived"
    assert classify_kill(landed=False, complete=False) == "missed"


def test_library_fixes_name_keywords_and_actions_the_command_line_names_flags(tmp_path):
    """A library error words its fix for its caller: keyword arguments and the Python call from
    Python, flags and the ``jaxsam`` command under a command (:func:`errors.command_line`)."""
    from jaxsam.errors import RunDirError, action, command_line, option
    from jaxsam.plan import make_plan

    assert (option("verify", "False"), option("overwrite")) == ("verify=False", "overwrite=True")
    assert action("resume", run="runs/a") == (
        "`jaxsam.pipeline.study.train_and_export(config, 'runs/a', resume=True)`"
    )
    with command_line():
        assert (option("verify", "False"), option("overwrite")) == ("--no-verify", "--overwrite")
        assert action("resume", run="runs/a") == "`jaxsam train --resume runs/a`"
        assert (
            action("train_wave", run="r", first=0, stop=4) == "`jaxsam wave train r --models 0:4`"
        )

    cfg, nothing, a_file = tiny_config(), tmp_path / "none", tmp_path / "file"
    a_file.write_text("x")
    with pytest.raises(RunDirError, match=r"start a new run there \(without resume=True\)$"):
        make_plan(cfg, nothing, mode="resume")
    with pytest.raises(RunDirError, match=r"is not a directory; choose another out$") as e:
        with store.run_lock(a_file, "train"):
            pass
    assert "--" not in str(e.value)
    with command_line():
        with pytest.raises(RunDirError, match=r"\(without --resume\)$"):
            make_plan(cfg, nothing, mode="resume")
        with pytest.raises(RunDirError, match=r"choose another --out$"):
            with store.run_lock(a_file, "train"):
                pass
