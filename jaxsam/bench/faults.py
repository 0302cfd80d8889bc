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
import contextlib
import errno
import io
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

from jaxsam import hooks, store
from jaxsam.bench import tiny_runs as runs

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


def classify_kill(landed: bool, complete: bool) -> str:
    """What a SIGKILL at a random time tested.

    Args:
      landed: the signal reached a running process.
      complete: the run already read back as complete (``COMPLETE`` written, the process was
        only exiting).

    Returns:
      ``fault`` (it interrupted work: resume and compare), or ``missed`` / ``after_complete``:
      nothing was interrupted, so it is no survived fault and is counted apart.
    """
    if not landed:
        return "missed"
    return "after_complete" if complete else "fault"


def snapshot(root: Path) -> dict[str, tuple]:
    """Every path under ``root`` (``root`` included) -> (kind, size, mtime_ns, mode).

    The run's lock file (:data:`jaxsam.store.LOCK_FILE`, left in place by design) is left out.
    """
    root = Path(root)
    out: dict[str, tuple] = {}
    for p in [root, *root.rglob("*")] if root.exists() else []:
        if p.name == store.LOCK_FILE:
            continue
        st = p.lstat()
        kind = "link" if p.is_symlink() else "dir" if p.is_dir() else "file"
        size = 0 if kind == "dir" else st.st_size
        out[str(p.relative_to(root))] = (kind, size, st.st_mtime_ns, st.st_mode)
    return out


def rejected_clearly(argv: list[str], fragment: str, watch: Path) -> tuple[bool, str]:
    """Whether ``jaxsam ARGV`` refuses cleanly: exit status 2, one line of stderr containing
    ``fragment``, and the tree under ``watch`` (which holds the inputs and the would-be
    ``--out``) unchanged: no file created, removed or modified.

    Runs :func:`jaxsam.cli.main`, the function ``python -m jaxsam`` exits with.
    """
    from jaxsam.cli import main as cli_main

    before = snapshot(watch)
    err, out = io.StringIO(), io.StringIO()
    try:
        with contextlib.redirect_stderr(err), contextlib.redirect_stdout(out):
            code = cli_main(argv)
    except SystemExit as e:  # argparse
        code = e.code
    except Exception as e:  # a crash is not a clear message
        return False, f"{type(e).__name__}: {e}"
    lines = err.getvalue().strip().splitlines()
    changed = sorted(set(before.items()) ^ set(snapshot(watch).items()))
    if code != 2:
        return False, f"exit status {code}, not 2: {' / '.join(lines[-3:]) or 'accepted'}"
    if len(lines) != 1 or fragment not in lines[0]:
        return False, f"not one line naming {fragment!r}: {' / '.join(lines[-3:])}"
    if changed:
        return False, f"changed the file system: {sorted({c[0] for c in changed})[:5]}"
    return True, lines[0]


def bad_inputs(ref: Path, work: Path):
    """(what, argv, fragment, watch) for every config key (wrong type, misspelt) and every file
    of a run directory (missing; JSON files garbled); see :func:`rejected_clearly`."""
    from jaxsam import config as config_lib

    def leaves(d, prefix=""):
        for k, v in d.items():
            yield from leaves(v, f"{prefix}{k}.") if isinstance(v, dict) and v else [prefix + k]

    def nested(key, value):
        *parents, leaf = key.split(".")
        for p in reversed(parents):
            value, leaf = {leaf: value}, p
        return {leaf: value}

    for i, key in enumerate(leaves(config_lib.to_dict(config_lib.Config()))):
        for j, (bad, fragment) in enumerate(
            [(nested(key, [0]), f"{key} = [0]"), (nested(key + "_", 1), key + "_")]
        ):
            case = work / f"bad-config-{i}-{j}"
            case.mkdir()
            (case / "config.json").write_text(json.dumps(bad))
            argv = ["train", "--config", str(case / "config.json"), "--out", str(case / "run")]
            yield f"config {json.dumps(bad)}", argv, fragment, case
    files = "COMPLETE config.json run.json masks logits logits.json metrics.json".split()
    for name, garble in [(f, False) for f in files] + [(f, True) for f in files if ".json" in f]:
        bad_run = work / f"bad-{name}-{'garbled' if garble else 'missing'}"
        shutil.copytree(ref, bad_run, ignore=shutil.ignore_patterns("report*", "scores", "plots"))
        if garble:
            (bad_run / name).write_text("{not json")
        elif (bad_run / name).is_dir():
            shutil.rmtree(bad_run / name)
        else:
            (bad_run / name).unlink()
        what = f"run with {name} {'garbled' if garble else 'missing'}"
        yield what, ["score", str(bad_run)], name, bad_run


