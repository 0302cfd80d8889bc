"""The run directory: the only code that reads and writes it.

This package owns every file of a run directory: this module the run itself (config, masks,
logits, metrics, the ``COMPLETE`` marker, reports and analyses), :mod:`jaxsam.store.checkpoints`
the resume checkpoints and :mod:`jaxsam.store.waves` the per-wave logits of a study trained in
waves. It is the only code in jaxsam that imports orbax.

Layout of ``RUN/`` (format ``jaxsam-run``, version 1)::

    config.json      the full resolved config (``jaxsam train --config RUN/config.json``)
    run.json         format, version, status, shapes, pool origin, fingerprints, failed models
    plan.json        the execution plan training resolved (``auto``), reused on resume
    masks/           orbax: keep bool [M, N], pool ids int64 [N], labels int32 [N]
    logits/          orbax: logits float32 [M, N, A, C], labels [N],
                     test_logits [M, T, A, C], test_labels [T]
    logits.json      query names, dtype, which parameters (final), masks fingerprint
    metrics.json     per-model train/test accuracy and losses
    checkpoints/     orbax CheckpointManager (resume; :mod:`jaxsam.store.checkpoints`)
    damaged/         checkpoints and masks found damaged, moved aside (never deleted)
    waves/           per-wave logits of a study trained in waves (:mod:`jaxsam.store.waves`)
    COMPLETE         written last: the run is whole
    report.json, report.md, scores/, plots/roc.png   (written by ``jaxsam score``, published
                     together by write_report_files)
    analysis.json, plots/             (written by ``jaxsam analyze``, here or in its --out)

Arrays go through orbax-checkpoint, metadata through JSON; nothing is pickled. Every write of
a JSON file is atomic (a fresh temporary file, then a rename); orbax finalises its directories
atomically. A run without ``COMPLETE`` is refused by :func:`load_run` with what is missing.
Nothing is written or deleted through a symbolic link below the run directory
(:mod:`jaxsam.store.paths`), and ``--overwrite`` replaces only a jaxsam run directory
(:func:`check_run_dir`, :func:`begin_run`).
"""

from __future__ import annotations

import contextlib
import dataclasses
import errno
import functools
import hashlib
import json
import logging
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from jaxsam import config as config_lib
from jaxsam import hooks
from jaxsam.errors import ConfigError, RunDirError, RunExistsError, WriteFailed, option
from jaxsam.store import paths
from jaxsam.store.lock import LOCK_FILE, run_lock  # noqa: F401 - run_lock is re-exported
from jaxsam.store.lock import held as lock_held

RUN_FORMAT = "jaxsam-run"
DIGESTS = "digests.json"
# What digests.json covers: these metadata files and every file of these array directories.
DIGESTED_FILES = ("config.json", "run.json", "plan.json", "logits.json", "metrics.json")
PLAN = "plan.json"
DIGESTED_DIRS = ("masks", "logits")
RUN_VERSION = 1
COMPLETE = "COMPLETE"
_UMASK = os.umask(0o022)  # read once (os.umask can only be read by setting it) ...
os.umask(_UMASK)  # ... and restored at once


def _checkpointer():
    import orbax.checkpoint as ocp

    return ocp.StandardCheckpointer()


def write_json(path: Path, obj: Any, *, allow_nan: bool = True) -> None:
    """Writes ``obj`` as indented JSON, atomically (temp file + rename).

    ``allow_nan=False`` refuses NaN and infinities (strict JSON) with a ``ValueError``.
    """
    hooks.fire("json", path=path)
    text = json.dumps(obj, indent=2, sort_keys=False, allow_nan=allow_nan) + "\n"
    write_text_atomic(path, text)


def write_text_atomic(path: Path, text: str) -> None:
    """Writes ``text`` to ``path`` through a fresh temporary file and a rename.

    The temporary file is created new (``O_EXCL``, a random name), so a crafted link at a
    temporary name is never written through; the rename replaces a link at ``path`` itself
    instead of following it. A link among ``path``'s parents is the caller's to refuse
    (:func:`jaxsam.store.paths.check_no_links`).
    """
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        os.fchmod(fd, 0o666 & ~_UMASK)  # mkstemp makes it private; a run is often shared
        with os.fdopen(fd, "w") as f:
            f.write(text)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def read_json(path: Path, what: str) -> Any:
    """Parses the JSON file ``path`` of a run directory (``what`` it holds, for messages).

    Raises:
      RunDirError: the file is missing, unreadable, binary, too deeply nested or not JSON.
    """
    if not path.is_file():
        raise RunDirError(f"{path} is missing ({what}); the run directory is incomplete or damaged")
    try:
        raw = path.read_bytes()
    except OSError as e:
        raise RunDirError(f"cannot read {path} ({what}): {e.strerror}; check permissions") from e
    parsed = config_lib.json_problem(raw)
    if isinstance(parsed, str):
        reason = parsed.split(";")[0]
        raise RunDirError(f"{path} {reason} ({what}); the file is damaged: rerun or restore it")
    return parsed[0]


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


def _remove_partial_writes(path: Path) -> None:
    """Removes orbax temporary siblings of ``path`` left by a process killed mid-write."""
    for tmp in path.parent.glob(f"{path.name}.orbax-checkpoint-tmp*"):
        shutil.rmtree(tmp, ignore_errors=True)


