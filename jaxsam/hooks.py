"""Fault hooks: named points in the trainer and the store where a fault can be injected.

The reliability tests and ``jaxsam bench faults`` kill, fail or poison a run at these points
instead of patching the trainer or the store. No hook is installed by default, and then a point
costs one dict lookup. Each point passes a value and keyword context to its hook; the hook
returns the value to use (or raises, or kills the process):

==================  ==========================================  ===========================
point               where, and its context                      value
==================  ==========================================  ===========================
``train_call``      after each jitted training call of           ``(model_state, (loss,
                    :func:`jaxsam.train.train_ensemble`;        acc))``: the call's new
                    ``step0``, ``num_steps``                     state, histories [M, n]
``checkpoint``      before a checkpoint save starts             ``None``
                    (raising here is a failed write); ``step``
``checkpoint_sent`` after the save started: its asynchronous    ``None``
                    write is in flight; ``step``
``arrays_sent``     after orbax started writing an array        ``None``
                    directory of the run (``masks``,
                    ``logits``, ...) and before it is waited
                    for; ``path``
``json``            before a JSON file of the run is written;   ``None``
                    ``path``
``free_space``      the disk check before training; ``path``   free bytes (int)
==================  ==========================================  ===========================

Install a hook for the duration of a block with :func:`installed`. The functions below build
the usual faults: :func:`kill_at`, :func:`raise_at` and :func:`nan_in_model`, and damage the
newest checkpoint of a run (:data:`CHECKPOINT_DAMAGE`).
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

POINTS = ("train_call", "checkpoint", "checkpoint_sent", "arrays_sent", "json", "free_space")

Hook = Callable[..., Any]
_HOOKS: dict[str, Hook] = {}


def fire(point: str, value: Any = None, **context: Any) -> Any:
    """Called by the trainer and the store at ``point``; returns ``value`` or the hook's."""
    hook = _HOOKS.get(point)
    return value if hook is None else hook(value, **context)


@contextlib.contextmanager
def installed(point: str, hook: Hook) -> Iterator[None]:
    """Runs ``hook(value, **context)`` at ``point`` while the block runs."""
    if point not in POINTS:
        raise ValueError(f"unknown hook point {point!r}; use one of {list(POINTS)}")
    old = _HOOKS.get(point)
    _HOOKS[point] = hook
    try:
        yield
    finally:
        if old is None:
            _HOOKS.pop(point, None)
        else:
            _HOOKS[point] = old


def kill_process() -> None:
    """SIGKILLs this process (no cleanup, no ``finally``: like a power cut)."""
    sys.stdout.flush()
    os.kill(os.getpid(), signal.SIGKILL)


def raise_at(k: int, error: BaseException | Callable[[], None], when=None) -> Hook:
    """A hook that fails at its ``k``-th matching call (1-based), passing values through.

    Args:
      k: which matching call fails.
      error: the exception to raise, or a function to call instead (e.g. :func:`kill_process`).
      when: ``when(**context) -> bool`` selects the calls that count (default: all).
    """
    count = [0]

    def hook(value, **context):
        if when is None or when(**context):
            count[0] += 1
            if count[0] == k:
                if isinstance(error, BaseException):
                    raise error
                error()
        return value

    return hook


def kill_at(k: int = 1, when=None) -> Hook:
    """A hook that SIGKILLs the process at its ``k``-th matching call."""
    return raise_at(k, kill_process, when)


def nan_in_model(model: int, step: int) -> Hook:
    """A ``train_call`` hook: model ``model`` goes NaN at global ``step``, as in a divergence.

    The loss of that step and the model's parameters after it become NaN.
    """
    import jax
    import jax.numpy as jnp

    def hook(out, *, step0: int, num_steps: int):
        (params, stats, opt), (loss, acc) = out
        if step0 <= step < step0 + num_steps:
            loss = loss.at[model, step - step0].set(jnp.nan)
            params = jax.tree.map(lambda p: p.at[model].set(jnp.nan), params)
        return (params, stats, opt), (loss, acc)

    return hook


def newest_checkpoint(run_dir: Path) -> Path:
    """The directory of the newest checkpoint in ``run_dir/checkpoints``."""
    steps = [p for p in (Path(run_dir) / "checkpoints").iterdir() if p.name.isdigit()]
    return max(steps, key=lambda p: int(p.name))


def _rewrite_biggest_array_file(ckpt: Path, change: Callable[[bytearray], bytes]) -> None:
    files = [f for f in (ckpt / "state").rglob("*") if f.is_file() and f.parent.name == "d"]
    f = max(files, key=lambda f: f.stat().st_size)
    f.write_bytes(change(bytearray(f.read_bytes())))


def truncate_checkpoint(ckpt: Path) -> None:
    """Cuts the biggest array file of checkpoint ``ckpt`` in half."""
    _rewrite_biggest_array_file(ckpt, lambda b: bytes(b[: len(b) // 2]))


def flip_checkpoint_byte(ckpt: Path) -> None:
    """Flips the bits of the middle byte of the biggest array file of checkpoint ``ckpt``."""

    def flip(b: bytearray) -> bytes:
        b[len(b) // 2] ^= 0xFF
        return bytes(b)

    _rewrite_biggest_array_file(ckpt, flip)


def garble_checkpoint_meta(ckpt: Path) -> None:
    """Overwrites the metadata of checkpoint ``ckpt`` with text that is not JSON."""
    (ckpt / "meta" / "metadata").write_text("{not json")


CHECKPOINT_DAMAGE: dict[str, Callable[[Path], None]] = {
    "truncated": truncate_checkpoint,
    "bit-flipped": flip_checkpoint_byte,
    "metadata garbage": garble_checkpoint_meta,
}
