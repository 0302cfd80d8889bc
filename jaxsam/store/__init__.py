"""The run directory: the only code that reads and writes it.

This package owns every file of a run directory, one job per module (this module only
re-exports their names, so ``from jaxsam import store; store.load_run(...)`` is the way in):

- :mod:`~jaxsam.store.files`: JSON and atomic files, one-line write errors, ``damaged/``;
- :mod:`~jaxsam.store.arrays`: flat dicts of numpy arrays through orbax;
- :mod:`~jaxsam.store.masks`: ``masks/`` and the masks fingerprint;
- :mod:`~jaxsam.store.header`: the run header ``run.json`` and ``plan.json``;
- :mod:`~jaxsam.store.digests`: ``digests.json``;
- :mod:`~jaxsam.store.rundir`: which directory may take a run (ownership, space);
- :mod:`~jaxsam.store.disk`: what a run will write and whether the disk takes it;
- :mod:`~jaxsam.store.lifecycle`: start, resume-check and finish a run;
- :mod:`~jaxsam.store.reports`: ``jaxsam score``'s and ``jaxsam analyze``'s outputs;
- :mod:`~jaxsam.store.reader`: the :class:`Run` reader (:func:`load_run`);
- :mod:`~jaxsam.store.checkpoints` the resume checkpoints, :mod:`~jaxsam.store.waves` the
  per-wave logits of a study trained in waves, :mod:`~jaxsam.store.lock` the run's lock and
  :mod:`~jaxsam.store.paths` link safety.

It is the only code in jaxsam that imports orbax, and it does no privacy accounting: a DP
run's guarantee reaches the header as a field its caller computed.

Layout of ``RUN/`` (format ``jaxsam-run``, version 1)::

    config.json      the full resolved config (``jaxsam train --config RUN/config.json``)
    run.json         format, version, status, shapes, pool origin, fingerprints, failed models
    plan.json        the execution plan training resolved (``auto``), reused on resume
    masks/           orbax: keep bool [M, N], pool ids int64 [N], labels int32 [N]
    logits/          orbax: logits float32 [M, N, A, C], labels [N],
                     test_logits [M, T, A, C], test_labels [T]
    logits.json      query names, dtype, which parameters (final), masks fingerprint
    metrics.json     per-model train/test accuracy and losses
    checkpoints/     orbax CheckpointManager (resume; :mod:`jaxsam.store.checkpoints`)
    damaged/         checkpoints and masks found damaged, moved aside (never deleted)
    waves/           per-wave logits of a study trained in waves (:mod:`jaxsam.store.waves`)
    COMPLETE         written last: the run is whole
    report.json, report.md, scores/, plots/roc.png   (written by ``jaxsam score``, published
                     together by write_report_files)
    analysis.json, plots/             (written by ``jaxsam analyze``, here or in its --out)

Arrays go through orbax-checkpoint, metadata through JSON; nothing is pickled. Every write of
a JSON file is atomic (a fresh temporary file, then a rename); orbax finalises its directories
atomically. A run without ``COMPLETE`` is refused by :func:`load_run` with what is missing.
Nothing is written or deleted through a symbolic link below the run directory
(:mod:`jaxsam.store.paths`), and ``--overwrite`` replaces only a jaxsam run directory
(:func:`check_run_dir`, :func:`begin_run`).
"""

from __future__ import annotations

# ruff: noqa: F401 - this module only re-exports
from jaxsam.store import paths
from jaxsam.store.arrays import (
    array_shapes,
    load_arrays,
    save_arrays,
    save_global_arrays,
)
from jaxsam.store.digests import (
    DIGESTED_DIRS,
    DIGESTED_FILES,
    DIGESTS,
    sha256_file,
    verify_digests,
    write_digests,
)
from jaxsam.store.disk import (
    DiskEstimate,
    check_disk,
    check_free_space,
    dir_bytes,
    estimate_disk,
)
from jaxsam.store.files import (
    move_aside_damaged,
    read_json,
    write_errors,
    write_json,
    write_problem,
    write_text_atomic,
)
from jaxsam.store.header import (
    COMPLETE,
    PLAN,
    RUN_FORMAT,
    RUN_VERSION,
    check_run_header,
    check_same_study,
    divergence,
    divergence_hint,
    has_run,
    models_words,
    read_plan,
    read_run_info,
    update_run_info,
    write_plan,
)
from jaxsam.store.health import run_problems
from jaxsam.store.lifecycle import (
    begin_run,
    check_resumable,
    finish_run,
    prepare_run_dir,
    start_run,
)
from jaxsam.store.lock import LOCK_FILE, check_no_other_writer, run_lock
from jaxsam.store.lock import held as lock_held
from jaxsam.store.masks import load_masks, masks_fingerprint, repair_masks
from jaxsam.store.paths import require_run_path
from jaxsam.store.reader import Run, is_complete, load_run, read_config
from jaxsam.store.reports import (
    REPORT_FILES,
    check_analysis_out,
    plots_dir,
    write_analysis,
    write_report_files,
)
from jaxsam.store.rundir import (
    ASIDE_PREFIX,
    OWN_NAMES,
    check_run_dir,
    check_writable,
    foreign_entries,
    result_dict,
    stable_dict,
)
