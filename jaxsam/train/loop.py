"""The training loop: M models trained at once on their masks, and their logits.

The run directory around it (pool, masks, metrics, ``COMPLETE``) is the pipeline's
(:mod:`jaxsam.pipeline.study`); this module trains and computes logits.
"""

from __future__ import annotations

import contextlib
import dataclasses
import time
from collections.abc import Callable
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from jaxsam import hooks, store
from jaxsam.config import Config
from jaxsam.data.pool import Pool
from jaxsam.errors import DivergenceError, action
from jaxsam.store import checkpoints as ckpt_lib
from jaxsam.train import preempt
from jaxsam.train.calibrate import announce_execution, apply_execution, resolve_execution
from jaxsam.train.logits import compute_logits, make_logits_fn
from jaxsam.train.setup import TrainSetup, make_setup
from jaxsam.train.state import EnsembleState, init_ensemble, model_keys
from jaxsam.train.step import make_train_steps
from jaxsam.train.strategies import Execution, make_ensemble_fn


@dataclasses.dataclass
class TrainResult:
    """What training leaves behind (before export)."""

    state: EnsembleState
    setup: TrainSetup
    losses: np.ndarray  # [M] final-call mean loss
    train_acc: np.ndarray  # [M] final-call mean batch accuracy
    failed_models: list[int]
    seconds: float


