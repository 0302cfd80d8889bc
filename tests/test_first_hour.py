"""The first hour: ``jaxsam config``, the config key reference, a closed pipe, DP epsilon."""

import io
import json
import subprocess
import sys
from pathlib import Path

import pytest

from jaxsam import cli
from jaxsam import config as config_lib
from jaxsam.config_keys import keys, keys_markdown

DOCS = Path(__file__).resolve().parents[1] / "docs" / "config.md"


def _leaves(d, prefix=""):
    for k, v in d.items():
        if isinstance(v, dict) and k not in ("kwargs", "base_args", "extra"):
            yield from _leaves(v, f"{prefix}{k}.")
        else:
            yield f"{prefix}{k}", v


def test_config_prints_every_key_resolved(tmp_path, capsys):
    path = tmp_path / "c.json"
    path.write_text(json.dumps({"masks": {"models": 8}}))
    argv = ["config", "--config", str(path), "--set", "optim.name=sam", "--set", "optim.rho=0.1"]
    assert cli.main(argv) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed["masks"]["models"] == 8 and printed["optim"]["name"] == "sam"
    assert printed["optim"]["rho"] == 0.1 and printed["data"]["dataset"] == "digits"
    assert dict(_leaves(printed)).keys() == {k for k, _, _ in keys()}
    assert config_lib.from_dict(printed).optim.rho == 0.1  # it can be passed back as --config
    assert cli.main(["config", "--set", "optim.nam=1"]) == 2
    assert "unknown config key optim.nam" in capsys.readouterr().err


def test_every_config_key_is_documented_and_docs_are_current():
    listed = keys()
    assert [k for k, _, meaning in listed if not meaning.strip()] == []
    assert {k for k, _, _ in listed} == set(dict(_leaves(config_lib.to_dict(config_lib.Config()))))
    assert DOCS.read_text() == keys_markdown(), (
        "docs/config.md is out of date: regenerate it with "
        "`python3 -m jaxsam config --keys > docs/config.md`"
    )


class _ClosedPipe(io.StringIO):
    def write(self, text):
        raise BrokenPipeError(32, "Broken pipe")

    def fileno(self):
        raise io.UnsupportedOperation("no file descriptor")


def test_a_closed_pipe_ends_quietly(monkeypatch, capsys):
    monkeypatch.setattr(sys, "stdout", _ClosedPipe())
    assert cli.main(["config", "--keys"]) == 141
    assert capsys.readouterr().err == ""


def test_a_closed_pipe_ends_quietly_in_a_real_process():
    """The reader exits before jaxsam writes: no traceback on stderr, status 0 or 141."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "jaxsam", "config", "--keys"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        cwd=Path(__file__).resolve().parents[1],
    )
    proc.stdout.close()
    with proc.stderr:
        err = proc.stderr.read().decode()
    assert proc.wait(timeout=120) in (0, 141)
    assert "Traceback" not in err and "BrokenPipeError" not in err


@pytest.mark.parametrize(
    "run, words",
    [
        ({"optimizer": "sam", "base": "sgd", "rho": 0.05}, "SAM (rho 0.05) on SGD"),
        ({"optimizer": "asam", "base": "adam", "rho": 0.5}, "ASAM (rho 0.5) on Adam"),
        ({"optimizer": "sgd", "base": "nesterov"}, "Nesterov SGD"),
        ({"optimizer": "sgd", "base": "lion"}, "lion"),
    ],
)
def test_recipe_in_words(run, words):
    from jaxsam.report import recipe_line

    assert recipe_line(run) == words
