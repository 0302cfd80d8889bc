"""Run one experiment of the paper from its spec: train every arm at every seed, score, tabulate.

Usage::

    python -m experiments.run experiments/configs/digits_sam_vs_sgd.json
    python -m experiments.run SPEC --seeds 0,1 --set train.epochs=5 --out runs/exp/mine
    python -m experiments.run SPEC --no-train          # re-tabulate finished runs only

For each seed and arm it trains (or reuses) the run directory ``OUT/seed{s}/{arm}``, scores it
with :func:`jaxsam.pipeline.score.score_run` (``RUN/report.json``), then prints the paper's table
(rows: OUT (pool non-member) accuracy, held-out accuracy, each attack's AUC and TPR at 1% / 0.1%
FPR, mean memorization, median OUT variance, and DP-SGD's epsilon where an arm has one; columns:
arms as mean ± std over seeds, then each arm minus the baseline with its standard error and
whether it exceeds the noise). It writes ``OUT/results.json`` (the aggregate, see
:func:`experiments.aggregate.aggregate`), ``OUT/table.md`` and, with ``lira_online`` among the
attacks, ``OUT/privacy_utility.png`` (held-out accuracy against LiRA TPR at 0.1% FPR, log axis).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import platform
import sys
import time
from pathlib import Path

from experiments import aggregate as agg_lib
from experiments import spec as spec_lib
from jaxsam import config as config_lib
from jaxsam.cli_options import add_set_option, add_training_options
from jaxsam.errors import JaxsamError, RunExistsError
from jaxsam.report import escape_markdown, out_accuracy


@contextlib.contextmanager
def compile_cache(path: Path | None):
    """Persists XLA compilations under ``path`` while the block runs (None: leave jax as is).

    Arms and seeds of one experiment compile the same programs again and again (a new trainer
    per run); with the cache only the first run of each shape pays. Measured on the 2-core CPU:
    a tiny digits run took 28.7 s cold and 2.8 s with the cache warm. A cache directory the
    user configured already (``JAX_COMPILATION_CACHE_DIR``) is kept.
    """
    import jax

    if path is None or jax.config.jax_compilation_cache_dir:
        yield
        return
    keys = (
        "jax_compilation_cache_dir",
        "jax_persistent_cache_min_compile_time_secs",
        "jax_persistent_cache_min_entry_size_bytes",
    )
    old = {k: getattr(jax.config, k) for k in keys}

    def reset():  # jax decides once whether a cache is in use; make it look again
        try:
            from jax._src import compilation_cache

            compilation_cache.reset_cache()
        except (ImportError, AttributeError):
            pass

    Path(path).mkdir(parents=True, exist_ok=True)
    jax.config.update(keys[0], str(path))
    jax.config.update(keys[1], 0.0)
    jax.config.update(keys[2], 0)
    reset()
    try:
        yield
    finally:
        for k, v in old.items():
            jax.config.update(k, v)
        reset()


def _train_or_reuse(cfg, out: Path, overwrite: bool, progress: bool, desc: str):
    from jaxsam import store
    from jaxsam.pipeline.study import train_and_export

    if not overwrite and store.has_run(out):
        try:
            run = store.load_run(out)
            if run.config == cfg:
                return run, False
        except JaxsamError:
            pass
    try:
        return train_and_export(cfg, out, overwrite=overwrite, progress=progress, desc=desc), True
    except RunExistsError as e:
        if not e.finished:  # interrupted earlier: continue from its checkpoint
            return train_and_export(cfg, out, resume=True, progress=progress, desc=desc), True
        return store.load_run(out), False


def _report(run, attacks: tuple[str, ...], rescore: bool) -> dict:
    """The run's report.json (scored when missing); a run with canaries is also audited
    (``jaxsam audit``'s defaults) and its ``audit.json`` joins the report as ``"audit"``."""
    from jaxsam.pipeline.score import score_run

    rep = None if rescore else run.read_json("report.json")
    if rep is None or any(a not in rep.get("attacks", {}) for a in attacks):
        rep = score_run(run, attacks=list(attacks), bootstrap=0, write=True)
    if run.config.audit.enabled:
        from jaxsam.audit.report import audit_run, write_audit

        audit = None if rescore else run.read_json("audit.json")
        if audit is None:
            audit = audit_run(run)
            write_audit(run, audit)
        rep = {**rep, "audit": audit}
    return rep


def _run_all(spec, out, arms, configs, per_seed, seconds, train, overwrite, rescore, progress, log):
    """Trains/reuses and scores every (seed, arm), filling ``per_seed`` and ``seconds``.

    Returns:
      Messages about the runs skipped (``--no-train`` with no run to tabulate).
    """
    skipped = []
    for s in spec.seeds:
        for a in arms:
            d = spec.run_dir(out, a, s)
            t0 = time.perf_counter()
            if train:
                run, trained = _train_or_reuse(
                    configs[a, s], d, overwrite, progress, desc=f"{a} seed {s}"
                )
            else:
                from jaxsam import store

                if not store.has_run(d):
                    skipped.append(
                        f"no run at {d}; skipped (--no-train only tabulates finished runs)"
                    )
                    log(skipped[-1])
                    continue
                run, trained = store.load_run(d), False
            per_seed[a][s] = _report(run, spec.attacks, rescore or trained)
            seconds[a] += time.perf_counter() - t0
            acc = out_accuracy(per_seed[a][s])
            log(f"{a} seed {s}: {'trained' if trained else 'reused'} {d} (OUT acc {acc:.4f})")
    return skipped


def run_experiment(
    spec: spec_lib.Spec,
    out: Path,
    *,
    train: bool = True,
    overwrite: bool = False,
    rescore: bool = False,
    progress: bool = True,
    cache_dir: Path | None = None,
    log=print,
) -> dict:
    """Trains (unless ``train=False``), scores and aggregates every arm x seed of ``spec``.

    Returns:
      The aggregate dict of :func:`experiments.aggregate.aggregate`, plus ``"experiment"`` (the
      spec's name, command and seeds), ``"skipped"`` (messages about runs ``--no-train`` found
      missing), ``"machine"`` and
      ``"seconds"`` ({arm: total train+score seconds}) and ``"privacy_utility"`` (the plot's
      path, with ``lira_online``). Also writes ``OUT/results.json``, ``OUT/table.md`` and
      ``OUT/privacy_utility.png``.
    """
    out = Path(out)
    arms = list(spec.arms)
    configs = {(a, s): spec.arm_config(a, s) for a in arms for s in spec.seeds}  # validate first
    per_seed: dict[str, dict[int, dict]] = {a: {} for a in arms}
    seconds: dict[str, float] = {a: 0.0 for a in arms}
    with compile_cache(cache_dir):
        skipped = _run_all(
            spec, out, arms, configs, per_seed, seconds, train, overwrite, rescore, progress, log
        )
    per_seed = {a: v for a, v in per_seed.items() if v}
    result = agg_lib.aggregate(per_seed, spec.attacks, spec.baseline)
    result["experiment"] = {
        "name": spec.name,
        "description": spec.description,
        "command": spec.command,
        "seeds": list(spec.seeds),
        "overrides": spec.overrides,
        "arms": spec.arms,
    }
    result["skipped"] = skipped
    result["seconds"] = seconds
    result["machine"] = {"platform": platform.platform(), "python": sys.version.split()[0]}
    try:
        import jax

        result["machine"]["jax_backend"] = jax.default_backend()
        result["machine"]["devices"] = [str(d) for d in jax.devices()]
    except Exception:  # noqa: BLE001 - the machine line is informative only
        pass
    out.mkdir(parents=True, exist_ok=True)
    if "lira_online" in spec.attacks:
        result["privacy_utility"] = str(_privacy_utility_plot(result, out, spec.name))
    (out / "results.json").write_text(json.dumps(result, indent=2, default=float))
    title = escape_markdown(spec.name)
    (out / "table.md").write_text(f"# {title}\n\n" + agg_lib.render_table(result))
    return result


def _privacy_utility_plot(result: dict, out: Path, name: str) -> Path:
    """``OUT/privacy_utility.png``: each arm's held-out accuracy against its LiRA online TPR at
    0.1% FPR (log axis), with std-over-seeds error bars."""
    from jaxsam import plots

    points = agg_lib.privacy_utility_points(result)
    y_key = next(iter(points.values()))["y_key"]
    y_label = "held-out accuracy" if y_key == "heldout_accuracy" else "OUT (pool) accuracy"
    return plots.plot_privacy_utility(
        points, out / "privacy_utility.png", f"{name}: privacy vs utility", y_label=y_label
    )


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m experiments.run", description=__doc__.split("\n\n")[0]
    )
    p.add_argument("spec", type=Path, help="experiment spec, e.g. experiments/configs/*.json")
    p.add_argument("--out", type=Path, help="experiment directory (default: runs/exp/NAME)")
    p.add_argument("--seeds", help="comma-separated seeds (default: the spec's)")
    p.add_argument("--arms", help="comma-separated arms (the baseline is kept too)")
    p.add_argument(
        "--no-baseline",
        action="store_true",
        help="with --arms: run only those arms (no baseline, no difference columns)",
    )
    add_set_option(p, "config override for every arm, e.g. --set train.epochs=5 (repeatable)")
    p.add_argument("--no-train", action="store_true", help="only tabulate finished runs")
    add_training_options(p, "retrain runs that exist")  # --overwrite, --no-progress
    p.add_argument("--rescore", action="store_true", help="rescore runs that have a report")
    p.add_argument(
        "--compile-cache",
        type=Path,
        default=Path("runs/exp/.jax_cache"),
        help="persistent XLA compilation cache shared by runs (default: runs/exp/.jax_cache)",
    )
    p.add_argument("--no-compile-cache", action="store_true", help="compile every run afresh")
    p.add_argument(
        "--write-configs",
        type=Path,
        metavar="DIR",
        help="write each arm's full config at the first seed to DIR/ARM.json (for jaxsam train "
        "--config) and exit",
    )
    return p


