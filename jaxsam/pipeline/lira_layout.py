"""Reads the published LiRA code's experiment layout (tensorflow/privacy research/mi_lira_2021).

That code trains one model per directory under its log directory (``exp/cifar10/`` in its
scripts) and writes, per model::

    EXPDIR/experiment-K_M/keep.npy              bool [N]: the examples model K trained on
    EXPDIR/experiment-K_M/logits/EEEEEEEEEE.npy  float [N, 1, A, C]: logits at epoch E (10 digits)

and, once for all models, ``EXPDIR/y_train.npy`` (the labels of the whole training split, of
which the first N are used). :func:`read_lira_dir` stacks them into keep [M, N], logits
[M, N, A, C] (read a block of models at a time, never whole) and labels [N]. Models are ordered
by K where the name is ``experiment-K_M``, else by name; a directory counts as a model when it
holds ``keep.npy``. Each model's latest epoch is taken unless ``epoch`` names one.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from jaxsam import store
from jaxsam.errors import DataError, option
from jaxsam.pipeline import import_logits as imp
from jaxsam.store.blocks import stacked

_EXPERIMENT = re.compile(r"^experiment-(\d+)_(\d+)$")
_EPOCH = re.compile(r"^(\d+)\.npy$")


def model_dirs(expdir: Path) -> list[Path]:
    """The model directories of ``expdir`` (holding ``keep.npy``), ordered by experiment id."""
    if not expdir.is_dir():
        raise DataError(
            f"{expdir} is not a directory; pass the published LiRA code's log directory (the one "
            "holding experiment-*/keep.npy)"
        )
    dirs = [d for d in expdir.iterdir() if d.is_dir() and (d / "keep.npy").is_file()]
    if not dirs:
        raise DataError(
            f"{expdir} holds no model directory (no */keep.npy); pass the directory that holds "
            "the experiment-K_M directories"
        )

    def order(d: Path):
        hit = _EXPERIMENT.match(d.name)
        return (0, int(hit.group(1)), d.name) if hit else (1, 0, d.name)

    return sorted(dirs, key=order)


def epochs(model_dir: Path) -> dict[int, Path]:
    """Epoch -> logits file of one model directory (``logits/EEEEEEEEEE.npy``)."""
    root = model_dir / "logits"
    if not root.is_dir():
        return {}
    out = {}
    for f in root.iterdir():
        hit = _EPOCH.match(f.name)
        if hit and f.is_file():
            out[int(hit.group(1))] = f
    return out


def _model_logits(path: Path) -> np.ndarray:
    """One model's logits [N, A, C] from the published ``[N, 1, A, C]`` (``[N, A, C]`` too)."""
    arr = imp.load_npy(path, "logits")
    if arr.ndim == 4 and arr.shape[1] == 1:
        return arr[:, 0]
    if arr.ndim == 4 and arr.shape[2] == 1:
        return arr[:, :, 0]
    if arr.ndim == 3:
        return arr
    raise DataError(
        f"{path} has shape {arr.shape}; the published code writes [N, 1, A, C] (or pass [N, A, C])"
    )


def _chosen_models(expdir: Path, epoch: int | None, skip_incomplete: bool):
    """``([(model dir, epoch, logits file)], [skipped dir names])`` of ``expdir``'s models."""
    dirs = model_dirs(expdir)
    chosen, skipped = [], []
    for d in dirs:
        eps = epochs(d)
        if epoch is not None and epoch not in eps:
            have = ", ".join(str(e) for e in sorted(eps)) or "none"
            raise DataError(
                f"{d / 'logits'} has no logits for epoch {epoch} (epochs: {have}); pick an epoch "
                f"every model has, or drop {option('epoch', None)} to take each model's latest"
            )
        if not eps:
            if skip_incomplete:
                skipped.append(d.name)
                continue
            raise DataError(
                f"{d} has keep.npy but no logits/*.npy (inference.py has not run on it); run the "
                f"published inference.py, move the directory away, or pass "
                f"{option('skip_incomplete')}"
            )
        e = epoch if epoch is not None else max(eps)
        chosen.append((d, e, eps[e]))
    if len(chosen) < 2:
        raise DataError(
            f"{expdir} has {len(chosen)} model(s) with logits; membership scoring needs at least "
            "2: train and run inference for more models"
        )
    _warn_mixed_epochs(chosen)
    return chosen, skipped


def _warn_mixed_epochs(chosen: list) -> None:
    """Prints a one-line warning when the chosen models' (latest) epochs differ.

    Such models are imported as they are (run.json records each one's epoch), but models at
    different epochs are not exchangeable shadow models; the warning names them by epoch.
    """
    by_epoch: dict[int, list[str]] = {}
    for d, e, _ in chosen:
        by_epoch.setdefault(int(e), []).append(d.name)
    if len(by_epoch) < 2:
        return

    def names(dirs: list[str]) -> str:
        more = f" and {len(dirs) - 3} more" if len(dirs) > 3 else ""
        return ", ".join(dirs[:3]) + more

    groups = "; ".join(f"epoch {e}: {names(by_epoch[e])}" for e in sorted(by_epoch))
    print(
        f"warning: the models' latest epochs differ ({groups}); they are imported as they are "
        f"(run.json records each model's epoch): pass {option('epoch', 'E')} to take one epoch "
        "from every model",
        flush=True,
    )


