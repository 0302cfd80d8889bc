"""``jaxsam bench score``: every row carries its hardware floor, measured in the same run."""

import json

import numpy as np

from jaxsam.bench import score


def test_read_pass_is_timed_on_the_array_itself():
    small, big = np.ones(1_000, np.float32), np.ones(20_000_000, np.float32)
    assert 0 < score.read_pass_seconds(small) < score.read_pass_seconds(big)


def test_rows_carry_floor_and_ratio_to_it(capsys):
    size = ["--models", "4", "--examples", "64", "--queries", "2"]
    base = ["--baseline-targets", "1", "--baseline-examples", "64"]
    argv = ["--json", *size, "--attacks", "lira_offline", *base]
    assert score.run(argv) == 0
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [r["attack"] for r in rows] == ["signal", "lira_offline"]
    for r in rows:
        assert {"attack", "seconds", "floor_s", "x_floor", "peak_bytes"} <= set(r)
        assert r["floor_s"] > 0 and r["peak_bytes"] > r["signal_bytes"] == 4 * 64 * 2 * 4
        timed = r.get("seconds_warm", r["seconds"])
        assert abs(r["x_floor"] - timed / r["floor_s"]) <= 0.05 * r["x_floor"] + 0.1
    # the signal row times the steady pass; compiling its code is reported apart
    assert rows[0]["compile_s"] > 0 and "compile_s" not in rows[1]