def write_arm_configs(spec: spec_lib.Spec, out_dir: Path) -> list[Path]:
    """Writes ``out_dir/<arm slug>.json``: each arm's full config at the spec's first seed.

    The files are what ``jaxsam train --config FILE`` reads, so one arm of a study can be trained
    (or inspected) on its own; the spec stays the single source of truth.
    """
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = []
    for arm in spec.arms:
        path = out_dir / f"{spec_lib.slug(arm)}.json"
        data = config_lib.to_dict(spec.arm_config(arm, spec.seeds[0]))
        path.write_text(json.dumps(data, indent=2) + "\n")
        paths.append(path)
    return paths


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point; returns the exit status."""
    args = build_parser().parse_args(argv)
    try:
        spec = spec_lib.load(args.spec)
        seeds = tuple(int(s) for s in args.seeds.split(",")) if args.seeds else None
        arms = [a.strip() for a in args.arms.split(",")] if args.arms else None
        spec = spec_lib.with_overrides(
            spec, spec_lib.parse_sets(args.set), seeds, arms, keep_baseline=not args.no_baseline
        )
        if args.write_configs is not None:
            for path in write_arm_configs(spec, args.write_configs):
                print(f"wrote {path}")
            return 0
        out = args.out or Path("runs/exp") / spec.name
        t0 = time.perf_counter()
        result = run_experiment(
            spec,
            out,
            train=not args.no_train,
            overwrite=args.overwrite,
            rescore=args.rescore,
            progress=not args.no_progress,
            cache_dir=None if args.no_compile_cache else args.compile_cache,
        )
    except JaxsamError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print()
    print(f"# {spec.name}: {spec.description}")
    print(agg_lib.render_table(result, markdown=False))
    print(f"wrote {out / 'results.json'} and {out / 'table.md'}")
    if result.get("privacy_utility"):
        print(f"wrote {result['privacy_utility']}")
    print(f"total time: {time.perf_counter() - t0:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
