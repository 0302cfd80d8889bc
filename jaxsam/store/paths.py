"""Link safety: jaxsam never writes or deletes through a symbolic link inside a run directory.

Run directories get copied, moved and shared, so a crafted one may hold a link where jaxsam
writes (``report.md``, ``plots/``, a temporary file) or deletes (``checkpoints/``). Following it
would write or delete outside the directory. Every path jaxsam writes or deletes under a run
directory ``ROOT`` is checked here first: no component from ``ROOT`` down (``ROOT`` itself
excluded, it may be a link the user made) may be a symbolic link. A link is refused with a
:class:`jaxsam.errors.RunDirError` naming it and where it points; nothing is followed, written
or deleted.
"""

from __future__ import annotations

import os
from pathlib import Path

from jaxsam.errors import RunDirError, option


def _refuse(link: Path) -> RunDirError:
    try:
        target = os.readlink(link)
    except OSError:
        target = "?"
    return RunDirError(
        f"{link} is a symbolic link (to {target}); jaxsam never writes or deletes through a "
        "link in a run directory: remove the link (or replace it with a real directory or "
        "file) and run the command again"
    )


def check_no_links(root: str | Path, *rels: str | Path) -> None:
    """Raises when a component of ``root/rel`` below ``root`` is a symbolic link.

    Args:
      root: the run directory (may itself be a link).
      rels: paths relative to ``root`` that are about to be written or deleted; every existing
        component of each (the last one included) must be a real file or directory.

    Raises:
      RunDirError: naming the first link found.
    """
    root = Path(root)
    for rel in rels:
        current = root
        for part in Path(rel).parts:
            current = current / part
            if current.is_symlink():
                raise _refuse(current)
            if not current.exists():
                break


def check_tree_has_no_links(root: str | Path, rel: str | Path) -> None:
    """Raises when ``root/rel`` or anything inside it is a symbolic link (before deleting in it).

    Orbax deletes old checkpoints by path; a link inside ``checkpoints/`` would send that
    deletion elsewhere.
    """
    check_no_links(root, rel)
    top = Path(root) / rel
    if not top.is_dir():
        return
    for dirpath, dirnames, filenames in os.walk(top):
        for name in dirnames + filenames:
            p = Path(dirpath) / name
            if p.is_symlink():
                raise _refuse(p)


def ensure_dir(root: str | Path, rel: str | Path) -> Path:
    """Creates ``root/rel`` (and its parents below ``root``) after :func:`check_no_links`."""
    check_no_links(root, rel)
    path = Path(root) / rel
    path.mkdir(parents=True, exist_ok=True)
    return path


def require_run_path(path: Path) -> None:
    """Refuses a ``path`` that does not exist, or holds no run (neither ``run.json`` nor
    ``config.json``), before anything reads or writes there (no lock file goes in).

    Raises:
      RunDirError: naming the path and what to pass instead.
    """
    if not path.is_dir():
        raise RunDirError(
            f"run directory {path} does not exist; pass the {option('out', None)} of a jaxsam run"
        )
    if not any((path / name).exists() for name in ("run.json", "config.json")):
        raise RunDirError(
            f"{path} is not a jaxsam run directory (it has no run.json or config.json); pass "
            f"the {option('out', None)} of a jaxsam run"
        )
