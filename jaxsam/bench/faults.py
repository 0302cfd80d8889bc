"""Fault injection: kill, corrupt, poison and misconfigure tiny runs; count what survives.

``jaxsam bench faults [--random-kills K] [--seed S] [--work DIR] [--keep]`` trains a tiny
reference run (:mod:`jaxsam.bench.tiny_runs`), injects faults through the hooks of
:mod:`jaxsam.hooks` and prints one line per case, then the counts:

- faults injected / survived: SIGKILL at hook points (:data:`KILL_POINTS`) and at random
  times, a damaged newest checkpoint, a checkpoint write failing with ENOSPC, a disk with 1 KB
  free, a NaN planted in one model. Survived: the interrupted run never reads as complete and
  ``jaxsam train --resume`` ends bitwise equal to the reference (the NaN: the model marked
  failed, the others bitwise equal).
- bad inputs tried / rejected clearly: every config key with a value of the wrong type and
  misspelt, every file of a run directory missing or (JSON) garbled; each must raise a one-line
  :class:`jaxsam.errors.JaxsamError` naming the key or the file.

``--child POINT -- train ARGS`` runs ``jaxsam train ARGS`` SIGKILLed at POINT (``NAME`` or
``NAME:K``: the K-th time).
"""

from __future__ import annotations

import argparse
import json
import random
import shutil
import signal
import sys
import tempfile
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


def rejected_clearly(action, fragment: str) -> tuple[bool, str]:
    """Whether ``action()`` raises a one-line JaxsamError containing ``fragment``."""
    from jaxsam.errors import JaxsamError

    try:
        action()
    except JaxsamError as e:
        return fragment in str(e) and "\n" not in str(e), str(e)
    except Exception as e:  # a crash is not a clear message
        return False, f"{type(e).__name__}: {e}"
    return False, "accepted"


def bad_inputs(ref: Path, work: Path):
    """(what, action, fragment) for every config key (wrong type, misspelt) and every file of
    a run directory (missing; JSON files garbled)."""
    from jaxsam import config as config_lib

    def leaves(d, prefix=""):
        for k, v in d.items():
            yield from leaves(v, f"{prefix}{k}.") if isinstance(v, dict) and v else [prefix + k]

    def nested(key, value):
        *parents, leaf = key.split(".")
        for p in reversed(parents):
            value, leaf = {leaf: value}, p
        return {leaf: value}

    for key in leaves(config_lib.to_dict(config_lib.Config())):
        bad = nested(key, [0])
        yield f"config {json.dumps(bad)}", lambda b=bad: config_lib.from_dict(b), f"{key} = [0]"
        typo = nested(key + "_", 1)
        yield f"config {json.dumps(typo)}", lambda t=typo: config_lib.from_dict(t), key + "_"
    files = "COMPLETE config.json run.json masks logits logits.json metrics.json".split()
    for name, garble in [(f, False) for f in files] + [(f, True) for f in files if ".json" in f]:
        bad_run = work / f"bad-{name}-{'garbled' if garble else 'missing'}"
        shutil.copytree(ref, bad_run)
        if garble:
            (bad_run / name).write_text("{not json")
        elif (bad_run / name).is_dir():
            shutil.rmtree(bad_run / name)
        else:
            (bad_run / name).unlink()
        what = f"run with {name} {'garbled' if garble else 'missing'}"
        yield what, lambda p=bad_run: store.load_run(p).logits, name


def _in_process_faults(work: Path, ref):
    """(what, ok, resumed) of the faults injected in this process through :mod:`jaxsam.hooks`."""
    from jaxsam.errors import DivergenceError, RunDirError
    from jaxsam.train import train_and_export

    def fails(fault: hooks.Hook, point: str, name: str, expect, **overrides) -> str:
        try:
            with hooks.installed(point, fault):
                train_and_export(runs.tiny_config(**overrides), work / name)
        except expect as e:
            return str(e)
        return ""

    enospc = hooks.raise_at(3, OSError(28, "No space left on device"))
    ok = "intact" in fails(enospc, "checkpoint", "enospc", RunDirError)
    train_and_export(runs.tiny_config(), work / "enospc", resume=True)
    yield "checkpoint write fails (ENOSPC)", ok and runs.same_run(work / "enospc", ref), True
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

    def tally(kind: str, what: str, ok: bool, resumed: bool = False, note: str = "") -> None:
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
    print("in-process faults:", flush=True)
    for what, ok, resumed in _in_process_faults(work, ref):
        tally("fault", what, ok, resumed)
    print("bad inputs:", flush=True)
    for what, action, fragment in bad_inputs(work / "ref", work):
        ok, msg = rejected_clearly(action, fragment)
        tally("bad input", what, ok, note="" if ok else msg)
    faults, bad = ([r[1] for r in rows if r[0] == k] for k in ("fault", "bad input"))
    print(f"\nfaults injected:               {len(faults)}")
    print(f"faults survived:               {sum(faults)}")
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
        point, when = KILL_POINTS[name]
        from jaxsam.cli import main as cli_main

        with hooks.installed(point, hooks.kill_at(int(k or 1), when)):
            return cli_main(argv[3:] if argv[2:3] == ["--"] else argv[2:])
    p = argparse.ArgumentParser(prog="jaxsam bench faults", description=__doc__.splitlines()[0])
    p.add_argument("--random-kills", type=int, default=4, help="SIGKILLs at random times")
    p.add_argument("--seed", type=int, default=0, help="seed of the random kill times")
    p.add_argument("--work", type=Path, default=None, help="work directory (default: a temp dir)")
    p.add_argument("--keep", action="store_true", help="keep the work directory")
    return main(p.parse_args(argv))


if __name__ == "__main__":
    sys.exit(run(sys.argv[1:]))
