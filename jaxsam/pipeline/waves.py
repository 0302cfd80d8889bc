"""Studies bigger than the hardware: waves of models written into one run directory.

A study of M models (say 1,024) is trained as waves ``[a, b)`` (e.g. 64 models each) in any
order, by one job after another or by a job array, on one host or many:

1. :func:`init_study` writes the config, the full bool [M, N] masks and the run header once
   (``store.start_run``); the masks are a pure function of the config, fixed up front.
2. :func:`train_wave` trains models ``[a, b)`` (``first_model=a``: the same keys, batches and
   learning-rate schedule as in a single run of all M models) and writes its logits and then
   its marker under ``RUN/waves/`` (layout: :mod:`jaxsam.store.waves`). Under
   ``jax.distributed`` the wave is split over all processes and the arrays are one global
   ``jax.Array`` saved by all of them (see :mod:`jaxsam.train.distributed`).
3. :func:`finalize` checks that the finished waves cover every model exactly once, assembles
   logits [M, N, A, C] and marks the run ``COMPLETE`` (``store.finish_run``). Until then
   ``jaxsam.load_run`` and ``jaxsam score`` refuse the run.

The number of steps per epoch depends on the largest training subset over ALL M models, so a
wave pins it to the full study's value (otherwise a wave whose models happen to have smaller
subsets would take fewer steps and train differently from a single run).
"""

from __future__ import annotations

import json
import re
import time
from pathlib import Path

import numpy as np

from jaxsam import store
from jaxsam.config import Config
from jaxsam.errors import ConfigError, RunDirError, action, option
from jaxsam.pipeline.study import finish_study, start_study
from jaxsam.plan.study import StudyPlan, make_plan, open_plan, stored_execution
from jaxsam.store import waves as wave_store
from jaxsam.store.waves import WAVES_DIR, done_waves, wave_name
from jaxsam.train import distributed as dist


def parse_range(text: str, num_models: int) -> tuple[int, int]:
    """``"64:128"`` -> (64, 128); ``":64"`` and ``"960:"`` take the ends; checks the bounds."""
    if ":" not in text:
        raise ConfigError(f"model range {text!r} must look like A:B, e.g. 0:64")
    lo_s, hi_s = text.split(":", 1)
    try:
        lo = int(lo_s) if lo_s.strip() else 0
        hi = int(hi_s) if hi_s.strip() else num_models
    except ValueError as e:
        raise ConfigError(f"model range {text!r} must be two integers A:B, e.g. 0:64") from e
    if not 0 <= lo < hi <= num_models:
        raise ConfigError(
            f"model range {lo}:{hi} is outside the study's {num_models} models; use "
            f"0 <= A < B <= {num_models}"
        )
    return lo, hi


def wave_ranges(num_models: int, wave_size: int) -> list[tuple[int, int]]:
    """Splits ``[0, M)`` into consecutive waves of ``wave_size`` models (the last may be short)."""
    if wave_size < 1:
        raise ConfigError(f"wave size {wave_size} must be a positive number of models")
    return [(a, min(a + wave_size, num_models)) for a in range(0, num_models, wave_size)]


def init_study(
    config: Config, out: str | Path, *, overwrite: bool = False, wave_size: int | None = None
) -> StudyPlan:
    """Creates the run directory: config, full masks [M, N] and header, written once.

    Every check (the study's plan, :func:`jaxsam.plan.make_plan`, with the disk for waves of
    ``wave_size`` models, default 64) runs before ``out`` is created or its old run replaced
    (:func:`jaxsam.pipeline.study.start_study`).

    Returns:
      The study's plan (``out``: the run directory).
    """
    size = wave_size or min(64, config.masks.models)
    plan = make_plan(config, out, overwrite=overwrite, wave_size=size)
    with store.run_lock(plan.out, "wave init"):
        start_study(plan, overwrite=overwrite)
        store.update_run_info(plan.out, layout="waves")
    return plan


def open_study(path: str | Path) -> StudyPlan:
    """Re-opens a run directory made by :func:`init_study` (or ``jaxsam train --wave-size``):
    its plan, rebuilt from the stored config and checked against its fingerprints
    (:func:`jaxsam.plan.study.open_plan`); a run trained in one piece is refused
    (:func:`check_wave_study`)."""
    check_wave_study(Path(path))
    return open_plan(path)


