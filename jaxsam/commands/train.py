"""``jaxsam train --config FILE --out RUN`` and ``jaxsam train --resume RUN``."""

from __future__ import annotations

import argparse
from pathlib import Path

from jaxsam import store
from jaxsam.cli_options import (
    SET_HELP,
    add_distributed_options,
    add_set_option,
    add_training_options,
    add_wave_size_option,
    command,
    initialize_distributed,
    load_config,
)
from jaxsam.cli_options import progress as cli_progress
from jaxsam.errors import ConfigError

HELP = "train M shadow models and write their logits into a run directory"
DESCRIPTION = """\
Train the ensemble a config describes and write masks, logits and metrics to RUN. The
config.json a run writes can be passed back as --config to reproduce it."""


def add_parser(subparsers) -> None:
    p = command(subparsers, "train", HELP, DESCRIPTION, run=run)
    p.add_argument("--config", type=Path, help="JSON config file (e.g. another run's config.json)")
    p.add_argument("--out", type=Path, help="run directory to create")
    p.add_argument(
        "--resume",
        type=Path,
        metavar="RUN",
        help="continue the unfinished run RUN from its last complete checkpoint",
    )
    add_set_option(p, SET_HELP)
    add_training_options(p, "replace an existing run in --out")
    add_wave_size_option(p)
    add_distributed_options(p)


def _check_resume_options(args: argparse.Namespace) -> None:
    """Refuses the options that ``--resume`` would otherwise ignore without a word."""
    if args.overwrite:
        raise ConfigError(
            f"--resume {args.resume} continues that run and --overwrite would start it over; "
            "drop one of them"
        )
    waves = [
        flag
        for flag, given in (
            ("--wave-size", args.wave_size),
            ("--distributed", args.distributed),
            ("--coordinator", args.coordinator is not None),
            ("--num-processes", args.num_processes is not None),
            ("--process-id", args.process_id is not None),
        )
        if given
    ]
    if waves:
        raise ConfigError(
            f"--resume continues a run trained in one piece in one process, so {waves[0]} "
            "would be ignored; a study trained in waves (or by several processes) continues "
            f"wave by wave: `jaxsam status {args.resume}` prints the commands"
        )


def run(args: argparse.Namespace) -> int:
    from jaxsam.pipeline.study import train_and_export

    progress = cli_progress(args)
    if args.resume is not None:
        if args.config is not None or args.set:
            raise ConfigError("--resume takes the config stored in the run; drop --config/--set")
        if args.out is not None and args.out.resolve() != args.resume.resolve():
            raise ConfigError(
                f"--resume {args.resume} continues that run in place and writes nothing to "
                f"--out {args.out}; drop --out (or copy the run there first and resume the copy)"
            )
        _check_resume_options(args)
        if not args.resume.is_dir():
            raise ConfigError(f"--resume {args.resume}: no such directory; pass a run directory")
        store.require_run_path(args.resume)
        cfg = store.read_config(args.resume)
        run = train_and_export(cfg, args.resume, resume=True, progress=progress)
    else:
        if args.out is None:
            raise ConfigError("jaxsam train needs --out RUN (or --resume RUN)")
        cfg = load_config(args.config, args.set)
        if initialize_distributed(args) or args.wave_size:
            from jaxsam.pipeline.waves import train_study

            run = train_study(
                cfg, args.out, wave_size=args.wave_size, overwrite=args.overwrite, progress=progress
            )
            if run is None:  # multi-process: finished and finalized by process 0
                return 0
        else:
            run = train_and_export(cfg, args.out, overwrite=args.overwrite, progress=progress)
    m = run.metrics

    def acc(key: str) -> str:
        return "-" if m.get(key) is None else f"{m[key]:.4f}"

    print(
        f"{run.path}: {run.keep.shape[0]} models, train acc {acc('mean_train_accuracy')}, "
        f"OUT (pool non-member) acc {acc('mean_out_accuracy')}, "
        f"held-out acc {acc('mean_heldout_accuracy')}, logits {list(run.logits.shape)}"
    )
    from jaxsam.report_text import dp_words

    if dp_words(run.info.get("dp")):  # a DP-SGD run: its guarantee, as run.json records it
        print(f"{run.path}: {dp_words(run.info['dp'])}")
    return 0
