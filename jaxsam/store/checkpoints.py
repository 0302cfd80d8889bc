"""Orbax checkpoints of the ensemble state in ``RUN/checkpoints/``, for resume.

:class:`Checkpoints` is what the trainer uses: fingerprinted saves on a cadence, restore of the
newest intact checkpoint, and write errors that name the last good one. The functions below it
are its parts (and are tested alone).

A checkpoint ``RUN/checkpoints/<step>/`` holds two items:

- ``state``: the stacked params, BatchNorm statistics and optimizer state, and the step;
- ``meta`` (JSON): the step, the failed (diverged) models, the last call's per-model loss and
  accuracy, the fingerprint of what was trained (pool, masks, global model range, config) and
  a digest of every state leaf.

Data order and augmentation keys are pure functions of (seed, global model index, epoch / step),
so the step is all the RNG state there is: a resumed run replays exactly the batches it would
have seen.

Saving is asynchronous (orbax writes into a temporary directory and renames it when it is
complete), so a process killed mid-save leaves the previous checkpoints untouched and the
half-written one is never listed. On restore the digest is recomputed: a checkpoint whose files
cannot be read, or read back different from what was saved, is skipped with a warning and the
one before it is used.
"""

from __future__ import annotations

import hashlib
import json
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import jax
import jax.numpy as jnp
import numpy as np

from jaxsam import hooks
from jaxsam.config import Config
from jaxsam.errors import RunDirError, WriteFailed, action, option
from jaxsam.store import paths
from jaxsam.store.files import (
    DropThreadTracebacks,
    drop_closed_loop,
    error_words,
    move_aside_damaged,
    quiet_failed_reads,
)
from jaxsam.store.rundir import stable_dict

if TYPE_CHECKING:
    from jaxsam.train.state import EnsembleState

KEEP_CHECKPOINTS = 2
# Config fields that may differ between a checkpoint and the run resuming from it.
_CADENCE_KEYS = ("progress", "checkpoint_every_steps", "checkpoint_every_minutes")


def make_manager(directory: Path, keep: int = KEEP_CHECKPOINTS):
    """An async orbax ``CheckpointManager`` that keeps the ``keep`` newest checkpoints.

    Leftover temporary directories of a save that was interrupted are removed on creation.
    """
    import orbax.checkpoint as ocp

    options = ocp.CheckpointManagerOptions(
        preservation_policy=ocp.checkpoint_managers.LatestN(n=keep),
        create=True,
        enable_async_checkpointing=True,
        cleanup_tmp_directories=True,
    )
    return ocp.CheckpointManager(directory.absolute(), options=options)


def due(step: int, total: int, every_steps: int, every_minutes: float, last: float) -> bool:
    """Whether to checkpoint after ``step``: at the end, every K steps, or every T minutes.

    Args:
      step: steps done so far.
      total: steps of the whole run.
      every_steps: K (0: off).
      every_minutes: T in minutes (0: off).
      last: ``time.monotonic()`` of the previous checkpoint.
    """
    if step >= total:
        return True
    if every_steps and step % every_steps == 0:
        return True
    return bool(every_minutes) and (time.monotonic() - last) >= 60.0 * every_minutes


def fingerprint(masks_fingerprint: str, first_model: int, config: Config) -> str:
    """sha256 tying a checkpoint to its pool and masks, model range and training config.

    The checkpoint cadence and the progress bar are left out: they may change on resume.
    """
    cfg = stable_dict(config)  # keys added since, at their default, leave it unchanged
    for key in _CADENCE_KEYS:
        cfg["train"].pop(key, None)
    h = hashlib.sha256(masks_fingerprint.encode())
    h.update(f"first_model={int(first_model)}".encode())
    h.update(json.dumps(cfg, sort_keys=True).encode())
    return h.hexdigest()


def _state_tree(state: EnsembleState) -> dict:
    return {
        "step": state.step,
        "params": state.params,
        "batch_stats": state.batch_stats,
        "opt_state": state.opt_state,
    }