def check_wave_study(path: Path) -> None:
    """Refuses a run that ``jaxsam train`` trained (or is training) in one piece.

    Waves written into such a run mixed with its own logits: a complete run then counted 2 of
    its 8 models as done, and finalizing asked to train the other 6 again.

    Raises:
      RunDirError: naming the run's state and what to do instead.
    """
    info = store.read_run_info(path) if store.has_run(path) else {"layout": "waves"}
    if info.get("layout") == "waves":
        return
    new_study = f"train a study in waves into a new directory (another {option('out', None)})"
    how = "imported with import-logits" if "provenance" in info else "trained in one piece"
    if store.is_complete(path):
        raise RunDirError(
            f"{path} is already complete ({how}, not in waves): nothing to train or finalize; "
            f"score it as it is, or {new_study}"
        )
    raise RunDirError(
        f"{path} is an unfinished run trained in one piece (not in waves); continue it with "
        f"{action('resume', run=path)}, or {new_study}"
    )


def train_rows(
    study: StudyPlan,
    lo: int,
    hi: int,
    *,
    run_dir: Path | None = None,
    resume: bool = False,
    progress: bool | None = None,
    desc: str = "wave",
) -> dict:
    """Trains global models ``[lo, hi)`` of ``study`` on this process's devices.

    Returns a dict with ``logits`` [hi-lo, N, A, C] and ``test_logits`` [hi-lo, T, A, C]
    (float32, host), ``final_batch_loss`` [hi-lo], ``failed`` bool [hi-lo], ``seconds``,
    ``steps`` and ``steps_per_epoch``.
    """
    from jaxsam.train.loop import export_logits, train_ensemble

    cfg = study.config
    k = hi - lo
    result = train_ensemble(
        cfg,
        study.pool,
        study.keep[lo:hi],
        setup=study.setup,  # the full study's steps per epoch: a slice trains as in one run
        execution=stored_execution(run_dir) if resume else None,
        run_dir=run_dir,
        resume=resume,
        progress=progress,
        desc=desc,
        first_model=lo,
    )
    pool_logits, test_logits = export_logits(result, study.pool, cfg.data.query_augment)
    failed = np.zeros(k, bool)
    for i in result.failed_models:
        if i < k:
            failed[i] = True
    return {
        "logits": pool_logits[:k],
        "test_logits": test_logits[:k],
        "final_batch_loss": np.asarray(result.losses[:k], np.float32),
        "failed": failed,
        "seconds": float(result.seconds),
        "steps": int(result.setup.total_steps),
        "steps_per_epoch": int(result.setup.steps_per_epoch),
    }


def train_wave(
    path: str | Path,
    first: int,
    stop: int,
    *,
    progress: bool | None = None,
    resume: bool = True,
    study: StudyPlan | None = None,
) -> dict:
    """Trains wave ``[first, stop)`` of the study in ``path`` and writes its logits.

    Single process: checkpoints go to ``RUN/waves/AAAAA-BBBBB.work/checkpoints`` and a rerun
    resumes from them. Under ``jax.distributed`` each process trains its block of the wave
    (:func:`jaxsam.train.distributed.process_block`) without checkpoints (the wave is the unit
    of restart), and all processes save the logits together.

    Returns the wave's marker (the JSON written next to its arrays). A wave already done is
    skipped: its marker is returned with ``"skipped": True`` (its ``train_seconds`` are the
    first run's).

    Raises:
      RunDirError: ``[first, stop)`` overlaps another wave, done or in progress, without being
        that wave (checked before anything trains; :func:`finalize` would refuse the overlap).
    """
    path = Path(path)
    study = study or open_study(path)
    parse_range(f"{first}:{stop}", study.num_models)
    done = wave_store.read_marker(path, first, stop)
    if done is not None:
        return {**done, "skipped": True}
    check_no_overlap(path, first, stop)
    lo, hi = dist.process_block(first, stop)
    multi = dist.process_count() > 1
    work = None if multi else wave_store.work_dir(path, first, stop)
    out = train_rows(
        study,
        lo,
        hi,
        run_dir=work,
        resume=resume,
        progress=progress,
        desc=f"models {lo}:{hi}",
    )
    seconds = out["seconds"]
    if multi:
        from jax.experimental import multihost_utils

        seconds = float(np.max(multihost_utils.process_allgather(np.float32(seconds))))
    tree = {
        key: dist.global_model_array(np.asarray(out[key]), stop - first)
        for key in ("logits", "test_logits", "final_batch_loss", "failed")
    }
    tree["labels"] = np.asarray(study.pool.y, np.int32)
    tree["test_labels"] = np.asarray(study.pool.test_y, np.int32)
    wave_store.save_arrays(path, first, stop, tree)
    info = {
        "first_model": first,
        "stop_model": stop,
        "processes": dist.process_count(),
        "train_seconds": seconds,
        "steps": out["steps"],
        "steps_per_epoch": out["steps_per_epoch"],
        "finished_at": time.strftime("%Y-%m-%dT%H:%M:%S"),
    }
    dist.barrier(f"jaxsam-wave-{first}-{stop}-saved")
    if dist.process_index() == 0:
        wave_store.mark_done(path, first, stop, info)
    dist.barrier(f"jaxsam-wave-{first}-{stop}-marked")
    return info


