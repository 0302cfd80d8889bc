"""A cheap look at a finished run for damage, for ``jaxsam status``: no array is read.

:func:`run_problems` checks that ``config.json`` is a valid config, that ``run.json`` and
``digests.json`` parse, that every file ``digests.json`` lists exists with the size it records
(``sizes``, written since jaxsam recorded them), and hashes the listed files of at most
:data:`HASH_BELOW` bytes (the metadata; a run from before sizes were recorded has no other
check of its size). The full check, every file against its sha256, is
:func:`jaxsam.store.verify_digests`, which ``score``, ``analyze`` and ``compare`` run.
"""

from __future__ import annotations

from pathlib import Path

from jaxsam.errors import JaxsamError
from jaxsam.store.digests import DIGESTED_DIRS, DIGESTS, sha256_file
from jaxsam.store.files import read_json

HASH_BELOW = 1 << 20  # listed files up to this size are hashed (cheap: the metadata)


def _listed(path: Path) -> tuple[dict, dict] | str:
    """``(files, sizes)`` of ``digests.json``, or what is wrong with it."""
    try:
        data = read_json(path / DIGESTS, "file digests")
    except JaxsamError as e:
        return str(e)
    files = data.get("files") if isinstance(data, dict) else None
    if not isinstance(files, dict) or not files:
        return f"{path / DIGESTS} is damaged (no sha256 file list)"
    sizes = data.get("sizes")
    return files, sizes if isinstance(sizes, dict) else {}


def _file_problem(path: Path, name: str, digest: str, size) -> str | None:
    f = path / name
    if not f.is_file():
        return f"{f} is missing but was written with the run"
    actual = f.stat().st_size
    if isinstance(size, int) and actual != size:
        return f"{f} has {actual:,} bytes, the run wrote {size:,} (truncated or replaced)"
    if actual <= HASH_BELOW and sha256_file(f) != digest:
        return f"{f} differs from what the run wrote (sha256 mismatch)"
    return None


def run_problems(path: str | Path) -> list[str]:
    """What is wrong with the finished run ``path`` (empty: nothing found), cheaply.

    Each problem is a phrase naming the file; the caller adds the fix (restore the run from a
    copy or retrain it).
    """
    from jaxsam.store.reader import read_config

    path = Path(path)
    problems = []
    for check in (lambda: read_json(path / "run.json", "run header"), lambda: read_config(path)):
        try:
            check()
        except JaxsamError as e:
            problems.append(str(e))
    gone = [d for d in DIGESTED_DIRS if not (path / d).is_dir()]
    problems += [f"{path / d} is missing" for d in gone]
    if not (path / DIGESTS).exists():
        return problems  # a run from before digests: nothing recorded to check against
    listed = _listed(path)
    if isinstance(listed, str):
        return [*problems, listed]
    files, sizes = listed
    for name, digest in sorted(files.items()):
        problem = _file_problem(path, name, digest, sizes.get(name))
        if problem and name.split("/")[0] not in gone:  # a missing folder is said once
            problems.append(problem)
    return problems
