"""The run-directory lifecycle: start (or replace) a run, check a resume, finish a run.

A run is started by :func:`begin_run` (config, masks and header; an old run under
``--overwrite`` is moved aside and deleted only once the new one has started), resumed after
:func:`check_resumable`, and finished by :func:`finish_run` (logits, metrics, digests, then
``COMPLETE`` last, once the run reads back).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from pathlib import Path

import numpy as np

from jaxsam import config as config_lib
from jaxsam.errors import RunDirError, action, option
from jaxsam.store.arrays import array_shapes, save_arrays, save_logits_streamed
from jaxsam.store.blocks import ModelBlocks
from jaxsam.store.digests import write_digests
from jaxsam.store.files import read_json, write_json, write_text_atomic
from jaxsam.store.header import (
    COMPLETE,
    RUN_FORMAT,
    RUN_VERSION,
    check_same_study,
    divergence_hint,
    update_run_info,
)
from jaxsam.store.lock import LOCK_FILE
from jaxsam.store.lock import held as lock_held
from jaxsam.store.masks import masks_fingerprint
from jaxsam.store.reader import _read_run
from jaxsam.store.rundir import (
    ASIDE_PREFIX,
    _config_dict,
    _same_config,
    check_run_dir,
    check_writable,
)


def _move_aside(path: Path) -> Path | None:
    """Moves every entry of ``path`` (except a held lock file) into a fresh hidden directory.

    The header and config go first, so a kill half-way never leaves something that looks like
    the old run. Renames only: links are moved as links, never followed.

    Returns:
      The directory ``path/.jaxsam-replaced-*`` now holding the old run, or None if empty.
    """
    entries = [p for p in path.iterdir() if not (p.name == LOCK_FILE and lock_held(path))]
    if not entries:
        return None
    aside = Path(tempfile.mkdtemp(prefix=ASIDE_PREFIX, dir=path))
    first = {COMPLETE: 0, "run.json": 1, "config.json": 2}
    for p in sorted(entries, key=lambda p: first.get(p.name, 3)):
        os.rename(p, aside / p.name)
    return aside


def _restore_aside(path: Path, aside: Path) -> None:
    """Removes what a failed start wrote in ``path`` and moves the old run back."""
    for p in path.iterdir():
        if p == aside or (p.name == LOCK_FILE and lock_held(path)):
            continue
        if p.is_dir() and not p.is_symlink():
            shutil.rmtree(p, ignore_errors=True)
        else:
            with contextlib.suppress(OSError):
                p.unlink()
    for p in aside.iterdir():
        os.rename(p, path / p.name)
    aside.rmdir()


def _discard(aside: Path | None) -> None:
    """Deletes a moved-aside old run (``shutil.rmtree`` unlinks links, never follows them)."""
    if aside is not None:
        shutil.rmtree(aside, ignore_errors=True)


def _make_dir(path: Path) -> None:
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise RunDirError(
            f"cannot create {path} ({e.strerror}); choose a writable {option('out', None)}"
        ) from e
    check_writable(path)


def prepare_run_dir(
    path: str | Path, config: config_lib.Config, *, overwrite: bool = False
) -> Path:
    """Creates ``path`` for a new run of ``config``, or explains why it cannot.

    :func:`check_run_dir` first (nothing is touched when it refuses); with ``overwrite`` the old
    run is then moved aside into ``path/.jaxsam-replaced-*`` and deleted. Checks that the
    directory is writable. :func:`begin_run` is the same, keeping the old run until the new
    one has started.

    Raises:
      RunExistsError, RunDirError: see :func:`check_run_dir`.
    """
    path = Path(path)
    check_run_dir(path, config, overwrite=overwrite)
    if path.is_dir():
        _discard(_move_aside(path))
    _make_dir(path)
    return path


def begin_run(
    path: str | Path,
    config: config_lib.Config,
    pool_origin: dict,
    keep: np.ndarray,
    ids: np.ndarray,
    labels: np.ndarray,
    *,
    overwrite: bool = False,
    extra: dict | None = None,
) -> str:
    """Starts a new run in ``path``: :func:`check_run_dir`, then :func:`start_run` (``extra``:
    further run-header fields, see there).

    Every check (the caller's on config, data and disk, then :func:`check_run_dir`) has passed
    before anything is touched. With ``overwrite`` the old run is moved aside
    (``path/.jaxsam-replaced-*``, a rename), the new run's config, masks and header are
    written, and only then is the old run deleted. If writing the start fails, what was
    written is removed and the old run is moved back.

    Returns:
      The masks fingerprint (:func:`start_run`).
    """
    path = Path(path)
    check_run_dir(path, config, overwrite=overwrite)
    aside = _move_aside(path) if path.is_dir() else None
    try:
        _make_dir(path)
        fingerprint = start_run(path, config, pool_origin, keep, ids, labels, extra=extra)
    except BaseException:
        if aside is not None:
            _restore_aside(path, aside)
        raise
    _discard(aside)
    return fingerprint


def start_run(
    path: Path,
    config: config_lib.Config,
    pool_origin: dict,
    keep: np.ndarray,
    ids: np.ndarray,
    labels: np.ndarray,
    *,
    extra: dict | None = None,
) -> str:
    """Writes config, masks and the run header; returns the masks fingerprint.

    ``extra`` adds further header fields: a DP-SGD run's privacy guarantee ``"dp"`` (computed
    by the caller, :func:`jaxsam.optim.dp.privacy_record`: the store does no accounting), an
    imported run's ``"provenance"``.
    """
    write_json(path / "config.json", _config_dict(config))
    save_arrays(path / "masks", {"keep": keep, "ids": ids, "labels": labels})
    fingerprint = masks_fingerprint(pool_origin["fingerprint"], keep)
    write_json(
        path / "run.json",
        {
            "format": RUN_FORMAT,
            "version": RUN_VERSION,
            "status": "training",
            "models": int(keep.shape[0]),
            "examples": int(keep.shape[1]),
            "pool": pool_origin,
            "masks_fingerprint": fingerprint,
            "failed_models": [],
            **(extra or {}),
        },
    )
    return fingerprint


def check_resumable(
    path: Path, config: config_lib.Config, pool_origin: dict, keep: np.ndarray
) -> bool:
    """Checks that ``path`` holds an unfinished run of exactly this config, pool and masks.

    Returns:
      Whether the run header (``run.json``) exists. ``False`` means the run was killed while
      it was being started (config written, masks or header not yet): start it again in place.

    Raises:
      RunDirError: no run, a finished run, another config, other pool / masks, or a run
        whose training stopped on diverged models (retrain it: a resume would diverge again).
    """
    if not path.is_dir() or not (path / "config.json").is_file():
        raise RunDirError(
            f"{path} holds no run to resume; start a new run there (without {option('resume')})"
        )
    existing = read_json(path / "config.json", "config")
    if not _same_config(existing, config):
        raise RunDirError(f"{path}/config.json differs from the config being resumed")
    if (path / COMPLETE).exists():
        raise RunDirError(
            f"{path} is already complete; score it with `jaxsam score {path}` (or train it "
            f"again with {option('overwrite')})"
        )
    check_writable(path)
    if not (path / "run.json").is_file():
        return False
    info = read_json(path / "run.json", "run header")
    check_same_study(path, info, pool_origin, keep)
    diverged = divergence_hint(path, info)  # a resume would replay the same steps
    if diverged:
        raise RunDirError(f"{path} cannot be resumed: {diverged}")
    return True


def finish_run(
    path: Path,
    *,
    logits: np.ndarray,
    labels: np.ndarray,
    query_names: list[str],
    test_logits: np.ndarray,
    test_labels: np.ndarray,
    metrics: dict,
    failed_models: list[int],
) -> None:
    """Writes logits and metrics, then marks the run complete (``COMPLETE`` last).

    ``logits`` and ``test_logits`` may be :class:`~jaxsam.store.blocks.ModelBlocks` (an import
    too large to hold twice): they are then written a block of models at a time.
    """
    info = read_json(path / "run.json", "run header")
    m, n = info["models"], info["examples"]
    if logits.shape[:2] != (m, n) or logits.ndim != 4:
        raise RunDirError(f"logits have shape {logits.shape}; this run needs [{m}, {n}, A, C]")
    if len(query_names) != logits.shape[2]:
        raise RunDirError(f"{len(query_names)} query names for {logits.shape[2]} query views")
    (path / COMPLETE).unlink(missing_ok=True)
    update_run_info(path, status="exporting")
    if isinstance(logits, ModelBlocks) or isinstance(test_logits, ModelBlocks):
        save_logits_streamed(path / "logits", logits, labels, test_logits, test_labels)
    else:
        save_arrays(
            path / "logits",
            {
                "logits": logits.astype(np.float32),
                "labels": labels,
                "test_logits": test_logits.astype(np.float32),
                "test_labels": test_labels,
            },
        )
    write_json(
        path / "logits.json",
        {
            "shape": list(logits.shape),
            "test_shape": list(test_logits.shape),
            "dtype": "float32",
            "query_names": list(query_names),
            "parameters": "final",
            "batch_norm": "inference mode (running statistics)",
            "masks_fingerprint": info["masks_fingerprint"],
        },
    )
    write_json(path / "metrics.json", metrics)
    update_run_info(
        path,
        status="complete",
        failed_models=sorted(int(i) for i in failed_models),
        queries=int(logits.shape[2]),
        classes=int(logits.shape[3]),
    )
    write_digests(path)
    _check_finished(path, logits.shape, test_logits.shape)
    write_text_atomic(path / COMPLETE, "logits and metrics written\n")


def _check_finished(path: Path, shape: tuple, test_shape: tuple) -> None:
    """Reads the finished run back as :func:`load_run` will, before ``COMPLETE`` is written.

    The masks are read whole and checked against ``run.json``'s fingerprint, the metadata and
    the logits' array metadata (shapes) are read, and every file is checked against
    ``digests.json``. A run that would not read back is never marked complete.

    Raises:
      RunDirError: what does not read back; the run stays incomplete (``--resume`` redoes the
        export, rebuilding damaged masks).
    """
    try:
        _read_run(path, verify=True, require_complete=False)
        shapes = array_shapes(path / "logits", "logits")
        for key, want in (("logits", shape), ("test_logits", test_shape)):
            got = shapes.get(key, ())
            if key not in shapes or (got is not None and tuple(got) != tuple(want)):
                raise RunDirError(f"{path / 'logits'} holds no {key} of shape {list(want)}")
    except RunDirError as e:
        raise RunDirError(
            f"the finished run in {path} does not read back, so it was not marked complete: "
            f"{e}; run {action('resume', run=path)} to redo the export"
        ) from e
