"""``RUN/digests.json``: the sha256 of every metadata and array file of a finished run."""

from __future__ import annotations

import hashlib
import sys
from pathlib import Path

from jaxsam.errors import RunDirError, option
from jaxsam.store.files import read_json, write_json

DIGESTS = "digests.json"
# What digests.json covers: these metadata files and every file of these array directories.
DIGESTED_FILES = ("config.json", "run.json", "plan.json", "logits.json", "metrics.json")
DIGESTED_DIRS = ("masks", "logits")


def sha256_file(path: Path) -> str:
    """Hex sha256 of a file's bytes (read in 1 MiB blocks)."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _digested_paths(path: Path) -> list[str]:
    """The files :data:`DIGESTS` covers, relative to ``path`` (POSIX separators, sorted)."""
    names = [n for n in DIGESTED_FILES if (path / n).is_file()]
    for d in DIGESTED_DIRS:
        names += [p.relative_to(path).as_posix() for p in (path / d).rglob("*") if p.is_file()]
    return sorted(names)


def write_digests(path: Path) -> dict[str, str]:
    """Writes ``RUN/digests.json``: the sha256 and size of every metadata and array file.

    Called by :func:`finish_run` once everything else is written (just before ``COMPLETE``).
    Returns the digests (relative path -> hex sha256).
    """
    names = _digested_paths(path)
    files = {name: sha256_file(path / name) for name in names}
    sizes = {name: (path / name).stat().st_size for name in names}  # for `jaxsam status`
    write_json(path / DIGESTS, {"algorithm": "sha256", "files": files, "sizes": sizes})
    return files


def verify_digests(path: str | Path) -> bool:
    """Checks every file listed in ``RUN/digests.json`` against its recorded sha256.

    Returns:
      ``True`` when all match; ``False`` when the run has no ``digests.json`` (written before
      jaxsam recorded digests): a note says so and nothing is checked.

    Raises:
      RunDirError: naming the first file that is missing or differs, or a damaged
        ``digests.json``.
    """
    path = Path(path)
    if not (path / DIGESTS).exists():
        print(
            f"note: {path} has no {DIGESTS} (written by a jaxsam that did not record digests); "
            "its files are not verified",
            file=sys.stderr,
        )
        return False
    data = read_json(path / DIGESTS, "file digests")
    ok = isinstance(data, dict) and data.get("algorithm") == "sha256"
    files = data.get("files") if ok else None
    if not isinstance(files, dict) or not files:
        raise RunDirError(f"{path / DIGESTS} is damaged (no sha256 file list); restore it or rerun")
    hint = f"restore it or rerun the job ({option('verify', 'False')} reads it anyway)"
    for name, digest in sorted(files.items()):
        f = path / name
        if not f.is_file():
            raise RunDirError(f"{f} is missing but was written with the run; {hint}")
        if sha256_file(f) != digest:
            raise RunDirError(
                f"{f} differs from what the run wrote (sha256 mismatch): it was changed or "
                f"damaged after the run finished; {hint}"
            )
    unlisted = [n for n in _digested_paths(path) if n not in files]
    if unlisted:
        raise RunDirError(
            f"{path / unlisted[0]} was not written with the run (not in {DIGESTS}); {hint}"
        )
    return True