def missing_ranges(num_models: int, waves: list[tuple[int, int]]) -> list[tuple[int, int]]:
    """Model ranges ``[a, b)`` of ``[0, M)`` that no finished wave covers."""
    covered = np.zeros(num_models, bool)
    for a, b in waves:
        covered[a:b] = True
    out, start = [], None
    for i, c in enumerate([*covered, True]):
        if not c and start is None:
            start = i
        elif c and start is not None:
            out.append((start, i))
            start = None
    return out


def check_no_overlap(path: Path, first: int, stop: int) -> None:
    """Refuses wave ``[first, stop)`` when it overlaps a different wave of ``path``, done or
    in progress (its ``.work`` checkpoints), naming that wave's model range and the fix."""
    started = []
    for entry in wave_store.in_progress(path):
        m = re.match(r"^(\d+)-(\d+)$", entry["wave"])
        if m:
            started.append((int(m.group(1)), int(m.group(2))))
    done = done_waves(path)
    for a, b in done + started:
        if (a, b) == (first, stop) or not (a < stop and first < b):
            continue
        if (a, b) in done:
            num_models = int(store.read_run_info(path)["models"])
            free = [
                action("train_wave", run=path, first=lo, stop=hi)
                for lo, hi in missing_ranges(num_models, done)
                if lo < stop and first < hi
            ]
            fix = f"train {' and '.join(free)} instead" if free else "those models are done"
            state = "done"
        else:
            work = wave_store.work_dir(path, a, b)
            fix = (
                f"continue it with {action('train_wave', run=path, first=a, stop=b)}, or delete "
                f"{work} to drop it"
            )
            state = "in progress"
        raise RunDirError(
            f"wave {first}:{stop} overlaps wave {a}:{b} ({state}) in {path / WAVES_DIR}; each "
            f"model is trained by one wave only: {fix}"
        )


def _overlaps(waves: list[tuple[int, int]]) -> list[tuple[tuple[int, int], tuple[int, int]]]:
    return [(w, v) for w, v in zip(waves, waves[1:], strict=False) if v[0] < w[1]]


def finalize(path: str | Path, *, keep_waves: bool = True):
    """Assembles every wave's logits into ``RUN/logits`` [M, N, A, C] and marks the run complete.

    Run in ONE process (after all waves): ``jaxsam wave finalize RUN``.

    Raises:
      RunDirError: when a model has no finished wave, or two waves overlap.

    Returns:
      The finished :class:`jaxsam.store.Run`.
    """
    path = Path(path)
    with store.run_lock(path, "wave finalize", create=False):
        return _finalize(path, keep_waves)


def _finalize(path: Path, keep_waves: bool):
    """:func:`finalize` under the run's lock."""
    check_wave_study(path)
    info = store.read_run_info(path)
    config = store.read_config(path)
    m = int(info["models"])
    waves = done_waves(path)
    missing = missing_ranges(m, waves)
    if missing:
        spans = ", ".join(f"{a}:{b}" for a, b in missing)
        raise RunDirError(
            f"{path} is missing the logits of models {spans}; train them with "
            f"{' and '.join(action('train_wave', run=path, first=a, stop=b) for a, b in missing)}"
            " before finalizing"
        )
    if _overlaps(waves):
        (w, v), *_ = _overlaps(waves)
        raise RunDirError(
            f"waves {wave_name(*w)} and {wave_name(*v)} in {path / WAVES_DIR} overlap; delete one "
            "of them (its directory and .json marker) and finalize again"
        )
    masks = store.load_masks(path)
    keep = masks["keep"].astype(bool)
    parts = [wave_store.load_arrays(path, a, b) for a, b in waves]
    logits = np.concatenate([p["logits"] for p in parts], axis=0)
    test_logits = np.concatenate([p["test_logits"] for p in parts], axis=0)
    labels = parts[0]["labels"].astype(np.int32)
    test_labels = parts[0]["test_labels"].astype(np.int32)
    if not np.array_equal(labels, masks["labels"].astype(np.int32)):
        raise RunDirError(f"wave labels in {path / WAVES_DIR} differ from the masks'; rerun them")
    losses = np.concatenate([p["final_batch_loss"] for p in parts])
    failed = np.flatnonzero(np.concatenate([p["failed"] for p in parts]).astype(bool))
    markers = [wave_store.read_marker(path, a, b) for a, b in waves]
    run = finish_study(
        path,
        config,
        logits=logits,
        labels=labels,
        keep=keep,
        test_logits=test_logits,
        test_labels=test_labels,
        final_batch_loss=losses,
        train_seconds=sum(mk["train_seconds"] for mk in markers),
        steps=markers[0]["steps"],
        steps_per_epoch=markers[0]["steps_per_epoch"],
        failed_models=failed,
        waves=[wave_name(a, b) for a, b in waves],
    )
    if not keep_waves:
        for a, b in waves:
            wave_store.remove(path, a, b)
    return run


