"""The run header ``RUN/run.json`` and the execution plan ``RUN/plan.json``.

The header records the run-directory format and version, the study's shapes, the pool's
origin and fingerprints, the masks fingerprint, the status and the failed models; a run whose
training stopped on diverged models has status ``diverged`` and a ``diverged`` record
(:func:`divergence`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from jaxsam import config as config_lib
from jaxsam.errors import RunDirError, action
from jaxsam.store.files import read_json, write_json
from jaxsam.store.masks import masks_fingerprint

RUN_FORMAT = "jaxsam-run"
RUN_VERSION = 1
COMPLETE = "COMPLETE"
PLAN = "plan.json"


def _header_problem(info: Any) -> str | None:
    """What is wrong with a run header (``run.json``) read back, or None when it is whole."""
    if not isinstance(info, dict):
        return f"holds a JSON {type(info).__name__}, not an object"
    for key, kind in (("models", int), ("examples", int), ("pool", dict)):
        if key not in info:
            return f"has no {key!r} key"
        if not isinstance(info[key], kind) or isinstance(info[key], bool):
            return f"has {key!r} = {config_lib.show(info[key])}, not a JSON {kind.__name__}"
    if info["models"] < 1 or info["examples"] < 1:
        return f"says {info['models']} models and {info['examples']} examples"
    if not isinstance(info["pool"].get("fingerprint"), str):
        return "has no pool fingerprint ('pool': {'fingerprint': ...})"
    if not isinstance(info.get("masks_fingerprint"), str):
        return "has no 'masks_fingerprint' string"
    failed = info.get("failed_models", [])
    if not isinstance(failed, list) or not all(
        isinstance(i, int) and not isinstance(i, bool) for i in failed
    ):
        return f"has failed_models = {config_lib.show(failed)}, not a list of model indices"
    bad = [i for i in failed if not 0 <= i < info["models"]]
    if bad or len(set(failed)) != len(failed):
        what = f"index {bad[0]} outside [0, {info['models']})" if bad else "a repeated index"
        return f"has failed_models = {config_lib.show(failed)} with {what}"
    return None


def check_run_header(path: Path, info: Any) -> dict:
    """Returns ``info`` (``path/run.json`` read back) or raises naming the missing/bad key."""
    problem = _header_problem(info)
    if problem is not None:
        raise RunDirError(
            f"{path / 'run.json'} {problem}; the run header is damaged or was edited: restore "
            "it or rerun the job"
        )
    return info


def check_same_study(path: Path, info: dict, pool_origin: dict, keep: np.ndarray) -> None:
    """Checks a rebuilt pool and masks against the run header ``info`` of ``path``.

    Compares the masks fingerprint (pool ids, labels and mask bits) and, for runs that recorded
    it, the fingerprint of the pool's inputs (``pool.inputs_fingerprint``: the features of the
    pool and held-out points), so a resume never continues on data that changed since.

    Raises:
      RunDirError: naming what changed.
    """
    if info.get("masks_fingerprint") != masks_fingerprint(pool_origin["fingerprint"], keep):
        raise RunDirError(
            f"{path} was started on another pool or other masks (fingerprint mismatch); "
            "the data changed since: restore it, or start a new run"
        )
    stored = (info.get("pool") or {}).get("inputs_fingerprint")
    if stored is not None and stored != pool_origin.get("inputs_fingerprint"):
        raise RunDirError(
            f"the input features of {pool_origin.get('dataset')} differ from those {path} "
            "was started on (pool inputs fingerprint mismatch): the data files changed since; "
            "restore them to continue this run, or start a new run"
        )


def write_plan(path: str | Path, plan: dict) -> None:
    """Writes ``RUN/plan.json``: the execution plan training resolved (strategy, convolution
    form, chunk size), written before the first step so that a resume reuses it."""
    write_json(Path(path) / PLAN, plan)


def read_plan(path: str | Path) -> dict | None:
    """``RUN/plan.json`` as written by :func:`write_plan`, or None when there is none."""
    f = Path(path) / PLAN
    return read_json(f, "execution plan") if f.exists() else None


def has_run(path: str | Path) -> bool:
    """Whether ``path`` holds a run header (``run.json``): a run was started there."""
    return (Path(path) / "run.json").is_file()


def read_run_info(path: str | Path) -> dict:
    """The run header ``RUN/run.json`` (format, shapes, pool origin, fingerprints, status)."""
    return check_run_header(Path(path), read_json(Path(path) / "run.json", "run header"))


def update_run_info(path: Path, **fields: Any) -> dict:
    """Updates fields of the run header; returns the new header."""
    info = read_run_info(path)
    info.update(fields)
    write_json(path / "run.json", info)
    return info


def divergence(info: dict) -> dict | None:
    """The ``diverged`` record of a run header whose training stopped on diverged models
    (status ``diverged``): ``models`` (their indices), ``learning_rate`` and ``on_divergence``
    (the config's), each None when missing; None for any other run."""
    if info.get("status") != "diverged":
        return None
    record = info.get("diverged") if isinstance(info.get("diverged"), dict) else {}
    models = record.get("models")
    lr = record.get("learning_rate")
    return {
        "models": models if isinstance(models, list) else None,
        "learning_rate": lr if isinstance(lr, int | float) and not isinstance(lr, bool) else None,
        "on_divergence": record.get("on_divergence"),
    }


def models_words(models: list[int] | None, limit: int = 8) -> str:
    """``model 3`` or ``models 0, 1, 2`` (the first ``limit``, then how many more)."""
    if not models:
        return "models"
    if len(models) == 1:
        return f"model {models[0]}"
    more = f" and {len(models) - limit} more" if len(models) > limit else ""
    return f"models {', '.join(str(i) for i in models[:limit])}{more}"


def divergence_hint(path: Path, info: dict) -> str | None:
    """What to do with a run whose training stopped on diverged models (:func:`divergence`),
    or None for any other run. A resume would replay the same steps and diverge again, so the
    fix is to train the run again with a lower learning rate (or, after ``train.on_divergence
    = 'stop'``, to exclude the diverged models)."""
    record = divergence(info)
    if record is None:
        return None
    lr = record["learning_rate"]
    now = "" if lr is None else f" (it was {lr:g})"
    text = (
        f"its training stopped because {models_words(record['models'])} diverged, and a resume "
        f"would diverge again: retrain it with a lower optim.learning_rate LR{now}, "
        f"{action('retrain', run=path)}"
    )
    if record["on_divergence"] == "stop":
        text += ", or with train.on_divergence = 'exclude' to drop the diverged models"
    return text
