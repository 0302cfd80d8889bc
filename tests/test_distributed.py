"""Two processes on localhost CPU (jax.distributed + gloo) train one study together."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import jaxsam
from jaxsam.config import to_dict
from jaxsam.errors import ConfigError
from jaxsam.pipeline import train_and_export
from jaxsam.train import distributed as dist

from .conftest import tiny_config

ROOT = Path(__file__).resolve().parents[1]


def _cfg():
    return tiny_config(
        **{"train.epochs": 1, "data.pool_size": 120, "data.test_size": 40, "train.batch_size": 16}
    )


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow  # long: CI runs it in its `-m slow` phase
def test_two_processes_equal_one_process(tmp_path):
    cfg_file = tmp_path / "study.json"
    cfg_file.write_text(json.dumps(to_dict(_cfg())))
    out = tmp_path / "run"
    port = _free_port()
    env = dict(os.environ)
    env.update(
        JAX_PLATFORMS="cpu",
        XLA_FLAGS="--xla_force_host_platform_device_count=2",
        PYTHONPATH=str(ROOT),
    )
    logs = [open(tmp_path / f"process{i}.log", "w") for i in range(2)]  # noqa: SIM115
    procs = [
        subprocess.Popen(
            [
                sys.executable,
                "-m",
                "jaxsam.commands.wave",
                "run",
                "--config",
                str(cfg_file),
                "--out",
                str(out),
                "--no-progress",
                "--distributed",
                "--coordinator",
                f"127.0.0.1:{port}",
                "--num-processes",
                "2",
                "--process-id",
                str(i),
            ],
            env=env,
            cwd=ROOT,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        for i in range(2)
    ]
    try:
        for p in procs:
            p.wait(timeout=240)
    except subprocess.TimeoutExpired:
        for q in procs:
            q.kill()
        pytest.fail("the two-process run did not finish in 240 s")
    finally:
        for log in logs:
            log.close()
    for i, p in enumerate(procs):
        assert p.returncode == 0, (tmp_path / f"process{i}.log").read_text()[-3000:]
    marker = json.loads((out / "waves" / "00000-00004.json").read_text())
    assert marker["processes"] == 2
    # Each process wrote its own shard of the global logits array.
    assert {f.name for f in (out / "waves" / "00000-00004").glob("ocdbt.process_*")} >= {
        "ocdbt.process_0",
        "ocdbt.process_1",
    }
    multi = jaxsam.load_run(out)
    single = train_and_export(_cfg(), tmp_path / "single")
    np.testing.assert_array_equal(multi.keep, single.keep)
    np.testing.assert_allclose(multi.logits, single.logits, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(multi.test_logits, single.test_logits, rtol=1e-5, atol=1e-5)
    assert multi.metrics["steps"] == single.metrics["steps"]


def test_process_blocks_tile_the_wave():
    blocks = [dist.process_block(64, 128, index=p, count=4) for p in range(4)]
    assert blocks == [(64, 80), (80, 96), (96, 112), (112, 128)]
    with pytest.raises(ConfigError, match="multiple of 3"):
        dist.process_block(0, 64, index=0, count=3)


def test_flag_and_env_switch_distributed_on(monkeypatch):
    import argparse

    from jaxsam import cli_options

    monkeypatch.delenv(dist.ENV_FLAG, raising=False)
    parser = argparse.ArgumentParser()
    cli_options.add_distributed_options(parser)
    assert not dist.wants_distributed(parser.parse_args([]).distributed)
    assert dist.wants_distributed(parser.parse_args(["--distributed"]).distributed)
    monkeypatch.setenv(dist.ENV_FLAG, "1")
    assert dist.wants_distributed(parser.parse_args([]).distributed)
    assert dist.wants_distributed()
    monkeypatch.setenv(dist.ENV_FLAG, "0")
    assert not cli_options.initialize_distributed(parser.parse_args([]))
    assert not dist.maybe_initialize_distributed()
