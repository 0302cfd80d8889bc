"""The fault-injection tables of the test suite: bad configs and bad run directories.

Every entry must be refused with a one-line :class:`jaxsam.errors.JaxsamError` containing the
expected key path or problem (``tests/test_reliability.py``). The machinery that kills and
damages runs is the library's: :mod:`jaxsam.hooks` (fault hooks) and
:mod:`jaxsam.bench.tiny_runs` (tiny runs in child processes).
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path

from jaxsam import hooks
from jaxsam.bench import tiny_runs as runs

# (config dict, fragment the message must contain)
BAD_CONFIGS: list[tuple[dict, str]] = [
    ({"optim": {"nme": "sam"}}, "unknown config key optim.nme"),
    ({"bogus": 1}, "unknown config key bogus"),
    ({"train": {"epoch": 3}}, "unknown config key train.epoch"),
    ({"optim": {"name": "adamw"}}, "optim.name = 'adamw' is not allowed"),
    ({"masks": {"pkeep": 1.0}}, "masks.pkeep"),
    ({"masks": {"pkeep": 0.0}}, "masks.pkeep"),
    ({"masks": {"pkeep": "half"}}, "masks.pkeep = 'half' has the wrong type"),
    ({"masks": {"models": 1}}, "masks.models"),
    ({"masks": {"models": 3, "pkeep": 0.1}}, "masks.pkeep * masks.models"),
    ({"train": {"epochs": "ten"}}, "train.epochs = 'ten' has the wrong type"),
    ({"train": {"epochs": True}}, "train.epochs = True has the wrong type"),
    ({"train": {"epochs": 0}}, "train.epochs = 0 is out of range"),
    ({"train": {"batch_size": 0}}, "train.batch_size = 0 is out of range"),
    ({"train": {"batch_size": 2.5}}, "train.batch_size = 2.5 has the wrong type"),
    ({"train": {"strategy": "pmap"}}, "train.strategy = 'pmap' is not allowed"),
    ({"train": {"on_divergence": "ignore"}}, "train.on_divergence = 'ignore' is not allowed"),
    ({"train": {"steps_per_call": 0}}, "train.steps_per_call = 0 is out of range"),
    ({"train": {"chunk_size": -1}}, "train.chunk_size = -1 is out of range"),
    ({"train": {"checkpoint_every_steps": -2}}, "train.checkpoint_every_steps = -2"),
    ({"train": {"checkpoint_every_minutes": -1}}, "train.checkpoint_every_minutes = -1"),
    ({"train": {"seed": -1}}, "train.seed = -1 is out of range"),
    ({"train": {"progress": "yes"}}, "train.progress = 'yes' has the wrong type"),
    ({"data": {"query_augment": 3}}, "data.query_augment = 3 is not allowed"),
    ({"data": {"train_augment": "mixup"}}, "data.train_augment = 'mixup' is not allowed"),
    ({"data": {"pool_size": 0}}, "data.pool_size = 0 is out of range"),
    ({"data": {"test_size": -5}}, "data.test_size = -5 is out of range"),
    ({"data": {"dataset": ""}}, "data.dataset is empty"),
    ({"data": {"seed": 1.5}}, "data.seed = 1.5 has the wrong type"),
    ({"model": {"name": "vgg"}}, "model.name = 'vgg' is not allowed"),
    ({"model": {"dtype": "float16"}}, "model.dtype = 'float16' is not allowed"),
    ({"model": {"width": 0}}, "model.width = 0 is out of range"),
    ({"optim": {"learning_rate": -0.1}}, "optim.learning_rate = -0.1 is out of range"),
    ({"optim": {"learning_rate": float("nan")}}, "optim.learning_rate = nan"),
    ({"optim": {"momentum": 1.5}}, "optim.momentum = 1.5 is out of range"),
    ({"optim": {"rho": -0.05}}, "optim.rho = -0.05 is out of range"),
    ({"optim": {"schedule": "step"}}, "optim.schedule = 'step' is not allowed"),
    ({"optim": {"extra": {"eta": 0.1}}}, "optim.extra.eta"),
    ({"optim": {"extra": []}}, "optim.extra = [] has the wrong type"),
    ({"optim": 3}, "optim must be a JSON object"),
    ({"version": 99}, "config version 99"),
]


def bad_run_dirs(tmp: Path, ref_path: Path) -> list[tuple[str, Callable[[], object], str]]:
    """(what, action, fragment) triples; each action must raise a JaxsamError with fragment."""
    from jaxsam import store
    from jaxsam.pipeline import train_and_export

    def copy(name: str) -> Path:
        dst = tmp / f"bad-{name}"
        shutil.copytree(ref_path, dst)
        return dst

    def load(p: Path):
        return store.load_run(p).logits

    def no_logits():
        p = copy("no-logits")
        shutil.rmtree(p / "logits")
        (p / "COMPLETE").unlink()
        return load(p)

    def no_marker():
        p = copy("no-marker")
        (p / "COMPLETE").unlink()
        return load(p)

    def resume_complete():
        return train_and_export(runs.tiny_config(), copy("complete"), resume=True)

    def resume_nothing():
        return train_and_export(runs.tiny_config(), tmp / "bad-empty", resume=True)

    def resume_other_config():
        return train_and_export(
            runs.tiny_config(**{"optim.learning_rate": 0.05}), copy("other"), resume=True
        )

    def foreign_logits():
        p = copy("foreign")
        info = json.loads((p / "logits.json").read_text())
        info["masks_fingerprint"] = "0" * 64
        (p / "logits.json").write_text(json.dumps(info))
        return load(p)

    def out_not_empty():
        p = tmp / "bad-busy"
        p.mkdir()
        (p / "notes.txt").write_text("mine")
        return train_and_export(runs.tiny_config(), p)

    return [
        ("run without logits", no_logits, "missing: logits"),
        ("run without COMPLETE", no_marker, "not complete"),
        ("resume of a finished run", resume_complete, "already complete"),
        ("resume of nothing", resume_nothing, "holds no run to resume"),
        ("resume with another config", resume_other_config, "differs"),
        ("logits of other masks", foreign_logits, "fingerprint mismatch"),
        ("--out holding other files", out_not_empty, "not empty"),
    ]


class Crash(Exception):
    """An injected failure (the process would have died here)."""


def crash_at_call(k: int, error: BaseException | None = None):
    """While the block runs, the ``k``-th training call raises ``error`` after computing."""
    return hooks.installed("train_call", hooks.raise_at(k, error or Crash()))


def crash_before_complete(error: BaseException | None = None):
    """While the block runs, writing ``metrics.json`` (after the logits) raises ``error``."""
    metrics = lambda path, **_: path.name == "metrics.json"  # noqa: E731
    return hooks.installed("json", hooks.raise_at(1, error or Crash(), when=metrics))
