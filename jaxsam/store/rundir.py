"""Which directory may take a run: ownership, the existing run's config, space, writability.

:func:`check_run_dir` touches nothing; it refuses a directory holding files jaxsam did not
write (only a jaxsam run is ever replaced) and, without ``overwrite``, one holding a run.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

from jaxsam import config as config_lib
from jaxsam.errors import (
    ConfigError,
    RunDirError,
    RunExistsError,
    action,
    json_problem,
    option,
    parse_json_file,
)
from jaxsam.optim import registry  # a plain table: loads no jax
from jaxsam.store.digests import DIGESTED_FILES, DIGESTS
from jaxsam.store.disk import dir_bytes
from jaxsam.store.header import COMPLETE, RUN_FORMAT, divergence_hint, has_run
from jaxsam.store.lock import LOCK_FILE, check_no_other_writer


def _config_dict(config: config_lib.Config) -> dict:
    return config_lib.to_dict(config)


# Keys added to version 1 after run directories were first written, with the default that
# keeps an older run's meaning. A config.json without them loads with these defaults.
ADDED_KEYS: tuple[tuple[str, Any], ...] = (
    ("optim.base", "sgd"),
    ("optim.base_args", {}),
    ("train.label_smoothing", 0.0),
    ("optim.dp", dataclasses.asdict(config_lib.DPConfig())),
    ("model.kwargs", {}),
    ("audit", dataclasses.asdict(config_lib.AuditConfig())),
    ("masks.design", "exact"),
)


def stable_dict(config: config_lib.Config) -> dict:
    """``to_dict(config)`` without the :data:`ADDED_KEYS` that hold their default.

    What a fingerprint of a config should hash: the checkpoint of a run started before a key
    existed keeps its fingerprint as long as the key keeps the default.
    """
    data = config_lib.to_dict(config)
    for dotted, default in ADDED_KEYS:
        *parents, leaf = dotted.split(".")
        node = data
        for key in parents:
            node = node[key]
        if node.get(leaf) == default:
            del node[leaf]
    return data


def result_dict(config: config_lib.Config) -> dict:
    """``to_dict(config)`` without the keys that cannot change a run's results.

    Two configs with equal ``result_dict`` train bitwise the same models: ``train.progress``
    only draws a bar, and ``optim.rho`` is unused when ``optim.name`` is ``sgd`` (no SAM
    wrapper). Rerunning into an existing run directory compares these dicts, so ``jaxsam demo
    --no-progress`` or another ``--rho`` reuses the finished SGD arm instead of refusing it.
    """
    data = _config_dict(config)
    del data["train"]["progress"]
    if not registry.is_sam_family(config.optim.name):
        del data["optim"]["rho"]
    return data


def _same_config(existing: Any, config: config_lib.Config) -> bool:
    """Whether a run's stored config.json is ``config``, keys added since taking their defaults.

    Only keys that change results count (:func:`result_dict`).
    """
    try:
        return result_dict(config_lib.from_dict(existing)) == result_dict(config)
    except ConfigError:
        return existing == _config_dict(config)


# Names jaxsam writes directly in a run directory (and the prefixes of its temporary names):
# a directory holding only these is a jaxsam run, which ``--overwrite`` may replace.
OWN_NAMES = frozenset(
    {
        *DIGESTED_FILES,
        DIGESTS,
        COMPLETE,
        LOCK_FILE,
        "masks",
        "logits",
        "checkpoints",
        "waves",
        "damaged",
        "report.json",
        "report.md",
        "report.html",
        "examples.parquet",
        "examples.csv",
        "by_class.csv",
        "scores",
        "plots",
        "analysis.json",
        "audit.json",
        ".write-probe",
    }
)
ASIDE_PREFIX = ".jaxsam-replaced-"
_OWN_PREFIXES = (ASIDE_PREFIX, ".report-staging-")


def _own_name(name: str) -> bool:
    if name in OWN_NAMES or name.startswith(_OWN_PREFIXES):
        return True
    if name.startswith(".") and name.endswith(".tmp"):  # write_json's temporary files
        return True
    return ".orbax-checkpoint-tmp" in name  # orbax's temporary siblings


def _looks_like_run(path: Path) -> bool:
    """Whether ``path`` holds a jaxsam run header, a jaxsam config, or a replaced run's rest."""
    if any(p.name.startswith(ASIDE_PREFIX) for p in path.iterdir()):
        return True
    for name in ("run.json", "config.json"):
        f = path / name
        if f.is_file() and not f.is_symlink():
            try:
                parsed = json_problem(f.read_bytes())
            except OSError:
                continue
            if isinstance(parsed, str):  # garbage, binary or too deeply nested: not a run
                continue
            data = parsed[0]
            if name == "run.json" and isinstance(data, dict) and data.get("format") == RUN_FORMAT:
                return True
            if name == "config.json" and isinstance(data, dict):
                try:
                    config_lib.from_dict(data)
                    return True
                except ConfigError:
                    continue
    return False


def foreign_entries(path: str | Path) -> list[str]:
    """What makes ``path`` not a jaxsam run directory: the names jaxsam did not write.

    Returns ``[]`` for a jaxsam run directory (or an empty one); for a directory with no run
    header or config at all, every entry's name.
    """
    path = Path(path)
    entries = sorted(p.name for p in path.iterdir() if p.name != LOCK_FILE)
    if not entries:
        return []
    if not _looks_like_run(path):
        return entries
    return [n for n in entries if not _own_name(n)]


