"""Fault injection: kill, corrupt, poison and misconfigure tiny runs; count what survives.

``jaxsam bench faults [--random-kills K] [--seed S] [--work DIR] [--keep]`` trains a tiny
reference run (:mod:`jaxsam.bench.tiny_runs`), injects faults through the hooks of
:mod:`jaxsam.hooks` and prints one line per case, then the counts:

- faults injected / survived: SIGKILL at hook points (:data:`KILL_POINTS`) and at random
  times, a damaged newest checkpoint, a real full disk under an asynchronous checkpoint write
  (a 16 MiB tmpfs filled while training; skipped, and said so, where mounting is not allowed),
  a disk with 1 KB free, a NaN planted in one model. Survived: the interrupted run never reads
  as complete and ``jaxsam train --resume`` ends bitwise equal to the reference (the NaN: the
  model marked failed, the others bitwise equal). A random kill that lands after ``COMPLETE``
  or after the process exited interrupted nothing and is not counted.
- bad inputs tried / rejected clearly: every config key with a value of the wrong type and
  misspelt (``jaxsam train --config FILE --out OUT``), every file of a run directory missing or
  (JSON) garbled (``jaxsam score RUN``). Each goes through the command line and must exit with
  status 2 and one line naming the key or the file, create no ``--out`` and change no file.

``--child POINT -- ARGS`` runs ``jaxsam ARGS`` SIGKILLed at POINT (``NAME`` or ``NAME:K``: the
K-th time); ``--child fill:K -- train ... --out OUT ARGS`` fills the disk holding ``OUT`` just
before the K-th checkpoint save starts (``OUT/../fill``), so that save's write fails for real.
"""

from __future__ import annotations

import argparse
import errno
import os
import shutil
import sys
import tempfile
from pathlib import Path

from jaxsam import hooks, store
from jaxsam.bench import tiny_runs as runs
from jaxsam.errors import ConfigError

# Kill points -> (hook point, which calls count). train: a training call; save: an async
# checkpoint write in flight; export: orbax writing the logits; finish: logits written,
# COMPLETE not yet; start: config written, masks being written, no run header yet.
KILL_POINTS = {
    "train": ("train_call", None),
    "save": ("checkpoint_sent", None),
    "export": ("arrays_sent", lambda path, **_: path.name == "logits"),
    "finish": ("json", lambda path, **_: path.name == "metrics.json"),
    "start": ("arrays_sent", lambda path, **_: path.name == "masks"),
}


def fill_disk(path: Path) -> None:
    """Writes zeros to ``path`` until the file system holding it is full (ENOSPC)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    try:
        while True:
            os.write(fd, b"\0" * 4096)
    except OSError as e:
        if e.errno != errno.ENOSPC:
            raise
    finally:
        os.close(fd)


def _harness():
    """The fault harness, ``tests/fault_harness.py`` of the jaxsam checkout this runs from."""
    root = Path(__file__).resolve().parents[2]
    if not (root / "tests" / "fault_harness.py").is_file():
        raise ConfigError(
            f"jaxsam bench faults needs the test suite's fault harness (tests/fault_harness.py), "
            f"which is not in {root}: run it from a jaxsam source checkout"
        )
    if str(root) not in sys.path:
        sys.path.insert(0, str(root))
    from tests import fault_harness

    return fault_harness


def main(args: argparse.Namespace) -> int:
    harness = _harness()
    work = Path(args.work or tempfile.mkdtemp(prefix="jaxsam-faults-"))
    work.mkdir(parents=True, exist_ok=True)
    cfg_file = runs.write_config(work / "config.json")
    runs.use_compilation_cache(work / "xla-cache")
    rows: list[tuple[str, bool, bool]] = []  # (kind, ok, resumed)
    skipped: list[str] = []

    def tally(kind: str, what: str, ok: bool | None, resumed: bool = False, note: str = "") -> None:
        if ok is None:  # the machine does not allow this fault: not injected, not counted
            skipped.append(f"{what} ({note})")
            print(f"  [skipped] {kind}: {what} ({note})", flush=True)
            return
        rows.append((kind, ok, ok and resumed))
        print(f"  [{'ok' if ok else 'FAIL'}] {kind}: {what} {note}", flush=True)

    print(f"reference run in {work}", flush=True)
    ref_seconds = runs.warm_seconds(cfg_file, work)
    ref = store.load_run(work / "ref")
    not_faults = harness.inject_all(
        work, cfg_file, ref, ref_seconds, args.random_kills, args.seed, tally
    )
    faults, bad = ([r[1] for r in rows if r[0] == k] for k in ("fault", "bad input"))
    print(f"\nfaults injected:               {len(faults)}")
    print(f"faults survived:               {sum(faults)}")
    print(
        f"faults skipped (not counted):  {len(skipped)}{': ' if skipped else ''}"
        + "; ".join(skipped)
    )
    print(f"random kills that hit no work: {not_faults} (after COMPLETE or exit; not counted)")
    print(f"runs resumed bit-identically:  {sum(r[2] for r in rows)}")
    print(f"bad inputs tried:              {len(bad)}")
    print(f"bad inputs rejected clearly:   {sum(bad)}")
    if not args.keep:
        shutil.rmtree(work, ignore_errors=True)
    return 0 if all(r[1] for r in rows) else 1


def run(argv: list[str]) -> int:
    """``jaxsam bench faults``: inject faults into tiny runs and print the counts."""
    if argv[:1] == ["--child"]:  # jaxsam ARGS, SIGKILLed at a kill point
        name, _, k = argv[1].partition(":")
        child = argv[3:] if argv[2:3] == ["--"] else argv[2:]
        from jaxsam.cli import main as cli_main

        if name == "fill":  # fill the disk of --out just before the K-th checkpoint save
            filler = Path(child[child.index("--out") + 1]).parent / "fill"
            fault = hooks.raise_at(int(k or 1), lambda: fill_disk(filler))
            with hooks.installed("checkpoint", fault):
                return cli_main(child)
        point, when = KILL_POINTS[name]
        with hooks.installed(point, hooks.kill_at(int(k or 1), when)):
            return cli_main(child)
    from jaxsam.cli_options import tidy

    p = argparse.ArgumentParser(prog="jaxsam bench faults", description=__doc__.splitlines()[0])
    p.add_argument("--random-kills", type=int, default=4, help="SIGKILLs at random times")
    p.add_argument("--seed", type=int, default=0, help="seed of the random kill times")
    p.add_argument("--work", type=Path, default=None, help="work directory (default: a temp dir)")
    p.add_argument("--keep", action="store_true", help="keep the work directory")
    return main(tidy(p).parse_args(argv))


if __name__ == "__main__":
    sys.exit(run(sys.argv[1:]))