def _leaf_digest(a: jax.Array) -> jax.Array:
    """A uint32 position-weighted sum of a leaf's bits (exact: integer arithmetic mod 2^32)."""
    a = jnp.asarray(a)
    if a.dtype == jnp.bool_:
        bits = a.astype(jnp.uint32)
    elif a.dtype.itemsize == 4:
        bits = jax.lax.bitcast_convert_type(a, jnp.uint32)
    elif a.dtype.itemsize == 2:
        bits = jax.lax.bitcast_convert_type(a, jnp.uint16).astype(jnp.uint32)
    elif a.dtype.itemsize == 1:
        bits = jax.lax.bitcast_convert_type(a, jnp.uint8).astype(jnp.uint32)
    else:  # 64-bit leaves (jax_enable_x64): fold the two halves
        halves = jax.lax.bitcast_convert_type(a, jnp.uint32)
        bits = halves[..., 0] ^ (halves[..., 1] * jnp.uint32(0x9E3779B1))
    bits = bits.ravel()
    weights = jnp.arange(bits.size, dtype=jnp.uint32) * jnp.uint32(2654435761) + jnp.uint32(1)
    return jnp.sum(bits * weights, dtype=jnp.uint32)


@jax.jit
def _digest_leaves(tree: Any) -> list[jax.Array]:
    return [_leaf_digest(leaf) for leaf in jax.tree.leaves(tree)]


def state_digest(state: EnsembleState) -> list[int]:
    """One uint32 checksum per state leaf, computed on the device (cheap, no host copy)."""
    return [int(d) for d in jax.device_get(_digest_leaves(_state_tree(state)))]


def save(
    manager,
    state: EnsembleState,
    *,
    failed_models: list[int],
    fingerprint: str,
    losses: np.ndarray,
    accuracies: np.ndarray,
) -> None:
    """Starts saving ``state`` at its step; returns once the arrays are copied off the device.

    Args:
      manager: from :func:`make_manager`.
      state: the ensemble state (leaves [M, ...]).
      failed_models: local indices of diverged models.
      fingerprint: from :func:`fingerprint`.
      losses, accuracies: float [M], the last call's mean per-model loss (nats) and accuracy.
    """
    import orbax.checkpoint as ocp

    step = int(state.step)
    meta = {
        "step": step,
        "failed_models": sorted(int(i) for i in failed_models),
        "fingerprint": fingerprint,
        "digest": state_digest(state),
        "losses": [float(v) for v in np.asarray(losses)],
        "accuracies": [float(v) for v in np.asarray(accuracies)],
    }
    manager.save(
        step,
        args=ocp.args.Composite(
            state=ocp.args.StandardSave(_state_tree(state)),
            meta=ocp.args.JsonSave(meta),
        ),
        force=True,
    )


class Restored:
    """A checkpoint read back: ``state``, ``failed_models``, ``losses`` [M], ``accuracies`` [M]."""

    def __init__(self, state: EnsembleState, meta: dict):
        self.state = state
        self.step = int(meta["step"])
        self.failed_models = [int(i) for i in meta.get("failed_models", [])]
        m = state.num_models
        self.losses = np.asarray(meta.get("losses") or np.zeros(m), np.float32)
        self.accuracies = np.asarray(meta.get("accuracies") or np.zeros(m), np.float32)


def _warn(msg: str) -> None:
    print(f"warning: {msg}", flush=True)


def restore_latest(manager, like: EnsembleState, fingerprint: str | None = None) -> Restored | None:
    """Restores the newest intact checkpoint into the structure of ``like``.

    A checkpoint that cannot be read, whose metadata has no digest, or whose contents fail the
    digest check, is skipped with a warning and moved aside into ``damaged/`` beside the
    checkpoint directory (never deleted; a later save at the same step would otherwise collide
    with it), falling back to the one before it.

    Args:
      manager: from :func:`make_manager`.
      like: an ensemble state of the right structure, shapes and dtypes.
      fingerprint: when given, a checkpoint written for another pool, masks, model range or
        config is refused.

    Returns:
      The restored checkpoint, or ``None`` when there is no usable one.

    Raises:
      RunDirError: a readable checkpoint belongs to another run (fingerprint mismatch).
    """
    import orbax.checkpoint as ocp

    abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct, _state_tree(like))
    manager.reload()
    with quiet_failed_reads() as quiet:  # a damaged checkpoint: one warning, no tracebacks
        return _restore_newest(manager, like, abstract, fingerprint, quiet)


