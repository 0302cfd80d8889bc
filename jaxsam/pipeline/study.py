"""Config -> pool and masks -> trained models -> logits and metrics in a run directory.

:func:`build_study` is the one place a config becomes its pool and membership masks (a single
run, a wave of a study and a reopened study all call it). :func:`finish_study` is the one place
the trained models' logits become a finished run directory: ``metrics.json`` (the accuracies of
:func:`accuracy_metrics`, losses, timings) and ``logits/``, then ``COMPLETE``
(:func:`jaxsam.store.finish_run`). :func:`train_and_export` chains them for a single run;
:mod:`jaxsam.pipeline.waves` uses the same two for a study trained in waves.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from jaxsam import metrics as metrics_lib
from jaxsam import store
from jaxsam.config import Config
from jaxsam.data import canaries as canary_lib
from jaxsam.data import load_pool, make_masks
from jaxsam.data.augment import query_names
from jaxsam.data.pool import Pool
from jaxsam.errors import RunDirError
from jaxsam.optim import dp as dp_lib
from jaxsam.plan import check_config, preflight
from jaxsam.train import preempt
from jaxsam.train.loop import export_logits, train_ensemble


def build_study(config: Config) -> tuple[Pool, np.ndarray]:
    """The pool and the membership masks ``config`` describes.

    Both are pure functions of the config (``data.*`` and ``masks.*``), so any process can
    rebuild them and check them against a run's fingerprint. Every training path (train,
    resume, wave init / train) starts here, so a custom model (``model.name =
    "package.module:attr"``) is imported and checked here too, before anything is written
    (:func:`jaxsam.train.setup.build_model`).

    Returns:
      ``(pool, keep)``: the :class:`~jaxsam.data.pool.Pool` and bool ``[M, N]`` masks,
      ``keep[m, i]`` True when model ``m`` trains on pool example ``i``.

    Raises:
      ConfigError: the custom model cannot be imported or is not a Module factory.
    """
    from jaxsam.models import custom

    if custom.is_import_path(config.model.name):
        custom.load_factory(config.model.name)  # fail fast, before loading the data
    pool = load_pool(config.data)
    mc = config.masks
    keep = make_masks(mc.models, pool.size, mc.pkeep, mc.seed, design=mc.design)
    if config.audit.enabled:  # canaries (docs/audit.md); other columns keep these masks
        pool = canary_lib.add_canaries(pool, config.audit)
        keep = canary_lib.audit_masks(keep, config.audit)
    if custom.is_import_path(config.model.name):
        from jaxsam.train.setup import build_model

        build_model(config, pool)
    return pool, keep


def mask_design_header(config: Config) -> dict:
    """run.json's ``"mask_design"`` of a trained run: ``{"design", "pkeep", "source":
    "config"}`` from ``masks.*`` (an imported run records what the masks show instead,
    :func:`jaxsam.pipeline.import_logits.detected_design`)."""
    m = config.masks
    return {"design": m.design, "pkeep": float(m.pkeep), "source": "config"}


def study_header(config: Config, keep: np.ndarray) -> dict:
    """The run-header fields a study adds to run.json: the mask design (``"mask_design"``,
    :func:`mask_design_header`), the DP guarantee (``"dp"``,
    :func:`jaxsam.optim.dp.header_fields`) and the canaries and targets of an audited run
    (``"audit"``, :func:`jaxsam.data.canaries.header_fields`).

    Raises:
      ConfigError: a DP run and the DP libraries are missing (before anything is written).
    """
    return {
        "mask_design": mask_design_header(config),
        **dp_lib.header_fields(config, keep),
        **canary_lib.header_fields(config, keep),
    }


def accuracy_metrics(
    pool_logits: np.ndarray,
    labels: np.ndarray,
    keep: np.ndarray,
    test_logits: np.ndarray,
    test_labels: np.ndarray,
    failed_models: Sequence[int] = (),
) -> dict:
    """Per-model accuracy (identity view, query 0) on three sets of points.

    * ``train_accuracy``: the pool points the model trained on (IN);
    * ``out_accuracy``: the pool points the model did not train on (OUT, pool non-members);
    * ``heldout_accuracy``: the held-out split that no model trained on.

    Lists have one entry per model, None for a failed (excluded) model (or a model with no
    such point); the ``mean_*`` values average the other models.

    Args:
      pool_logits: float ``[M, N, A, C]``; labels: int ``[N]``; keep: bool ``[M, N]``.
      test_logits: float ``[M, T, A, C]`` (T may be 0); test_labels: int ``[T]``.
      failed_models: indices of the failed models.
    """
    correct = metrics_lib.correct_predictions(pool_logits, labels)
    test_correct = (
        metrics_lib.correct_predictions(test_logits, test_labels)
        if test_logits.shape[1]
        else np.zeros((keep.shape[0], 0), bool)
    )
    return accuracy_metrics_from_correct(correct, keep, test_correct, failed_models)


def accuracy_metrics_from_correct(
    correct: np.ndarray,
    keep: np.ndarray,
    test_correct: np.ndarray,
    failed_models: Sequence[int] = (),
) -> dict:
    """:func:`accuracy_metrics` from per-model correctness: bool ``[M, N]`` on the pool and
    bool ``[M, T]`` on the held-out split (T may be 0)."""
    train = metrics_lib.accuracy_per_model(correct, keep)
    out = metrics_lib.accuracy_per_model(correct, ~keep)
    if test_correct.shape[1]:
        held = metrics_lib.accuracy_per_model(test_correct)
    else:
        held = np.full(keep.shape[0], np.nan)
    ok = np.ones(keep.shape[0], bool)
    ok[list(failed_models)] = False
    train, out, held = (np.where(ok, v, np.nan) for v in (train, out, held))

    def per_model(v):
        return [None if np.isnan(x) else float(x) for x in v]

    def mean(v):
        return None if np.isnan(v).all() else float(np.nanmean(v))

    return {
        "train_accuracy": per_model(train),
        "out_accuracy": per_model(out),
        "heldout_accuracy": per_model(held),
        "mean_train_accuracy": mean(train),
        "mean_out_accuracy": mean(out),
        "mean_heldout_accuracy": mean(held),
    }


def finish_study(
    path: Path,
    config: Config,
    *,
    logits: np.ndarray,
    labels: np.ndarray,
    keep: np.ndarray,
    test_logits: np.ndarray,
    test_labels: np.ndarray,
    final_batch_loss: np.ndarray,
    train_seconds: float,
    steps: int,
    steps_per_epoch: int,
    failed_models: Sequence[int],
    **extra,
) -> store.Run:
    """Writes the trained study's logits and ``metrics.json`` and marks the run complete.

    Args:
      path: the run directory (started with :func:`jaxsam.store.start_run`).
      config: its config (for the query-view names).
      logits: float ``[M, N, A, C]``; labels: int ``[N]``; keep: bool ``[M, N]``.
      test_logits: float ``[M, T, A, C]``; test_labels: int ``[T]``.
      final_batch_loss: float ``[M]``, each model's mean loss over its last call.
      train_seconds: wall-clock training time; steps, steps_per_epoch: the step counts.
      failed_models: indices of the models excluded from scoring (diverged).
      **extra: further ``metrics.json`` fields (e.g. ``waves``: the wave names).

    Returns:
      The finished run, read back through :func:`jaxsam.store.load_run`.
    """
    failed = [int(i) for i in failed_models]
    cols = canary_lib.study_columns(config.audit, keep.shape[1])  # accuracies without canaries
    pick = (lambda a: a) if cols is None else (lambda a: a[:, cols])
    metrics = accuracy_metrics(
        pick(logits),
        labels if cols is None else labels[cols],
        pick(keep),
        test_logits,
        test_labels,
        failed,
    )
    metrics.update(
        final_batch_loss=np.asarray(final_batch_loss).tolist(),
        train_seconds=float(train_seconds),
        steps=int(steps),
        steps_per_epoch=int(steps_per_epoch),
        failed_models=failed,
        **extra,
    )
    store.finish_run(
        path,
        logits=logits,
        labels=labels,
        query_names=query_names(config.data.query_augment),
        test_logits=test_logits,
        test_labels=test_labels,
        metrics=metrics,
        failed_models=failed,
    )
    return store.load_run(path)


def train_and_export(
    config: Config,
    out: str | Path,
    *,
    overwrite: bool = False,
    resume: bool = False,
    progress: bool | None = None,
    desc: str | None = None,
) -> store.Run:
    """The whole expensive part: pool, masks, training, logits, into run directory ``out``.

    Args:
      config: the run config (validated here).
      out: the run directory to create (or, with ``resume``, to continue).
      overwrite: replace a run already in ``out``.
      resume: continue the unfinished run in ``out`` from its newest intact checkpoint.
      progress: show a progress bar (default: ``config.train.progress``).
      desc: progress-bar label.

    Returns:
      The finished run, read back through :func:`jaxsam.store.load_run`.

    Raises:
      RunExistsError: ``out`` already holds a run of this config (``finished`` says whether
        it is complete) and neither ``overwrite`` nor ``resume`` is set.
      RunDirError, DivergenceError: see :func:`jaxsam.train.loop.train_ensemble`.
      Interrupted: SIGTERM or SIGINT arrived (:mod:`jaxsam.train.preempt`); during training a
        checkpoint of the current call is written first, and the message says how to resume.

    Every check that can fail runs before ``out`` is created or its old run replaced: config,
    data, data/model compatibility, labels, model and optimizer setup, disk space
    (:func:`jaxsam.plan.preflight.check_study`) and what ``out`` holds
    (:func:`jaxsam.store.check_run_dir`). With ``overwrite`` the old run is moved aside and
    deleted only once the new run has started (:func:`jaxsam.store.begin_run`). A resume
    rebuilds the masks from the config and checks them, and the pool's inputs, against the
    run's fingerprints (:func:`jaxsam.store.check_resumable`, :func:`jaxsam.store.repair_masks`),
    and reuses the execution plan stored when training started.

    Holds the run directory's lock (:func:`jaxsam.store.run_lock`) throughout, so a second
    ``train``, ``--resume``, ``--overwrite`` or ``score`` of ``out`` is refused while this runs.
    """
    config = check_config(config)
    out = Path(out)
    store.check_no_other_writer(out)  # before any other advice: a live run is left alone
    if resume and not (out / "config.json").is_file():
        raise RunDirError(f"{out} holds no run to resume; start it with `jaxsam train --out`")
    with preempt.graceful_signals():
        pool, keep = build_study(config)  # data errors: before anything is written
        if resume:
            preflight.check_study(config, pool, keep, out, present=_resume_bytes(out))
        else:
            freed = store.check_run_dir(out, config, overwrite=overwrite)  # touches nothing
            preflight.check_study(config, pool, keep, out, freed=freed)
        with store.run_lock(out, "train --resume" if resume else "train"):
            return _train_and_export(config, out, pool, keep, overwrite, resume, progress, desc)


def _resume_bytes(out: Path) -> int:
    """Bytes of a run's estimate already on disk: its masks and checkpoints."""
    return sum(store.dir_bytes(out / d) for d in ("masks", "checkpoints") if (out / d).is_dir())