def save_arrays(path: Path, tree: dict[str, np.ndarray]) -> None:
    """Saves a flat dict of arrays with orbax, replacing ``path``; waits until it is on disk.

    Orbax writes into a temporary sibling and renames it when complete, so ``path`` either
    holds the whole tree or does not exist. Orbax cannot save an array with a zero-size
    dimension (e.g. the test logits [M, 0, A, C] of a run with ``data.test_split=null``): such
    an array is saved as its shape and a one-element array of its dtype, and
    :func:`load_arrays` rebuilds it.
    """
    paths.check_no_links(path.parent, path.name)
    _remove_partial_writes(path)
    if path.exists():
        shutil.rmtree(path)
    with write_errors(path, "arrays"):
        ckpt = _checkpointer()
        ckpt.save(path.absolute(), _encode_empty({k: np.asarray(v) for k, v in tree.items()}))
        hooks.fire("arrays_sent", path=path)
        ckpt.wait_until_finished()


class _DropThreadTracebacks(logging.Filter):
    """Drops orbax's log record of a failed background write (its full traceback).

    The same error is raised again in the caller's thread, where :func:`write_errors` turns it
    into one line; the record would only repeat it as a few hundred traceback lines.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        return record.exc_info is None and "raised an exception" not in record.getMessage()


_WRITE_ERRNOS = {
    errno.ENOSPC: "the disk is full: free space or choose another directory",
    errno.EDQUOT: "the disk quota is exhausted: free space or choose another directory",
    errno.EROFS: "the file system is read-only: choose a writable directory",
    errno.EACCES: "permission denied: make it writable or choose another directory",
    errno.EPERM: "permission denied: make it writable or choose another directory",
}
# The same conditions as tensorstore words them when orbax's asynchronous write fails.
_WRITE_WORDS = {
    "No space left on device": errno.ENOSPC,
    "Disk quota exceeded": errno.EDQUOT,
    "Read-only file system": errno.EROFS,
    "Permission denied": errno.EACCES,
}


def write_problem(error: BaseException) -> str | None:
    """The one-line reason a write failed for lack of space or permission, or None."""
    code = error.errno if isinstance(error, OSError) else None
    if code is None:
        text = str(error)
        code = next((c for words, c in _WRITE_WORDS.items() if words in text), None)
    return _WRITE_ERRNOS.get(code) if code is not None else None


@contextlib.contextmanager
def write_errors(path: Path, what: str):
    """Turns a write into ``path`` that fails for lack of space or permission into one line.

    Raises:
      WriteFailed: naming ``path`` and the fix, instead of the OSError (or the tensorstore
        error of an asynchronous orbax write) with its traceback.
    """
    quiet = _DropThreadTracebacks()
    absl_log = logging.getLogger("absl")
    absl_log.addFilter(quiet)
    unraisable = sys.unraisablehook
    sys.unraisablehook = _drop_closed_loop(unraisable)
    try:
        yield
    except Exception as e:
        problem = write_problem(e)
        if problem is None:
            raise
        unraisable = sys.unraisablehook  # the failed write's callbacks may still come
        raise WriteFailed(f"cannot write {what} to {path}: {problem}") from e
    finally:
        absl_log.removeFilter(quiet)
        sys.unraisablehook = unraisable


def _drop_closed_loop(previous):
    """``sys.unraisablehook`` that drops tensorstore's callbacks into a closed event loop.

    When an orbax write fails, tensorstore finishes the write's other chunks from its own
    threads and reports each ``RuntimeError: Event loop is closed`` as unraisable: noise around
    the real error, which the caller raises. Everything else still reaches ``previous``.
    """

    def hook(unraisable):
        value = unraisable.exc_value
        if not (isinstance(value, RuntimeError) and str(value) == "Event loop is closed"):
            previous(unraisable)

    return hook


def load_arrays(
    path: Path,
    what: str,
    *,
    missing: str = "the run directory is incomplete or damaged",
    damaged: str = "the files are damaged: rerun the job or restore the directory",
    any_layout: bool = False,
) -> dict[str, np.ndarray]:
    """Restores a flat dict of arrays saved by :func:`save_arrays` as numpy arrays.

    Args:
      path: the orbax directory.
      what: what it holds, for messages.
      missing, damaged: what to do when it is missing or cannot be read, for messages.
      any_layout: read arrays saved as global ``jax.Array`` by several processes (a wave under
        ``jax.distributed``) onto this process's CPU, whatever process layout wrote them.
    """
    if not path.is_dir():
        raise RunDirError(f"{path} is missing ({what}); {missing}")
    ckpt = _checkpointer()
    try:
        target = _single_device_target(ckpt, path) if any_layout else None
        tree = ckpt.restore(path.absolute(), target)
    except Exception as e:  # orbax/tensorstore raise many types for damaged data
        raise RunDirError(
            f"{path} ({what}) cannot be read: {type(e).__name__}: {str(e).splitlines()[0][:200]}; "
            f"{damaged}"
        ) from e
    return _decode_empty({k: np.asarray(v) for k, v in tree.items()})


_EMPTY_SHAPE, _EMPTY_DTYPE = "__empty_shape__", "__empty_dtype__"


def _encode_empty(tree: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Replaces each zero-size array by its shape (int64) and a 1-element array of its dtype."""
    out = {}
    for k, v in tree.items():
        if v.size == 0:
            out[_EMPTY_SHAPE + k] = np.asarray(v.shape, np.int64)  # size 0: ndim >= 1
            out[_EMPTY_DTYPE + k] = np.zeros(1, v.dtype)
        else:
            out[k] = v
    return out


