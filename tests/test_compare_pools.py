"""``compare`` of runs on different pools warns that its diff column is no paired difference
(it used to print the paired diff without a word)."""

from __future__ import annotations

import shutil

from jaxsam import cli
from jaxsam.pipeline import train_and_export

from .conftest import tiny_config


def test_compare_warns_when_the_pools_differ(tiny_run, tmp_path, capsys):
    other = train_and_export(tiny_config(**{"data.pool_size": 200}), tmp_path / "other")
    first, same = tmp_path / "sgd", tmp_path / "same"  # copies: compare scores them in place
    shutil.copytree(tiny_run.path, first)
    shutil.copytree(tiny_run.path, same)
    assert cli.main(["compare", str(first), str(same)]) == 0
    assert "warning" not in capsys.readouterr().err
    assert cli.main(["compare", str(first), str(other.path)]) == 0
    captured = capsys.readouterr()
    assert "diff (last - first)" in captured.out
    err = captured.err.strip()
    assert len(err.splitlines()) == 1, err
    assert "warning: other scores another pool than sgd (pool_size 300 vs 200)" in err, err
    assert "does not hold" in err, err
