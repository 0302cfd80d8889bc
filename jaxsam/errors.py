"""Errors that jaxsam raises for bad input.

Every error that reaches the command line is a :class:`JaxsamError`: the CLI prints its message
on one line (no traceback) and exits with status 2. Messages name the problem *and* the fix.
"""

from __future__ import annotations

import contextlib
import contextvars
import json
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

# Whether the running code serves a ``jaxsam`` command (set by :func:`command_line`): messages
# then name command-line flags (``--overwrite``), otherwise keyword arguments (``overwrite=True``).
# Library modules word every fix through :func:`option` (a keyword) and :func:`action` (a jaxsam
# action such as resuming a run), or name config keys; only the edge (``cli.py``,
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
    default) or for ``value=None``, ``--no-name`` for a switch turned off (``value="False"``).
    From Python: ``name=VALUE``, or ``name`` alone for ``value=None``. E.g.
    ``option("overwrite")`` is ``--overwrite`` / ``overwrite=True``; ``option("verify",
    "False")`` is ``--no-verify`` / ``verify=False``; ``option("num_processes", "N")`` is
    ``--num-processes N`` / ``num_processes=N``; ``option("out", None)`` is ``--out`` / ``out``.
    """
    if _COMMAND_LINE.get():
        flag = f"--{name.replace('_', '-')}"
        if value == "False":
            return f"--no-{name.replace('_', '-')}"
        return flag if value in (None, "True") else f"{flag} {value}"
    return name if value is None else f"{name}={value}"


# The jaxsam actions a fix may name, as the caller runs them: (on the command line, from Python).
# Library modules name an action (:func:`action`); the words for each caller live here.
_ACTIONS = {
    "resume": (
        "`jaxsam train --resume {run}`",
        "`jaxsam.pipeline.study.train_and_export(config, '{run}', resume=True)`",
    ),
    "retrain": (
        "`jaxsam train --out {run} --overwrite --config {run}/config.json "
        "--set optim.learning_rate=LR`",
        "`jaxsam.pipeline.study.train_and_export(jaxsam.config.replace(config, "
        "**{{'optim.learning_rate': LR}}), '{run}', overwrite=True)`",
    ),
    "train_wave": (
        "`jaxsam wave train {run} --models {first}:{stop}`",
        "`jaxsam.pipeline.waves.train_wave('{run}', {first}, {stop})`",
    ),
}


def action(name: str, **fields: Any) -> str:
    """How the caller runs jaxsam action ``name``, filled with ``fields``.

    ``action("resume", run=RUN)``: resume the unfinished run RUN (``jaxsam train --resume RUN``
    on the command line, ``train_and_export(config, RUN, resume=True)`` from Python);
    ``action("retrain", run=RUN)``: train RUN again in place from its own config with a
    learning rate ``LR`` (a run that diverged: a resume would diverge again);
    ``action("train_wave", run=RUN, first=A, stop=B)``: train models ``A:B`` of a study in
    waves (``jaxsam wave train RUN --models A:B`` / ``train_wave(RUN, A, B)``).
    """
    cli, python = _ACTIONS[name]
    return (cli if _COMMAND_LINE.get() else python).format(**fields)


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
    """A model's loss became NaN or infinite during training.

    Attributes:
      models: the indices of the diverged models, as the raiser numbers them.
    """

    def __init__(self, message: str, *, models: Iterable[int] = ()):
        super().__init__(message)
        self.models = [int(i) for i in models]


class Interrupted(Exception):
    """Training stopped gracefully on SIGTERM or SIGINT, after writing a checkpoint.

    Not bad input, so not a :class:`JaxsamError`: the CLI prints the message (which says how
    to resume) and exits with ``128 + signum``.
    """

    def __init__(self, message: str, signum: int):
        super().__init__(message)
        self.signum = signum


# JSON input (config files, run-directory metadata, experiment specs): one-line problems.


_JSON_KINDS = {dict: "a JSON object", list: "a JSON array", str: "a string", bool: "a boolean"}


def read_json_file(
    path: str | Path, what: str, missing_hint: str, expect: type | None = None
) -> Any:
    """Parses the JSON file ``path``, or raises a :class:`ConfigError` naming ``what`` it is.

    Args:
      path: the file.
      what: what the file is, for messages (``config file``, ``experiment spec``).
      missing_hint: what to do when the file does not exist.
      expect: the Python type the JSON value must have (``dict``: a JSON object); None: any.
    """
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{what} {path} does not exist; {missing_hint}")
    value = parse_json_file(
        path,
        lambda why: ConfigError(f"cannot read {what} {path} ({why}); check its permissions"),
        lambda problem: ConfigError(f"{what} {path} {problem}"),
    )
    if expect is not None and not isinstance(value, expect):
        got = "null" if value is None else _JSON_KINDS.get(type(value), "a number")
        raise ConfigError(
            f"{what} {path} holds {got}, not {_JSON_KINDS.get(expect, expect.__name__)}; write "
            f"it as {_JSON_KINDS.get(expect, expect.__name__)}"
            + (' of sections, e.g. {"train": {"epochs": 10}}' if expect is dict else "")
        )
    return value


def parse_json_file(
    path: Path,
    cannot_read: Callable[[str], Exception],
    not_json: Callable[[str], Exception],
) -> Any:
    """The JSON value in file ``path``; raises ``cannot_read(strerror)`` when the file cannot
    be read and ``not_json(problem)`` (:func:`json_problem`'s words) when it is no JSON."""
    try:
        raw = Path(path).read_bytes()
    except OSError as e:
        raise cannot_read(e.strerror) from e
    parsed = json_problem(raw)
    if isinstance(parsed, str):
        raise not_json(parsed)
    return parsed[0]


MAX_JSON_DEPTH = 64  # a config is 3 levels deep; deeper nesting is garbage, not a config


def json_problem(raw: bytes) -> str | tuple[Any]:
    """Parses ``raw`` as JSON: ``(value,)``, or what is wrong with it (one line, with the fix).

    Refuses binary data, JSON nested deeper than :data:`MAX_JSON_DEPTH` (Python's parser would
    overflow its stack) and integers of more digits than Python converts.
    """
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        return "is not a text file (not UTF-8: binary data?); pass a JSON file"
    depth = max_depth = 0
    for ch in text:  # brackets in strings overcount: only a bound, so that is fine
        if ch in "[{":
            depth += 1
            if depth > max_depth:
                max_depth = depth
                if max_depth > MAX_JSON_DEPTH:
                    return f"nests JSON deeper than {MAX_JSON_DEPTH} levels; it is not a config"
        elif ch in "]}":
            depth -= 1
    try:
        return (json.loads(text),)
    except json.JSONDecodeError as e:
        return f"is not valid JSON ({e}); fix the syntax"
    except (ValueError, RecursionError) as e:  # e.g. an integer of more than 4,300 digits
        return f"cannot be read as JSON ({str(e).split(';')[0]}); fix the value"
