"""launch/: one entry point per target; the SLURM template renders and parses."""

from __future__ import annotations

import importlib.util
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

LAUNCH = Path(__file__).resolve().parents[1] / "launch"
TARGETS = ("one_gpu.sh", "all_gpus_one_host.sh", "slurm_multinode.sbatch", "tpu_vm.sh")


def _render_module():
    spec = importlib.util.spec_from_file_location("render", LAUNCH / "render.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


VALUES = {
    "NODES": "4",
    "GPUS_PER_NODE": "8",
    "CONFIG": "/shared/study.json",
    "RUN_DIR": "/shared/runs/study",
    "WAVE_SIZE": "256",
    "JOB_NAME": "lira-sam",
}


@pytest.fixture(scope="module")
def sbatch():
    return _render_module().render((LAUNCH / "slurm_multinode.sbatch").read_text(), VALUES)


def test_one_entry_point_per_target_all_take_a_config():
    for name in TARGETS:
        text = (LAUNCH / name).read_text()
        assert text.startswith("#!/usr/bin/env bash"), name
        assert "CONFIG" in text and "jaxsam" in text, name
    assert (LAUNCH / "README.md").is_file()


@pytest.mark.skipif(shutil.which("bash") is None, reason="needs bash")
def test_scripts_are_valid_bash(sbatch, tmp_path):
    rendered = tmp_path / "job.sbatch"
    rendered.write_text(sbatch)
    for path in [*(LAUNCH / n for n in TARGETS if n.endswith(".sh")), rendered]:
        subprocess.run(["bash", "-n", str(path)], check=True)


def test_sbatch_directives(sbatch):
    assert "{{" not in sbatch
    lines = sbatch.splitlines()
    directives = {}
    for line in lines:
        if line.startswith("#SBATCH"):
            key, _, value = line[len("#SBATCH") :].strip().partition("=")
            directives[key] = value
    assert directives["--nodes"] == "4"
    assert directives["--ntasks-per-node"] == "8"
    assert directives["--gpus-per-node"] == "8"
    assert directives["--job-name"] == "lira-sam"
    assert directives["--cpus-per-task"] == "8"  # default
    assert re.fullmatch(r"\d+:\d\d:\d\d", directives["--time"])
    # sbatch reads directives only before the first command.
    first_cmd = next(i for i, ln in enumerate(lines) if ln and not ln.startswith("#"))
    assert max(i for i, ln in enumerate(lines) if ln.startswith("#SBATCH")) < first_cmd


def test_sbatch_commands_and_env(sbatch):
    body = [ln.strip() for ln in sbatch.splitlines() if ln.strip() and not ln.startswith("#")]
    assert "CONFIG=/shared/study.json" in body
    assert "RUN_DIR=/shared/runs/study" in body
    assert "WAVE_SIZE=256" in body
    assert "export JAXSAM_DISTRIBUTED=1" in body
    sruns = [shlex.split(ln) for ln in body if ln.startswith("srun")]
    assert len(sruns) == 1
    srun = sruns[0]
    assert srun[srun.index("jaxsam") :][:4] == ["jaxsam", "wave", "train", "$RUN_DIR"]
    assert srun[srun.index("--models") + 1] == "$a:$b"
    # init before the waves (single process), finalize after them.
    init = next(i for i, ln in enumerate(body) if "jaxsam wave init" in ln)
    srun_at = next(i for i, ln in enumerate(body) if ln.startswith("srun"))
    fin = next(i for i, ln in enumerate(body) if "jaxsam wave finalize" in ln)
    assert init < srun_at < fin
    assert "JAXSAM_DISTRIBUTED=0" in body[fin]


def test_sbatch_wave_loop_covers_every_model(sbatch, tmp_path):
    # Run the loop of the rendered script with srun/jaxsam stubbed out.
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / "run.json").write_text('{"models": 600}')
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    calls = tmp_path / "calls.txt"
    for tool in ("srun", "jaxsam"):
        stub = bin_dir / tool
        stub.write_text(f'#!/usr/bin/env bash\necho "{tool} $*" >> {calls}\n')
        stub.chmod(0o755)
    script = sbatch.replace("RUN_DIR=/shared/runs/study", f"RUN_DIR={run_dir}")
    path = tmp_path / "job.sbatch"
    path.write_text(script)
    python_dir = Path(sys.executable).parent
    env = {"PATH": f"{bin_dir}:{python_dir}:/usr/bin:/bin", "HOME": str(tmp_path)}
    subprocess.run(["bash", str(path)], check=True, env=env)
    lines = calls.read_text().splitlines()
    waves = [ln.split("--models ")[1].split()[0] for ln in lines if ln.startswith("srun")]
    assert waves == ["0:256", "256:512", "512:600"]
    assert lines[-2].startswith("jaxsam wave finalize")
    assert not any("wave init" in ln for ln in lines)  # run.json exists: no re-init


def test_render_names_a_missing_value():
    mod = _render_module()
    with pytest.raises(KeyError, match="NODES"):
        mod.render("#SBATCH --nodes={{NODES}}", {})
    assert mod.placeholders("{{A}} {{B}} {{A}}") == ["A", "B"]
