"""Orbax checkpoints of the ensemble state, for resume.

A checkpoint holds the stacked params, BatchNorm statistics and optimizer state, and the step.
Data order and augmentation keys are pure functions of (seed, model, epoch / step), so the step
is all the RNG state there is: a resumed run replays exactly the batches it would have seen.
"""

from __future__ import annotations

import time
from pathlib import Path

import jax
import numpy as np

from jaxsam.config import Config
from jaxsam.train.state import EnsembleState


def make_manager(directory: Path, config: Config):
    """An orbax ``CheckpointManager`` keeping the two newest checkpoints."""
    import orbax.checkpoint as ocp

    del config
    options = ocp.CheckpointManagerOptions(
        max_to_keep=2, create=True, enable_async_checkpointing=True
    )
    return ocp.CheckpointManager(directory.absolute(), options=options)


def due(step: int, total: int, every_steps: int, every_minutes: float, last: float) -> bool:
    """Whether to checkpoint after ``step``: at the end, every K steps, or every T minutes."""
    if step >= total:
        return True
    if every_steps and step % every_steps == 0:
        return True
    return bool(every_minutes) and (time.monotonic() - last) >= 60.0 * every_minutes


def _state_tree(state: EnsembleState) -> dict:
    return {
        "step": state.step,
        "params": state.params,
        "batch_stats": state.batch_stats,
        "opt_state": state.opt_state,
    }


def save(manager, state: EnsembleState, failed_models: list[int]) -> None:
    """Saves ``state`` asynchronously at its step (with the list of failed models)."""
    import orbax.checkpoint as ocp

    step = int(state.step)
    manager.save(
        step,
        args=ocp.args.Composite(
            state=ocp.args.StandardSave(_state_tree(state)),
            meta=ocp.args.JsonSave({"step": step, "failed_models": list(failed_models)}),
        ),
    )


def restore_latest(manager, like: EnsembleState) -> tuple[EnsembleState, list[int]] | None:
    """Restores the newest readable checkpoint into the structure of ``like``.

    A checkpoint that cannot be read is skipped with a warning, falling back to the one
    before it. Returns ``None`` when there is none.
    """
    import orbax.checkpoint as ocp

    abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct, _state_tree(like))
    for step in sorted(manager.all_steps(), reverse=True):
        try:
            out = manager.restore(
                step,
                args=ocp.args.Composite(
                    state=ocp.args.StandardRestore(abstract), meta=ocp.args.JsonRestore()
                ),
            )
        except Exception as e:  # damaged checkpoint: fall back to an older one
            print(
                f"warning: checkpoint at step {step} is unreadable ({type(e).__name__}); "
                "falling back to an older one"
            )
            continue
        tree = out["state"]
        state = EnsembleState(
            step=np.int32(tree["step"]),
            params=tree["params"],
            batch_stats=tree["batch_stats"],
            opt_state=tree["opt_state"],
        )
        return state, list(out["meta"].get("failed_models", []))
    return None
