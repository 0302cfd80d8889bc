"""``jaxsam status`` on a complete run whose files were removed, garbled or truncated: DAMAGED,
naming the file and the fix, exit status 1 (it used to say COMPLETE, exit 0)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from jaxsam import cli, store


def _rm_masks(path: Path) -> None:
    shutil.rmtree(path / "masks")


def _garble_config(path: Path) -> None:
    (path / "config.json").write_text("garbage")


def _truncate_logits(path: Path) -> None:
    biggest = max(
        (p for p in (path / "logits").rglob("*") if p.is_file()), key=lambda p: p.stat().st_size
    )
    with open(biggest, "r+b") as f:
        f.truncate(100)


def _old_run_truncated_metadata(path: Path) -> None:
    """A run whose digests.json records no sizes (written before they were): the listed small
    files are still hashed."""
    digests = json.loads((path / store.DIGESTS).read_text())
    digests.pop("sizes", None)
    (path / store.DIGESTS).write_text(json.dumps(digests))
    text = (path / "metrics.json").read_text()
    (path / "metrics.json").write_text(text[: len(text) // 2])


@pytest.mark.parametrize(
    "damage, fragment",
    [
        (_rm_masks, "masks is missing"),
        (_garble_config, "config.json is not valid JSON"),
        (_truncate_logits, "has 100 bytes, the run wrote"),
        (_old_run_truncated_metadata, "metrics.json differs from what the run wrote"),
    ],
)
def test_status_reports_a_damaged_run(tiny_run, tmp_path, capsys, damage, fragment):
    path = tmp_path / "run"
    shutil.copytree(tiny_run.path, path)
    store.write_digests(path)  # as this jaxsam records them (sizes too)
    assert cli.main(["status", str(path)]) == 0
    assert "COMPLETE" in capsys.readouterr().out
    damage(path)
    assert cli.main(["status", str(path)]) == 1
    out = capsys.readouterr().out
    assert f"{path}: DAMAGED; " in out and fragment in out, out
    assert "fix: restore" in out and "COMPLETE" not in out, out
    assert cli.main(["status", str(path), "--json"]) == 1
    assert any(fragment in p for p in json.loads(capsys.readouterr().out)["damaged"])


@pytest.mark.parametrize("damage", [_rm_masks, _garble_config])
def test_the_advised_retrain_of_a_damaged_run_works(tiny_run, tmp_path, capsys, damage):
    """The fix line said `--overwrite` for a run whose config.json is garbage, which train
    refuses (it replaces only a directory that still reads as a jaxsam run)."""
    path = tmp_path / "run"
    shutil.copytree(tiny_run.path, path)
    config = tmp_path / "config.json"
    shutil.copy(path / "config.json", config)
    damage(path)
    assert cli.main(["status", str(path)]) == 1
    fix = capsys.readouterr().out.split("fix: ")[1]
    command = fix.split("(jaxsam ")[1].split(")")[0].split()
    command = [str(config) if a == "CONFIG" else a for a in command]
    if "remove it and retrain" in fix:
        shutil.rmtree(path)
    assert cli.main([*command, "--no-progress"]) == 0, capsys.readouterr().err
    assert cli.main(["status", str(path)]) == 0
    assert "COMPLETE" in capsys.readouterr().out