def _read_keeps(chosen: list) -> tuple[list[np.ndarray], list[dict]]:
    """Each chosen model's bool [N] ``keep.npy`` (one N for all) and its provenance entry."""
    keeps, files = [], []
    first = None
    for d, e, f in chosen:
        k = imp.load_npy(d / "keep.npy", "keep", mmap=False)
        if k.ndim != 1:
            raise DataError(
                f"{d / 'keep.npy'} has shape {k.shape}; the published layout holds bool [N] per "
                "model"
            )
        if first is not None and k.shape != first:
            raise DataError(
                f"{d / 'keep.npy'} has N={k.shape[0]} but {chosen[0][0] / 'keep.npy'} has "
                f"N={first[0]}; all models must share the dataset (same --dataset_size)"
            )
        first = k.shape
        keeps.append(k)
        files.append(
            {"dir": d.name, "epoch": int(e), "keep": str(d / "keep.npy"), "logits": str(f)}
        )
    return keeps, files


def _check_logit_files(chosen: list, n: int) -> None:
    """Every logits file holds [N, A, C] floats, one A and C for all (headers only)."""
    lg0 = None
    for _, _, f in chosen:  # shapes and dtypes only: the values are read a block at a time
        lg = _model_logits(f)
        if lg.shape[0] != n:
            raise DataError(
                f"{f} has logits for {lg.shape[0]} examples but keep.npy has N={n}; rerun "
                "inference.py with the same --dataset_size"
            )
        if lg0 is None:
            if not np.issubdtype(lg.dtype, np.floating):
                raise DataError(f"{f} has dtype {lg.dtype}; logits must be floating point")
            lg0 = lg
        elif lg.shape[1:] != lg0.shape[1:]:
            raise DataError(
                f"{f} has A, C = {lg.shape[1:]} but {chosen[0][2]} has {lg0.shape[1:]}; run "
                "inference.py with the same augmentations for every model"
            )
        del lg


def read_lira_dir(
    expdir: str | Path,
    labels: str | Path | None = None,
    *,
    epoch: int | None = None,
    skip_incomplete: bool = False,
    query_names: Sequence[str] | None = None,
    min_models: int = imp.DEFAULT_MIN_MODELS,
    drop_sparse: bool = False,
) -> imp.Imported:
    """The models of a published-layout log directory, checked (:func:`imp.check_arrays`).

    Args:
      expdir: the log directory holding ``experiment-K_M/`` directories.
      labels: int [N] (or longer: the first N are used) ``.npy``; default ``expdir/y_train.npy``.
      epoch: take ``logits/{epoch:010d}.npy`` of every model (default: each model's latest).
      skip_incomplete: leave out model directories without logits (default: refuse them).
      query_names: the A view names (default: ``identity``, ``mirror`` for A = 2, the published
        inference's views without shifts; ``identity``, ``view_1``, ... otherwise).
      min_models, drop_sparse: see :func:`jaxsam.pipeline.import_logits.check_arrays`.
    """
    expdir = Path(expdir)
    chosen, skipped = _chosen_models(expdir, epoch, skip_incomplete)
    keeps, files = _read_keeps(chosen)
    n = keeps[0].shape[0]
    _check_logit_files(chosen, n)
    logits = stacked([f for _, _, f in chosen], _model_logits, np.float32)
    label_path = Path(labels) if labels is not None else expdir / "y_train.npy"
    if labels is None and not label_path.is_file():
        raise DataError(
            f"{label_path} does not exist and no {option('labels', None)} was given; pass "
            f"{option('labels', 'Y.npy')} (int [N], the training labels in the order of keep.npy)"
        )
    y = imp.load_npy(label_path, "labels", mmap=False)
    if y.ndim == 1 and y.shape[0] > n:
        y = y[:n]  # the published code keeps the first --dataset_size examples
    if query_names is None and logits.shape[2] == 2:
        query_names = ["identity", "mirror"]
    prov = {
        "format": "lira_dir",
        "source": str(expdir.resolve()),
        "files": {
            "labels": str(label_path.resolve()),
            "labels_sha256": store.sha256_file(label_path),
            "models": files,
        },
        "epoch": "latest" if epoch is None else int(epoch),
        "skipped_models": skipped,
    }
    return imp.check_arrays(
        np.stack(keeps),
        logits,
        y,
        names={
            "keep": f"{expdir}/*/keep.npy",
            "logits": f"{expdir}/*/logits",
            "labels": str(label_path),
        },
        query_names=query_names,
        min_models=min_models,
        drop_sparse=drop_sparse,
        provenance=prov,
    )
