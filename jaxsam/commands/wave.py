"""``jaxsam wave init|train|finalize|run``: a study trained as waves into one run directory.

    jaxsam wave init --config study.json --out RUN          # config + masks [M, N], once
    jaxsam wave train RUN --models 0:64                     # one wave (any order, any host)
    jaxsam wave train RUN --wave-size 64 --index 3          # job-array style: models 192:256
    jaxsam wave finalize RUN                                # logits [M, N, A, C], COMPLETE
    jaxsam wave run --config study.json --out RUN --wave-size 64   # all of the above
    jaxsam status RUN                                       # what is done

Add ``--distributed`` to ``train`` / ``run`` under srun or on every TPU-VM worker: each wave
is then split over all processes.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from jaxsam.cli_options import (
    add_config_options,
    add_distributed_options,
    add_training_options,
    add_wave_size_option,
    command,
    initialize_distributed,
    load_config,
)
from jaxsam.cli_options import progress as cli_progress
from jaxsam.errors import ConfigError, JaxsamError, command_line

HELP = "train a study bigger than the hardware as waves of models into one run directory"


def add_parser(subparsers) -> None:
    p = command(
        subparsers,
        "wave",
        HELP,
        __doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        run=run,
    )
    _fill(p)


def _fill(p: argparse.ArgumentParser) -> None:
    sub = p.add_subparsers(
        dest="wave_command", metavar="STEP", required=True, help="init, train, finalize or run"
    )
    init = sub.add_parser("init", help="write the config, the full masks and the run header")
    add_config_options(init)
    init.add_argument("--out", type=Path, required=True, help="run directory to create")
    init.add_argument("--overwrite", action="store_true", help="replace an existing run")

    train = sub.add_parser("train", help="train one wave and write its logits")
    train.add_argument("run_dir", type=Path, metavar="RUN", help="the run made by wave init")
    train.add_argument("--models", metavar="A:B", help="global model range of the wave")
    train.add_argument("--wave-size", type=int, help="with --index: wave INDEX of this size")
    train.add_argument(
        "--index",
        type=int,
        help="wave number (default: $SLURM_ARRAY_TASK_ID), used with --wave-size",
    )
    train.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    add_distributed_options(train)

    fin = sub.add_parser("finalize", help="assemble all waves' logits and mark the run complete")
    fin.add_argument("run_dir", type=Path, metavar="RUN", help="the run whose waves are done")
    fin.add_argument("--drop-waves", action="store_true", help="delete RUN/waves/* once assembled")

    allp = sub.add_parser("run", help="init, train every missing wave, finalize")
    add_config_options(allp)
    allp.add_argument("--out", type=Path, required=True, help="run directory")
    add_wave_size_option(allp)
    add_training_options(allp)
    add_distributed_options(allp)


def _train_range(args: argparse.Namespace, num_models: int) -> tuple[int, int]:
    from jaxsam.pipeline.waves import parse_range, wave_ranges

    if args.models:
        return parse_range(args.models, num_models)
    if args.wave_size:
        index = args.index
        if index is None and os.environ.get("SLURM_ARRAY_TASK_ID"):
            index = int(os.environ["SLURM_ARRAY_TASK_ID"])
        ranges = wave_ranges(num_models, args.wave_size)
        if index is None or not 0 <= index < len(ranges):
            raise ConfigError(
                f"--wave-size {args.wave_size} makes {len(ranges)} waves; pass --index in "
                f"0..{len(ranges) - 1} (or run as a SLURM array job)"
            )
        return ranges[index]
    raise ConfigError("jaxsam wave train needs --models A:B, or --wave-size K --index I")


def run(args: argparse.Namespace) -> int:
    from jaxsam.pipeline import waves
    from jaxsam.train import distributed as dist

    progress = cli_progress(args)
    step = args.wave_command
    if step == "init":
        cfg = load_config(args.config, args.set)
        study = waves.init_study(cfg, args.out, overwrite=args.overwrite)
        print(
            f"{study.path}: {study.num_models} models x {study.keep.shape[1]} examples; "
            "masks written"
        )
        return 0
    if step == "finalize":
        result = waves.finalize(args.run_dir, keep_waves=not args.drop_waves)
        print(f"{result.path}: complete, logits {list(result.logits.shape)}")
        return 0
    initialize_distributed(args)
    if step == "train":
        study = waves.open_study(args.run_dir)
        a, b = _train_range(args, study.num_models)
        info = waves.train_wave(args.run_dir, a, b, progress=progress, study=study)
        if dist.process_index() == 0 and info.get("skipped"):
            print(
                f"{args.run_dir}: wave {a}:{b} skipped: already done (finished at "
                f"{info.get('finished_at', '?')}); `jaxsam status {args.run_dir}` shows the rest"
            )
        elif dist.process_index() == 0:
            print(
                f"{args.run_dir}: wave {a}:{b} done in {info['train_seconds']:.1f} s "
                f"({info['processes']} process(es)); `jaxsam status {args.run_dir}` shows the rest"
            )
        return 0
    result = waves.train_study(
        load_config(args.config, args.set),
        args.out,
        wave_size=args.wave_size,
        overwrite=args.overwrite,
        progress=progress,
    )
    if result is not None:
        print(f"{result.path}: complete, logits {list(result.logits.shape)}")
    elif dist.process_index() == 0:
        print(f"{args.out}: complete; `jaxsam status {args.out}` shows it")
    return 0


def main(argv: list[str] | None = None) -> int:
    """Standalone entry (``python -m jaxsam.commands.wave STEP ...``)."""
    parser = argparse.ArgumentParser(prog="jaxsam wave", description=__doc__)
    _fill(parser)
    from jaxsam.cli_options import tidy

    args = tidy(parser).parse_args(argv)
    try:
        with command_line():
            return run(args)
    except JaxsamError as e:
        print(f"jaxsam wave: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
