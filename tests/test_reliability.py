"""Determinism, divergence policy, config validation, resource checks, bad run directories."""

import json
import shutil

import numpy as np
import pytest

from jaxsam import config as config_lib
from jaxsam import hooks, scoring, store
from jaxsam.bench import tiny_runs as runs
from jaxsam.errors import ConfigError, DivergenceError, JaxsamError, RunDirError
from jaxsam.pipeline import train_and_export
from jaxsam.plan import check_config
from jaxsam.train.setup import make_schedule

from .fault_harness import BAD_CONFIGS, bad_run_dirs, crash_before_complete


@pytest.fixture(scope="module")
def ref(tmp_path_factory):
    return train_and_export(runs.tiny_config(), tmp_path_factory.mktemp("ref") / "run")


def test_same_config_and_seed_give_identical_masks_logits_metrics(ref, tmp_path):
    again = train_and_export(runs.tiny_config(), tmp_path / "again")
    assert runs.same_run(again.path, ref)
    drop = {"train_seconds"}
    strip = lambda m: {k: v for k, v in m.items() if k not in drop}  # noqa: E731
    assert strip(again.metrics) == strip(ref.metrics)
    assert json.loads((again.path / "logits.json").read_text()) == json.loads(
        (ref.path / "logits.json").read_text()
    )
    a = scoring.score(again.logits, again.labels, again.keep, bootstrap=0).report
    b = scoring.score(ref.logits, ref.labels, ref.keep, bootstrap=0).report
    assert json.dumps(a, sort_keys=True) == json.dumps(b, sort_keys=True)


def test_a_different_seed_gives_different_logits(ref, tmp_path):
    other = train_and_export(runs.tiny_config(**{"train.seed": 1}), tmp_path / "other")
    assert np.array_equal(other.keep, ref.keep)
    assert not np.array_equal(other.logits, ref.logits)


def test_planted_nan_stops_naming_model_step_and_learning_rate(tmp_path):
    cfg = runs.tiny_config(**{"optim.warmup_epochs": 1.0})  # a step-dependent learning rate
    with hooks.installed("train_call", hooks.nan_in_model(1, 3)):
        with pytest.raises(DivergenceError) as err:
            train_and_export(cfg, tmp_path / "run")
    lr = float(make_schedule(cfg, 8, 4)(3))
    assert f"model 1 diverged at step 3 (learning rate {lr:.4g})" in str(err.value)
    assert lr > 0 and "\n" not in str(err.value)
    assert not (tmp_path / "run" / store.COMPLETE).exists()


def test_planted_nan_under_exclude_marks_the_model_failed(ref, tmp_path, capsys):
    cfg = runs.tiny_config(**{"train.on_divergence": "exclude"})
    with hooks.installed("train_call", hooks.nan_in_model(2, 5)):
        run = train_and_export(cfg, tmp_path / "run")
    assert "model 2 diverged at step 5" in capsys.readouterr().out
    assert run.failed_models == [2] and run.metrics["failed_models"] == [2]
    others = [0, 1, 3]
    # The other models are untouched, bit for bit.
    assert runs.bitwise_equal(run.logits[others], ref.logits[others])
    assert np.isnan(run.logits[2]).all()


def test_failed_models_survive_a_resume(tmp_path):
    cfg = runs.tiny_config(**{"train.on_divergence": "exclude"})
    with hooks.installed("train_call", hooks.nan_in_model(0, 1)):
        with crash_before_complete(KeyboardInterrupt()), pytest.raises(KeyboardInterrupt):
            train_and_export(cfg, tmp_path / "run")
    run = train_and_export(cfg, tmp_path / "run", resume=True)
    assert run.failed_models == [0]


def _nan_in_models(models, step):
    """A ``train_call`` hook planting NaN in each of ``models`` at ``step``."""
    plants = [hooks.nan_in_model(m, step) for m in models]

    def hook(out, **context):
        for plant in plants:
            out = plant(out, **context)
        return out

    return hook


@pytest.mark.parametrize("diverged", [[0, 1, 2], [0, 1, 2, 3]])
def test_exclude_with_fewer_than_two_models_left_fails_and_keeps_the_run(
    tmp_path, capsys, diverged
):
    """Before, all but one (or every) model diverging under exclude finished a COMPLETE run."""
    cfg = runs.tiny_config(**{"train.on_divergence": "exclude"})
    out, k = tmp_path / "run", len(diverged)
    with hooks.installed("train_call", _nan_in_models(diverged, 1)):
        with pytest.raises(DivergenceError) as err:
            train_and_export(cfg, out)
    msg = str(err.value)
    names = ", ".join(map(str, diverged))
    assert f"{k} of 4 models diverged (models {names}), which leaves {4 - k} to score" in msg
    assert "lower optim.learning_rate" in msg and "overwrite=True" in msg and "\n" not in msg
    assert err.value.models == diverged
    warnings = capsys.readouterr().out
    assert warnings.count("diverged at step 1") == k and "set train.on_divergence" not in warnings
    assert not (out / store.COMPLETE).exists() and (out / "config.json").is_file()
    assert (out / "masks").is_dir() and (out / "checkpoints").is_dir()
    info = store.read_run_info(out)
    assert info["status"] == "diverged" and info["diverged"]["models"] == diverged
    with pytest.raises(RunDirError, match=f"models {names} diverged.*retrain") as err:
        store.load_run(out)
    assert "resume=True" not in str(err.value)
    with pytest.raises(RunDirError, match=f"cannot be resumed: .*models {names} diverged"):
        train_and_export(cfg, out, resume=True)  # refused before anything is trained again
    assert not (out / store.COMPLETE).exists()