def _train_and_export(
    config: Config,
    out: Path,
    pool: Pool,
    keep: np.ndarray,
    overwrite: bool,
    resume: bool,
    progress: bool | None,
    desc: str | None,
) -> store.Run:
    """:func:`train_and_export` under its lock and signal handlers."""
    header = study_header(config, keep)  # first: a missing DP library stops all writes
    if resume:
        if store.check_resumable(out, config, pool.origin(), keep):
            store.repair_masks(out, keep, pool.ids, pool.y)  # damaged masks: rebuilt
        else:
            # Killed while starting: nothing was trained yet, start again in place.
            store.start_run(out, config, pool.origin(), keep, pool.ids, pool.y, extra=header)
    else:
        store.begin_run(
            out, config, pool.origin(), keep, pool.ids, pool.y, overwrite=overwrite, extra=header
        )
    result = train_ensemble(
        config,
        pool,
        keep,
        run_dir=out,
        resume=resume,
        progress=progress,
        desc=desc or f"{config.optim.name} x{config.masks.models}",
    )
    preempt.check(
        f"training is done and its final checkpoint is in {out / 'checkpoints'}; write the "
        f"logits with `jaxsam train --resume {out}`"
    )
    pool_logits, test_logits = export_logits(result, pool, config.data.query_augment)
    preempt.check(f"the logits are not written yet; write them with `jaxsam train --resume {out}`")
    return finish_study(
        out,
        config,
        logits=pool_logits,
        labels=pool.y,
        keep=keep,
        test_logits=test_logits,
        test_labels=pool.test_y,
        final_batch_loss=result.losses,
        train_seconds=result.seconds,
        steps=result.setup.total_steps,
        steps_per_epoch=result.setup.steps_per_epoch,
        failed_models=result.failed_models,
    )
