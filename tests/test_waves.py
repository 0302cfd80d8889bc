"""Waves: a study trained as slices of models equals one run of all of them."""

from __future__ import annotations

import json

import numpy as np
import pytest

import jaxsam
from jaxsam.data.masks import steps_per_epoch
from jaxsam.errors import ConfigError, RunDirError
from jaxsam.pipeline import train_and_export, waves

from .conftest import tiny_config


def _cfg(**kw):
    base = {"train.epochs": 1, "data.pool_size": 120, "data.test_size": 40, "train.batch_size": 16}
    base.update(kw)
    return tiny_config(**base)


@pytest.fixture(scope="module")
def full_run(tmp_path_factory):
    return train_and_export(_cfg(), tmp_path_factory.mktemp("full") / "run")


def test_two_waves_equal_one_run(full_run, tmp_path):
    out = tmp_path / "waves"
    study = waves.init_study(_cfg(), out)
    np.testing.assert_array_equal(study.keep, full_run.keep)
    with pytest.raises(RunDirError, match="not complete"):
        jaxsam.load_run(out)
    # Second wave first: order must not matter.
    waves.train_wave(out, 1, 4, progress=False)
    st = waves.status(out)
    assert st["waves_done"] == ["00001-00004"] and st["missing"] == ["0:1"]
    assert not st["complete"] and st["models_done"] == 3
    with pytest.raises(RunDirError, match="models 0:1"):
        waves.finalize(out)
    waves.train_wave(out, 0, 1, progress=False)
    run = waves.finalize(out)
    assert waves.status(out)["complete"]
    back = jaxsam.load_run(out)
    np.testing.assert_array_equal(back.keep, full_run.keep)
    np.testing.assert_allclose(back.logits, full_run.logits, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(back.test_logits, full_run.test_logits, rtol=1e-5, atol=1e-5)
    np.testing.assert_array_equal(back.labels, full_run.labels)
    assert back.metrics["steps"] == full_run.metrics["steps"]
    np.testing.assert_allclose(
        back.metrics["out_accuracy"], full_run.metrics["out_accuracy"], atol=1e-6
    )
    assert run.logits.shape == full_run.logits.shape


def test_wave_pins_the_full_studys_steps_per_epoch():
    # Model 0 has the biggest subset: a wave without it would take fewer steps on its own.
    from jaxsam.data import load_pool
    from jaxsam.train.setup import make_setup

    keep = np.zeros((3, 40), bool)
    keep[0, :33] = True
    keep[1, :10] = True
    keep[2, 5:20] = True
    assert steps_per_epoch(keep[1:3], 16) == 1
    cfg = tiny_config()
    pool = load_pool(cfg.data)
    pinned = make_setup(cfg, pool, keep[1:3], steps_per_epoch(keep, 16))
    assert pinned.steps_per_epoch == 3
    assert pinned.total_steps == 3 * cfg.train.epochs


def test_ranges_and_coverage():
    assert waves.parse_range("64:128", 1024) == (64, 128)
    assert waves.parse_range(":64", 1024) == (0, 64)
    assert waves.parse_range("960:", 1024) == (960, 1024)
    for bad in ("5", "10:5", "0:2000", "a:b"):
        with pytest.raises(ConfigError):
            waves.parse_range(bad, 1024)
    assert waves.wave_ranges(10, 4) == [(0, 4), (4, 8), (8, 10)]
    assert waves.missing_ranges(10, [(0, 4), (8, 10)]) == [(4, 8)]
    assert waves.missing_ranges(10, []) == [(0, 10)]
    assert waves.missing_ranges(4, [(0, 4)]) == []


def test_overlapping_waves_are_refused(tmp_path):
    out = tmp_path / "r"
    waves.init_study(_cfg(), out)
    (out / "waves" / "00000-00003").mkdir(parents=True)
    (out / "waves" / "00002-00004").mkdir()
    for name in ("00000-00003", "00002-00004"):
        (out / "waves" / f"{name}.json").write_text(json.dumps({}))
    with pytest.raises(RunDirError, match="overlap"):
        waves.finalize(out)


def test_wave_cli_job_array_index(tmp_path, monkeypatch, capsys):
    from jaxsam.commands import wave

    out = tmp_path / "r"
    cfg = tmp_path / "c.json"
    cfg.write_text(json.dumps(jaxsam.config.to_dict(_cfg())))
    assert wave.main(["init", "--config", str(cfg), "--out", str(out)]) == 0
    monkeypatch.setenv("SLURM_ARRAY_TASK_ID", "1")
    assert wave.main(["train", str(out), "--wave-size", "2", "--no-progress"]) == 0
    assert waves.done_waves(out) == [(2, 4)]
    assert wave.main(["finalize", str(out)]) == 2  # models 0:2 missing
    assert "0:2" in capsys.readouterr().err
    from jaxsam.cli import main

    assert main(["status", str(out)]) == 0
    text = capsys.readouterr().out
    assert "not complete; 2/4 models" in text and "missing models: 0:2" in text
    assert "waves done (1): 00002-00004" in text


def _fake_done_wave(out, a, b):
    name = waves.wave_name(a, b)
    (out / "waves" / name).mkdir(parents=True)
    (out / "waves" / f"{name}.json").write_text(json.dumps({"train_seconds": 1.0}))


def test_overlapping_wave_is_refused_at_train_start_naming_the_range(tmp_path, capsys):
    from jaxsam.cli import main

    out = tmp_path / "r"
    waves.init_study(_cfg(), out)
    _fake_done_wave(out, 0, 3)
    assert main(["wave", "train", str(out), "--models", "2:4", "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert "wave 2:4 overlaps wave 0:3 (done)" in err
    assert f"train `jaxsam wave train {out} --models 3:4` instead" in err
    assert not (out / "waves" / "00002-00004.work").exists()  # nothing trained
    # The wave that touches 0:3 without overlapping it trains.
    assert main(["wave", "train", str(out), "--models", "3:4", "--no-progress"]) == 0
    assert waves.done_waves(out) == [(0, 3), (3, 4)]


def test_overlap_with_a_wave_in_progress_is_refused(tmp_path):
    out = tmp_path / "r"
    waves.init_study(_cfg(), out)
    (out / "waves" / "00000-00002.work").mkdir(parents=True)
    with pytest.raises(
        RunDirError, match=r"overlaps wave 0:2 \(in progress\).*train_wave\('.*', 0, 2\)"
    ):
        waves.train_wave(out, 1, 3)


def test_rerunning_a_finished_wave_says_skipped(tmp_path, capsys):
    from jaxsam.cli import main

    out = tmp_path / "r"
    waves.init_study(_cfg(), out)
    argv = ["wave", "train", str(out), "--models", "0:2", "--no-progress"]
    assert main(argv) == 0
    assert "wave 0:2 done in" in capsys.readouterr().out
    assert main(argv) == 0
    again = capsys.readouterr().out
    assert "wave 0:2 skipped: already done" in again and "done in" not in again


def test_status_and_finalize_name_the_exact_missing_ranges(tmp_path, capsys):
    from jaxsam.cli import main

    out = tmp_path / "r"
    waves.init_study(_cfg(), out)
    _fake_done_wave(out, 1, 2)
    assert main(["status", str(out)]) == 0
    text = capsys.readouterr().out
    assert f"next: jaxsam wave train {out} --models 0:1" in text
    assert f"jaxsam wave train {out} --models 2:4" in text
    assert "A:B" not in text
    assert main(["wave", "finalize", str(out)]) == 2
    err = capsys.readouterr().err
    assert "--models 0:1" in err and "--models 2:4" in err and "A:B" not in err


def _tree(path):
    return {p.relative_to(path): p.read_bytes() for p in sorted(path.rglob("*")) if p.is_file()}


def test_wave_steps_refuse_a_run_trained_in_one_piece(full_run, tmp_path, capsys):
    # `wave train` used to write waves/ into a complete run (status then said 2/8 models had
    # logits) and `wave run` retrained it wave by wave, replacing its logits.
    import shutil

    from jaxsam.cli import main

    out = tmp_path / "run"
    shutil.copytree(full_run.path, out)
    before = _tree(out)
    cfg = tmp_path / "c.json"
    cfg.write_text(json.dumps(jaxsam.config.to_dict(_cfg())))
    for argv in (
        ["wave", "train", str(out), "--models", "0:2", "--no-progress"],
        ["wave", "finalize", str(out)],
        ["wave", "run", "--config", str(cfg), "--out", str(out), "--wave-size", "2"],
    ):
        assert main(argv) == 2, argv
        err = capsys.readouterr().err
        assert f"{out} is already complete (trained in one piece, not in waves)" in err, argv
        assert "another --out" in err and len(err.strip().splitlines()) == 1
    assert _tree(out) == before and not (out / "waves").exists()
    (out / "COMPLETE").unlink()
    with pytest.raises(RunDirError, match=r"unfinished run trained in one piece.*resume=True"):
        waves.train_wave(out, 0, 2)
    assert not (out / "waves").exists()
