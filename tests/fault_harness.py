"""The fault-injection tables of the test suite: bad configs and bad run directories.

Every entry must be refused with a one-line :class:`jaxsam.errors.JaxsamError` containing the
expected key path or problem (``tests/test_reliability.py``). The machinery that kills and
damages runs is the library's: :mod:`jaxsam.hooks` (fault hooks) and
:mod:`jaxsam.bench.tiny_runs` (tiny runs in child processes, killed at the hook points of
:data:`jaxsam.bench.faults.KILL_POINTS`).

The second half is the harness of ``jaxsam bench faults`` (:func:`inject_all`): the kills, the
damaged checkpoints, the full disk, the NaNs and the sweep of bad inputs, each checked as the
benchmark counts it; the command itself only drives it and prints the counts.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import random
import shutil
import signal
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

from jaxsam import hooks, store
from jaxsam.bench import tiny_runs as runs

# (config dict, fragment the message must contain)
BAD_CONFIGS: list[tuple[dict, str]] = [
    ({"optim": {"nme": "sam"}}, "unknown config key optim.nme"),
    ({"bogus": 1}, "unknown config key bogus"),
    ({"train": {"epoch": 3}}, "unknown config key train.epoch"),
    ({"optim": {"name": "adamw"}}, "optim.name = 'adamw' is not allowed"),
    ({"masks": {"pkeep": 1.0}}, "masks.pkeep"),
    ({"masks": {"pkeep": 0.0}}, "masks.pkeep"),
    ({"masks": {"pkeep": "half"}}, "masks.pkeep = 'half' has the wrong type"),
    ({"masks": {"models": 1}}, "masks.models"),
    ({"masks": {"models": 3, "pkeep": 0.1}}, "masks.pkeep * masks.models"),
    ({"train": {"epochs": "ten"}}, "train.epochs = 'ten' has the wrong type"),
    ({"train": {"epochs": True}}, "train.epochs = True has the wrong type"),
    ({"train": {"epochs": 0}}, "train.epochs = 0 is out of range"),
    ({"train": {"batch_size": 0}}, "train.batch_size = 0 is out of range"),
    ({"train": {"batch_size": 2.5}}, "train.batch_size = 2.5 has the wrong type"),
    ({"train": {"strategy": "pmap"}}, "train.strategy = 'pmap' is not allowed"),
    ({"train": {"on_divergence": "ignore"}}, "train.on_divergence = 'ignore' is not allowed"),
    ({"train": {"steps_per_call": 0}}, "train.steps_per_call = 0 is out of range"),
    ({"train": {"chunk_size": -1}}, "train.chunk_size = -1 is out of range"),
    ({"train": {"checkpoint_every_steps": -2}}, "train.checkpoint_every_steps = -2"),
    ({"train": {"checkpoint_every_minutes": -1}}, "train.checkpoint_every_minutes = -1"),
    ({"train": {"seed": -1}}, "train.seed = -1 is out of range"),
    ({"train": {"progress": "yes"}}, "train.progress = 'yes' has the wrong type"),
    ({"data": {"query_augment": 3}}, "data.query_augment = 3 is not allowed"),
    ({"data": {"train_augment": "mixup"}}, "data.train_augment = 'mixup' is not allowed"),
    ({"data": {"pool_size": 0}}, "data.pool_size = 0 is out of range"),
    ({"data": {"test_size": -5}}, "data.test_size = -5 is out of range"),
    ({"data": {"dataset": ""}}, "data.dataset is empty"),
    ({"data": {"seed": 1.5}}, "data.seed = 1.5 has the wrong type"),
    ({"model": {"name": "vgg"}}, "model.name = 'vgg' is not allowed"),
    ({"model": {"dtype": "float16"}}, "model.dtype = 'float16' is not allowed"),
    ({"model": {"width": 0}}, "model.width = 0 is out of range"),
    ({"optim": {"learning_rate": -0.1}}, "optim.learning_rate = -0.1 is out of range"),
    ({"optim": {"learning_rate": float("nan")}}, "optim.learning_rate = nan"),
    ({"optim": {"momentum": 1.5}}, "optim.momentum = 1.5 is out of range"),
    ({"optim": {"rho": -0.05}}, "optim.rho = -0.05 is out of range"),
    ({"optim": {"schedule": "step"}}, "optim.schedule = 'step' is not allowed"),
    ({"optim": {"extra": {"eta": 0.1}}}, "optim.extra.eta"),
    ({"optim": {"extra": []}}, "optim.extra = [] has the wrong type"),
    ({"optim": 3}, "optim must be a JSON object"),
    ({"version": 99}, "config version 99"),
]


def bad_run_dirs(tmp: Path, ref_path: Path) -> list[tuple[str, Callable[[], object], str]]:
    """(what, action, fragment) triples; each action must raise a JaxsamError with fragment."""
    from jaxsam import store
    from jaxsam.pipeline import train_and_export

    def copy(name: str) -> Path:
        dst = tmp / f"bad-{name}"
        shutil.copytree(ref_path, dst)
        return dst

    def load(p: Path):
        return store.load_run(p).logits

    def no_logits():
        p = copy("no-logits")
        shutil.rmtree(p / "logits")
        (p / "COMPLETE").unlink()
        return load(p)

    def no_marker():
        p = copy("no-marker")
        (p / "COMPLETE").unlink()
        return load(p)

    def resume_complete():
        return train_and_export(runs.tiny_config(), copy("complete"), resume=True)

    def resume_nothing():
        return train_and_export(runs.tiny_config(), tmp / "bad-empty", resume=True)

    def resume_other_config():
        return train_and_export(
            runs.tiny_config(**{"optim.learning_rate": 0.05}), copy("other"), resume=True
        )

    def foreign_logits():
        p = copy("foreign")
        info = json.loads((p / "logits.json").read_text())
        info["masks_fingerprint"] = "0" * 64
        (p / "logits.json").write_text(json.dumps(info))
        return load(p)

    def out_not_empty():
        p = tmp / "bad-busy"
        p.mkdir()
        (p / "notes.txt").write_text("mine")
        return train_and_export(runs.tiny_config(), p)

    return [
        ("run without logits", no_logits, "missing: logits"),
        ("run without COMPLETE", no_marker, "not complete"),
        ("resume of a finished run", resume_complete, "already complete"),
        ("resume of nothing", resume_nothing, "holds no run to resume"),
        ("resume with another config", resume_other_config, "differs"),
        ("logits of other masks", foreign_logits, "fingerprint mismatch"),
        ("--out holding other files", out_not_empty, "not empty"),
    ]


def cached_work_dir(tmp_path_factory, name: str) -> Path:
    """A module's work directory, its children sharing one persistent XLA compilation cache
    (the same executables, so the same bits across processes)."""
    work = tmp_path_factory.mktemp(name)
    runs.use_compilation_cache(work / "xla-cache")
    return work


class Crash(Exception):
    """An injected failure (the process would have died here)."""


def crash_at_call(k: int, error: BaseException | None = None):
    """While the block runs, the ``k``-th training call raises ``error`` after computing."""
    return hooks.installed("train_call", hooks.raise_at(k, error or Crash()))


def crash_before_complete(error: BaseException | None = None):
    """While the block runs, writing ``metrics.json`` (after the logits) raises ``error``."""
    metrics = lambda path, **_: path.name == "metrics.json"  # noqa: E731
    return hooks.installed("json", hooks.raise_at(1, error or Crash(), when=metrics))


# ---------------------------------------------------------------------------------------------
# The fault harness of ``jaxsam bench faults`` (the command is a thin driver over these).


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
    env = {**os.environ, "JAX_PLATFORMS": os.environ.get("JAX_PLATFORMS", "cpu")}
    root = str(Path(__file__).parents[1])  # the checkout holding tests/
    env["PYTHONPATH"] = os.pathsep.join([root, env.get("PYTHONPATH", "")])
    cmd = [sys.executable, "-m", "jaxsam", *argv]
    return subprocess.run(cmd, env=env, capture_output=True, timeout=600).returncode


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
        if len(lines) > 1:  # what else was printed, for the failure message
            note += f" first: {lines[0][:120]!r}; all: {err[-1500:]!r}"
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


def inject_all(
    work: Path, cfg_file: Path, ref, ref_seconds: float, random_kills: int, seed: int, tally
) -> int:
    """Every fault and bad input of ``jaxsam bench faults``, in order; ``tally(kind, what, ok,
    resumed=False, note="")`` is called once per case (``ok`` None: skipped on this machine).

    Returns the random kills that hit no work (after ``COMPLETE`` or exit; not counted).
    """
    print("SIGKILL at hook points, then --resume:", flush=True)
    for point in ("train:1", "train:3", "save:1", "save:3", "export", "finish", "start"):
        out = work / f"kill-{point.replace(':', '-')}"
        landed = runs.run_child(runs.train_args(cfg_file, out), point) == -signal.SIGKILL
        ok = landed and not runs.looks_complete(out) and runs.resume(out) == 0
        ok = ok and runs.same_run(out, ref)
        tally("fault", f"SIGKILL at {point}", ok, True, "" if landed else "(never fired)")
    print(f"SIGKILL at random times (a cached run takes {ref_seconds:.1f} s), then --resume:")
    rng = random.Random(seed)
    not_faults = 0
    for i in range(random_kills):
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
    return not_faults
