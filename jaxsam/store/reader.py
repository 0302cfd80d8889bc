"""The :class:`Run` reader: a finished run directory read back and checked."""

from __future__ import annotations

import dataclasses
import functools
from pathlib import Path
from typing import Any

import numpy as np

from jaxsam import config as config_lib
from jaxsam.data import canaries as canary_lib
from jaxsam.errors import ConfigError, RunDirError, action
from jaxsam.store import paths
from jaxsam.store.arrays import load_arrays
from jaxsam.store.digests import verify_digests
from jaxsam.store.files import read_json, write_json
from jaxsam.store.header import (
    COMPLETE,
    RUN_FORMAT,
    RUN_VERSION,
    check_run_header,
    divergence_hint,
)
from jaxsam.store.masks import masks_fingerprint
from jaxsam.store.values import check_logit_arrays

# What to do when a finished run lacks masks/ or logits/.
_RESTORE = "the run is damaged: restore the folder from a copy of the run, or retrain the run"


@dataclasses.dataclass
class Run:
    """A finished run directory, read back. Arrays are loaded on first access.

    Attributes:
      path: the directory.
      name: its base name (``sgd``, ``sam`` in a demo).
      config: the resolved :class:`jaxsam.config.Config`.
      info: ``run.json`` (format, shapes, pool origin, fingerprints, failed models).
      keep: bool [M, N] membership masks.
      labels: int32 [N] pool labels.
      logits: float32 [M, N, A, C].
      test_logits: float32 [M, T, A, C]; test_labels: int32 [T].
      query_names: the A query-view names.
      metrics: per-model accuracies.
      failed_models: indices of models excluded after divergence.
      canaries: int64 [C] pool indices of the canaries of an audited run (``audit.canaries``
        > 0), else None.
      targets: int64 [T] indices of its target models (the others are references), else None.
    """

    path: Path
    config: config_lib.Config
    info: dict
    keep: np.ndarray
    labels: np.ndarray
    ids: np.ndarray
    query_names: list[str]
    metrics: dict

    @property
    def name(self) -> str:
        return self.path.name

    @property
    def failed_models(self) -> list[int]:
        return list(self.info.get("failed_models", []))

    @property
    def canaries(self) -> np.ndarray | None:
        """int64 [C]: the pool indices of the canaries (run.json ``audit``), or None."""
        audit = self.info.get("audit")
        return None if not audit else np.asarray(audit["canaries"], np.int64)

    @property
    def targets(self) -> np.ndarray | None:
        """int64 [T]: the indices of the target models of an audited run, or None."""
        audit = self.info.get("audit")
        return None if not audit else np.asarray(audit["targets"], np.int64)

    @functools.cached_property
    def _logit_arrays(self) -> dict[str, np.ndarray]:
        arrays = load_arrays(self.path / "logits", "logits", missing=_RESTORE)
        for key in ("logits", "labels", "test_logits", "test_labels"):
            if key not in arrays:
                raise RunDirError(f"{self.path / 'logits'} has no '{key}' array; rerun the job")
        m, n = self.keep.shape
        lg = arrays["logits"]
        if lg.ndim != 4 or lg.shape[:2] != (m, n):
            raise RunDirError(
                f"{self.path / 'logits'} holds logits of shape {lg.shape} but the masks are "
                f"[{m}, {n}]: logits and masks come from different runs; rerun the job"
            )
        if not np.array_equal(arrays["labels"], self.labels):
            raise RunDirError(f"labels in {self.path / 'logits'} differ from the masks' labels")
        arrays["logits"] = lg.astype(np.float32)
        arrays["test_logits"] = arrays["test_logits"].astype(np.float32)
        check_logit_arrays(self.path, arrays, len(self.query_names), self.failed_models)
        return arrays

    @property
    def logits(self) -> np.ndarray:
        return self._logit_arrays["logits"]

    @property
    def test_logits(self) -> np.ndarray:
        return self._logit_arrays["test_logits"]

    @property
    def test_labels(self) -> np.ndarray:
        return self._logit_arrays["test_labels"]

    @property
    def scores(self) -> dict[str, np.ndarray] | None:
        """Per-attack membership scores [M, N] written by ``jaxsam score``, or None.

        Rows of failed (excluded) models are NaN: they were not scored.
        """
        if not (self.path / "scores").is_dir():
            return None
        return load_arrays(self.path / "scores", "scores")

    def examples(self):
        """``RUN/examples.parquet`` as a pandas DataFrame: one row per pool example.

        Columns: ``pool_index``, origin (``dataset``, ``split``, ``index``), ``label``,
        ``n_in``, ``n_out``, ``memorization`` (Feldman-Zhang), ``out_confidence_variance``,
        ``canary`` (runs with canaries), and per attack ``{attack}_score`` and the flag
        fractions ``{attack}_flagged_1e-3`` ... (:mod:`jaxsam.examples_table`). ``jaxsam score``
        writes the file; reading a run computes nothing, so an unscored run raises.

        Raises:
          RunDirError: the run has not been scored (no ``examples.parquet``).
        """
        p = self.path / "examples.parquet"
        if not p.is_file():
            raise RunDirError(
                f"{p} does not exist: the run has not been scored by this jaxsam version; run "
                f"`jaxsam score {self.path}` first"
            )
        import pandas as pd

        return pd.read_parquet(p)

    def read_json(self, name: str) -> Any | None:
        """Reads ``RUN/name`` (e.g. ``report.json``), or None if it does not exist."""
        p = self.path / name
        return read_json(p, name) if p.exists() else None

    def write_json(self, name: str, obj: Any) -> Path:
        p = self.path / name
        paths.ensure_dir(self.path, Path(name).parent)
        paths.check_no_links(self.path, name)
        write_json(p, obj)
        return p


