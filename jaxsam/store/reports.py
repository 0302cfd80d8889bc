"""``jaxsam score``'s and ``jaxsam analyze``'s outputs, published into a run directory."""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from jaxsam.errors import RunDirError, json_problem, option
from jaxsam.store import paths
from jaxsam.store.arrays import save_arrays
from jaxsam.store.files import write_errors, write_json
from jaxsam.store.lock import LOCK_FILE, run_lock
from jaxsam.store.rundir import _looks_like_run

REPORT_FILES = ("report.json", "report.md", "scores")


def write_report_files(
    path: Path,
    *,
    report: dict,
    markdown: str,
    scores: dict[str, np.ndarray],
    extra: dict[str, Callable[[Path], Any]] | None = None,
) -> None:
    """Publishes ``jaxsam score``'s outputs in ``RUN/`` together, or leaves the old ones alone.

    Everything is first written into a private staging directory inside ``path``
    (``.report-staging-*``, same disk, so the moves below are renames): ``report.json``,
    ``report.md``, ``scores/`` (orbax) and each ``extra`` file (relative name -> a function that
    writes that file at the path it is given, e.g. ``{"plots/roc.png": draw}``). Only when all
    of them are written are they moved into place: the old ``report.json`` is removed first and
    the new one is moved last, so a run directory always holds either no ``report.json`` or a
    ``report.json`` whose ``report.md`` and ``scores/`` were written with it. A failure before
    the moves leaves the previous outputs as they were and no new ``report.json``. A link at
    any of the published paths (``report.md``, ``plots/``, ...) is refused before anything is
    written (:mod:`jaxsam.store.paths`), and the staging directories a killed ``score`` left
    behind are removed.

    Args:
      path: the run directory.
      report: the JSON-serialisable report (``report.json``).
      markdown: the text of ``report.md``.
      scores: attack name -> score array (``scores/``).
      extra: further files to publish with them, by path relative to ``path``.
    """
    path = Path(path)
    extra = dict(extra or {})
    for name in REPORT_FILES:
        if name in extra:
            raise ValueError(f"extra file {name!r} would replace a report file; rename it")
    with run_lock(path, "score", create=False):  # re-entrant: `jaxsam score` already holds it
        with write_errors(path, "the report"):
            _publish_report(path, report, markdown, scores, extra)


def _publish_report(path: Path, report: dict, markdown: str, scores: dict, extra: dict) -> None:
    """:func:`write_report_files` under the run's lock."""
    # Nothing is written through a link: a crafted report.md or plots/ would lead outside.
    paths.check_no_links(path, "report.json", *[rel for rel in ["scores", "report.md", *extra]])
    for stale in path.glob(".report-staging-*"):  # a killed score's; we hold the lock
        if stale.is_dir() and not stale.is_symlink():
            shutil.rmtree(stale, ignore_errors=True)
    staging = Path(tempfile.mkdtemp(prefix=".report-staging-", dir=path))
    try:
        (staging / "report.md").write_text(markdown)
        save_arrays(staging / "scores", scores)
        for rel, write in extra.items():
            target = staging / "extra" / rel
            target.parent.mkdir(parents=True, exist_ok=True)
            write(target)
        write_json(staging / "report.json", report)
        # Everything is on disk: publish. report.json goes first (removed) and last (added).
        (path / "report.json").unlink(missing_ok=True)
        old = staging / "old"
        old.mkdir()
        for rel in ["scores", "report.md", *extra]:
            src = staging / ("extra" if rel in extra else "") / rel
            dst = path / rel
            paths.ensure_dir(path, Path(rel).parent)
            if dst.is_dir() and not dst.is_symlink():
                os.replace(dst, old / rel.replace("/", "_"))
            os.replace(src, dst)
        os.replace(staging / "report.json", path / "report.json")
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def plots_dir(out_dir: str | Path) -> Path:
    """``out_dir/plots/``, created (with ``out_dir``): where ``jaxsam analyze`` puts its PNGs."""
    Path(out_dir).mkdir(parents=True, exist_ok=True)
    with write_errors(Path(out_dir) / "plots", "plots"):
        return paths.ensure_dir(out_dir, "plots")


def write_analysis(out_dir: str | Path, result: dict) -> Path:
    """Writes ``out_dir/analysis.json`` atomically, as strict JSON (a NaN is a ``ValueError``)."""
    path = Path(out_dir) / "analysis.json"
    with write_errors(path, "the analysis"):
        path.parent.mkdir(parents=True, exist_ok=True)
        paths.check_no_links(out_dir, "analysis.json")
        write_json(path, result, allow_nan=False)
    return path


ANALYSIS_FILES = ("analysis.json", "plots")  # what ``jaxsam analyze`` writes into its out


def _is_analysis(path: Path) -> bool:
    """Whether ``path`` is an ``analysis.json`` that ``jaxsam analyze`` wrote."""
    if not path.is_file() or path.is_symlink():
        return False
    try:
        parsed = json_problem(path.read_bytes())
    except OSError:
        return False
    return not isinstance(parsed, str) and isinstance(parsed[0], dict) and "_plots" in parsed[0]


def check_analysis_out(out_dir: str | Path, *, overwrite: bool = False) -> None:
    """Refuses an output directory in which ``jaxsam analyze`` would replace files it did not
    write, or an earlier analysis without ``overwrite``.

    A new or empty directory takes the analysis, and so does a jaxsam run directory (whose
    analysis is replaced, as ``jaxsam analyze RUN`` does). Any other directory must hold only
    an earlier jaxsam analysis (``analysis.json`` and ``plots/``), replaced with ``overwrite``.

    Raises:
      RunDirError: naming what is in the way and the fix; nothing is written.
    """
    out = Path(out_dir)
    if not out.exists() and not out.is_symlink():
        return
    if not out.is_dir():
        raise RunDirError(
            f"{out} exists and is not a directory; analyze writes analysis.json and plots/ into "
            f"a directory: choose another {option('out', None)}"
        )
    entries = sorted(p.name for p in out.iterdir() if p.name != LOCK_FILE)
    if not entries or _looks_like_run(out):
        return
    foreign = [n for n in entries if n not in ANALYSIS_FILES]
    if foreign or not _is_analysis(out / "analysis.json"):
        shown = ", ".join((foreign or entries)[:5])
        raise RunDirError(
            f"{out} is not empty and holds no jaxsam analysis (it holds {shown}, which jaxsam "
            f"did not write); analyze only ever replaces its own analysis.json and plots: "
            f"choose another {option('out', None)} (a new or empty directory), or move those "
            "files out yourself"
        )
    if not overwrite:
        raise RunDirError(
            f"{out} holds an earlier jaxsam analysis (analysis.json, plots/); pass "
            f"{option('overwrite')} to replace it, or choose another {option('out', None)}"
        )