def status(path: str | Path) -> dict:
    """What is done in a run directory: waves done / missing, checkpoints, complete or not."""
    path = Path(path)
    if not store.has_run(path):
        raise RunDirError(f"{path} holds no jaxsam run (no run.json); check the path")
    info = store.read_run_info(path)
    m = int(info["models"])
    waves = done_waves(path)
    complete = store.is_complete(path)
    models_done = (
        m if complete and not waves else int(m - sum(b - a for a, b in missing_ranges(m, waves)))
    )
    return {
        "path": str(path),
        "models": m,
        "examples": int(info["examples"]),
        "layout": info.get("layout", "single"),
        "complete": complete,
        "status": info.get("status"),
        "waves_done": [wave_name(a, b) for a, b in waves],
        "models_done": models_done,
        "missing": [] if complete else [f"{a}:{b}" for a, b in missing_ranges(m, waves)],
        "waves_in_progress": wave_store.in_progress(path),
        "checkpoint_steps": wave_store.checkpoint_steps(path),
        "failed_models": info.get("failed_models", []),
        "diverged": store.divergence(info),  # training stopped on these (None: it did not)
    }


def train_study(
    config: Config,
    out: str | Path,
    *,
    wave_size: int | None = None,
    overwrite: bool = False,
    progress: bool | None = None,
):
    """The whole study in one call: init, every missing wave, finalize (single or multi-host).

    Returns the finished :class:`jaxsam.store.Run` in a single process, ``None`` under
    ``jax.distributed`` (read it with ``jaxsam.load_run`` in a fresh process).

    Under ``jax.distributed`` the orbax writes of ``store`` are single-process, so process 0
    runs init and finalize in a fresh child process (``python -m jaxsam wave ...`` on the CPU)
    while the other processes wait at a barrier; training and the wave saves use all processes.
    """
    out = Path(out)
    m = config.masks.models
    size = wave_size or m
    multi = dist.process_count() > 1
    resuming = store.has_run(out) and not overwrite
    study = None
    if dist.process_index() == 0 and not resuming:
        if multi:
            out.parent.mkdir(parents=True, exist_ok=True)
            cfg_file = out.parent / f".{out.name}.config.json"
            cfg_file.write_text(json.dumps(_config_dict(config)))
            try:
                _child(
                    ["init", "--config", str(cfg_file), "--out", str(out)]
                    + (["--overwrite"] if overwrite else [])
                )
            finally:
                cfg_file.unlink(missing_ok=True)
        else:
            study = init_study(config, out, overwrite=overwrite, wave_size=size)
    dist.barrier("jaxsam-study-init")
    study = study or open_study(out)
    if _config_dict(study.config) != _config_dict(config):
        raise RunDirError(
            f"{out} holds a different study (its config.json differs); choose another "
            f"{option('out', None)}"
        )
    for a, b in wave_ranges(m, size):
        train_wave(out, a, b, progress=progress, study=study)
    dist.barrier("jaxsam-study-trained")
    if dist.process_index() == 0:
        if multi:
            _child(["finalize", str(out)])
        else:
            return finalize(out)
    dist.barrier("jaxsam-study-finalized")
    # Under jax.distributed, orbax reads from one process alone would wait for the others at
    # exit: a multi-process caller reads the finished run in a fresh process instead.
    return None


def _config_dict(config: Config) -> dict:
    from jaxsam.config import to_dict

    return to_dict(config)


def _child(argv: list[str]) -> None:
    """Runs ``jaxsam wave ARGV`` in a fresh single-process CPU interpreter."""
    import os
    import subprocess
    import sys

    env = {k: v for k, v in os.environ.items() if not k.startswith("JAXSAM_")}
    env["JAX_PLATFORMS"] = "cpu"
    for key in ("SLURM_PROCID", "SLURM_NTASKS", "SLURM_JOB_ID", "SLURM_STEP_NODELIST"):
        env.pop(key, None)
    proc = subprocess.run(
        [sys.executable, "-m", "jaxsam.commands.wave", *argv], env=env, check=False
    )
    if proc.returncode != 0:
        raise RunDirError(f"`jaxsam wave {argv[0]}` failed (exit {proc.returncode}); see above")
