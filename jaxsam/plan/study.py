"""The plan step: one pure function from a config to everything a study is, before it runs.

:func:`make_plan` checks the config whole (:func:`jaxsam.plan.checks.check_config`), builds the
pool and its fingerprint and the masks (:func:`build_study`), checks the config against the
data (:func:`jaxsam.plan.checks.check_compatible`), builds the model, the optimizer, the
schedule and DP-SGD's shape once (:func:`jaxsam.train.setup.make_setup`), computes the DP
guarantee and the canaries the run header records, estimates memory and disk, and checks
what the run directory holds (a new run: :func:`jaxsam.store.check_run_dir`; a resume: the
stored config and the pool's and masks' fingerprints, :func:`jaxsam.store.check_resumable`;
an initialised study: :func:`jaxsam.store.check_same_study`) and that the disk can take the
run. It writes nothing. Training, fresh or resumed, in waves or over many processes, executes
a :class:`StudyPlan` (:func:`jaxsam.pipeline.study.train_and_export`,
:mod:`jaxsam.pipeline.waves`); ``jaxsam plan`` prints one (shapes only: known datasets are not
loaded).
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import numpy as np

from jaxsam import store
from jaxsam.config import Config
from jaxsam.data import canaries as canary_lib
from jaxsam.data import load_pool, make_masks
from jaxsam.data.masks import steps_per_epoch
from jaxsam.data.pool import Pool
from jaxsam.errors import ConfigError, RunDirError, option
from jaxsam.optim import dp as dp_lib
from jaxsam.plan import memory
from jaxsam.plan.checks import check_compatible, check_config
from jaxsam.train.setup import TrainSetup, make_setup
from jaxsam.train.strategies import Execution

MODES = ("new", "resume", "open")


@dataclasses.dataclass(frozen=True)
class StudyPlan:
    """A study resolved from its config: what training executes and ``jaxsam plan`` prints.

    Attributes:
      config: the config, checked whole.
      pool: the pool (with canaries for an audited run); its ``fingerprint()`` and
        ``origin()`` go into the run header. A shapes-only plan of a known dataset holds
        ``jax.ShapeDtypeStruct`` arrays (:func:`jaxsam.plan.memory.pool_shapes`).
      keep: bool ``[M, N]`` membership masks (None in a shapes-only plan).
      setup: model, optimizer, schedule, step counts and DP-SGD's static shape.
      header: the run-header fields the study adds: ``"dp"`` (the privacy guarantee) and
        ``"audit"`` (canaries and targets); None in a shapes-only plan.
      memory: bytes per model and example, steps (:class:`jaxsam.plan.memory.MemoryEstimate`).
      disk: what the run will write at its peak (:class:`jaxsam.store.DiskEstimate`).
      execution: the execution plan stored when a resumed run started training (reused, so a
        resume computes as the first call did), or None: resolved on the device when training
        starts (``train.strategy``), then stored.
      out: the run directory (None: a plan of the config alone).
      mode: ``new`` (a run to start in ``out``), ``resume`` (an unfinished run in ``out``) or
        ``open`` (a study initialised in ``out``, trained in waves).
      started: a resumed run's header exists (False: it was killed while starting).
    """

    config: Config
    pool: Pool
    keep: np.ndarray | None
    setup: TrainSetup
    header: dict | None
    memory: memory.MemoryEstimate
    disk: store.DiskEstimate
    execution: Execution | None = None
    out: Path | None = None
    mode: str = "new"
    started: bool = False

    @property
    def num_models(self) -> int:
        return int(self.config.masks.models if self.keep is None else self.keep.shape[0])

    @property
    def path(self) -> Path | None:
        """The run directory (as :class:`jaxsam.pipeline.waves` names it)."""
        return self.out


def make_plan(
    config: Config,
    out: str | Path | None = None,
    *,
    mode: str = "new",
    overwrite: bool = False,
    wave_size: int | None = None,
    load_data: bool = True,
    activations: bool = False,
) -> StudyPlan:
    """Every check and every derived piece of a study, before anything is written.

    Args:
      config: the study's config (checked here).
      out: its run directory; None plans the config alone (no directory or disk checks).
      mode: ``new``, ``resume`` or ``open`` (see :class:`StudyPlan`).
      overwrite: a new run may replace the jaxsam run in ``out``.
      wave_size: models per wave of a study trained in waves (the checkpoints hold one wave;
        the logits are written twice).
      load_data: False plans from the dataset's shapes where it is known (``jaxsam plan``):
        no masks, no run header.
      activations: compile one training pass for the activation memory (a few seconds).

    Raises:
      ConfigError, DataError: the config, the data or the two together.
      RunExistsError, RunDirError: what ``out`` holds, or its disk, cannot take the run.
    """
    if mode not in MODES:
        raise ValueError(f"mode = {mode!r}; use one of {MODES}")
    config = check_config(config)
    out = Path(out) if out is not None else None
    if out is not None and mode != "open":
        store.check_no_other_writer(out)  # before any other advice: a live run is left alone
    if mode == "resume" and not (out / "config.json").is_file():
        raise RunDirError(
            f"{out} holds no run to resume; start a new run there (without {option('resume')})"
        )
    if load_data:
        pool, keep = build_study(config)  # data errors: before anything is written
        spe = steps_per_epoch(keep, config.train.batch_size)
        if mode == "new":
            warn_batch_over_subsets(config.train.batch_size, keep)
    else:
        pool, keep = memory.pool_shapes(config), None
        spe = memory.steps_per_epoch_estimate(
            config, pool.size - canary_lib.num_added(config.audit)
        )
    started, freed, present = _check_out(config, out, mode, pool, keep, overwrite)
    if load_data:
        check_compatible(config, pool)
    setup = make_setup(config, pool, keep, spe)  # model, optimizer, DP: errors before any write
    mem, state_bytes = memory.estimate(config, setup, pool, activations=activations)
    m = config.masks.models
    disk = store.estimate_disk(
        config,
        pool,
        m,
        state_bytes,
        checkpoint_models=min(wave_size, m) if wave_size else None,
        waves=wave_size is not None,
    )
    if out is not None and mode != "open":
        store.check_disk(out, disk, freed=freed, present=present)
    return StudyPlan(
        config=config,
        pool=pool,
        keep=keep,
        setup=setup,
        header=None if keep is None else study_header(config, keep),
        memory=mem,
        disk=disk,
        execution=stored_execution(out) if mode == "resume" else None,
        out=out,
        mode=mode,
        started=started,
    )


def warn_batch_over_subsets(batch_size: int, keep: np.ndarray) -> None:
    """Prints a one-line warning when the batch is at least twice every model's training subset.

    Legal, but each batch then wraps around a model's subset (:mod:`jaxsam.train.batches`):
    ``train.batch_size = 100000`` on subsets of ~50 examples repeats each one ~2000 times in a
    batch, in one step per epoch. A batch a little above the subsets (64 on subsets of 53, as
    tiny pools give) repeats only some examples once, and is not worth a warning.
    """
    largest = int(keep.sum(axis=1).max()) if keep.size else 0
    if 0 < largest and batch_size >= 2 * largest:
        print(
            f"warning: train.batch_size = {batch_size} is larger than every model's training "
            f"subset (at most {largest} examples): each batch repeats a model's subset about "
            f"{batch_size / largest:.0f} times, in one step per epoch; set train.batch_size to "
            f"at most {largest}",
            flush=True,
        )


def _check_out(
    config: Config, out: Path | None, mode: str, pool: Pool, keep: Any, overwrite: bool
) -> tuple[bool, int, int]:
    """What ``out`` holds, checked for ``mode``: ``(started, freed, present)`` bytes."""
    if out is None:
        return False, 0, 0
    if mode == "new":
        return False, store.check_run_dir(out, config, overwrite=overwrite), 0  # touches nothing
    if mode == "resume":
        started = store.check_resumable(out, config, pool.origin(), keep)
        written = [out / d for d in ("masks", "checkpoints") if (out / d).is_dir()]
        return started, 0, sum(store.dir_bytes(d) for d in written)  # already on disk
    store.check_same_study(out, store.read_run_info(out), pool.origin(), keep)
    return True, 0, 0


def open_plan(path: str | Path) -> StudyPlan:
    """The plan of the study in ``path``, rebuilt from its stored config (no array is read,
    so every process of a multi-host job can do this); its pool, masks and input features are
    checked against the fingerprints in ``run.json``."""
    path = Path(path)
    if not store.has_run(path):
        raise RunDirError(
            f"{path} holds no initialised run; initialise the study there first (the init "
            "step of training in waves writes its config, masks and run header)"
        )
    return make_plan(store.read_config(path), path, mode="open")


def stored_execution(run_dir: Path | None) -> Execution | None:
    """The execution plan ``run_dir/plan.json`` holds (written when training started), or None.

    Raises:
      RunDirError: the file is damaged.
    """
    stored = store.read_plan(run_dir) if run_dir is not None else None
    if stored is None:
        return None
    try:
        return Execution.from_dict(stored, str(run_dir / store.PLAN))
    except ConfigError as e:
        raise RunDirError(str(e)) from e


def build_study(config: Config) -> tuple[Pool, np.ndarray]:
    """The pool and the membership masks ``config`` describes.

    Both are pure functions of the config (``data.*``, ``masks.*`` and ``audit.*``), so any
    process can rebuild them and check them against a run's fingerprint. A custom model
    (``model.name = "package.module:attr"``) is imported before the data is loaded; the plan
    step then builds and checks it once (:func:`jaxsam.train.setup.build_model`).

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
