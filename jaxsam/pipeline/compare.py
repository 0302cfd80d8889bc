"""Scored runs side by side: their reports, and one log-log ROC of an attack across them.

The table itself is :func:`jaxsam.report.compare_table`; this module gathers what it needs
from the run directories (scoring the runs that have no report yet), draws the ROC
comparison from the runs' saved ``scores/`` and writes the HTML page of ``compare --html``.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from jaxsam import metrics, plots, store
from jaxsam.errors import ConfigError, option
from jaxsam.pipeline.score import score_run
from jaxsam.scoring import kept_models

PLOT_SUFFIXES = (".png", ".pdf", ".svg")  # what matplotlib writes and a reader opens
HTML_SUFFIXES = (".html", ".htm")


def check_output_file(path: str | Path, name: str, suffixes: Sequence[str]) -> Path:
    """Refuses an output file path that is a directory or does not end in one of ``suffixes``.

    Args:
      path: where the file goes.
      name: the option that gave it (``plot``, ``html``), for messages.
      suffixes: the allowed endings (``PLOT_SUFFIXES``, ``HTML_SUFFIXES``).

    Raises:
      ConfigError: naming the path, what is wrong and the allowed endings; nothing is written.
    """
    path = Path(path)
    allowed = ", ".join(suffixes)
    if path.is_dir():
        raise ConfigError(
            f"{option(name, None)} {path} is a directory; pass a file path ending in {allowed} "
            f"(e.g. {path / ('compare' + suffixes[0])})"
        )
    if path.suffix.lower() not in suffixes:
        raise ConfigError(
            f"{option(name, None)} {path} "
            f"{f'ends in {path.suffix}' if path.suffix else 'has no extension'}; the file must "
            f"end in {allowed} (e.g. {path.with_suffix(suffixes[0])})"
        )
    return path


def load_reports(paths: Sequence[Path], verify: bool = True) -> list[tuple[str, dict, store.Run]]:
    """(label, report, run) for each run directory, scoring the runs that have no report yet.

    Labels are the run names, or the paths when two runs share a name. Every directory is
    loaded (and checked, with its file digests unless ``verify=False``) before any is scored.
    """
    runs = [store.load_run(p, verify=verify) for p in paths]
    labels = [r.name for r in runs]
    if len(set(labels)) < len(labels):
        labels = [str(r.path) for r in runs]
    return [
        (label, r.read_json("report.json") or score_run(r, write=True), r)
        for label, r in zip(labels, runs, strict=True)
    ]


def pool_mismatch(named: Sequence[tuple[str, dict, store.Run]]) -> str | None:
    """Why the runs' ``diff`` columns are no paired difference, or None when all share a pool.

    A difference from the first run, and its bootstrap interval (resamples of the same
    example indices in both runs), pair the runs example by example: that holds only when
    they score the same pool (run.json ``pool``: dataset, split, examples and labels, by its
    fingerprint).
    """

    def pool(run: store.Run) -> dict:
        p = run.info.get("pool")
        return p if isinstance(p, dict) else {}

    first_label, _, first = named[0]
    ref = pool(first)
    for label, _, run in named[1:]:
        other = pool(run)
        if other.get("fingerprint") == ref.get("fingerprint") and ref.get("fingerprint"):
            continue
        what = [
            f"{k} {ref.get(k)!r} vs {other.get(k)!r}"
            for k in ("dataset", "pool_split", "pool_size")
            if ref.get(k) != other.get(k)
        ]
        return (
            f"{label} scores another pool than {first_label} "
            f"({', '.join(what) or 'same size, other examples or labels'}): its diff column "
            "subtracts values of other examples, and the interval, which pairs resamples by "
            "example index, does not hold; read the runs' own values and intervals"
        )
    return None


def plot_comparison(
    named: Sequence[tuple[str, dict, store.Run]], path: Path, attack: str = "lira_online"
) -> Path:
    """Log-log ROC of ``attack`` for each (label, report, run), from the runs' saved scores.

    Each curve pools the kept models' scores (failed models dropped); runs scored without
    ``attack`` are left out. ``path`` must end in one of :data:`PLOT_SUFFIXES`; returns it.
    """
    path = check_output_file(path, "plot", PLOT_SUFFIXES)
    curves = {}
    for label, _, run in named:
        scores = store.load_arrays(run.path / "scores", "scores")
        if attack not in scores:
            continue
        ok = kept_models(run.failed_models, run.keep.shape[0])
        fpr, tpr = metrics.roc_curve(scores[attack][ok].ravel(), run.keep[ok].ravel())[:2]
        curves[label] = (fpr, tpr)  # plot_roc adds each curve's AUC to its label
    path.parent.mkdir(parents=True, exist_ok=True)
    plots.plot_roc(curves, path, title=f"{attack}: " + " vs ".join(n for n, _, _ in named))
    return path


def write_compare_html(
    named: Sequence[tuple[str, dict, store.Run]], path: Path, attack: str = "lira_online"
) -> Path:
    """Writes the comparison of ``named`` runs as one self-contained HTML page at ``path``.

    The page holds :func:`jaxsam.report.compare_table`'s rows, each run's attack table and the
    log-log ROC of ``attack`` across the runs (embedded PNG), drawn when a run has its scores.
    """
    import tempfile

    from jaxsam import report_html

    path = check_output_file(path, "html", HTML_SUFFIXES)
    figures = {}
    if any(attack in (rep.get("attacks") or {}) for _, rep, _ in named):
        with tempfile.TemporaryDirectory(prefix="jaxsam-compare-") as tmp:
            png = Path(tmp) / "roc.png"
            plot_comparison(named, png, attack)
            figures[f"{attack}: all targets pooled (log-log ROC)"] = png.read_bytes()
    title = "jaxsam comparison: " + " vs ".join(str(n) for n, _, _ in named)
    page = report_html.render_compare_html([(n, r) for n, r, _ in named], title, figures)
    path = Path(path)
    with store.write_errors(path, "the HTML comparison"):
        path.parent.mkdir(parents=True, exist_ok=True)
        store.write_text_atomic(path, page)
    return path
