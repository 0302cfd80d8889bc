"""Damaged runs read past their digests (``--no-verify``) are refused in one line, by ``score``
and ``analyze`` alike, naming the file and the fix; nothing is written.

Each case used to crash (held-out logits of another number of models), or to be scored
silently (NaN held-out logits, labels outside ``[0, C)``, more query names than views), or to
be analysed where ``score`` refused it (every model failed, or one model left).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from jaxsam import cli, store

from .conftest import one_line_error, unscored_copy


def _copy(tiny_run, tmp_path: Path) -> Path:
    return unscored_copy(tiny_run.path, tmp_path / "run")


def _edit_arrays(path: Path, folder: str, edit) -> None:
    arrays = store.load_arrays(path / folder, folder)
    edit(arrays)
    store.save_arrays(path / folder, arrays)


def _pool_label(value):
    def edit(path):
        for folder in ("logits", "masks"):  # the masks and the logits agree on the labels
            _edit_arrays(path, folder, lambda a: a["labels"].__setitem__(0, value))

    return edit


def _logits(edit):
    return lambda path: _edit_arrays(path, "logits", edit)


def _query_names(path):
    info = json.loads((path / "logits.json").read_text())
    info["query_names"] = ["identity", "flip"]
    (path / "logits.json").write_text(json.dumps(info))


DAMAGE = {
    "held-out of 2 models": (
        _logits(lambda a: a.__setitem__("test_logits", a["test_logits"][:2])),
        "held-out logits (test_logits) of shape (2,",
    ),
    "NaN held-out logit": (
        _logits(lambda a: a["test_logits"].__setitem__((2, 3, 0, 1), np.nan)),
        "held-out logits (test_logits) with 1 NaN or infinite value(s) for model 2 (first at "
        "example 3)",
    ),
    "NaN pool logits": (
        _logits(lambda a: a["logits"][3, 7:9].__setitem__(..., np.inf)),
        "pool logits with 20 NaN or infinite value(s) for model 3 (first at example 7)",
    ),
    "held-out label 99": (
        _logits(lambda a: a["test_labels"].__setitem__(0, 99)),
        "held-out labels (test_labels) with label 99, outside [0, 10)",
    ),
    "pool label 42": (_pool_label(42), "pool labels with label 42, outside [0, 10)"),
    "pool label -1": (_pool_label(-1), "pool labels with label -1, outside [0, 10)"),
    "2 query names, 1 view": (_query_names, "names 2 query view(s) but"),
}


@pytest.mark.parametrize("command", ["score", "analyze"])
@pytest.mark.parametrize("case", list(DAMAGE))
def test_damaged_logits_are_refused_in_one_line(tiny_run, tmp_path, capsys, command, case):
    damage, fragment = DAMAGE[case]
    path = _copy(tiny_run, tmp_path)
    damage(path)
    extra = ["--bootstrap", "0"] if command == "score" else []
    args = [command, str(path), "--no-verify", *extra]
    assert cli.main(args) == 2
    err = one_line_error(capsys, fragment)
    assert "the run is damaged" in err or "restore the run" in err, err
    for name in ("report.json", "scores", "analysis.json", "plots"):
        assert not (path / name).exists(), name


@pytest.mark.parametrize("failed, left", [([0, 1, 2, 3], 0), ([0, 1, 3], 1)])
def test_analyze_refuses_a_run_with_too_few_models_as_score_does(
    tiny_run, tmp_path, capsys, failed, left
):
    path = _copy(tiny_run, tmp_path)
    _edit_arrays(path, "logits", lambda a: a["logits"].__setitem__(failed, np.nan))
    store.update_run_info(path, failed_models=failed)
    for command in ("score", "analyze"):
        assert cli.main([command, str(path), "--no-verify"]) == 2
        one_line_error(capsys, f"{left} of 4 models are left to {command}")
    assert not (path / "analysis.json").exists() and not (path / "report.json").exists()


def test_a_directory_that_is_no_run_is_named_so(tmp_path, capsys):
    (tmp_path / "notes.txt").write_text("mine")
    for command in ("score", "analyze", "compare"):
        assert cli.main([command, str(tmp_path)]) == 2
        one_line_error(capsys, f"{tmp_path} is not a jaxsam run directory")
    assert cli.main(["score", str(tmp_path / "nope")]) == 2
    one_line_error(capsys, "does not exist")
    assert (tmp_path / "notes.txt").read_text() == "mine"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["notes.txt"]  # not even a lock file


@pytest.mark.parametrize("folder", ["masks", "logits"])
def test_a_run_without_its_masks_or_logits_says_restore_or_retrain(
    tiny_run, tmp_path, capsys, folder
):
    path = _copy(tiny_run, tmp_path)
    shutil.rmtree(path / folder)
    assert cli.main(["score", str(path), "--no-verify"]) == 2
    one_line_error(capsys, f"{folder} is missing ({folder}); the run is damaged: restore the")