def exit_status_of_the_command(argv: list[str]) -> int:
    """The exit status of ``python -m jaxsam ARGV`` in a subprocess (the real command)."""
    import os
    import subprocess

    env = {**os.environ, "JAX_PLATFORMS": os.environ.get("JAX_PLATFORMS", "cpu")}
    root = str(Path(__file__).parents[2])
    env["PYTHONPATH"] = os.pathsep.join([root, env.get("PYTHONPATH", "")])
    cmd = [sys.executable, "-m", "jaxsam", *argv]
    return subprocess.run(cmd, env=env, capture_output=True, timeout=600).returncode


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


@contextlib.contextmanager
def small_tmpfs(directory: Path, size: str = "16m") -> Iterator[str | None]:
    """Mounts a ``size`` tmpfs at ``directory`` for the block; yields None, or why it could not
    (not root, no ``mount``, or the machine refused), in which case nothing is mounted."""
    directory.mkdir(parents=True, exist_ok=True)
    if not hasattr(os, "geteuid") or os.geteuid() != 0 or shutil.which("mount") is None:
        yield "mounting a tmpfs needs root and mount(8)"
        return
    cmd = ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(directory)]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        yield f"this machine refused to mount a tmpfs ({proc.stderr.strip()[:80]})"
        return
    try:
        yield None
    finally:
        subprocess.run(["umount", "-l", str(directory)], capture_output=True)


def real_full_disk(work: Path, cfg_file: Path, ref) -> tuple[bool | None, str]:
    """A real ENOSPC under an asynchronous checkpoint write, then ``--resume``.

    The run trains on a 16 MiB tmpfs (the disk check before training passes); just before the
    2nd checkpoint save starts, the child fills the tmpfs, so orbax's background write of that
    checkpoint fails with a real ENOSPC from the kernel. Survived: the command exits 2 with one
    line saying the disk is full or naming the last good checkpoint, the run does not read as
    complete, and after the filler is deleted ``--resume`` ends bitwise equal to the reference.

    Returns (ok, note); ok is None when the tmpfs could not be mounted (the case is skipped).
    """
    disk = work / "full-disk"
    with small_tmpfs(disk) as why_not:
        if why_not is not None:
            return None, why_not
        out = disk / "run"
        code, err = runs.run_child_status(runs.train_args(cfg_file, out), "fill:2")
        lines = err.strip().splitlines()
        said = len(lines) == 1 and ("disk is full" in lines[0] or "intact" in lines[0])
        ok = code == 2 and said and not runs.looks_complete(out)
        last = lines[-1] if lines else "no message"
        note = f"(exit {code}, {len(lines)} line(s): {last[last.find('failed') :][:60]}...)"
        (disk / "fill").unlink(missing_ok=True)
        ok = ok and runs.resume(out) == 0 and runs.same_run(out, ref)
        return ok, note


