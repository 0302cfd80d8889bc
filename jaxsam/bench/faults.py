"""Fault injection: kill, corrupt, poison and misconfigure tiny runs; count what survives.

``python -m jaxsam.bench.faults [--random-kills K] [--seed S] [--work DIR]`` trains a tiny
reference run, then injects faults into copies of it and prints:

- faults injected / survived: SIGKILL at hooked points (inside a training call, while an async
  checkpoint is being written, while the logits are being written, after the logits but before
  ``COMPLETE``, while the run is being started) and at random times; a damaged newest
  checkpoint (truncated, bit-flipped, metadata garbage); a checkpoint write failing with a full
  disk; a NaN planted in one model at one step (policy ``exclude``). A fault is survived when
  the interrupted run is never readable as complete and ``jaxsam train --resume`` then ends
  with logits bitwise equal to the uninterrupted reference (for the NaN: every other model's
  logits bitwise equal, the poisoned one listed as failed).
- bad inputs tried / rejected with a clear message: every entry of :data:`BAD_CONFIGS` and
  :data:`BAD_RUN_DIRS` must raise a :class:`jaxsam.errors.JaxsamError` with a one-line message
  containing the expected key path or file name.

The child processes run ``python -m jaxsam.bench.faults --child POINT -- train ARGS``, which
installs a hook that SIGKILLs the process at POINT and then runs ``jaxsam train ARGS``.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

# A tiny study: 4 MLPs, 2 epochs of 4 steps, 2 steps per jitted call, a checkpoint every 2.
TINY = {
    "data.pool_size": 200,
    "data.test_size": 50,
    "masks.models": 4,
    "model.width": 32,
    "train.epochs": 2,
    "train.batch_size": 32,
    "train.steps_per_call": 2,
    "train.checkpoint_every_steps": 2,
    "train.progress": False,
}

# Kill points a child can hook. ``train:K``: inside the K-th training call (its result never
# saved); ``save:K``: right after the K-th async checkpoint save started; ``export``: while
# orbax writes the logits; ``finish``: logits written, COMPLETE not yet; ``start``: config
# written, masks and header not yet.
KILL_POINTS = ("train", "save", "export", "finish", "start")


def tiny_config(**overrides):
    """The :data:`TINY` config with ``overrides`` (dotted keys)."""
    from jaxsam import config as config_lib

    return config_lib.replace(config_lib.Config(), **{**TINY, **overrides})


# ----------------------------------------------------------------------------- child side


def _die() -> None:
    sys.stdout.flush()
    os.kill(os.getpid(), signal.SIGKILL)


def install_kill_hook(point: str) -> None:
    """Patches jaxsam so that this process SIGKILLs itself at ``point`` (``NAME`` or ``NAME:K``)."""
    from jaxsam import store
    from jaxsam.train import checkpoint as ckpt_lib
    from jaxsam.train import loop

    name, _, k = point.partition(":")
    k = int(k or 1)
    count = [0]
    if name == "train":
        real_make = loop.make_ensemble_fn

        def make(*a, **kw):
            fn = real_make(*a, **kw)

            def run(*args):
                out = fn(*args)
                count[0] += 1
                if count[0] == k:
                    _die()
                return out

            return run

        loop.make_ensemble_fn = make
    elif name == "save":
        real_save = ckpt_lib.save

        def save(*a, **kw):
            real_save(*a, **kw)
            count[0] += 1
            if count[0] == k:
                _die()  # the async write is in flight

        ckpt_lib.save = save
    elif name in ("export", "start"):
        real = store.save_arrays
        target = "logits" if name == "export" else "masks"

        def save_arrays(path, tree):
            if Path(path).name != target:
                return real(path, tree)
            if Path(path).exists():
                shutil.rmtree(path)
            ckpt = store._checkpointer()
            ckpt.save(Path(path).absolute(), {k_: np.asarray(v) for k_, v in tree.items()})
            time.sleep(0.01 * k)
            _die()  # orbax is writing

        store.save_arrays = save_arrays
    elif name == "finish":
        real_json = store.write_json

        def write_json(path, obj):
            if Path(path).name == "metrics.json":
                _die()
            return real_json(path, obj)

        store.write_json = write_json
    else:
        raise SystemExit(f"unknown kill point {point!r}; use one of {list(KILL_POINTS)}")


# ---------------------------------------------------------------------------- parent side


# Children share a persistent XLA compilation cache (set by :func:`use_compilation_cache`): a
# cached executable is the same machine code, so results stay bitwise, and children skip most
# of their compile time.
_CACHE_DIR: list[str] = []


def use_compilation_cache(directory: Path) -> None:
    """Makes every child process share the persistent compilation cache in ``directory``."""
    _CACHE_DIR[:] = [str(directory)]


def _env() -> dict:
    env = dict(os.environ)
    env.setdefault("JAX_PLATFORMS", "cpu")
    if _CACHE_DIR:
        env["JAX_COMPILATION_CACHE_DIR"] = _CACHE_DIR[0]
        env["JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS"] = "0"
        env["JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES"] = "0"
    env["PYTHONPATH"] = os.pathsep.join(
        [str(Path(__file__).resolve().parents[2]), env.get("PYTHONPATH", "")]
    )
    return env


def train_args(config_file: Path, out: Path) -> list[str]:
    return ["train", "--config", str(config_file), "--out", str(out), "--no-progress"]


def run_child(args: list[str], kill_at: str | None = None, timeout: float = 600) -> int:
    """Runs ``jaxsam ARGS`` in a subprocess (with a kill hook); returns its exit status."""
    if kill_at is None:
        cmd = [sys.executable, "-m", "jaxsam", *args]
    else:
        cmd = [sys.executable, "-m", "jaxsam.bench.faults", "--child", kill_at, "--", *args]
    proc = subprocess.run(cmd, env=_env(), capture_output=True, text=True, timeout=timeout)
    if proc.returncode not in (0, -signal.SIGKILL):
        raise RuntimeError(f"{' '.join(cmd)} failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    return proc.returncode


def run_and_kill_after(
    args: list[str], out: Path, delay: float | None, timeout: float = 600
) -> tuple[bool, float]:
    """Starts ``jaxsam ARGS``; SIGKILLs it ``delay`` s after ``out/run.json`` appears.

    Returns whether the kill landed (False: the process had already finished) and the seconds
    from ``run.json`` appearing to the process's end. ``delay=None`` never kills (timing run).
    """
    proc = subprocess.Popen(
        [sys.executable, "-m", "jaxsam", *args],
        env=_env(),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    t0 = time.monotonic()
    while not (out / "run.json").exists() and proc.poll() is None:
        if time.monotonic() - t0 > timeout:
            proc.kill()
            raise RuntimeError("the child never started its run")
        time.sleep(0.02)
    t1 = time.monotonic()
    if delay is not None:
        time.sleep(delay)
    landed = delay is not None and proc.poll() is None
    if landed:
        proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=timeout)
    if delay is None and proc.returncode != 0:
        raise RuntimeError(f"jaxsam {' '.join(args)} failed ({proc.returncode})")
    return landed, time.monotonic() - t1


def warm_seconds(cfg_file: Path, work: Path) -> float:
    """Trains the reference ``work/ref``, then times a second (compile-cached) run of it.

    Returns the seconds the cached run takes from ``run.json`` appearing to its end: the window
    in which random kills land.
    """
    run_and_kill_after(train_args(cfg_file, work / "ref"), work / "ref", None)
    seconds = run_and_kill_after(train_args(cfg_file, work / "timing"), work / "timing", None)[1]
    shutil.rmtree(work / "timing", ignore_errors=True)
    return seconds


def resume(out: Path, kill_at: str | None = None) -> int:
    return run_child(["train", "--resume", str(out), "--no-progress"], kill_at)


def looks_complete(out: Path) -> bool:
    """Whether ``load_run`` accepts ``out`` (with its logits)."""
    from jaxsam import store
    from jaxsam.errors import RunDirError

    try:
        store.load_run(out).logits  # noqa: B018
    except RunDirError:
        return False
    return True


def bitwise_equal(a: np.ndarray, b: np.ndarray) -> bool:
    """Same shape, dtype and bits (NaNs included)."""
    a, b = np.asarray(a), np.asarray(b)
    return a.shape == b.shape and a.dtype == b.dtype and a.tobytes() == b.tobytes()


def same_run(out: Path, ref) -> bool:
    """Whether run ``out`` has bitwise the reference's masks, logits and failed models."""
    from jaxsam import store

    run = store.load_run(out)
    return (
        bitwise_equal(run.keep, ref.keep)
        and bitwise_equal(run.logits, ref.logits)
        and bitwise_equal(run.test_logits, ref.test_logits)
        and run.failed_models == ref.failed_models
    )