def _refuse_foreign(path: Path) -> None:
    """Raises :class:`RunDirError` when ``path`` holds files jaxsam did not write."""
    foreign = foreign_entries(path)
    if not foreign:
        return
    shown = ", ".join(foreign[:5]) + (f", ... ({len(foreign)} in all)" if len(foreign) > 5 else "")
    if _looks_like_run(path):  # a jaxsam run with files added to it (e.g. notes.txt)
        raise RunDirError(
            f"{path} holds a jaxsam run and also files jaxsam did not write: {shown}; "
            "jaxsam only ever replaces what it wrote itself: move those out of "
            f"{path} yourself, or choose another {option('out', None)}"
        )
    raise RunDirError(
        f"{path} is not empty and is not a jaxsam run directory (it holds {shown}, which "
        "jaxsam did not write); jaxsam only ever replaces its own runs: choose another "
        f"{option('out', None)} (a new or empty directory), or move those files out yourself"
    )


def check_run_dir(
    path: str | Path, config: config_lib.Config | None, *, overwrite: bool = False
) -> int:
    """Checks that ``path`` can take a new run of ``config``; touches nothing.

    ``config`` None (a run whose config is not known yet, e.g. an import before its arrays are
    read) takes any run already in ``path`` for a different one.

    Refuses, first, a directory another process is writing (naming it, from the lock:
    :func:`jaxsam.store.lock.check_no_other_writer`); then a path that is not a directory, a
    directory holding files jaxsam did not write
    (even with ``overwrite``: only a jaxsam run is ever replaced), and, without ``overwrite``, a
    directory that holds a different run, an unfinished run of this config (resume it instead),
    or this finished run.

    Returns:
      The bytes the old run occupies (freed when it is replaced; 0 when there is none).

    Raises:
      RunExistsError: ``path`` holds a run of this very config (``finished`` says whether it is
        complete) and ``overwrite`` is not set; callers that reuse or resume runs catch it.
      RunDirError: any other reason the directory cannot take the run.
    """
    path = Path(path)
    if path.is_symlink() and not path.exists():
        raise RunDirError(
            f"{path} is a broken symbolic link; remove it or choose another {option('out', None)}"
        )
    if path.exists() and not path.is_dir():
        raise RunDirError(
            f"{path} exists and is not a directory; choose another {option('out', None)}"
        )
    if not path.is_dir():
        return 0
    check_no_other_writer(path)  # first: a live run is neither resumed nor replaced
    if not any(p.name != LOCK_FILE for p in path.iterdir()):
        return 0
    if (path / "config.json").is_file():
        _existing_config(path / "config.json")  # garbage there: named as such, not replaced
    _refuse_foreign(path)  # even with overwrite: only a jaxsam run is ever replaced
    if overwrite:
        return dir_bytes(path)
    info_path = path / "config.json"
    if not info_path.is_file():
        raise RunDirError(
            f"{path} holds the rest of a jaxsam run that was being replaced or started; pass "
            f"{option('overwrite')} to replace it, or choose another {option('out', None)}"
        )
    existing = _existing_config(info_path)
    if config is None or not _same_config(existing, config):
        differs = "" if config is None else " (its config.json differs)"
        raise RunDirError(
            f"{path} already holds a {'jaxsam' if config is None else 'different'} run{differs}; "
            f"choose another {option('out', None)} or pass {option('overwrite')} to replace it"
        )
    if not (path / COMPLETE).exists():
        diverged = _divergence_hint(path)  # a resume would diverge again
        raise RunExistsError(
            f"{path} holds an unfinished run of this config; "
            + (
                diverged
                or f"continue it with {action('resume', run=path)} or pass {option('overwrite')} "
                "to start over"
            ),
            finished=False,
        )
    raise RunExistsError(
        f"{path} already holds this finished run; score it with `jaxsam score {path}` "
        f"or pass {option('overwrite')} to train it again",
        finished=True,
    )


def _divergence_hint(path: Path) -> str | None:
    """:func:`jaxsam.store.header.divergence_hint` of the run in ``path`` (None when its header
    is missing or unreadable: the other checks name that)."""
    try:
        raw = json_problem((path / "run.json").read_bytes()) if has_run(path) else None
    except OSError:
        return None
    if not isinstance(raw, tuple) or not isinstance(raw[0], dict):
        return None
    return divergence_hint(path, raw[0])


def _existing_config(path: Path) -> Any:
    """The ``config.json`` found in an output directory, or a RunDirError if it is garbage."""
    return parse_json_file(
        path,
        lambda why: RunDirError(
            f"cannot read {path} ({why}); choose another {option('out', None)}"
        ),
        lambda problem: RunDirError(
            f"{path.parent} holds no readable jaxsam run: its config.json {problem.split(';')[0]}; "
            f"choose another {option('out', None)} (or remove {path.parent} yourself)"
        ),
    )


def check_writable(path: Path) -> None:
    """Raises :class:`RunDirError` unless a file can be created (and removed) in ``path``."""
    probe = path / ".write-probe"
    try:
        probe.write_text("ok")
        probe.unlink()
    except OSError as e:
        raise RunDirError(
            f"cannot write to {path} ({e.strerror}); make it writable or choose another "
            f"{option('out', None)}"
        ) from e
