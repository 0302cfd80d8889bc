"""Graceful preemption: SIGTERM / SIGINT stop training at the next call boundary.

SLURM and TPU preemption send SIGTERM; a person at the terminal sends SIGINT (Ctrl-C). Inside
:func:`graceful_signals` the first of either only sets a flag. The trainer looks at it after
every jitted call (:func:`requested`): it finishes that call, writes a checkpoint, and raises
:class:`jaxsam.errors.Interrupted`, whose message says how to resume; the CLI exits with
``128 + signal number`` (143 for SIGTERM, 130 for SIGINT). A second signal exits at once
(``os._exit``, same status): orbax renames a checkpoint into place only when it is whole, so an
unfinished save is never mistaken for a checkpoint.

The previous handlers are restored when the outermost block ends. Handlers can only be set in
the main thread; elsewhere the block does nothing and signals keep their usual effect.
"""

from __future__ import annotations

import contextlib
import os
import signal
import threading
from collections.abc import Iterator

from jaxsam.errors import Interrupted

SIGNALS = (signal.SIGTERM, signal.SIGINT)

_state: dict = {"depth": 0, "signum": None, "previous": {}}


def _handler(signum, frame) -> None:
    if _state["signum"] is not None:  # the second signal: leave now
        name = signal.Signals(signum).name
        os.write(2, f"\njaxsam: second {name}: exiting at once\n".encode())
        os._exit(128 + signum)
    _state["signum"] = signum
    name = signal.Signals(signum).name
    os.write(
        2,
        f"\njaxsam: {name} received: finishing the current step call and writing a checkpoint "
        f"(send it again to exit at once)\n".encode(),
    )


@contextlib.contextmanager
def graceful_signals() -> Iterator[None]:
    """Within the block, SIGTERM/SIGINT request a graceful stop (see the module docstring).

    Re-entrant: nested blocks share the outer one's handlers and flag.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    if _state["depth"] == 0:
        _state["signum"] = None
        _state["previous"] = {s: signal.signal(s, _handler) for s in SIGNALS}
    _state["depth"] += 1
    try:
        yield
    finally:
        _state["depth"] -= 1
        if _state["depth"] == 0:
            for s, h in _state["previous"].items():
                signal.signal(s, h)
            _state["previous"] = {}
            _state["signum"] = None


def requested() -> int | None:
    """The signal number of a pending graceful stop, or None."""
    return _state["signum"]


def stop(message: str, signum: int | None = None) -> None:
    """Raises :class:`Interrupted` for ``signum`` (default: the pending signal), with ``message``
    (where the checkpoint is and the resume command)."""
    signum = signum or _state["signum"]
    raise Interrupted(f"interrupted by {signal.Signals(signum).name}: {message}", signum)


def check(message: str) -> None:
    """Stops (see :func:`stop`) when a signal is pending; else returns."""
    if _state["signum"] is not None:
        stop(message)
