"""Errors that jaxsam raises for bad input.

Every error that reaches the command line is a :class:`JaxsamError`: the CLI prints its message
on one line (no traceback) and exits with status 2. Messages name the problem *and* the fix.
"""

from __future__ import annotations

import contextlib
import contextvars
from collections.abc import Iterator

# Whether the running code serves a ``jaxsam`` command (set by :func:`command_line`): messages
# then name command-line flags (``--overwrite``), otherwise keyword arguments (``overwrite=True``).
# Library modules word every fix through :func:`option`; only the edge (``cli.py``,
# ``cli_options.py``, ``commands/``, ``bench/``) spells flags itself.
_COMMAND_LINE = contextvars.ContextVar("jaxsam_command_line", default=False)


@contextlib.contextmanager
def command_line() -> Iterator[None]:
    """While the block runs, :func:`option` words fixes as command-line flags."""
    token = _COMMAND_LINE.set(True)
    try:
        yield
    finally:
        _COMMAND_LINE.reset(token)


def on_command_line() -> bool:
    """Whether the running code serves a ``jaxsam`` command (see :func:`command_line`)."""
    return _COMMAND_LINE.get()


def option(name: str, value: str | None = "True") -> str:
    """How the caller sets option ``name`` (a keyword argument's name) to ``value``.

    On the command line: ``--name VALUE``, ``--name`` for a switch (``value="True"``, the
    default) or for ``value=None``. From Python: ``name=VALUE``, or ``name`` alone for
    ``value=None``. E.g. ``option("overwrite")`` is ``--overwrite`` / ``overwrite=True``;
    ``option("num_processes", "N")`` is ``--num-processes N`` / ``num_processes=N``;
    ``option("out", None)`` is ``--out`` / ``out``.
    """
    if _COMMAND_LINE.get():
        flag = f"--{name.replace('_', '-')}"
        return flag if value in (None, "True") else f"{flag} {value}"
    return name if value is None else f"{name}={value}"


class JaxsamError(ValueError):
    """Base class: bad input that the user can fix. The message says how."""


class ConfigError(JaxsamError):
    """A config value is unknown, of the wrong type, or out of range."""


class DataError(JaxsamError):
    """A dataset is missing, unprepared, or has inconsistent arrays."""


class TooFewModelsError(ConfigError):
    """An attack needs more models than the study has (e.g. LiRA's equal shadow groups)."""


class RunDirError(JaxsamError):
    """A run directory is missing, incomplete, damaged, foreign, or would be overwritten."""


class RunExistsError(RunDirError):
    """The output directory already holds a run of this very config.

    Attributes:
      finished: True when that run is complete (score it, or reuse it), False when it stopped
        before the end (continue it with ``resume=True``).
    """

    def __init__(self, message: str, *, finished: bool):
        super().__init__(message)
        self.finished = finished


class WriteFailed(RunDirError):
    """A write failed because the disk is full, read-only or forbidden (not a bug: no traceback).

    A failed asynchronous orbax write leaves tensorstore callbacks in flight that print
    tracebacks while the interpreter shuts down; the CLI therefore exits at once after printing
    this error.
    """


class DivergenceError(JaxsamError):
    """A model's loss became NaN or infinite during training."""


class Interrupted(Exception):
    """Training stopped gracefully on SIGTERM or SIGINT, after writing a checkpoint.

    Not bad input, so not a :class:`JaxsamError`: the CLI prints the message (which says how
    to resume) and exits with ``128 + signum``.
    """

    def __init__(self, message: str, signum: int):
        super().__init__(message)
        self.signum = signum
