"""JSON and atomic files of a run directory, and one-line messages for failed writes.

Every JSON file jaxsam writes goes through :func:`write_json` (a fresh temporary file, then a
rename), so a reader never sees half a file. :func:`write_errors` turns a write that fails for
lack of space or permission (an ``OSError``, or the tensorstore error of an asynchronous orbax
write) into one :class:`jaxsam.errors.WriteFailed` line naming the path and the fix.
"""

from __future__ import annotations

import contextlib
import errno
import gc
import json
import logging
import os
import sys
import tempfile
import threading
import time
import types
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from jaxsam import hooks
from jaxsam.errors import RunDirError, WriteFailed, parse_json_file
from jaxsam.store import paths

_UMASK = os.umask(0o022)  # read once (os.umask can only be read by setting it) ...
os.umask(_UMASK)  # ... and restored at once


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
    return parse_json_file(
        path,
        lambda why: RunDirError(f"cannot read {path} ({what}): {why}; check permissions"),
        lambda problem: RunDirError(
            f"{path} {problem.split(';')[0]} ({what}); the file is damaged: rerun or restore it"
        ),
    )


class DropThreadTracebacks(logging.Filter):
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
    quiet = DropThreadTracebacks()
    absl_log = logging.getLogger("absl")
    absl_log.addFilter(quiet)
    unraisable = sys.unraisablehook
    sys.unraisablehook = drop_closed_loop(unraisable)
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


def drop_closed_loop(previous):
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


def _abandoned_read(value: BaseException) -> bool:
    """Whether an error reported outside the caller comes from the reads of a failed restore."""
    if isinstance(value, RuntimeError) and str(value) == "Event loop is closed":
        return True
    return str(value).startswith("Encountered error while reading array index")


def error_words(e: BaseException, limit: int = 120) -> str:
    """``Type: first line`` of an error, cut at a word near ``limit`` characters: orbax wraps
    a damaged array's read error in a bare ``Exception`` whose text carries tensorstore's
    (long) message, of which the start says what failed."""
    text = str(e).strip().splitlines()[0] if str(e).strip() else ""
    if len(text) > limit:
        text = text[:limit].rsplit(" ", 1)[0] + " ..."
    return f"{type(e).__name__}: {text}" if text else type(e).__name__


# Words of tensorstore's read errors in the reports of a failed restore's abandoned reads.
_READ_ERRORS = ("Error reading", "Error opening", "OUT_OF_RANGE", "DATA_LOSS")


class _DropAbandonedFutures(logging.Filter):
    """Drops asyncio's ``Future exception was never retrieved`` for a tensorstore read error:
    the futures of a failed restore's other reads, which nothing awaits any more."""

    def filter(self, record: logging.LogRecord) -> bool:
        text = record.getMessage()
        if record.exc_info and record.exc_info[1] is not None:
            text += f" {record.exc_info[1]}"
        abandoned = "exception was never retrieved" in text
        return not (abandoned and any(word in text for word in _READ_ERRORS))


_ABANDONED_FUTURES = _DropAbandonedFutures()


@contextlib.contextmanager
def quiet_failed_reads() -> Iterator[types.SimpleNamespace]:
    """While the block restores arrays that may be damaged, drops the reports of failed reads.

    When one array of an orbax restore cannot be read, orbax abandons the reads of the others
    suspended; as each is collected it reports the error again (``Exception ignored in:
    <coroutine ...>`` and some 60 lines of TensorStore spec), and tensorstore's callbacks into
    the closed event loop print ``RuntimeError: Event loop is closed``. The caller reports the
    damage on one line. On exit the abandoned reads are collected while the hooks still drop
    their reports; asyncio's ``Future exception was never retrieved`` of those reads (logged,
    not raised) is dropped by a filter on the ``asyncio`` logger; everything else reaches the
    previous ``sys.unraisablehook`` / ``sys.excepthook`` and the logger. Yields a namespace:
    a caller that caught a failed read sets its ``failed`` (a block that raises counts as
    failed too); the hooks and the filter then stay, because the failed read's callbacks may
    still come after the block.
    """
    previous, previous_except = sys.unraisablehook, sys.excepthook
    state = types.SimpleNamespace(failed=False)

    def hook(unraisable) -> None:
        if not _abandoned_read(unraisable.exc_value):
            previous(unraisable)

    def except_hook(kind, value, tb) -> None:  # tensorstore's threads print through it
        if threading.current_thread() is threading.main_thread() or not _abandoned_read(value):
            previous_except(kind, value, tb)  # the main thread's own errors always show

    sys.unraisablehook, sys.excepthook = hook, except_hook
    logging.getLogger("asyncio").addFilter(_ABANDONED_FUTURES)  # once: filters are a set
    try:
        yield state
    except BaseException:
        state.failed = True
        raise
    finally:
        gc.collect()
        if not state.failed:
            sys.unraisablehook, sys.excepthook = previous, previous_except
            logging.getLogger("asyncio").removeFilter(_ABANDONED_FUTURES)


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
