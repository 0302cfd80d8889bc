import json
import shutil
import subprocess
import sys

import numpy as np
import pytest

import jaxsam
from jaxsam import cli, store
from jaxsam import config as config_lib
from jaxsam.errors import RunDirError
from jaxsam.pipeline import train_and_export

from .conftest import tiny_config


def test_load_run_exposes_contract(tiny_run):
    run = jaxsam.load_run(tiny_run.path)
    m, n = run.keep.shape
    assert run.keep.dtype == bool and (m, n) == (4, 300)
    assert run.logits.shape == (m, n, 1, 10) and run.logits.dtype == np.float32
    assert run.labels.shape == (n,) and run.labels.dtype == np.int32
    assert run.config == tiny_config()
    assert run.query_names == ["identity"]
    assert run.test_logits.shape == (m, 100, 1, 10)


def test_round_trip_in_fresh_process_is_identical(tiny_run, tmp_path):
    dump = tmp_path / "dump.npz"
    code = (
        "import sys, numpy as np, jaxsam; r = jaxsam.load_run(sys.argv[1]); "
        "np.savez(sys.argv[2], keep=r.keep, logits=r.logits, labels=r.labels, "
        "test_logits=r.test_logits)"
    )
    subprocess.run([sys.executable, "-c", code, str(tiny_run.path), str(dump)], check=True)
    with np.load(dump) as fresh:
        np.testing.assert_array_equal(fresh["keep"], tiny_run.keep)
        np.testing.assert_array_equal(fresh["logits"], tiny_run.logits)
        np.testing.assert_array_equal(fresh["labels"], tiny_run.labels)
        np.testing.assert_array_equal(fresh["test_logits"], tiny_run.test_logits)


def test_save_and_load_arrays_bitwise(tmp_path):
    rng = np.random.default_rng(0)
    tree = {"a": rng.normal(size=(3, 4)).astype(np.float32), "b": rng.uniform(size=(5,)) > 0.5}
    store.save_arrays(tmp_path / "arr", tree)
    back = store.load_arrays(tmp_path / "arr", "test arrays")
    for k, v in tree.items():
        assert back[k].dtype == v.dtype
        np.testing.assert_array_equal(back[k], v)


@pytest.fixture
def copied_run(tiny_run, tmp_path):
    dst = tmp_path / "copy"
    shutil.copytree(tiny_run.path, dst)
    return dst


def test_copied_run_reads_back(copied_run, tiny_run):
    np.testing.assert_array_equal(jaxsam.load_run(copied_run).logits, tiny_run.logits)


@pytest.mark.parametrize(
    "damage, fragment",
    [
        (lambda p: shutil.rmtree(p / "logits"), "logits"),
        (lambda p: (p / "COMPLETE").unlink(), "not complete"),
        (lambda p: (p / "run.json").unlink(), "run.json is missing"),
        (lambda p: (p / "run.json").write_text("{"), "run.json is not valid JSON"),
        (lambda p: (p / "metrics.json").unlink(), "metrics.json is missing"),
        (lambda p: shutil.rmtree(p / "masks"), "masks is missing"),
    ],
)
def test_damaged_run_names_the_file(copied_run, damage, fragment):
    damage(copied_run)
    with pytest.raises(RunDirError, match=fragment):
        run = jaxsam.load_run(copied_run)
        run.logits  # noqa: B018 (logits load lazily)


def test_corrupted_logits_bytes_are_reported(copied_run):
    for f in (copied_run / "logits").rglob("*"):
        if f.is_file() and f.stat().st_size > 100 and "d" in f.parent.name:
            f.write_bytes(b"\0" * f.stat().st_size)
    # The digests catch it when the run is opened, naming the file...
    with pytest.raises(RunDirError, match=r"logits/d/.*sha256 mismatch"):
        jaxsam.load_run(copied_run)
    # ...and without them, reading the damaged arrays still fails clearly.
    run = jaxsam.load_run(copied_run, verify=False)
    with pytest.raises(RunDirError, match="logits"):
        run.logits  # noqa: B018


def test_masks_from_another_run_are_refused(copied_run, tmp_path):
    from jaxsam.pipeline import train_and_export

    other = train_and_export(tiny_config(**{"masks.seed": 5}), tmp_path / "other")
    shutil.rmtree(copied_run / "logits")
    shutil.copytree(other.path / "logits", copied_run / "logits")
    shutil.copy(other.path / "logits.json", copied_run / "logits.json")
    with pytest.raises(RunDirError, match="fingerprint"):
        jaxsam.load_run(copied_run)


def test_missing_directory_and_foreign_directory(tmp_path):
    with pytest.raises(RunDirError, match="does not exist"):
        jaxsam.load_run(tmp_path / "nothing")
    (tmp_path / "foreign").mkdir()
    (tmp_path / "foreign" / "run.json").write_text('{"format": "other"}')
    with pytest.raises(RunDirError, match="not a jaxsam run directory"):
        jaxsam.load_run(tmp_path / "foreign")


def test_prepare_refuses_different_run_and_keeps_it(tiny_run, copied_run):
    other = tiny_config(**{"optim.name": "sam"})
    before = sorted(p.name for p in copied_run.iterdir())
    with pytest.raises(RunDirError, match="different run"):
        store.prepare_run_dir(copied_run, other)
    assert sorted(p.name for p in copied_run.iterdir()) == before
    with pytest.raises(RunDirError, match="already holds this finished run"):
        store.prepare_run_dir(copied_run, tiny_config())
    store.prepare_run_dir(copied_run, other, overwrite=True)
    assert not any(copied_run.iterdir())


def test_refusal_names_overwrite_true_in_python_and_the_flag_on_the_command_line(
    tiny_run, tmp_path, capsys
):
    copied = tmp_path / "run"
    shutil.copytree(tiny_run.path, copied)
    before = sorted(p.name for p in copied.iterdir())
    other = tiny_config(**{"train.seed": 1})  # a different run than the one in `copied`
    with pytest.raises(RunDirError, match=r"pass overwrite=True to replace it") as e:
        train_and_export(other, copied)
    assert "--overwrite" not in str(e.value)
    cfg = tmp_path / "c.json"
    cfg.write_text(json.dumps(config_lib.to_dict(other)))
    assert cli.main(["train", "--config", str(cfg), "--out", str(copied)]) == 2
    err = capsys.readouterr().err
    assert "pass --overwrite to replace it" in err and "overwrite=True" not in err
    assert sorted(p.name for p in copied.iterdir()) == before
