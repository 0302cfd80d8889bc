"""``jaxsam bench suite``: the row contract, the steady-state timing and the whole quick run."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from jaxsam.bench import suite, suite_sections

ROOT = Path(__file__).resolve().parents[1]


def _run_suite(tmp_path: Path, *args: str, timeout: float = 900) -> list[dict]:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.run(
        [sys.executable, "-m", "jaxsam", "bench", "suite", "--out", str(tmp_path), *args],
        capture_output=True,
        text=True,
        env=env,
        cwd=ROOT,
        timeout=timeout,
    )
    assert proc.returncode == 0, proc.stderr[-3000:] + proc.stdout[-3000:]
    rows = json.loads((tmp_path / "bench.json").read_text())
    assert isinstance(rows, list) and rows
    for row in rows:
        for key in ("bench", "backend", "device", "jax_version", "timestamp"):
            assert key in row, (key, row)
    assert (tmp_path / "bench.md").read_text().startswith("# jaxsam bench suite")
    return rows


def test_steady_step_seconds_separates_compiling_calls():
    # Calls of 4 steps at 0.5 s/step; the first 4-step call and the 2-step tail compile
    # (10 s and 3 s on top of their steps).
    calls, t = [], 0.0
    for n, extra in ((4, 10.0), (4, 0.0), (4, 0.0), (2, 3.0)):
        t += n * 0.5 + extra
        calls.append((0, n, t))
    step, compile_s = suite_sections.steady_step_seconds(calls)
    assert step == pytest.approx(0.5)
    assert compile_s == pytest.approx(13.0)
    assert suite_sections.steady_step_seconds([(0, 4, 3.0), (4, 2, 4.0)]) == (None, 0.0)


def test_markdown_lists_failed_sections_and_tables():
    header = {"timestamp": "t", "quick": True, "device": "cpu", "backend": "cpu", "devices": 1,
              "jax_version": "x", "seconds": 1.0}  # fmt: skip
    rows = [
        {
            "bench": "train",
            "model": "cnn",
            "optim": "sgd",
            "strategy": "auto",
            "ratio_vs_loop": 2.0,
        },
        {"bench": "epoch", "status": "timeout"},
    ]
    md = suite.to_markdown(rows, header)
    assert "## train" in md and "| cnn | sgd | auto |" in md and "| 2 |" in md
    assert "- epoch: timeout" in md


def test_parse_refuses_unknown_sections_and_networks(capsys):
    with pytest.raises(SystemExit):
        suite.parse(["--out", "x", "--sections", "train,bogus"])
    assert "unknown section" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        suite.parse(["--out", "x", "--sections", "train:nonet"])
    assert "unknown network" in capsys.readouterr().err


def test_plan_section_writes_rows_with_the_contract(tmp_path):
    rows = _run_suite(tmp_path, "--quick", "--sections", "plan")
    (row,) = rows
    assert row["bench"] == "plan" and "status" not in row
    assert row["bytes_per_model"] > 0


def test_budget_spent_marks_sections_skipped(tmp_path):
    rows = _run_suite(tmp_path, "--quick", "--sections", "sam,score", "--budget-s", "0")
    assert [(r["bench"], r["status"]) for r in rows] == [("sam", "skipped"), ("score", "skipped")]


@pytest.mark.slow
def test_quick_suite_runs_every_section(tmp_path):
    rows = _run_suite(tmp_path, "--quick", "--budget-s", "1700", timeout=1800)
    assert not [r for r in rows if "status" in r], [r for r in rows if "status" in r]
    assert {r["bench"] for r in rows} == set(suite.SECTIONS)
    train = [r for r in rows if r["bench"] == "train"]
    for r in train:
        assert {"model", "strategy", "ratio_vs_loop", "model_examples_per_s"} <= set(r)
    auto = next(r for r in train if r["strategy"] == "auto" and r["optim"] == "sgd")
    assert auto["ratio_vs_loop"] > 0
    assert any("sam_over_sgd" in r for r in train)
    (epoch,) = [r for r in rows if r["bench"] == "epoch"]
    assert epoch["epoch_wall_s"] >= epoch["epoch_steady_s"] > 0
    (chunked,) = [r for r in rows if r["bench"] == "chunked"]
    assert chunked["plan"].startswith("chunked") and chunked["state_bytes"] > 0