def _in_process_faults(work: Path, ref):
    """(what, ok, resumed) of the faults injected in this process through :mod:`jaxsam.hooks`."""
    from jaxsam.errors import DivergenceError, RunDirError
    from jaxsam.pipeline import train_and_export as train_loud

    def train_and_export(*args, **kwargs):  # the trainer's own lines (plan, warnings) muted
        with contextlib.redirect_stdout(io.StringIO()):
            return train_loud(*args, **kwargs)

    def fails(fault: hooks.Hook, point: str, name: str, expect, **overrides) -> str:
        try:
            with hooks.installed(point, fault):
                train_and_export(runs.tiny_config(**overrides), work / name)
        except expect as e:
            return str(e)
        return ""

    msg = fails(lambda free, **_: 1024, "free_space", "small-disk", RunDirError)
    ok = "not enough disk space" in msg and not (work / "small-disk" / "checkpoints").exists()
    yield "disk too small (caught before training)", ok, False
    nan = hooks.nan_in_model(model=2, step=5)
    with hooks.installed("train_call", nan):
        run = train_and_export(runs.tiny_config(**{"train.on_divergence": "exclude"}), work / "nan")
    others = [0, 1, 3]
    ok = run.failed_models == [2] and runs.bitwise_equal(run.logits[others], ref.logits[others])
    yield "NaN planted in model 2 at step 5 (exclude)", ok, False
    ok = "model 2 diverged at step 5 (learning" in fails(nan, "train_call", "stop", DivergenceError)
    yield "NaN planted in model 2 at step 5 (stop)", ok, False


def main(args: argparse.Namespace) -> int:
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
    print("SIGKILL at hook points, then --resume:", flush=True)
    for point in ("train:1", "train:3", "save:1", "save:3", "export", "finish", "start"):
        out = work / f"kill-{point.replace(':', '-')}"
        landed = runs.run_child(runs.train_args(cfg_file, out), point) == -signal.SIGKILL
        ok = landed and not runs.looks_complete(out) and runs.resume(out) == 0
        ok = ok and runs.same_run(out, ref)
        tally("fault", f"SIGKILL at {point}", ok, True, "" if landed else "(never fired)")
    print(f"SIGKILL at random times (a cached run takes {ref_seconds:.1f} s), then --resume:")
    rng = random.Random(args.seed)
    not_faults = 0
    for i in range(args.random_kills):
        out, delay = work / f"random-{i}", rng.uniform(0.0, ref_seconds)
        landed = runs.run_and_kill_after(runs.train_args(cfg_file, out), out, delay)[0]
        kind = classify_kill(landed, landed and runs.looks_complete(out))
        if kind != "fault":
            not_faults += 1
            why = "the run finished" if kind == "missed" else "COMPLETE was written"
            print(f"  (kill {i} at +{delay:.2f}s came after {why}: no fault, not counted)")
            continue
        runs.resume(out)
        tally("fault", f"SIGKILL at +{delay:.2f}s", runs.same_run(out, ref), True)
    print("damaged newest checkpoint, then --resume:", flush=True)
    for what, damage in hooks.CHECKPOINT_DAMAGE.items():
        out = work / f"damaged-{what.replace(' ', '-')}"
        runs.run_child(runs.train_args(cfg_file, out), "finish")
        damage(hooks.newest_checkpoint(out))
        runs.resume(out)
        tally("fault", f"{what} checkpoint", runs.same_run(out, ref), True)
    print("a real full disk (tmpfs) under an asynchronous checkpoint write, then --resume:")
    ok, note = real_full_disk(work, cfg_file, ref)
    tally("fault", "checkpoint write hits ENOSPC", ok, True, note)
    print("in-process faults:", flush=True)
    for what, ok, resumed in _in_process_faults(work, ref):
        tally("fault", what, ok, resumed)
    print("bad inputs (through the command line: exit 2, one line, nothing written):")
    first_of_kind: dict[str, list[str]] = {}
    for what, argv, fragment, watch in bad_inputs(work / "ref", work):
        ok, msg = rejected_clearly(argv, fragment, watch)
        first_of_kind.setdefault(argv[0], argv)
        tally("bad input", what, ok, note="" if ok else msg)
    for argv in first_of_kind.values():  # the real process's exit status, once per command
        code = exit_status_of_the_command(argv)
        tally("bad input", f"`python -m jaxsam {argv[0]} ...` exits 2", code == 2, note=f"({code})")
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