def _restore_newest(manager, like: EnsembleState, abstract, fingerprint: str | None, quiet):
    """:func:`restore_latest`'s loop over the steps, newest first (``quiet``: from
    :func:`~jaxsam.store.files.quiet_failed_reads`, told when a read failed)."""
    import orbax.checkpoint as ocp

    for step in sorted(manager.all_steps(), reverse=True):
        problem = None
        try:
            meta = manager.restore(step, args=ocp.args.Composite(meta=ocp.args.JsonRestore()))[
                "meta"
            ]
        except Exception as e:  # damaged metadata
            meta, problem = None, f"its metadata is unreadable ({error_words(e)})"
        if meta is not None and fingerprint is not None and meta.get("fingerprint") != fingerprint:
            raise RunDirError(
                f"checkpoint {manager.directory}/{step} was written for other masks, models or "
                "config (fingerprint mismatch); it cannot be resumed here: start a new run "
                f"or pass {option('overwrite')}"
            )
        if problem is None:
            try:
                tree = manager.restore(
                    step, args=ocp.args.Composite(state=ocp.args.StandardRestore(abstract))
                )["state"]
            except Exception as e:  # orbax / tensorstore raise many types for damaged data
                problem = f"its arrays are unreadable ({error_words(e)})"
        if problem is None:
            state = like.replace(
                step=jnp.asarray(tree["step"], jnp.int32),
                params=tree["params"],
                batch_stats=tree["batch_stats"],
                opt_state=tree["opt_state"],
            )
            if int(state.step) != step:
                problem = f"it holds step {int(state.step)}"
            elif not isinstance(meta.get("digest"), list):
                problem = "its metadata has no digest of its arrays, so they cannot be trusted"
            elif state_digest(state) != meta["digest"]:
                problem = "its arrays differ from what was saved (digest mismatch)"
        if problem is None:
            return Restored(state, meta)
        quiet.failed = True
        moved = _set_aside(manager, step)
        _warn(
            f"checkpoint at step {step} is damaged: {problem}; moved it to {moved} and falling "
            "back to an older one"
        )
    return None


def _set_aside(manager, step: int) -> Path:
    """Moves checkpoint ``step`` into ``damaged/`` beside the checkpoint directory (a rename)."""
    directory = Path(str(manager.directory))
    moved = move_aside_damaged(directory.parent, f"{directory.name}/{step}")
    manager.reload()
    return moved


def state_nbytes(state: EnsembleState) -> int:
    """Bytes of one checkpoint's arrays."""
    return int(
        sum(
            np.dtype(x.dtype).itemsize * int(np.prod(x.shape))
            for x in jax.tree.leaves(_state_tree(state))
        )
    )