def test_finishing_a_study_with_fewer_than_two_models_left_is_refused(ref, tmp_path):
    """The finish of a study trained in waves (finish_study) refuses it the same way."""
    from jaxsam.pipeline.study import finish_study

    out = tmp_path / "run"
    shutil.copytree(ref.path, out)
    (out / store.COMPLETE).unlink()
    with pytest.raises(DivergenceError, match="3 of 4 models diverged"):
        finish_study(
            out,
            ref.config,
            logits=ref.logits,
            labels=ref.labels,
            keep=ref.keep,
            test_logits=ref.test_logits,
            test_labels=ref.test_labels,
            final_batch_loss=np.zeros(4),
            train_seconds=1.0,
            steps=1,
            steps_per_epoch=1,
            failed_models=[0, 2, 3],
        )
    assert not (out / store.COMPLETE).exists()
    assert store.read_run_info(out)["diverged"]["models"] == [0, 2, 3]


def test_a_stopped_divergence_is_recorded_and_status_and_score_advise_retraining(tmp_path, capsys):
    """Before, status and score advised `train --resume`, which diverges again identically."""
    from jaxsam.cli import main

    out = tmp_path / "run"
    config = tmp_path / "config.json"
    config.write_text(json.dumps(config_lib.to_dict(runs.tiny_config())))
    train = ["train", "--out", str(out), "--config", str(config), "--no-progress"]
    with hooks.installed("train_call", hooks.nan_in_model(1, 3)):
        assert main(train) == 2
    err = capsys.readouterr().err
    assert "model 1 diverged at step 3" in err and err.count("\n") == 1
    retrain = f"jaxsam train --out {out} --overwrite --config {out}/config.json"
    assert f"`{retrain} --set optim.learning_rate=LR`" in err
    info = store.read_run_info(out)
    assert info["status"] == "diverged"
    assert info["diverged"] == {"models": [1], "learning_rate": 0.1, "on_divergence": "stop"}
    assert main(["status", str(out)]) == 0
    shown = capsys.readouterr().out
    assert "stopped: model 1 diverged" in shown and "--resume" not in shown
    assert f"next: {retrain} --set optim.learning_rate=LR (LR below 0.1)" in shown
    assert f"or: {retrain} --set train.on_divergence=exclude" in shown
    assert main(["score", str(out)]) == 2
    err = capsys.readouterr().err
    assert f"`{retrain} --set optim.learning_rate=LR`" in err and "--resume" not in err
    assert "train.on_divergence = 'exclude'" in err and err.count("\n") == 1
    assert main(train) == 2  # the same command again: the run is there, a resume no help
    err = capsys.readouterr().err
    assert "holds an unfinished run" in err and f"`{retrain} --set optim.learning_rate=LR`" in err
    assert "--resume" not in err
    assert main(["train", "--resume", str(out), "--no-progress"]) == 2  # would diverge again
    err = capsys.readouterr().err
    assert "cannot be resumed: its training stopped because model 1 diverged" in err
    assert f"`{retrain} --set optim.learning_rate=LR`" in err and err.count("\n") == 1
    # The advised command works (here without the planted NaN), from the run's own config.json.
    again = f"{retrain} --set optim.learning_rate=0.05 --no-progress".split()
    assert main(again[1:]) == 0
    assert store.load_run(out).config.optim.learning_rate == 0.05
    assert "diverged" not in store.read_run_info(out)


@pytest.mark.parametrize("data, fragment", BAD_CONFIGS)
def test_bad_config_is_rejected_with_key_path(data, fragment):
    with pytest.raises(ConfigError) as err:
        check_config(config_lib.from_dict(data))
    assert fragment in str(err.value) and "\n" not in str(err.value)


def test_unknown_key_lists_allowed_keys():
    with pytest.raises(ConfigError, match=r"allowed keys here: \[.*'epochs'"):
        config_lib.from_dict({"train": {"epoch": 3}})
    with pytest.raises(ConfigError, match=r"optimizer 'sgd'; allowed here: none"):
        check_config(config_lib.from_dict({"optim": {"extra": {"eta": 0.1}}}))


