"""One writer at a time: an exclusive ``flock`` on ``RUN/.jaxsam.lock``.

``train``, ``train --resume``, ``train --overwrite``, ``score`` and ``analyze`` hold the lock of
the directory they write while they run; a wave holds the lock of its own work directory
(``RUN/waves/AAAAA-BBBBB.work``), so waves still train in parallel. A second writer is refused
at once with a :class:`jaxsam.errors.RunDirError` that says who holds the lock (pid, host,
command, since when), read from the lock file.

The lock is ``fcntl.flock`` on an open file: the kernel releases it when its holder exits,
however it exits (SIGKILL included), so a stale lock file left by a dead process never blocks;
its contents are simply overwritten by the next holder. The lock file itself is never deleted
(``--overwrite`` keeps it), so two processes can never lock two different files for the same
directory. ``flock`` is advisory and per host on most network file systems: it stops two jaxsam
processes, not an ``rm``.

Within one process the lock is re-entrant (``demo`` trains then scores; ``train --wave-size``
initialises then finalises).
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import socket
import sys
import time
from collections.abc import Iterator
from pathlib import Path

from jaxsam.errors import RunDirError, on_command_line, option
from jaxsam.store.paths import require_run_path

LOCK_FILE = ".jaxsam.lock"

_held: dict[str, list] = {}  # resolved directory -> [file object, depth]


def _holder(f) -> str:
    try:
        f.seek(0)
        info = json.loads(f.read() or "{}")
    except (OSError, ValueError):
        info = {}
    if not info:
        return "another process"
    return (
        f"`{info.get('command', 'jaxsam')}` (pid {info.get('pid', '?')} on host "
        f"{info.get('host', '?')}, since {info.get('since', '?')})"
    )


def held(path: str | Path) -> bool:
    """Whether this process holds the lock of directory ``path``."""
    return str(Path(path).resolve()) in _held


def other_writer(path: str | Path) -> str | None:
    """Who else holds the lock of directory ``path`` (pid, host, command, since when), or None.

    None when no process does, when this process does (the lock is re-entrant), or when
    ``path`` has no lock file. Takes nothing: a shared ``flock`` probe released at once (a
    writer that meets the probe retries, see :func:`run_lock`).
    """
    path = Path(path)
    lock = path / LOCK_FILE
    if held(path) or not lock.is_file() or lock.is_symlink():
        return None
    try:
        fd = os.open(lock, os.O_RDONLY | os.O_NOFOLLOW)
    except OSError:
        return None
    with os.fdopen(fd, "r") as f:
        try:
            fcntl.flock(f.fileno(), fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            return _holder(f)
        fcntl.flock(f.fileno(), fcntl.LOCK_UN)
    return None


def check_no_other_writer(path: str | Path) -> None:
    """Raises :class:`RunDirError` naming the other process when one is writing ``path``.

    Runs before any other check of a run directory, so a second writer on a live run is told
    that first, not advised to resume or overwrite a run that is still being written.
    """
    holder = other_writer(path)
    if holder is not None:
        raise RunDirError(
            f"another process is writing {path}: {holder} holds its lock; wait for it to "
            f"finish or stop it, then run this command again (or choose another "
            f"{option('out', None)})"
        )


def _lock_soon(f, tries: int = 5, wait_s: float = 0.02) -> None:
    """Exclusive non-blocking ``flock``, retried briefly: an :func:`other_writer` probe holds a
    shared lock for microseconds, and must not make a writer give up."""
    for i in range(tries):
        try:
            fcntl.flock(f.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
            return
        except BlockingIOError:
            if i == tries - 1:
                raise
            time.sleep(wait_s)


def _check_lock_dir(path: Path, create: bool) -> None:
    """Refuses a ``path`` that is a file; without ``create``, also one that does not exist or
    holds no run (checked before the lock file goes in: a stray directory is left as it was)."""
    if path.exists() and not path.is_dir():
        raise RunDirError(
            f"{path} exists and is not a directory; choose another {option('out', None)}"
        )
    if not create:
        require_run_path(path)


@contextlib.contextmanager
def run_lock(path: str | Path, what: str, *, create: bool = True) -> Iterator[Path]:
    """Holds the exclusive lock of directory ``path`` for the block.

    Args:
      path: the run directory (or a wave's work directory).
      what: what the holder does, for the message another process gets (e.g. ``train``).
      create: create ``path`` when it is missing; else a missing ``path``, or one that holds
        no run (neither ``run.json`` nor ``config.json``), is an error and no lock file is made.

    Raises:
      RunDirError: another process holds the lock (naming it), ``path`` is not a directory, or
        the lock file cannot be created.
    """
    path = Path(path)
    _check_lock_dir(path, create)
    key = str(path.resolve())
    if key in _held:
        _held[key][1] += 1
        try:
            yield path
        finally:
            _held[key][1] -= 1
        return
    if (path / LOCK_FILE).is_symlink():  # it is truncated and written: never through a link
        raise RunDirError(
            f"{path / LOCK_FILE} is a symbolic link; jaxsam never writes through a link in a "
            "run directory: remove the link and run the command again"
        )
    try:
        path.mkdir(parents=True, exist_ok=True)
        fd = os.open(path / LOCK_FILE, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o666)
        f = os.fdopen(fd, "a+")
    except OSError as e:
        raise RunDirError(
            f"cannot create the lock file in {path} ({e.strerror}); make it writable or choose "
            "another directory"
        ) from e
    try:
        _lock_soon(f)
    except BlockingIOError:
        holder = _holder(f)
        f.close()
        again = f"run `jaxsam {what}` again" if on_command_line() else "try again"
        raise RunDirError(
            f"{path} is in use: {holder} holds its lock; wait for it to finish or stop it, "
            f"then {again}"
        ) from None
    try:
        f.seek(0)
        f.truncate()
        f.write(
            json.dumps(
                {
                    "pid": os.getpid(),
                    "host": socket.gethostname(),
                    "command": f"jaxsam {what}",
                    "argv": sys.argv[1:],
                    "since": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
                }
            )
        )
        f.flush()
        _held[key] = [f, 1]
        yield path
    finally:
        _held.pop(key, None)
        with contextlib.suppress(OSError):
            f.seek(0)
            f.truncate()
        fcntl.flock(f.fileno(), fcntl.LOCK_UN)
        f.close()
