"""A study plan -> trained models -> logits and metrics in a run directory.

:func:`train_and_export` is the one driver of a single run: it makes the study's plan
(:func:`jaxsam.plan.make_plan`: every check, nothing written), starts the run
(:func:`start_study`), trains (:func:`jaxsam.train.train_ensemble`) and writes the logits
(:func:`export_study`). :func:`finish_study` is the one place the trained models' logits
become a finished run directory: ``metrics.json`` (the accuracies of
:func:`accuracy_metrics`, losses, timings) and ``logits/``, then ``COMPLETE``
(:func:`jaxsam.store.finish_run`); :mod:`jaxsam.pipeline.waves` executes the same plan and
uses the same two for a study trained in waves.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from jaxsam import metrics as metrics_lib
from jaxsam import store
from jaxsam.config import Config
from jaxsam.data import canaries as canary_lib
from jaxsam.data.augment import query_names
from jaxsam.errors import DivergenceError, action
from jaxsam.plan.study import StudyPlan, build_study, make_plan, study_header  # noqa: F401
from jaxsam.train import preempt
from jaxsam.train.loop import export_logits, train_ensemble


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

    Raises:
      DivergenceError: fewer than 2 models are left to score (:func:`check_enough_models`).
    """
    failed = [int(i) for i in failed_models]
    check_enough_models(path, config, failed, keep.shape[0])
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
    untrained = metrics_lib.untrained_models(metrics["train_accuracy"], int(logits.shape[-1]))
    for i in untrained:
        print(
            f"warning: model {i} ended at {100 * metrics['train_accuracy'][i]:.1f}% training "
            f"accuracy (chance {100 / logits.shape[-1]:.1f}%) without a NaN loss: it did not "
            "learn, and its scores distort every attack; lower optim.learning_rate or add "
            "optim.warmup_epochs and retrain (metrics.json untrained_models lists it)",
            flush=True,
        )
    metrics.update(
        untrained_models=untrained,
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

    Reads top to bottom: plan the study (every check, nothing written), take the run
    directory's lock, start (or continue) the run, train the models, write their logits.

    Args:
      config: the run config (checked by the plan step).
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
      RunDirError, DivergenceError: see :func:`jaxsam.train.loop.train_ensemble`; a
        divergence is recorded in ``out`` (:func:`record_divergence`), and so are fewer than 2
        models left to score under ``train.on_divergence = 'exclude'``
        (:func:`check_enough_models`).
      Interrupted: SIGTERM or SIGINT arrived (:mod:`jaxsam.train.preempt`); during training a
        checkpoint of the current call is written first, and the message says how to resume.

    Every check that can fail runs in :func:`jaxsam.plan.make_plan`, before ``out`` is created
    or its old run replaced: config, data, data/model compatibility, labels, model and
    optimizer setup, DP libraries, disk space and what ``out`` holds. With ``overwrite`` the
    old run is moved aside and deleted only once the new run has started
    (:func:`jaxsam.store.begin_run`). A resume rebuilds the plan from the stored config,
    checks the masks and the pool's inputs against the run's fingerprints, rebuilds damaged
    masks (:func:`jaxsam.store.repair_masks`) and reuses the execution plan stored when
    training started.

    Holds the run directory's lock (:func:`jaxsam.store.run_lock`) throughout, so a second
    ``train``, ``--resume``, ``--overwrite`` or ``score`` of ``out`` is refused while this runs.
    """
    out = Path(out)
    with preempt.graceful_signals():
        plan = make_plan(config, out, mode="resume" if resume else "new", overwrite=overwrite)
        _warn_sparse_masks(plan)
        with store.run_lock(out, "train --resume" if resume else "train"):
            start_study(plan, overwrite=overwrite)
            try:
                result = train_ensemble(
                    plan.config,
                    plan.pool,
                    plan.keep,
                    setup=plan.setup,
                    execution=plan.execution,
                    run_dir=out,
                    resume=resume,
                    progress=progress,
                    desc=desc or f"{plan.config.optim.name} x{plan.num_models}",
                )
            except DivergenceError as e:  # train.on_divergence = 'stop'
                raise record_divergence(out, plan.config, e.models, str(e)) from e
            check_enough_models(out, plan.config, result.failed_models, plan.num_models)
            preempt.check(
                f"training is done and its final checkpoint is in {out / 'checkpoints'}; write "
                f"the logits with {action('resume', run=out)}"
            )
            return export_study(plan, result)


def record_divergence(
    path: Path, config: Config, models: Sequence[int], what: str
) -> DivergenceError:
    """Records in ``path/run.json`` that training stopped on diverged ``models`` and returns the
    error to raise: ``what`` (what happened), then how to retrain the run.

    The run directory keeps what was written; its status ``diverged`` (with a ``diverged``
    record: the models, the learning rate and ``train.on_divergence``) makes ``jaxsam status``
    and ``jaxsam score`` advise retraining with a lower learning rate rather than a resume,
    which would replay the same steps and diverge again (:func:`jaxsam.store.divergence_hint`).
    """
    record = {
        "models": sorted(int(i) for i in models),
        "learning_rate": config.optim.learning_rate,
        "on_divergence": config.train.on_divergence,
    }
    store.update_run_info(path, status="diverged", diverged=record)
    return DivergenceError(
        f"{what}; {path} is kept, not complete; retrain it in place with "
        f"{action('retrain', run=path)}",
        models=record["models"],
    )


def check_enough_models(
    path: Path, config: Config, failed_models: Sequence[int], num_models: int
) -> None:
    """Refuses to finish a run in which fewer than 2 models did not diverge.

    Under ``train.on_divergence = 'exclude'`` the diverged models are dropped from scoring; with
    fewer than 2 left there is no study to score. The run is then recorded as diverged
    (:func:`record_divergence`) and never marked complete.

    Raises:
      DivergenceError: naming the diverged models and how to retrain.
    """
    failed = sorted(int(i) for i in failed_models)
    left = num_models - len(failed)
    if left >= 2:
        return
    raise record_divergence(
        path,
        config,
        failed,
        f"{len(failed)} of {num_models} models diverged ({store.models_words(failed)}), which "
        f"leaves {left} to score under train.on_divergence = 'exclude', fewer than 2: lower "
        "optim.learning_rate",
    )


def _warn_sparse_masks(plan: StudyPlan) -> None:
    """Prints a warning before training when the masks leave some (non-canary) example too few
    IN or OUT models for the leave-one-out attacks (:func:`jaxsam.attacks.sparse_masks_warning`)."""
    from jaxsam.attacks import sparse_masks_warning
    from jaxsam.data import canaries

    keep, m = plan.keep, plan.config.masks
    cols = canaries.study_columns(plan.config.audit, keep.shape[1])
    text = sparse_masks_warning(
        keep if cols is None else keep[:, cols], design=m.design, pkeep=m.pkeep
    )
    if text:
        print(f"warning: {text}", flush=True)


def start_study(plan: StudyPlan, *, overwrite: bool = False) -> None:
    """Writes the start of ``plan``'s run into ``plan.out``: config, masks and header.

    A new run replaces the old one under ``overwrite`` (:func:`jaxsam.store.begin_run`). A
    resumed run rewrites damaged masks (they are a pure function of the config), or, when it
    was killed while starting, is started again in place.
    """
    p, out = plan.pool, plan.out
    if plan.mode == "resume" and plan.started:
        store.repair_masks(out, plan.keep, p.ids, p.y)  # damaged masks: rebuilt
    elif plan.mode == "resume":  # killed while starting: nothing was trained yet
        store.start_run(out, plan.config, p.origin(), plan.keep, p.ids, p.y, extra=plan.header)
    else:
        store.begin_run(
            out,
            plan.config,
            p.origin(),
            plan.keep,
            p.ids,
            p.y,
            overwrite=overwrite,
            extra=plan.header,
        )


def export_study(plan: StudyPlan, result) -> store.Run:
    """Computes the trained models' logits and finishes ``plan``'s run directory with them."""
    out, pool = plan.out, plan.pool
    pool_logits, test_logits = export_logits(result, pool, plan.config.data.query_augment)
    preempt.check(f"the logits are not written yet; write them with {action('resume', run=out)}")
    return finish_study(
        out,
        plan.config,
        logits=pool_logits,
        labels=pool.y,
        keep=plan.keep,
        test_logits=test_logits,
        test_labels=pool.test_y,
        final_batch_loss=result.losses,
        train_seconds=result.seconds,
        steps=result.setup.total_steps,
        steps_per_epoch=result.setup.steps_per_epoch,
        failed_models=result.failed_models,
    )