class _Progress:
    """A tqdm bar with steps/s, or silence."""

    def __init__(self, total: int, initial: int, enabled: bool, desc: str):
        self.bar = None
        if enabled:
            from tqdm.auto import tqdm

            self.bar = tqdm(
                total=total, initial=initial, desc=desc, unit="step", leave=True, dynamic_ncols=True
            )

    def update(self, n: int, loss: float, acc: float) -> None:
        if self.bar is not None:
            self.bar.set_postfix(loss=f"{loss:.3f}", acc=f"{acc:.3f}", refresh=False)
            self.bar.update(n)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def _call_schedule(
    start: int, total: int, spe: int, steps_per_call: int | None
) -> list[tuple[int, int]]:
    """Splits steps [start, total) into (step0, num_steps) calls that never cross an epoch."""
    per_call = min(steps_per_call or spe, spe)
    plan = []
    step = start
    while step < total:
        epoch_end = (step // spe + 1) * spe
        n = min(per_call, epoch_end - step, total - step)
        plan.append((step, n))
        step += n
    return plan


def _check_divergence(
    loss_hist: np.ndarray, step0: int, failed: set[int], setup: TrainSetup, policy: str
) -> list[int]:
    """Finds models whose loss went NaN/inf in one call; stops or returns them to exclude.

    Args:
      loss_hist: float [M, n], per-model loss of each step of the call.
      step0: global step of the call's first step.
      failed: models already excluded (not reported again).
      setup: for the learning-rate schedule.
      policy: ``stop`` (raise) or ``exclude`` (warn and return the new failures).

    Raises:
      DivergenceError: under ``stop``, naming the model, the step and its learning rate.
    """
    new = []
    for i in np.flatnonzero(~np.isfinite(loss_hist).all(axis=1)):
        if int(i) in failed:
            continue
        first = int(np.argmax(~np.isfinite(loss_hist[i])))
        s = step0 + first
        lr = float(setup.schedule(s))
        msg = (
            f"model {int(i)} diverged at step {s} (learning rate {lr:.4g}): its loss is "
            f"{loss_hist[i, first]}"
        )
        if policy == "stop":
            raise DivergenceError(
                f"{msg}; lower optim.learning_rate or set train.on_divergence = 'exclude' to "
                "drop diverged models",
                models=[int(i)],
            )
        print(
            f"warning: {msg}; excluded from scoring (lower optim.learning_rate to keep it)",
            flush=True,
        )
        new.append(int(i))
    return new


def _check_disk(
    run_dir: Path, config: Config, pool: Pool, state: EnsembleState, num_models: int
) -> None:
    """Fails before training when the disk cannot hold the checkpoints and the logits.

    The estimate is :func:`jaxsam.store.estimate_disk`'s, less what the run's
    checkpoints already occupy (a resumed run).
    """
    estimate = store.estimate_disk(
        config, pool, num_models, -(-ckpt_lib.state_nbytes(state) // num_models), masks=False
    )
    present = store.dir_bytes(run_dir / "checkpoints") if (run_dir / "checkpoints").is_dir() else 0
    store.check_disk(run_dir, estimate, present=present)


def _execution_plan(
    setup: TrainSetup,
    config: Config,
    pool: Pool,
    keep: np.ndarray,
    run_dir: Path | None,
    execution: Execution | None,
) -> TrainSetup:
    """``setup`` under its execution plan (strategy, convolution form, chunk size).

    ``execution`` is the plan a resumed run stored in ``run_dir/plan.json`` when training
    started (:func:`jaxsam.plan.study.stored_execution`), reused so that a changed strategy
    table (``auto``), device memory or jax version cannot change how the rest of the run is
    computed. Otherwise the plan is resolved (:func:`jaxsam.train.calibrate.resolve_execution`)
    and stored before the first step.
    """
    if execution is not None:
        return apply_execution(setup, execution)
    setup = resolve_execution(setup, config, pool, keep)
    if run_dir is not None:
        store.write_plan(run_dir, setup.execution.to_dict())
    return setup


def train_ensemble(
    config: Config,
    pool: Pool,
    keep: np.ndarray,
    *,
    setup: TrainSetup | None = None,
    execution: Execution | None = None,
    run_dir: Path | None = None,
    resume: bool = False,
    progress: bool | None = None,
    desc: str = "train",
    first_model: int = 0,
    steps_per_epoch: int | None = None,
    on_call: Callable[[int, int, float], None] | None = None,
    resume_hint: str | None = None,
) -> TrainResult:
    """Trains ``M = keep.shape[0]`` models at once on their own subsets of ``pool``.

    With ``run_dir``, checkpoints go to ``run_dir/checkpoints`` (every
    ``train.checkpoint_every_steps`` steps / ``train.checkpoint_every_minutes`` minutes and at
    the end), tagged with a fingerprint of pool, masks, ``first_model`` and config. A resumed
    run restores the newest intact checkpoint and replays the same calls as an uninterrupted
    run (same ``_call_schedule`` split), so its final state is bitwise the same.

    Args:
      config: the run config (validated).
      pool: the data pool; its arrays are put on the device once.
      keep: bool [M, N] membership masks.
      setup: model, optimizer, schedule and step counts, as the study's plan built them
        (:func:`jaxsam.plan.make_plan`); ``None`` builds them here.
      execution: the execution plan to reuse (a resumed run's, stored when it started);
        ``None`` resolves ``train.strategy`` and stores the result in ``run_dir``.
      run_dir: where checkpoints go (``None``: no checkpoints).
      resume: continue from the newest intact checkpoint in ``run_dir``.
      progress: show a progress bar (default: ``config.train.progress``).
      desc: progress-bar label.
      first_model: global index of ``keep``'s first row, when training a slice of a larger
        study (waves, hosts): model ``first_model + i`` draws the same keys as in a full run.
      steps_per_epoch: pin the steps per epoch (waves pass the full study's value, so a slice
        trains exactly as its models would in one full run); ``None``: from ``keep``.
      on_call: called as ``on_call(step0, num_steps, seconds)`` after each compiled call has
        finished (its results are on the host), ``seconds`` counted from the first call's
        start; the benchmark suite uses it to separate the compile from the steady epoch.

    Raises:
      DivergenceError: a model's loss went NaN/inf under ``train.on_divergence = 'stop'``.
      RunDirError: the disk is too small or not writable, a checkpoint write failed, or the
        checkpoint belongs to another run.
      Interrupted: SIGTERM or SIGINT arrived (with ``run_dir``); the checkpoint is on disk.
    """
    guard = contextlib.ExitStack()
    with guard:
        if run_dir is not None:  # one writer of run_dir (a wave locks its own work directory)
            guard.enter_context(store.run_lock(run_dir, "train"))
            guard.enter_context(preempt.graceful_signals())
        return _train_ensemble(
            config,
            pool,
            keep,
            setup=setup,
            execution=execution,
            run_dir=run_dir,
            resume=resume,
            progress=progress,
            desc=desc,
            first_model=first_model,
            steps_per_epoch=steps_per_epoch,
            on_call=on_call,
            resume_hint=resume_hint,
        )


def _train_ensemble(
    config: Config,
    pool: Pool,
    keep: np.ndarray,
    *,
    setup: TrainSetup | None,
    execution: Execution | None,
    run_dir: Path | None,
    resume: bool,
    progress: bool | None,
    desc: str,
    first_model: int,
    steps_per_epoch: int | None,
    on_call: Callable[[int, int, float], None] | None,
    resume_hint: str | None,
) -> TrainResult:
    """:func:`train_ensemble` under ``run_dir``'s lock and graceful signal handlers."""
    t = config.train
    m = keep.shape[0]
    setup = setup or make_setup(config, pool, keep, steps_per_epoch)
    mean, std = jnp.asarray(pool.mean), jnp.asarray(pool.std)
    setup = _execution_plan(setup, config, pool, keep, run_dir, execution)
    state = init_ensemble(setup.model, setup.tx, m, pool.input_shape, t.seed, first_model)
    announce_execution(setup.execution, config, pool, m)
    ckpts, (state, failed, losses, accs) = _checkpoints(
        run_dir, config, pool, keep, state, first_model, resume
    )
    fn = make_train_steps(setup, mean, std, pool.kind, t.batch_size)
    ensemble_fn = make_ensemble_fn(fn, setup.execution.strategy, setup.execution.chunk_size)
    shared = (jax.device_put(pool.x), jax.device_put(pool.y))
    model_data = (
        jnp.asarray(keep),
        model_keys(t.seed, m, 1, first_model),
        model_keys(t.seed, m, 2, first_model),
    )
    start = int(state.step)
    plan = _call_schedule(start, setup.total_steps, setup.steps_per_epoch, t.steps_per_call)
    bar = _Progress(setup.total_steps, start, t.progress if progress is None else progress, desc)
    t0 = time.perf_counter()
    model_state = (state.params, state.batch_stats, state.opt_state)
    ok_exit = False
    stopped_at = None
    try:
        for step0, n in plan:
            model_state, (loss_hist, acc_hist) = hooks.fire(
                "train_call",
                ensemble_fn(model_state, model_data, shared, jnp.int32(step0), n),
                step0=step0,
                num_steps=n,
            )
            loss_hist = np.asarray(loss_hist)
            failed.update(_check_divergence(loss_hist, step0, failed, setup, t.on_divergence))
            losses = loss_hist.mean(axis=1)
            accs = np.asarray(acc_hist).mean(axis=1)
            ok = [i for i in range(m) if i not in failed] or list(range(m))
            bar.update(n, float(losses[ok].mean()), float(accs[ok].mean()))
            if on_call is not None:
                on_call(step0, n, time.perf_counter() - t0)
            done = step0 + n
            if ckpts is not None:
                signal = preempt.requested()  # a signal forces a checkpoint of this call
                state = EnsembleState(jnp.int32(done), *model_state)
                ckpts.maybe_save(
                    done, setup.total_steps, state, failed, losses, accs, force=signal is not None
                )
                if signal is not None:
                    stopped_at = (done, signal)
                    break
        ok_exit = True
    finally:
        bar.close()
        if ckpts is not None:
            ckpts.close(raise_errors=ok_exit)
    if stopped_at is not None:  # a signal: the checkpoint of this call is on disk
        hint = f"`{resume_hint}`" if resume_hint else action("resume", run=run_dir)
        where = f"step {stopped_at[0]} of {setup.total_steps} is in {run_dir / 'checkpoints'}"
        preempt.stop(f"the checkpoint at {where}; continue with {hint}", stopped_at[1])
    state = EnsembleState(jnp.int32(setup.total_steps), *model_state)
    jax.block_until_ready(state.params)
    return TrainResult(state, setup, losses, accs, sorted(failed), time.perf_counter() - t0)


def _checkpoints(
    run_dir: Path | None,
    config: Config,
    pool: Pool,
    keep: np.ndarray,
    state: EnsembleState,
    first_model: int,
    resume: bool,
):
    """The run's checkpoints (None without ``run_dir``) after the disk check, and the state to
    start from: ``(state, failed, losses, accuracies)``, restored from the newest intact
    checkpoint on ``resume``."""
    m = keep.shape[0]
    start = (state, set(), np.zeros(m, np.float32), np.zeros(m, np.float32))
    if run_dir is None:
        return None, start
    _check_disk(run_dir, config, pool, state, m)
    masks = store.masks_fingerprint(pool.fingerprint(), keep)
    fp = ckpt_lib.fingerprint(masks, first_model, config)
    ckpts = ckpt_lib.Checkpoints(run_dir, config, fp)
    if resume and (restored := ckpts.restore(state)) is not None:
        r = restored
        return ckpts, (r.state, set(r.failed_models), r.losses, r.accuracies)
    return ckpts, start


def export_logits(result: TrainResult, pool: Pool, queries: int) -> tuple[np.ndarray, np.ndarray]:
    """Logits of all models on the pool and the test points: ([M, N, A, C], [M, T, A, C])."""
    fn = make_logits_fn(
        result.setup, jnp.asarray(pool.mean), jnp.asarray(pool.std), pool.kind, queries
    )
    p, bs = result.state.params, result.state.batch_stats
    pool_logits = compute_logits(fn, p, bs, jax.device_put(pool.x))
    test_logits = compute_logits(fn, p, bs, jax.device_put(pool.test_x))
    return pool_logits, test_logits
