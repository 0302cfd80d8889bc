"""experiments/gpu_session: two calls that fit the device tool's limits and keep what finished."""

import json
import re
import subprocess
from pathlib import Path

from experiments import gpu_session

ROOT = Path(__file__).resolve().parents[1]


def test_dry_run_shows_two_calls_within_budget():
    proc = subprocess.run(
        ["bash", "experiments/gpu_session.sh", "--dry-run"],
        cwd=ROOT, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    totals = re.findall(r"^call (\d): (\d+) s of (\d+) s \(fits\)$", proc.stdout, re.M)
    assert [t[0] for t in totals] == ["1", "2"]
    assert all(int(used) <= int(limit) <= 480 for _, used, limit in totals)
    # Call 1 takes what no slot has measured; call 2 the study's SAM arm and the rest.
    first, second = proc.stdout.split("call 2:")
    for section in ("train:resnet18", "train:wrn16_4", "epoch", "plan"):
        assert section in first
    assert "--arms SAM --no-baseline" in second and "train:resnet9" in second


def test_a_step_cut_short_keeps_what_the_call_finished(tmp_path):
    seen = []

    def runner(argv, timeout, **kw):
        seen.append((argv, timeout))
        if "experiments.run" in argv:
            study = Path(argv[argv.index("--out") + 1])
            (study / "seed0" / "SAM").mkdir(parents=True)
            (study / "seed0" / "SAM" / "metrics.json").write_text("{}")
            raise subprocess.TimeoutExpired(argv, timeout)
        return subprocess.CompletedProcess(argv, 0)

    assert gpu_session.run_call(2, tmp_path, "idx", runner=runner) == 1
    steps = json.loads((tmp_path / "call2" / "steps.json").read_text())
    assert [s["status"] for s in steps] == ["timeout", "ok"]
    assert (tmp_path / "call2" / "study_metrics_SAM.json").exists()  # copied although cut short
    assert [t for _, t in seen] == [270, 170]


def test_steps_past_the_call_limit_are_skipped_not_started(tmp_path, monkeypatch):
    monkeypatch.setattr(gpu_session, "CALL_LIMIT_S", 24)  # margin 20: under 5 s left
    ran = []
    gpu_session.run_call(1, tmp_path, "idx", runner=lambda argv, **kw: ran.append(argv))
    assert ran == []
    assert json.loads((tmp_path / "call1" / "steps.json").read_text())[0]["status"] == "skipped"