def read_config(path: str | Path) -> config_lib.Config:
    """The run's resolved config, from ``RUN/config.json``.

    Types and ranges are checked (:func:`jaxsam.config.from_dict`); the model and optimizer
    names are not, and a custom model (``package.module:attr``) is not imported: reading or
    scoring a run needs no model code. Training from this config (resume, waves) plans it
    first (:func:`jaxsam.plan.check_config`).

    Raises:
      RunDirError: the file is missing, not JSON, or not a valid config.
    """
    path = Path(path)
    try:
        data = read_json(path / "config.json", "config")
        return config_lib.from_dict(data)
    except ConfigError as e:
        raise RunDirError(f"{path / 'config.json'} is not a valid config: {e}") from e


def is_complete(path: str | Path) -> bool:
    """Whether the run in ``path`` has its ``COMPLETE`` marker (all its files are written)."""
    return (Path(path) / COMPLETE).exists()


def load_run(path: str | Path, *, verify: bool = True) -> Run:
    """Reads a finished run directory, checking format, version, completeness and shapes.

    Args:
      path: the run directory.
      verify: check every metadata and array file against ``digests.json``
        (:func:`verify_digests`); ``False`` reads a run whose files were changed anyway.

    Raises:
      RunDirError: naming the missing or damaged file and what to do.
      DataError: an audited run's record in ``run.json`` does not fit its config and masks
        (:func:`jaxsam.data.canaries.check_record`).
    """
    return _read_run(Path(path), verify=verify, require_complete=True)


def _read_run(path: Path, *, verify: bool, require_complete: bool) -> Run:
    """:func:`load_run`; ``require_complete=False`` checks a run before ``COMPLETE`` exists."""
    paths.require_run_path(path)
    info = read_json(path / "run.json", "run header")
    if not isinstance(info, dict) or info.get("format") != RUN_FORMAT:
        raise RunDirError(f"{path} is not a jaxsam run directory (run.json has no jaxsam format)")
    if info.get("version") != RUN_VERSION:
        raise RunDirError(
            f"{path} has run-directory version {info.get('version')}, this jaxsam reads "
            f"{RUN_VERSION}; use the jaxsam version that wrote it"
        )
    complete = (path / COMPLETE).exists()
    if require_complete and not complete and (diverged := divergence_hint(path, info)):
        raise RunDirError(f"{path} is not complete: {diverged}")
    if require_complete and not complete:
        missing = [n for n in ("logits", "logits.json", "metrics.json") if not (path / n).exists()]
        raise RunDirError(
            f"{path} is not complete (missing: {', '.join(missing) or 'COMPLETE marker'}); "
            f"finish it with {action('resume', run=path)}"
        )
    check_run_header(path, info)
    config = read_config(path)
    masks = load_arrays(path / "masks", "masks", missing=_RESTORE)
    if any(k not in masks for k in ("keep", "ids", "labels")) or masks["keep"].ndim != 2:
        raise RunDirError(
            f"{path / 'masks'} holds no [M, N] 'keep' mask with its 'ids' and 'labels'; rerun "
            "the job"
        )
    keep = masks["keep"].astype(bool)
    if keep.shape != (info["models"], info["examples"]):
        raise RunDirError(
            f"{path / 'masks'} has shape {keep.shape}, run.json says "
            f"[{info['models']}, {info['examples']}]; the directory mixes two runs"
        )
    if masks_fingerprint(info["pool"]["fingerprint"], keep) != info["masks_fingerprint"]:
        raise RunDirError(f"{path / 'masks'} does not match the fingerprint in run.json; rerun")
    canary_lib.check_record(path, info, config, keep)  # run.canaries, run.targets read it
    logits_info = read_json(path / "logits.json", "logits metadata")
    names = logits_info.get("query_names") if isinstance(logits_info, dict) else None
    if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
        raise RunDirError(
            f"{path / 'logits.json'} has no 'query_names' list of strings; the file is damaged "
            "or was edited: restore it or rerun the job"
        )
    if logits_info.get("masks_fingerprint") != info["masks_fingerprint"]:
        raise RunDirError(
            f"{path / 'logits'} were computed under other masks (fingerprint mismatch); "
            "logits and masks of different runs cannot be combined: rerun the job"
        )
    if verify:  # after the structural checks above, whose messages say more when they fail
        verify_digests(path)
    return Run(
        path=path,
        config=config,
        info=info,
        keep=keep,
        labels=masks["labels"].astype(np.int32),
        ids=masks["ids"],
        query_names=list(logits_info["query_names"]),
        metrics=read_json(path / "metrics.json", "per-model metrics"),
    )
