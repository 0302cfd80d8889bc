"""Output paths of ``compare`` and ``analyze``: refused in one line, before anything is written,
when they would crash or replace what jaxsam did not write.

``compare --plot out.npy`` used to crash in matplotlib, ``--html DIR`` with IsADirectoryError,
and ``--plot DIR`` wrote ``DIR.png`` while printing ``wrote DIR``; ``analyze --out DIR``
replaced any ``analysis.json`` and ``plots/*.png`` it found there.
"""

from __future__ import annotations

import json

import pytest

from jaxsam import cli

from .conftest import one_line_error, unscored_copy


@pytest.fixture
def run_copy(tiny_run, tmp_path):
    return unscored_copy(tiny_run.path, tmp_path / "run")


@pytest.mark.parametrize(
    "flag, name, fragment",
    [
        ("--plot", "out.npy", "ends in .npy; the file must end in .png, .pdf, .svg"),
        ("--plot", "roc", "has no extension; the file must end in .png"),
        ("--plot", "DIR", "is a directory; pass a file path ending in .png"),
        ("--html", "DIR", "is a directory; pass a file path ending in .html, .htm"),
        ("--html", "page.txt", "ends in .txt; the file must end in .html, .htm"),
    ],
)
def test_compare_refuses_bad_output_files(run_copy, tmp_path, capsys, flag, name, fragment):
    target = tmp_path / name
    if name == "DIR":
        target.mkdir()
    assert cli.main(["compare", str(run_copy), flag, str(target)]) == 2
    one_line_error(capsys, f"{flag} {target} {fragment}")
    assert not (run_copy / "report.json").exists()  # refused before scoring the run
    assert not target.with_suffix(".png").exists() and not target.with_name("DIR.png").exists()


def test_compare_says_the_path_it_wrote(run_copy, tmp_path, capsys):
    plot = tmp_path / "roc.svg"
    assert cli.main(["compare", str(run_copy), "--plot", str(plot)]) == 0
    assert f"wrote {plot}" in capsys.readouterr().out and plot.is_file()


def test_analyze_out_keeps_a_users_own_files(run_copy, tmp_path, capsys):
    out = tmp_path / "mine"
    (out / "plots").mkdir(parents=True)
    (out / "analysis.json").write_text('{"mine": 1}')
    (out / "plots" / "subgroups.png").write_bytes(b"my figure")
    for extra in ([], ["--overwrite"]):
        assert cli.main(["analyze", str(run_copy), "--out", str(out), *extra]) == 2
        one_line_error(capsys, "holds no jaxsam analysis (it holds analysis.json, plots")
    assert json.loads((out / "analysis.json").read_text()) == {"mine": 1}
    assert (out / "plots" / "subgroups.png").read_bytes() == b"my figure"
    assert not (out / ".jaxsam.lock").exists()


def test_analyze_out_replaces_an_earlier_analysis_only_with_overwrite(run_copy, tmp_path, capsys):
    out = tmp_path / "analysis"
    assert cli.main(["analyze", str(run_copy), "--out", str(out)]) == 0
    first = (out / "analysis.json").read_bytes()
    (out / "analysis.json").write_text(json.dumps({**json.loads(first), "note": "kept"}))
    capsys.readouterr()
    assert cli.main(["analyze", str(run_copy), "--out", str(out)]) == 2
    one_line_error(
        capsys, "holds an earlier jaxsam analysis (analysis.json, plots/); pass --overwrite"
    )
    assert "note" in json.loads((out / "analysis.json").read_text())
    assert cli.main(["analyze", str(run_copy), "--out", str(out), "--overwrite"]) == 0
    assert "note" not in json.loads((out / "analysis.json").read_text())
    assert cli.main(["analyze", str(run_copy)]) == 0  # into the run itself: replaced as before
    assert cli.main(["analyze", str(run_copy)]) == 0


def test_analyze_out_that_is_a_file_is_refused(run_copy, tmp_path, capsys):
    out = tmp_path / "analysis.json"
    out.write_text("mine")
    assert cli.main(["analyze", str(run_copy), "--out", str(out)]) == 2
    one_line_error(capsys, "exists and is not a directory")
    assert out.read_text() == "mine"