class Checkpoints:
    """The run's checkpoints: fingerprinted saves, fallback restore, clear write errors.

    Args:
      run_dir: the run (or wave work) directory; checkpoints go to ``run_dir/checkpoints``.
      config: the run config (its ``train`` cadence decides when :meth:`maybe_save` saves).
      fingerprint: from :func:`fingerprint`; a checkpoint with another one is refused.

    Raises:
      RunDirError: the directory cannot be created.
    """

    def __init__(self, run_dir: Path, config: Config, fingerprint: str):
        self.dir = run_dir / "checkpoints"
        self.fingerprint = fingerprint
        self.train = config.train
        self.last_time = time.monotonic()
        self.last_good: int | None = None  # newest step known to be fully on disk
        self.pending: int | None = None
        # Orbax deletes old checkpoints by path: never through a link out of the run directory.
        paths.check_tree_has_no_links(run_dir, "checkpoints")
        paths.check_no_links(run_dir, "damaged")
        try:
            self.manager = make_manager(self.dir)
        except OSError as e:
            raise RunDirError(
                f"cannot create checkpoints in {self.dir} ({e.strerror}); choose a writable "
                f"{option('out', None)}"
            ) from e
        self._quiet_background_errors()

    def restore(self, like: EnsembleState) -> Restored | None:
        """The newest intact checkpoint (see :func:`restore_latest`), or None."""
        import sys

        hook = sys.unraisablehook
        restored = restore_latest(self.manager, like, self.fingerprint)
        if sys.unraisablehook is not hook:  # a damaged one's reads may still report: keep the
            self._keep_quiet = True  # hook of quiet_failed_reads when closing
        if restored is not None:
            self.last_good = restored.step
        return restored

    def _failed(self, step: int, e: Exception) -> RunDirError:
        """The one-line error of the failed save of ``step``. A full, read-only or forbidden
        disk gives :class:`~jaxsam.errors.WriteFailed` (the CLI then exits at once, before the
        failed asynchronous write's threads print their tracebacks)."""
        from jaxsam.store import write_problem

        self._keep_quiet = True  # the failed write's threads may still report after this
        kept = f"step {self.last_good}" if self.last_good is not None else "none yet"
        problem = write_problem(e)
        cause = problem or f"{type(e).__name__}: {str(e)[:200]}"
        error = WriteFailed if problem else RunDirError
        return error(
            f"writing the checkpoint at step {step} to {self.dir} failed ({cause}); the last good "
            f"checkpoint ({kept}) is intact: free disk space or fix permissions, then "
            f"{action('resume', run='RUN')}"
        )

    def maybe_save(
        self,
        done: int,
        total: int,
        state: EnsembleState,
        failed,
        losses: np.ndarray,
        accs: np.ndarray,
        *,
        force: bool = False,
    ) -> bool:
        """Saves ``state`` after step ``done`` of ``total`` when :func:`due` (or ``force``).

        Returns whether a save was started (a forced save of a step already saved is skipped).
        See :func:`save`.
        """
        t = self.train
        every = (t.checkpoint_every_steps, t.checkpoint_every_minutes)
        if force:
            if done in (self.pending, self.last_good):
                return False
        elif not due(done, total, *every, self.last_time):
            return False
        try:
            hooks.fire("checkpoint", step=done)
            self._wait_for_pending()
            save(
                self.manager,
                state,
                failed_models=sorted(failed),
                fingerprint=self.fingerprint,
                losses=losses,
                accuracies=accs,
            )
            hooks.fire("checkpoint_sent", step=done)
        except RunDirError:
            raise
        except Exception as e:
            raise self._failed(done, e) from e
        self.pending = done
        self.last_time = time.monotonic()
        return True

    def _wait_for_pending(self) -> None:
        """Waits for the previous save's asynchronous write (orbax would wait for it inside the
        next save anyway), so that its failure is reported under its own step."""
        if self.pending is None:
            return
        try:
            self.manager.wait_until_finished()
        except Exception as e:
            raise self._failed(self.pending, e) from e
        self.last_good, self.pending = self.pending, None

    def _quiet_background_errors(self) -> None:
        """While saves run, drop orbax's log record of a failed background write and
        tensorstore's "Event loop is closed" callbacks: the same error is raised in this
        thread by the next save or :meth:`close` (see :meth:`_failed`), on one line."""
        import logging
        import sys

        self._keep_quiet = False
        self._log_filter = DropThreadTracebacks()
        logging.getLogger("absl").addFilter(self._log_filter)
        self._unraisable = sys.unraisablehook
        sys.unraisablehook = drop_closed_loop(self._unraisable)

    def _restore_error_reports(self) -> None:
        """Undoes :meth:`_quiet_background_errors`, unless a save failed: then the failed
        write's threads may still report after this, and their reports stay dropped."""
        import logging
        import sys

        if self._keep_quiet:
            return
        logging.getLogger("absl").removeFilter(self._log_filter)
        sys.unraisablehook = self._unraisable

    def close(self, raise_errors: bool) -> None:
        """Waits for the last save and closes the manager.

        A failed save (reported by the wait or, when orbax held its error back, by the close)
        raises its one-line error only when ``raise_errors``; otherwise another error is already
        on its way out and must not be replaced by this one, so it is dropped.
        """
        try:
            self.manager.wait_until_finished()
            self.manager.close()
        except Exception as e:
            self._keep_quiet = True
            if raise_errors:
                raise self._failed(self.pending or 0, e) from e
            return
        finally:
            self._restore_error_reports()
        if self.pending is not None:
            self.last_good = self.pending