def test_optim_extra_is_checked_per_variant():
    """optim.extra is checked against the optimizer registry's argument spec."""
    cfg = config_lib.from_dict({"optim": {"name": "asam", "extra": {"eta": 0.01}}})
    assert cfg.optim.extra == {"eta": 0.01}
    with pytest.raises(ConfigError, match=r"optim.extra.eta = -1 is out of range"):
        check_config(config_lib.from_dict({"optim": {"name": "asam", "extra": {"eta": -1}}}))
    with pytest.raises(ConfigError, match=r"optim.extra.eta = 'x' has the wrong type"):
        check_config(config_lib.from_dict({"optim": {"name": "asam", "extra": {"eta": "x"}}}))
    with pytest.raises(ConfigError, match=r"optim.extra.rho is not a keyword.*\['eta'\]"):
        check_config(config_lib.from_dict({"optim": {"name": "asam", "extra": {"rho": 0.1}}}))


def test_bad_cli_input_exits_2_with_one_line(tmp_path, capsys):
    from jaxsam.cli import main

    assert main(["train", "--out", str(tmp_path / "r"), "--set", "masks.pkeep=2"]) == 2
    err = capsys.readouterr().err
    assert "masks.pkeep" in err and err.count("\n") == 1
    assert not (tmp_path / "r").exists(), "a rejected config wrote something"


def test_too_small_disk_is_caught_before_training(tmp_path, monkeypatch):
    real = shutil.disk_usage
    monkeypatch.setattr(shutil, "disk_usage", lambda p: real(p)._replace(free=1000))
    out = tmp_path / "run"
    with pytest.raises(RunDirError, match=r"not enough disk space .* MiB of checkpoints"):
        train_and_export(runs.tiny_config(), out)
    assert not (out / "checkpoints").exists()


def test_unwritable_output_is_caught_before_training(tmp_path, monkeypatch):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(RunDirError, match="cannot create"):
        train_and_export(runs.tiny_config(), blocker / "run")
    real = type(tmp_path).write_text

    def read_only(self, *a, **kw):
        if self.name == ".write-probe":
            raise PermissionError(13, "Permission denied")
        return real(self, *a, **kw)

    monkeypatch.setattr(type(tmp_path), "write_text", read_only)
    with pytest.raises(RunDirError, match="cannot write to .*Permission denied"):
        train_and_export(runs.tiny_config(), tmp_path / "ro")


def test_bad_run_directories_are_refused_clearly(ref, tmp_path):
    for what, action, fragment in bad_run_dirs(tmp_path, ref.path):
        with pytest.raises(JaxsamError) as err:
            action()
        assert fragment in str(err.value), what
        assert "\n" not in str(err.value), what


def test_checkpoint_fingerprint_ignores_cadence_but_not_training():
    from jaxsam.store.checkpoints import fingerprint

    base = fingerprint("m", 0, runs.tiny_config())
    assert base == fingerprint("m", 0, runs.tiny_config(**{"train.checkpoint_every_steps": 5}))
    assert base != fingerprint("m", 4, runs.tiny_config())
    assert base != fingerprint("n", 0, runs.tiny_config())
    assert base != fingerprint("m", 0, runs.tiny_config(**{"optim.learning_rate": 0.2}))


def test_bench_bad_input_sweep_is_rejected_clearly(ref, tmp_path):
    from . import fault_harness as faults

    cases = list(faults.bad_inputs(ref.path, tmp_path))
    assert len(cases) > 60  # two per config key, then the run directory's files
    assert {argv[0] for _, argv, _, _ in cases} == {"train", "score"}  # through the CLI
    for what, argv, fragment, watch in cases:
        ok, msg = faults.rejected_clearly(argv, fragment, watch)
        assert ok, f"{what}: {msg}"


def test_bench_bad_input_check_sees_exit_status_and_written_files(ref, tmp_path, monkeypatch):
    """A refusal that writes a file, or a wrong exit status, is not "rejected clearly"."""
    import sys

    from jaxsam import cli

    from . import fault_harness as faults

    case = tmp_path / "case"
    case.mkdir()
    (case / "config.json").write_text('{"train": {"epochs": "ten"}}')
    argv = ["train", "--config", str(case / "config.json"), "--out", str(case / "run")]
    assert faults.rejected_clearly(argv, "train.epochs", case)[0]
    real_main = cli.main

    def writes_then_refuses(args):
        (case / "run").mkdir()
        return real_main(args)

    monkeypatch.setattr(cli, "main", writes_then_refuses)
    ok, msg = faults.rejected_clearly(argv, "train.epochs", case)
    assert not ok and "changed the file system" in msg and "run" in msg

    def exits_1(args):
        print("jaxsam train: error: train.epochs is bad", file=sys.stderr)
        return 1

    (case / "run").rmdir()
    monkeypatch.setattr(cli, "main", exits_1)
    ok, msg = faults.rejected_clearly(argv, "train.epochs", case)
    assert not ok and "exit status 1" in msg
