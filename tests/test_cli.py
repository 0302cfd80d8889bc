"""The command line end to end: train -> score -> compare, and one-line errors for bad input."""

import json
import shutil

import pytest

from jaxsam import cli
from jaxsam import config as config_lib

from .conftest import tiny_config


def _write_config(path, cfg):
    path.write_text(json.dumps(config_lib.to_dict(cfg)))
    return path


def test_score_and_compare_from_a_copied_run(tiny_run, tmp_path, capsys):
    copy = tmp_path / "copied"
    shutil.copytree(tiny_run.path, copy)
    assert cli.main(["score", str(copy), "--bootstrap", "0"]) == 0
    report = json.loads((copy / "report.json").read_text())
    for name in ("lira_online", "lira_offline", "loss"):
        entry = report["attacks"][name]
        assert {"auc", "balanced_accuracy", "advantage", "tpr_at_fpr"} <= set(entry)
        assert set(entry["tpr_at_fpr"]) == {"0.01", "0.001", "0.0001", "1e-05"}
        assert 0.0 <= entry["auc"] <= 1.0
    assert (copy / "report.md").read_text().strip()
    assert (copy / "plots" / "roc.png").stat().st_size > 1000
    assert "mean" in report["memorization"] and "median" in report["out_confidence_variance"]
    capsys.readouterr()
    assert cli.main(["compare", str(copy), str(tiny_run.path)]) == 0
    table = capsys.readouterr().out
    assert "OUT (pool non-member) accuracy" in table and "lira_online AUC" in table


def test_train_config_written_by_a_run_reproduces_it(tiny_run, tmp_path):
    out = tmp_path / "again"
    assert (
        cli.main(
            [
                "train",
                "--config",
                str(tiny_run.path / "config.json"),
                "--out",
                str(out),
                "--no-progress",
            ]
        )
        == 0
    )
    again = config_lib.load(out / "config.json")
    assert again == tiny_run.config
    import numpy as np

    import jaxsam

    np.testing.assert_array_equal(jaxsam.load_run(out).logits, tiny_run.logits)


@pytest.mark.parametrize(
    "overrides, fragment",
    [
        ({"optim": {"name": "adamw"}}, "optim.name = 'adamw' is not allowed"),
        ({"data": {"dataset": "nonexistent_ds_xyz"}}, "nonexistent_ds_xyz"),
        ({"masks": {"pkeep": 1.5}}, "masks.pkeep"),
        ({"masks": {"models": 1}}, "masks.models"),
    ],
)
def test_bad_input_gets_one_line_error_and_writes_nothing(tmp_path, capsys, overrides, fragment):
    data = config_lib.to_dict(tiny_config())
    for section, values in overrides.items():
        data[section].update(values)
    cfg_path = tmp_path / "c.json"
    cfg_path.write_text(json.dumps(data))
    out = tmp_path / "run"
    assert cli.main(["train", "--config", str(cfg_path), "--out", str(out), "--no-progress"]) == 2
    err = capsys.readouterr().err.strip()
    assert fragment in err and "Traceback" not in err and len(err.splitlines()) == 1
    assert not out.exists() or not any(out.iterdir())


def test_out_dir_holding_a_different_run_is_refused(tiny_run, tmp_path, capsys):
    copy = tmp_path / "occupied"
    shutil.copytree(tiny_run.path, copy)
    cfg = _write_config(tmp_path / "sam.json", tiny_config(**{"optim.name": "sam"}))
    before = sorted(p.name for p in copy.iterdir())
    assert cli.main(["train", "--config", str(cfg), "--out", str(copy), "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert "different run" in err and "--overwrite" in err
    assert sorted(p.name for p in copy.iterdir()) == before


def test_resume_with_another_out_is_refused(tiny_run, tmp_path, capsys):
    elsewhere = tmp_path / "elsewhere"
    assert cli.main(["train", "--resume", str(tiny_run.path), "--out", str(elsewhere)]) == 2
    err = capsys.readouterr().err
    assert "writes nothing to --out" in err and "drop --out" in err and err.count("\n") == 1
    assert not elsewhere.exists()
    # --out naming RUN itself is no conflict (this run is refused for being complete).
    assert cli.main(["train", "--resume", str(tiny_run.path), "--out", str(tiny_run.path)]) == 2
    assert "already complete" in capsys.readouterr().err


@pytest.mark.parametrize(
    "extra, fragment",
    [
        (["--overwrite"], "--overwrite would start it over; drop one of them"),
        (["--wave-size", "2"], "so --wave-size would be ignored"),
        (["--distributed"], "so --distributed would be ignored"),
        (["--num-processes", "2"], "so --num-processes would be ignored"),
    ],
)
def test_resume_refuses_the_options_it_would_ignore(tiny_run, capsys, extra, fragment):
    """--overwrite, --wave-size and the multi-process options were ignored by --resume."""
    before = sorted((p.name, p.stat().st_mtime_ns) for p in tiny_run.path.iterdir())
    assert cli.main(["train", "--resume", str(tiny_run.path), *extra]) == 2
    err = capsys.readouterr().err
    assert fragment in err and err.count("\n") == 1
    assert "already complete" not in err  # refused for the option, before the run is read
    assert sorted((p.name, p.stat().st_mtime_ns) for p in tiny_run.path.iterdir()) == before


def test_score_of_a_run_without_logits_says_so(tiny_run, tmp_path, capsys):
    copy = tmp_path / "nologits"
    shutil.copytree(tiny_run.path, copy)
    shutil.rmtree(copy / "logits")
    (copy / "COMPLETE").unlink()
    (copy / "report.json").unlink(missing_ok=True)  # another test may have scored the original
    assert cli.main(["score", str(copy)]) == 2
    err = capsys.readouterr().err.strip()
    assert "logits" in err and len(err.splitlines()) == 1
    assert not (copy / "report.json").exists()


def test_demo_runs_end_to_end_on_a_tiny_setting(tmp_path, capsys):
    out = tmp_path / "demo"
    assert (
        cli.main(
            [
                "demo",
                "--out",
                str(out),
                "--models",
                "4",
                "--epochs",
                "1",
                "--pool-size",
                "200",
                "--no-progress",
            ]
        )
        == 0
    )
    text = capsys.readouterr().out
    assert "OUT (pool non-member) accuracy" in text and "lira_online AUC" in text
    for opt in ("sgd", "sam"):
        assert (out / opt / "report.json").is_file()
    assert (out / "roc_compare.png").stat().st_size > 1000


def test_resume_of_a_path_that_holds_no_run_says_so(tmp_path, capsys):
    """It said `config.json is missing ...; the run directory is incomplete or damaged`."""
    assert cli.main(["train", "--resume", str(tmp_path / "nope")]) == 2
    assert "no such directory" in capsys.readouterr().err
    (tmp_path / "notes.txt").write_text("mine")
    assert cli.main(["train", "--resume", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "is not a jaxsam run directory" in err and err.count("\n") == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["notes.txt"]