def _decode_empty(tree: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Inverse of :func:`_encode_empty`."""
    out = {k: v for k, v in tree.items() if not k.startswith((_EMPTY_SHAPE, _EMPTY_DTYPE))}
    for k, shape in tree.items():
        if k.startswith(_EMPTY_SHAPE):
            name = k[len(_EMPTY_SHAPE) :]
            dtype = tree.get(_EMPTY_DTYPE + name, np.zeros(1, np.float32)).dtype
            out[name] = np.zeros(tuple(int(d) for d in shape), dtype)
    return out


def _single_device_target(ckpt, path: Path) -> dict:
    """Restore target that puts every saved array whole on this process's first CPU device."""
    import jax

    meta = ckpt.metadata(path.absolute())
    tree = getattr(meta, "item_metadata", meta)
    tree = getattr(tree, "tree", tree)
    device = jax.sharding.SingleDeviceSharding(jax.local_devices(backend="cpu")[0])
    return {
        k: jax.ShapeDtypeStruct(tuple(v.shape), v.dtype, sharding=device) for k, v in tree.items()
    }


def save_global_arrays(path: Path, tree: dict) -> None:
    """Saves a flat dict of arrays from every process of a ``jax.distributed`` job together.

    Per-model arrays are global ``jax.Array`` sharded over the processes; each process writes
    its shards. Every process calls this with the same keys; in a single process it is
    :func:`save_arrays` without the cleanup of a killed write (orbax's ``force`` replaces).
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    ckpt = _checkpointer()
    ckpt.save(path.absolute(), tree, force=True)
    hooks.fire("arrays_sent", path=path)
    ckpt.wait_until_finished()


def load_masks(path: str | Path) -> dict[str, np.ndarray]:
    """``RUN/masks``: ``keep`` bool [M, N], pool ``ids`` int64 [N], ``labels`` int32 [N]."""
    return load_arrays(Path(path) / "masks", "masks")


def repair_masks(path: Path, keep: np.ndarray, ids: np.ndarray, labels: np.ndarray) -> bool:
    """Checks ``RUN/masks`` against the masks rebuilt from the config; rewrites them if damaged.

    The masks, pool ids and labels are pure functions of the config, and the caller has checked
    the rebuilt ones against the fingerprint in ``run.json``
    (:func:`check_same_study`). So when ``RUN/masks`` cannot be read, or reads back different
    from them, the rebuilt masks are the right ones: they are written in place of the damaged
    directory (the damaged one is moved to ``RUN/damaged/``) with a warning, before the
    resumed run writes anything else.

    Returns:
      Whether the masks were repaired.
    """
    problem = None
    try:
        stored = load_masks(path)
    except RunDirError as e:
        problem = f"they cannot be read ({str(e)[:160]})"
    else:
        for key, want, dtype in (
            ("keep", keep, bool),
            ("ids", ids, np.int64),
            ("labels", labels, np.int32),
        ):
            got = stored.get(key)
            if (
                got is None
                or got.shape != np.shape(want)
                or not np.array_equal(got.astype(dtype), np.asarray(want, dtype))
            ):
                problem = f"their '{key}' array differs from the one the config defines"
                break
    if problem is None:
        return False
    moved = move_aside_damaged(path, "masks")
    print(
        f"warning: {path / 'masks'} is damaged: {problem}; the masks are a pure function of the "
        f"config and were rebuilt and rewritten (the damaged copy is in {moved})",
        flush=True,
    )
    save_arrays(path / "masks", {"keep": keep, "ids": ids, "labels": labels})
    return True


def move_aside_damaged(root: Path, rel: str) -> Path | None:
    """Moves ``root/rel`` into ``root/damaged/`` (a rename; never deletes). Returns where to.

    ``damaged/`` keeps what jaxsam found damaged for inspection; remove it when done.
    """
    src = Path(root) / rel
    paths.check_no_links(root, rel, "damaged")
    if not src.exists():
        return None
    paths.ensure_dir(root, "damaged")
    stamp = time.strftime("%Y%m%dT%H%M%S")
    dst = Path(tempfile.mkdtemp(prefix=f"{rel.replace('/', '_')}-{stamp}-", dir=root / "damaged"))
    os.rename(src, dst / src.name)
    return dst / src.name


def masks_fingerprint(pool_fingerprint: str, keep: np.ndarray) -> str:
    """sha256 over the pool's fingerprint and the mask bits: ties logits to their masks."""
    h = hashlib.sha256(pool_fingerprint.encode())
    h.update(np.packbits(np.asarray(keep, bool), axis=None).tobytes())
    h.update(str(keep.shape).encode())
    return h.hexdigest()


def _config_dict(config: config_lib.Config) -> dict:
    return config_lib.to_dict(config)


def _same_config(existing: Any, config: config_lib.Config) -> bool:
    """Whether a run's stored config.json is ``config``, keys added since taking their defaults.

    Only keys that change results count (:func:`jaxsam.config.result_dict`).
    """
    try:
        return config_lib.result_dict(config_lib.from_dict(existing)) == config_lib.result_dict(
            config
        )
    except ConfigError:
        return existing == _config_dict(config)


# Names jaxsam writes directly in a run directory (and the prefixes of its temporary names):
# a directory holding only these is a jaxsam run, which ``--overwrite`` may replace.
OWN_NAMES = frozenset(
    {
        *DIGESTED_FILES,
        DIGESTS,
        COMPLETE,
        LOCK_FILE,
        "masks",
        "logits",
        "checkpoints",
        "waves",
        "damaged",
        "report.json",
        "report.md",
        "report.html",
        "examples.parquet",
        "examples.csv",
        "by_class.csv",
        "scores",
        "plots",
        "analysis.json",
        ".write-probe",
    }
)
ASIDE_PREFIX = ".jaxsam-replaced-"
_OWN_PREFIXES = (ASIDE_PREFIX, ".report-staging-")


def _own_name(name: str) -> bool:
    if name in OWN_NAMES or name.startswith(_OWN_PREFIXES):
        return True
    if name.startswith(".") and name.endswith(".tmp"):  # write_json's temporary files
        return True
    return ".orbax-checkpoint-tmp" in name  # orbax's temporary siblings


def _looks_like_run(path: Path) -> bool:
    """Whether ``path`` holds a jaxsam run header, a jaxsam config, or a replaced run's rest."""
    if any(p.name.startswith(ASIDE_PREFIX) for p in path.iterdir()):
        return True
    for name in ("run.json", "config.json"):
        f = path / name
        if f.is_file() and not f.is_symlink():
            try:
                parsed = config_lib.json_problem(f.read_bytes())
            except OSError:
                continue
            if isinstance(parsed, str):  # garbage, binary or too deeply nested: not a run
                continue
            data = parsed[0]
            if name == "run.json" and isinstance(data, dict) and data.get("format") == RUN_FORMAT:
                return True
            if name == "config.json" and isinstance(data, dict):
                try:
                    config_lib.from_dict(data)
                    return True
                except ConfigError:
                    continue
    return False


def foreign_entries(path: str | Path) -> list[str]:
    """What makes ``path`` not a jaxsam run directory: the names jaxsam did not write.

    Returns ``[]`` for a jaxsam run directory (or an empty one); for a directory with no run
    header or config at all, every entry's name.
    """
    path = Path(path)
    entries = sorted(p.name for p in path.iterdir() if p.name != LOCK_FILE)
    if not entries:
        return []
    if not _looks_like_run(path):
        return entries
    return [n for n in entries if not _own_name(n)]


def check_run_dir(path: str | Path, config: config_lib.Config, *, overwrite: bool = False) -> int:
    """Checks that ``path`` can take a new run of ``config``; touches nothing.

    Refuses a path that is not a directory, a directory holding files jaxsam did not write
    (even with ``overwrite``: only a jaxsam run is ever replaced), and, without ``overwrite``, a
    directory that holds a different run, an unfinished run of this config (resume it instead),
    or this finished run.

    Returns:
      The bytes the old run occupies (freed when it is replaced; 0 when there is none).

    Raises:
      RunExistsError: ``path`` holds a run of this very config (``finished`` says whether it is
        complete) and ``overwrite`` is not set; callers that reuse or resume runs catch it.
      RunDirError: any other reason the directory cannot take the run.
    """
    path = Path(path)
    if path.is_symlink() and not path.exists():
        raise RunDirError(f"{path} is a broken symbolic link; remove it or choose another --out")
    if path.exists() and not path.is_dir():
        raise RunDirError(f"{path} exists and is not a directory; choose another --out")
    if not path.is_dir() or not any(p.name != LOCK_FILE for p in path.iterdir()):
        return 0
    if (path / "config.json").is_file():
        _existing_config(path / "config.json")  # garbage there: named as such, not replaced
    foreign = foreign_entries(path)
    if foreign:
        shown = ", ".join(foreign[:5]) + (", ..." if len(foreign) > 5 else "")
        raise RunDirError(
            f"{path} is not empty and is not a jaxsam run directory (it holds {shown}, which "
            "jaxsam did not write); jaxsam only ever replaces its own runs: choose another "
            "--out (a new or empty directory), or move those files out yourself"
        )
    if overwrite:
        return dir_bytes(path)
    info_path = path / "config.json"
    if not info_path.is_file():
        raise RunDirError(
            f"{path} holds the rest of a jaxsam run that was being replaced or started; pass "
            f"{option('overwrite')} to replace it, or choose another --out"
        )
    existing = _existing_config(info_path)
    if not _same_config(existing, config):
        raise RunDirError(
            f"{path} already holds a different run (its config.json differs); choose "
            f"another --out or pass {option('overwrite')} to replace it"
        )
    if not (path / COMPLETE).exists():
        raise RunExistsError(
            f"{path} holds an unfinished run of this config; continue it with "
            f"`jaxsam train --resume {path}` or pass {option('overwrite')} to start over",
            finished=False,
        )
    raise RunExistsError(
        f"{path} already holds this finished run; score it with `jaxsam score {path}` "
        f"or pass {option('overwrite')} to train it again",
        finished=True,
    )


def dir_bytes(path: str | Path) -> int:
    """Bytes the files under ``path`` occupy on disk (links not followed)."""
    total = 0
    for dirpath, _, filenames in os.walk(path):
        for name in filenames:
            with contextlib.suppress(OSError):
                st = os.lstat(os.path.join(dirpath, name))
                total += st.st_blocks * 512
    return total


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
        raise RunDirError(f"cannot create {path} ({e.strerror}); choose a writable --out") from e
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


def _existing_config(path: Path) -> Any:
    """The ``config.json`` found in an output directory, or a RunDirError if it is garbage."""
    try:
        raw = path.read_bytes()
    except OSError as e:
        raise RunDirError(f"cannot read {path} ({e.strerror}); choose another --out") from e
    parsed = config_lib.json_problem(raw)
    if isinstance(parsed, str):
        raise RunDirError(
            f"{path.parent} holds no readable jaxsam run: its config.json {parsed.split(';')[0]}; "
            f"choose another --out (or remove {path.parent} yourself)"
        )
    return parsed[0]


def begin_run(
    path: str | Path,
    config: config_lib.Config,
    pool_origin: dict,
    keep: np.ndarray,
    ids: np.ndarray,
    labels: np.ndarray,
    *,
    overwrite: bool = False,
) -> str:
    """Starts a new run in ``path``: :func:`check_run_dir`, then :func:`start_run`.

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
        fingerprint = start_run(path, config, pool_origin, keep, ids, labels)
    except BaseException:
        if aside is not None:
            _restore_aside(path, aside)
        raise
    _discard(aside)
    return fingerprint


def check_writable(path: Path) -> None:
    """Raises :class:`RunDirError` unless a file can be created (and removed) in ``path``."""
    probe = path / ".write-probe"
    try:
        probe.write_text("ok")
        probe.unlink()
    except OSError as e:
        raise RunDirError(
            f"cannot write to {path} ({e.strerror}); make it writable or choose another --out"
        ) from e


def check_free_space(path: Path, need_bytes: int, what: str) -> None:
    """Raises :class:`RunDirError` when the disk holding ``path`` has under ``need_bytes`` free.

    Args:
      path: an existing directory on the disk to check.
      need_bytes: the estimated bytes the run will still write.
      what: what those bytes are, for the message.
    """
    probe = Path(path)
    while not probe.exists() and probe != probe.parent:  # the directory may not exist yet
        probe = probe.parent
    free = hooks.fire("free_space", shutil.disk_usage(probe).free, path=path)
    if free < need_bytes:
        raise RunDirError(
            f"not enough disk space in {path}: the run needs about {need_bytes / 2**20:.1f} MiB "
            f"({what}) but {free / 2**20:.1f} MiB are free; free space or choose another --out"
        )


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

    A DP-SGD run's header holds its privacy guarantee, ``"dp"``
    (:func:`jaxsam.optim.dp.privacy_record`); ``extra`` adds further header fields (an
    imported run's ``"provenance"``).
    """
    from jaxsam.optim.dp import privacy_record

    dp = privacy_record(config, keep)  # first: a missing DP library stops before any write
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
            **({"dp": dp} if dp is not None else {}),
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
      RunDirError: no run, a finished run, another config, or other pool / masks.
    """
    if not path.is_dir() or not (path / "config.json").is_file():
        raise RunDirError(f"{path} holds no run to resume; start it with `jaxsam train --out`")
    existing = read_json(path / "config.json", "config")
    if not _same_config(existing, config):
        raise RunDirError(f"{path}/config.json differs from the config being resumed")
    if (path / COMPLETE).exists():
        raise RunDirError(
            f"{path} is already complete; score it with `jaxsam score {path}` (or train it "
            "again with --out and --overwrite)"
        )
    check_writable(path)
    if not (path / "run.json").is_file():
        return False
    check_same_study(path, read_json(path / "run.json", "run header"), pool_origin, keep)
    return True


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
    """Writes logits and metrics, then marks the run complete (``COMPLETE`` last)."""
    info = read_json(path / "run.json", "run header")
    m, n = info["models"], info["examples"]
    if logits.shape[:2] != (m, n) or logits.ndim != 4:
        raise RunDirError(f"logits have shape {logits.shape}; this run needs [{m}, {n}, A, C]")
    if len(query_names) != logits.shape[2]:
        raise RunDirError(f"{len(query_names)} query names for {logits.shape[2]} query views")
    (path / COMPLETE).unlink(missing_ok=True)
    update_run_info(path, status="exporting")
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
            f"{e}; run `jaxsam train --resume {path}` to redo the export"
        ) from e


def array_shapes(path: Path, what: str) -> dict[str, tuple[int, ...]]:
    """The shapes of the arrays :func:`save_arrays` wrote in ``path``, from orbax's metadata.

    Reads no array data; a zero-size array (stored as its shape, see :func:`save_arrays`)
    maps to None. Raises :class:`RunDirError` when the metadata cannot be read.
    """
    try:
        meta = _checkpointer().metadata(path.absolute())
        tree = getattr(meta, "item_metadata", meta)
        tree = getattr(tree, "tree", tree)
        raw = {k: tuple(int(d) for d in v.shape) for k, v in tree.items()}
    except Exception as e:  # orbax raises many types for damaged metadata
        raise RunDirError(
            f"{path} ({what}) cannot be read: {type(e).__name__}: {str(e).splitlines()[0][:200]}"
        ) from e
    out: dict = {k: v for k, v in raw.items() if not k.startswith((_EMPTY_SHAPE, _EMPTY_DTYPE))}
    for k in raw:
        if k.startswith(_EMPTY_SHAPE):  # a zero-size array: its shape is stored as data
            out[k[len(_EMPTY_SHAPE) :]] = None
    return out


def sha256_file(path: Path) -> str:
    """Hex sha256 of a file's bytes (read in 1 MiB blocks)."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _digested_paths(path: Path) -> list[str]:
    """The files :data:`DIGESTS` covers, relative to ``path`` (POSIX separators, sorted)."""
    names = [n for n in DIGESTED_FILES if (path / n).is_file()]
    for d in DIGESTED_DIRS:
        names += [p.relative_to(path).as_posix() for p in (path / d).rglob("*") if p.is_file()]
    return sorted(names)


def write_digests(path: Path) -> dict[str, str]:
    """Writes ``RUN/digests.json``: the sha256 of every metadata file and array file of the run.

    Called by :func:`finish_run` once everything else is written (just before ``COMPLETE``).
    Returns the digests (relative path -> hex sha256).
    """
    files = {name: sha256_file(path / name) for name in _digested_paths(path)}
    write_json(path / DIGESTS, {"algorithm": "sha256", "files": files})
    return files


def verify_digests(path: str | Path) -> bool:
    """Checks every file listed in ``RUN/digests.json`` against its recorded sha256.

    Returns:
      ``True`` when all match; ``False`` when the run has no ``digests.json`` (written before
      jaxsam recorded digests): a note says so and nothing is checked.

    Raises:
      RunDirError: naming the first file that is missing or differs, or a damaged
        ``digests.json``.
    """
    path = Path(path)
    if not (path / DIGESTS).exists():
        print(
            f"note: {path} has no {DIGESTS} (written by a jaxsam that did not record digests); "
            "its files are not verified",
            file=sys.stderr,
        )
        return False
    data = read_json(path / DIGESTS, "file digests")
    ok = isinstance(data, dict) and data.get("algorithm") == "sha256"
    files = data.get("files") if ok else None
    if not isinstance(files, dict) or not files:
        raise RunDirError(f"{path / DIGESTS} is damaged (no sha256 file list); restore it or rerun")
    hint = "restore it or rerun the job (--no-verify / verify=False reads it anyway)"
    for name, digest in sorted(files.items()):
        f = path / name
        if not f.is_file():
            raise RunDirError(f"{f} is missing but was written with the run; {hint}")
        if sha256_file(f) != digest:
            raise RunDirError(
                f"{f} differs from what the run wrote (sha256 mismatch): it was changed or "
                f"damaged after the run finished; {hint}"
            )
    unlisted = [n for n in _digested_paths(path) if n not in files]
    if unlisted:
        raise RunDirError(
            f"{path / unlisted[0]} was not written with the run (not in {DIGESTS}); {hint}"
        )
    return True


REPORT_FILES = ("report.json", "report.md", "scores")


def write_report_files(
    path: Path,
    *,
    report: dict,
    markdown: str,
    scores: dict[str, np.ndarray],
    extra: dict[str, Callable[[Path], Any]] | None = None,
) -> None:
    """Publishes ``jaxsam score``'s outputs in ``RUN/`` together, or leaves the old ones alone.

    Everything is first written into a private staging directory inside ``path``
    (``.report-staging-*``, same disk, so the moves below are renames): ``report.json``,
    ``report.md``, ``scores/`` (orbax) and each ``extra`` file (relative name -> a function that
    writes that file at the path it is given, e.g. ``{"plots/roc.png": draw}``). Only when all
    of them are written are they moved into place: the old ``report.json`` is removed first and
    the new one is moved last, so a run directory always holds either no ``report.json`` or a
    ``report.json`` whose ``report.md`` and ``scores/`` were written with it. A failure before
    the moves leaves the previous outputs as they were and no new ``report.json``. A link at
    any of the published paths (``report.md``, ``plots/``, ...) is refused before anything is
    written (:mod:`jaxsam.store.paths`), and the staging directories a killed ``score`` left
    behind are removed.

    Args:
      path: the run directory.
      report: the JSON-serialisable report (``report.json``).
      markdown: the text of ``report.md``.
      scores: attack name -> score array (``scores/``).
      extra: further files to publish with them, by path relative to ``path``.
    """
    path = Path(path)
    extra = dict(extra or {})
    for name in REPORT_FILES:
        if name in extra:
            raise ValueError(f"extra file {name!r} would replace a report file; rename it")
    with run_lock(path, "score", create=False):  # re-entrant: `jaxsam score` already holds it
        with write_errors(path, "the report"):
            _publish_report(path, report, markdown, scores, extra)


def _publish_report(path: Path, report: dict, markdown: str, scores: dict, extra: dict) -> None:
    """:func:`write_report_files` under the run's lock."""
    # Nothing is written through a link: a crafted report.md or plots/ would lead outside.
    paths.check_no_links(path, "report.json", *[rel for rel in ["scores", "report.md", *extra]])
    for stale in path.glob(".report-staging-*"):  # a killed score's; we hold the lock
        if stale.is_dir() and not stale.is_symlink():
            shutil.rmtree(stale, ignore_errors=True)
    staging = Path(tempfile.mkdtemp(prefix=".report-staging-", dir=path))
    try:
        (staging / "report.md").write_text(markdown)
        save_arrays(staging / "scores", scores)
        for rel, write in extra.items():
            target = staging / "extra" / rel
            target.parent.mkdir(parents=True, exist_ok=True)
            write(target)
        write_json(staging / "report.json", report)
        # Everything is on disk: publish. report.json goes first (removed) and last (added).
        (path / "report.json").unlink(missing_ok=True)
        old = staging / "old"
        old.mkdir()
        for rel in ["scores", "report.md", *extra]:
            src = staging / ("extra" if rel in extra else "") / rel
            dst = path / rel
            paths.ensure_dir(path, Path(rel).parent)
            if dst.is_dir() and not dst.is_symlink():
                os.replace(dst, old / rel.replace("/", "_"))
            os.replace(src, dst)
        os.replace(staging / "report.json", path / "report.json")
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def plots_dir(out_dir: str | Path) -> Path:
    """``out_dir/plots/``, created (with ``out_dir``): where ``jaxsam analyze`` puts its PNGs."""
    Path(out_dir).mkdir(parents=True, exist_ok=True)
    with write_errors(Path(out_dir) / "plots", "plots"):
        return paths.ensure_dir(out_dir, "plots")


def write_analysis(out_dir: str | Path, result: dict) -> Path:
    """Writes ``out_dir/analysis.json`` atomically, as strict JSON (a NaN is a ``ValueError``)."""
    path = Path(out_dir) / "analysis.json"
    with write_errors(path, "the analysis"):
        path.parent.mkdir(parents=True, exist_ok=True)
        paths.check_no_links(out_dir, "analysis.json")
        write_json(path, result, allow_nan=False)
    return path


@dataclasses.dataclass
class Run:
    """A finished run directory, read back. Arrays are loaded on first access.

    Attributes:
      path: the directory.
      name: its base name (``sgd``, ``sam`` in a demo).
      config: the resolved :class:`jaxsam.config.Config`.
      info: ``run.json`` (format, shapes, pool origin, fingerprints, failed models).
      keep: bool [M, N] membership masks.
      labels: int32 [N] pool labels.
      logits: float32 [M, N, A, C].
      test_logits: float32 [M, T, A, C]; test_labels: int32 [T].
      query_names: the A query-view names.
      metrics: per-model accuracies.
      failed_models: indices of models excluded after divergence.
    """

    path: Path
    config: config_lib.Config
    info: dict
    keep: np.ndarray
    labels: np.ndarray
    ids: np.ndarray
    query_names: list[str]
    metrics: dict

    @property
    def name(self) -> str:
        return self.path.name

    @property
    def failed_models(self) -> list[int]:
        return list(self.info.get("failed_models", []))

    @functools.cached_property
    def _logit_arrays(self) -> dict[str, np.ndarray]:
        arrays = load_arrays(self.path / "logits", "logits")
        for key in ("logits", "labels", "test_logits", "test_labels"):
            if key not in arrays:
                raise RunDirError(f"{self.path / 'logits'} has no '{key}' array; rerun the job")
        m, n = self.keep.shape
        lg = arrays["logits"]
        if lg.ndim != 4 or lg.shape[:2] != (m, n):
            raise RunDirError(
                f"{self.path / 'logits'} holds logits of shape {lg.shape} but the masks are "
                f"[{m}, {n}]: logits and masks come from different runs; rerun the job"
            )
        if not np.array_equal(arrays["labels"], self.labels):
            raise RunDirError(f"labels in {self.path / 'logits'} differ from the masks' labels")
        arrays["logits"] = lg.astype(np.float32)
        arrays["test_logits"] = arrays["test_logits"].astype(np.float32)
        return arrays

    @property
    def logits(self) -> np.ndarray:
        return self._logit_arrays["logits"]

    @property
    def test_logits(self) -> np.ndarray:
        return self._logit_arrays["test_logits"]

    @property
    def test_labels(self) -> np.ndarray:
        return self._logit_arrays["test_labels"]

    @property
    def scores(self) -> dict[str, np.ndarray] | None:
        """Per-attack membership scores [M, N] written by ``jaxsam score``, or None.

        Rows of failed (excluded) models are NaN: they were not scored.
        """
        if not (self.path / "scores").is_dir():
            return None
        return load_arrays(self.path / "scores", "scores")

    def examples(self):
        """``RUN/examples.parquet`` as a pandas DataFrame: one row per pool example.

        Columns: ``pool_index``, origin (``dataset``, ``split``, ``index``), ``label``,
        ``n_in``, ``n_out``, ``memorization`` (Feldman-Zhang), ``out_confidence_variance``,
        ``canary`` (runs with canaries), and per attack ``{attack}_score`` and the flag
        fractions ``{attack}_flagged_1e-3`` ... (:mod:`jaxsam.examples_table`). ``jaxsam score``
        writes the file; reading a run computes nothing, so an unscored run raises.

        Raises:
          RunDirError: the run has not been scored (no ``examples.parquet``).
        """
        p = self.path / "examples.parquet"
        if not p.is_file():
            raise RunDirError(
                f"{p} does not exist: the run has not been scored by this jaxsam version; run "
                f"`jaxsam score {self.path}` first"
            )
        import pandas as pd

        return pd.read_parquet(p)

    def read_json(self, name: str) -> Any | None:
        """Reads ``RUN/name`` (e.g. ``report.json``), or None if it does not exist."""
        p = self.path / name
        return read_json(p, name) if p.exists() else None

    def write_json(self, name: str, obj: Any) -> Path:
        p = self.path / name
        paths.ensure_dir(self.path, Path(name).parent)
        paths.check_no_links(self.path, name)
        write_json(p, obj)
        return p


def read_config(path: str | Path) -> config_lib.Config:
    """The run's resolved config, from ``RUN/config.json``.

    ``model.name`` is not checked against the built-in models and a custom model
    (``package.module:attr``) is not imported: reading or scoring a run needs no model code.
    Training from this config (resume, waves) imports and checks the model first.

    Raises:
      RunDirError: the file is missing, not JSON, or not a valid config.
    """
    path = Path(path)
    try:
        data = read_json(path / "config.json", "config")
        return config_lib.from_dict(data, known_models=False)
    except ConfigError as e:
        raise RunDirError(f"{path / 'config.json'} is not a valid config: {e}") from e


def is_complete(path: str | Path) -> bool:
    """Whether the run in ``path`` has its ``COMPLETE`` marker (all its files are written)."""
    return (Path(path) / COMPLETE).exists()


def load_run(path: str | Path, *, verify: bool = True) -> Run:
    """Reads a finished run directory, checking format, version, completeness and shapes.

    Args:
      path: the run directory.
      verify: check every metadata and array file against ``digests.json``
        (:func:`verify_digests`); ``False`` reads a run whose files were changed anyway.

    Raises:
      RunDirError: naming the missing or damaged file and what to do.
    """
    return _read_run(Path(path), verify=verify, require_complete=True)


def _read_run(path: Path, *, verify: bool, require_complete: bool) -> Run:
    """:func:`load_run`; ``require_complete=False`` checks a run before ``COMPLETE`` exists."""
    if not path.is_dir():
        raise RunDirError(f"run directory {path} does not exist; pass the --out of a jaxsam run")
    info = read_json(path / "run.json", "run header")
    if not isinstance(info, dict) or info.get("format") != RUN_FORMAT:
        raise RunDirError(f"{path} is not a jaxsam run directory (run.json has no jaxsam format)")
    if info.get("version") != RUN_VERSION:
        raise RunDirError(
            f"{path} has run-directory version {info.get('version')}, this jaxsam reads "
            f"{RUN_VERSION}; use the jaxsam version that wrote it"
        )
    if require_complete and not (path / COMPLETE).exists():
        missing = [n for n in ("logits", "logits.json", "metrics.json") if not (path / n).exists()]
        raise RunDirError(
            f"{path} is not complete (missing: {', '.join(missing) or 'COMPLETE marker'}); "
            f"finish it with `jaxsam train --resume {path}`"
        )
    check_run_header(path, info)
    config = read_config(path)
    masks = load_masks(path)
    if any(k not in masks for k in ("keep", "ids", "labels")) or masks["keep"].ndim != 2:
        raise RunDirError(
            f"{path / 'masks'} holds no [M, N] 'keep' mask with its 'ids' and 'labels'; rerun "
            "the job"
        )
    keep = masks["keep"].astype(bool)
    if keep.shape != (info["models"], info["examples"]):
        raise RunDirError(
            f"{path / 'masks'} has shape {keep.shape}, run.json says "
            f"[{info['models']}, {info['examples']}]; the directory mixes two runs"
        )
    if masks_fingerprint(info["pool"]["fingerprint"], keep) != info["masks_fingerprint"]:
        raise RunDirError(f"{path / 'masks'} does not match the fingerprint in run.json; rerun")
    logits_info = read_json(path / "logits.json", "logits metadata")
    names = logits_info.get("query_names") if isinstance(logits_info, dict) else None
    if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
        raise RunDirError(
            f"{path / 'logits.json'} has no 'query_names' list of strings; the file is damaged "
            "or was edited: restore it or rerun the job"
        )
    if logits_info.get("masks_fingerprint") != info["masks_fingerprint"]:
        raise RunDirError(
            f"{path / 'logits'} were computed under other masks (fingerprint mismatch); "
            "logits and masks of different runs cannot be combined: rerun the job"
        )
    if verify:  # after the structural checks above, whose messages say more when they fail
        verify_digests(path)
    return Run(
        path=path,
        config=config,
        info=info,
        keep=keep,
        labels=masks["labels"].astype(np.int32),
        ids=masks["ids"],
        query_names=list(logits_info["query_names"]),
        metrics=read_json(path / "metrics.json", "per-model metrics"),
    )