def write_config(path: Path, **overrides) -> Path:
    from jaxsam import config as config_lib

    path.write_text(json.dumps(config_lib.to_dict(tiny_config(**overrides))))
    return path


# ------------------------------------------------------------------------ damage helpers


def newest_checkpoint(out: Path) -> Path:
    steps = [p for p in (out / "checkpoints").iterdir() if p.name.isdigit()]
    return max(steps, key=lambda p: int(p.name))


def _biggest_array_file(ckpt: Path) -> Path:
    files = [f for f in (ckpt / "state").rglob("*") if f.is_file() and f.parent.name == "d"]
    return max(files, key=lambda f: f.stat().st_size)


def truncate_checkpoint(ckpt: Path) -> None:
    f = _biggest_array_file(ckpt)
    f.write_bytes(f.read_bytes()[: f.stat().st_size // 2])


def flip_checkpoint_byte(ckpt: Path) -> None:
    f = _biggest_array_file(ckpt)
    b = bytearray(f.read_bytes())
    b[len(b) // 2] ^= 0xFF
    f.write_bytes(bytes(b))


def garble_checkpoint_meta(ckpt: Path) -> None:
    (ckpt / "meta" / "metadata").write_text("{not json")


CHECKPOINT_DAMAGE: dict[str, Callable[[Path], None]] = {
    "truncated": truncate_checkpoint,
    "bit-flipped": flip_checkpoint_byte,
    "metadata garbage": garble_checkpoint_meta,
}


def nan_factory(real_make: Callable, model: int, step: int) -> Callable:
    """Wraps ``make_ensemble_fn`` so that model ``model`` goes NaN at global ``step``.

    The loss of that step and the model's parameters after it become NaN, as in a real
    divergence. Install it with ``loop.make_ensemble_fn = nan_factory(...)`` (or pytest's
    monkeypatch).
    """
    import jax
    import jax.numpy as jnp

    def make(*a, **kw):
        fn = real_make(*a, **kw)

        def run(model_state, model_data, shared, step0, n):
            new_state, (loss, acc) = fn(model_state, model_data, shared, step0, n)
            s0 = int(step0)
            if s0 <= step < s0 + n:
                loss = loss.at[model, step - s0].set(jnp.nan)
                params, stats, opt = new_state
                params = jax.tree.map(lambda p: p.at[model].set(jnp.nan), params)
                new_state = (params, stats, opt)
            return new_state, (loss, acc)

        return run

    return make


# ---------------------------------------------------------------------------- bad inputs

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


def _bad_run_dirs(tmp: Path, ref_path: Path) -> list[tuple[str, Callable[[], object], str]]:
    """(what, action, fragment) triples; each action must raise a JaxsamError with fragment."""
    from jaxsam import store
    from jaxsam.train import train_and_export

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
        return train_and_export(tiny_config(), copy("complete"), resume=True)

    def resume_nothing():
        return train_and_export(tiny_config(), tmp / "bad-empty", resume=True)

    def resume_other_config():
        return train_and_export(tiny_config(**{"optim.rho": 0.1}), copy("other"), resume=True)

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
        return train_and_export(tiny_config(), p)

    return [
        ("run without logits", no_logits, "missing: logits"),
        ("run without COMPLETE", no_marker, "not complete"),
        ("resume of a finished run", resume_complete, "already complete"),
        ("resume of nothing", resume_nothing, "holds no run to resume"),
        ("resume with another config", resume_other_config, "differs"),
        ("logits of other masks", foreign_logits, "fingerprint mismatch"),
        ("--out holding other files", out_not_empty, "not empty"),
    ]


def _clear_rejection(action: Callable[[], object], fragment: str) -> tuple[bool, str]:
    from jaxsam.errors import JaxsamError

    try:
        action()
    except JaxsamError as e:
        msg = str(e)
        return fragment in msg and "\n" not in msg, msg
    except Exception as e:  # a crash is not a clear message
        return False, f"{type(e).__name__}: {e}"
    return False, "accepted"


# -------------------------------------------------------------------------------- driver


class Tally:
    """Counts faults and bad inputs, printing one line per case."""

    def __init__(self) -> None:
        self.rows: list[tuple[str, str, bool, bool]] = []

    def add(self, kind: str, what: str, ok: bool, note: str = "", resumed: bool = False) -> None:
        """Records a case; ``resumed``: its check includes a bitwise resume."""
        self.rows.append((kind, what, ok, resumed))
        print(f"  [{'ok' if ok else 'FAIL'}] {kind}: {what} {note}", flush=True)

    def count(self, kind: str) -> tuple[int, int]:
        rows = [r for r in self.rows if r[0] == kind]
        return len(rows), sum(r[2] for r in rows)

    def resumed(self) -> int:
        return sum(r[2] and r[3] for r in self.rows)


def kill_and_resume(ref, work: Path, name: str, kill_at: str, cfg_file: Path) -> tuple[bool, str]:
    """Kills a fresh run at ``kill_at``, checks it does not look complete, resumes, compares."""
    out = work / name
    rc = run_child(train_args(cfg_file, out), kill_at)
    if rc != -signal.SIGKILL:
        return False, f"(the kill at {kill_at} never fired)"
    if looks_complete(out):
        return False, "(the killed run looked complete)"
    resume(out)
    return same_run(out, ref), ""


def main(args: argparse.Namespace) -> int:
    from jaxsam import config as config_lib
    from jaxsam.errors import DivergenceError, RunDirError
    from jaxsam.train import checkpoint as ckpt_lib
    from jaxsam.train import loop, train_and_export

    rng = random.Random(args.seed)
    work = Path(args.work or tempfile.mkdtemp(prefix="jaxsam-faults-"))
    work.mkdir(parents=True, exist_ok=True)
    cfg_file = write_config(work / "config.json")
    tally = Tally()
    use_compilation_cache(work / "xla-cache")
    print(f"reference run in {work}", flush=True)
    ref_seconds = warm_seconds(cfg_file, work)
    from jaxsam import store

    ref = store.load_run(work / "ref")
    ref.logits  # noqa: B018

    print("SIGKILL at hooked points, then --resume:", flush=True)
    for point in ("train:1", "train:3", "save:1", "save:3", "export", "finish", "start"):
        ok, note = kill_and_resume(ref, work, f"kill-{point.replace(':', '-')}", point, cfg_file)
        tally.add("fault", f"SIGKILL at {point}", ok, note, resumed=True)

    print(
        f"SIGKILL at random times (the reference ran {ref_seconds:.1f} s after starting its "
        "run directory), then --resume:"
    )
    for i in range(args.random_kills):
        out = work / f"random-{i}"
        delay = rng.uniform(0.0, ref_seconds)
        if not run_and_kill_after(train_args(cfg_file, out), out, delay)[0]:
            print(f"  (kill {i} at +{delay:.2f}s came after the run finished: not counted)")
            continue
        if looks_complete(out):  # killed after COMPLETE, while exiting: must be the whole run
            tally.add("fault", f"SIGKILL at +{delay:.2f}s (after COMPLETE)", same_run(out, ref))
            continue
        resume(out)
        tally.add("fault", f"SIGKILL at +{delay:.2f}s", same_run(out, ref), resumed=True)

    print("damaged newest checkpoint, then --resume:", flush=True)
    for what, damage in CHECKPOINT_DAMAGE.items():
        out = work / f"damaged-{what.replace(' ', '-')}"
        run_child(train_args(cfg_file, out), "finish")
        damage(newest_checkpoint(out))
        resume(out)
        tally.add("fault", f"{what} checkpoint", same_run(out, ref), resumed=True)

    print("in-process faults:", flush=True)
    cfg = tiny_config()
    real_save = ckpt_lib.save
    calls = [0]

    def full_disk_save(*a, **kw):
        calls[0] += 1
        if calls[0] == 3:
            raise OSError(28, "No space left on device")
        return real_save(*a, **kw)

    ckpt_lib.save = full_disk_save
    out = work / "disk-full-save"
    try:
        train_and_export(cfg, out)
        raised = ""
    except RunDirError as e:
        raised = str(e)
    finally:
        ckpt_lib.save = real_save
    train_and_export(cfg, out, resume=True)
    ok = "intact" in raised and same_run(out, ref)
    tally.add("fault", "checkpoint write fails (ENOSPC)", ok, resumed=True)

    real_usage = shutil.disk_usage
    shutil.disk_usage = lambda p: real_usage(p)._replace(free=1024)
    out = work / "disk-too-small"
    try:
        train_and_export(cfg, out)
        ok = False
    except RunDirError as e:
        ok = "not enough disk space" in str(e) and not (out / "checkpoints").exists()
    finally:
        shutil.disk_usage = real_usage
    tally.add("fault", "disk too small (caught before training)", ok)

    real_make = loop.make_ensemble_fn
    loop.make_ensemble_fn = nan_factory(real_make, model=2, step=5)
    try:
        out = work / "nan-exclude"
        train_and_export(
            config_lib.replace(cfg, **{"train.on_divergence": "exclude"}), out, progress=False
        )
        run = store.load_run(out)
        others = [0, 1, 3]
        ok = run.failed_models == [2] and bitwise_equal(run.logits[others], ref.logits[others])
        tally.add("fault", "NaN planted in model 2 at step 5 (exclude)", ok)
        try:
            train_and_export(cfg, work / "nan-stop")
            ok, msg = False, "no error"
        except DivergenceError as e:
            msg = str(e)
            ok = "model 2 diverged at step 5 (learning rate" in msg
        tally.add("fault", "NaN planted in model 2 at step 5 (stop)", ok)
    finally:
        loop.make_ensemble_fn = real_make

    print("bad inputs:", flush=True)
    for data, fragment in BAD_CONFIGS:
        ok, msg = _clear_rejection(lambda d=data: config_lib.from_dict(d), fragment)
        tally.add("bad input", f"config {json.dumps(data)}", ok, "" if ok else msg)
    for what, action, fragment in _bad_run_dirs(work, work / "ref"):
        ok, msg = _clear_rejection(action, fragment)
        tally.add("bad input", what, ok, "" if ok else msg)

    injected, survived = tally.count("fault")
    tried, rejected = tally.count("bad input")
    print()
    print(f"faults injected:               {injected}")
    print(f"faults survived:               {survived}")
    print(f"runs resumed bit-identically:  {tally.resumed()}")
    print(f"bad inputs tried:              {tried}")
    print(f"bad inputs rejected clearly:   {rejected}")
    if not args.keep:
        shutil.rmtree(work, ignore_errors=True)
    return 0 if (injected == survived and tried == rejected) else 1


def run(argv: list[str]) -> int:
    """``jaxsam bench faults``: inject faults into tiny runs and print the counts."""
    if argv[:1] == ["--child"]:
        point, rest = argv[1], argv[2:]
        if rest[:1] == ["--"]:
            rest = rest[1:]
        install_kill_hook(point)
        from jaxsam.cli import main as cli_main

        return cli_main(rest)
    p = argparse.ArgumentParser(prog="jaxsam bench faults", description=__doc__.splitlines()[0])
    p.add_argument("--random-kills", type=int, default=4, help="SIGKILLs at random times")
    p.add_argument("--seed", type=int, default=0, help="seed of the random kill times")
    p.add_argument("--work", type=Path, default=None, help="work directory (default: a temp dir)")
    p.add_argument("--keep", action="store_true", help="keep the work directory")
    return main(p.parse_args(argv))


if __name__ == "__main__":
    sys.exit(run(sys.argv[1:]))
