"""``RUN/waves/``: the logits of a study trained in waves, one entry per wave of models.

Layout, for the wave of models ``[a, b)``::

    waves/AAAAA-BBBBB/        orbax: logits [b-a, N, A, C], test_logits [b-a, T, A, C],
                              labels [N], test_labels [T], final_batch_loss [b-a], failed [b-a]
    waves/AAAAA-BBBBB.json    the marker, written last: the wave is done
    waves/AAAAA-BBBBB.work/   checkpoints of the wave while it trains (single process)

A wave is done when its marker and its arrays both exist. Under ``jax.distributed`` the
per-model arrays are global ``jax.Array`` written by all processes together; they are read back
whole in one process, whatever process layout wrote them.
"""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import numpy as np

from jaxsam.store import arrays, paths
from jaxsam.store.files import move_aside_damaged, read_json, write_json

WAVES_DIR = "waves"
_NAME = re.compile(r"^(\d{5,})-(\d{5,})$")


def wave_name(first: int, stop: int) -> str:
    """``RUN/waves/`` entry name of models ``[first, stop)``: ``00064-00128``."""
    return f"{first:05d}-{stop:05d}"


def wave_dir(path: Path, first: int, stop: int) -> Path:
    """The wave's array directory ``RUN/waves/AAAAA-BBBBB``."""
    return Path(path) / WAVES_DIR / wave_name(first, stop)


def work_dir(path: Path, first: int, stop: int) -> Path:
    """Where the wave's checkpoints go while it trains: ``RUN/waves/AAAAA-BBBBB.work``.

    Raises :class:`jaxsam.errors.RunDirError` when ``waves/`` or the work directory is a link
    (checkpoints are written and deleted there).
    """
    name = f"{wave_name(first, stop)}.work"
    paths.check_no_links(path, f"{WAVES_DIR}/{name}")
    return Path(path) / WAVES_DIR / name


def _marker(path: Path, first: int, stop: int) -> Path:
    return Path(path) / WAVES_DIR / f"{wave_name(first, stop)}.json"


def read_marker(path: Path, first: int, stop: int) -> dict | None:
    """The done wave's marker (timing, steps), or None when the wave is not done."""
    marker = _marker(path, first, stop)
    return read_json(marker, "wave marker") if marker.is_file() else None


def save_arrays(path: Path, first: int, stop: int, tree: dict) -> None:
    """Saves the wave's arrays (every process of a distributed job calls it together)."""
    arrays.save_global_arrays(wave_dir(path, first, stop), tree)


def load_arrays(path: Path, first: int, stop: int) -> dict[str, np.ndarray]:
    """Reads a wave's arrays back as numpy, whatever process layout wrote them."""
    return arrays.load_arrays(
        wave_dir(path, first, stop),
        "wave logits",
        missing="rerun that wave",
        damaged="delete it and its .json marker and rerun the wave",
        any_layout=True,
    )


def mark_done(path: Path, first: int, stop: int, info: dict) -> None:
    """Writes the wave's marker (after its arrays) and removes its checkpoints."""
    write_json(_marker(path, first, stop), info)
    work = work_dir(path, first, stop)
    if (work / "damaged").is_dir():  # checkpoints set aside while it trained: keep them
        move_aside_damaged(path, f"{WAVES_DIR}/{work.name}/damaged")
    shutil.rmtree(work, ignore_errors=True)


def remove(path: Path, first: int, stop: int) -> None:
    """Deletes the wave's arrays (after they were assembled into ``RUN/logits``)."""
    shutil.rmtree(wave_dir(path, first, stop), ignore_errors=True)


def done_waves(path: str | Path) -> list[tuple[int, int]]:
    """The finished waves (those with a marker and arrays), sorted by first model."""
    root = Path(path) / WAVES_DIR
    found = []
    if root.is_dir():
        for p in root.glob("*.json"):
            m = _NAME.match(p.stem)
            if m and (root / p.stem).is_dir():
                found.append((int(m.group(1)), int(m.group(2))))
    return sorted(found)


def in_progress(path: str | Path) -> list[dict]:
    """Waves with checkpoints but no marker: ``{"wave": name, "checkpoint_steps": [...]}``."""
    root = Path(path) / WAVES_DIR
    if not root.is_dir():
        return []
    return [
        {"wave": work.name[: -len(".work")], "checkpoint_steps": checkpoint_steps(work)}
        for work in sorted(root.glob("*.work"))
    ]


def checkpoint_steps(run_dir: str | Path) -> list[int]:
    """The steps of the checkpoints in ``run_dir/checkpoints`` (a run or a wave's work dir)."""
    directory = Path(run_dir) / "checkpoints"
    if not directory.is_dir():
        return []
    return sorted(int(p.name) for p in directory.iterdir() if p.is_dir() and p.name.isdigit())
