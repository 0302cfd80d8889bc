"""Command-line options that several ``jaxsam`` commands share (one definition each)."""

from __future__ import annotations

import argparse
import json
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

from jaxsam.errors import ConfigError

SET_HELP = "override a config value, e.g. --set optim.name=sam (JSON values)"


def command(
    subparsers,
    name: str,
    summary: str,
    description: str | None,
    *,
    run: Callable[[argparse.Namespace], int],
    **kwargs: Any,
) -> argparse.ArgumentParser:
    """The parser of subcommand ``name``, which runs ``run(args)`` (its exit status): ``summary``
    in ``jaxsam --help``, ``description`` in its own ``--help`` (``kwargs``: further
    ``add_parser`` arguments). Every command is wired this one way."""
    parser = subparsers.add_parser(name, help=summary, description=description, **kwargs)
    parser.set_defaults(func=run)
    return parser


def add_no_verify_option(parser: argparse.ArgumentParser) -> None:
    """``--no-verify``: read run directories whose files differ from their recorded digests.

    Commands pass ``verify=not args.no_verify`` to :func:`jaxsam.store.load_run`.
    """
    parser.add_argument(
        "--no-verify",
        action="store_true",
        help="read runs whose files differ from the digests recorded when they finished",
    )


def add_training_options(
    parser: argparse.ArgumentParser, overwrite_help: str = "replace an existing run"
) -> None:
    """``--overwrite`` and ``--no-progress``, the switches of every command that trains a run;
    read the second with :func:`progress`."""
    parser.add_argument("--overwrite", action="store_true", help=overwrite_help)
    parser.add_argument("--no-progress", action="store_true", help="hide the progress bar")


def progress(args: argparse.Namespace) -> bool | None:
    """``--no-progress`` as the ``progress`` argument of the training functions: False hides the
    bar, None leaves it to the config's ``train.progress``."""
    return False if getattr(args, "no_progress", False) else None


def add_wave_size_option(parser: argparse.ArgumentParser) -> None:
    """``--wave-size K``: train the study in waves of K models (``wave_size`` of
    :func:`jaxsam.pipeline.waves.train_study`)."""
    parser.add_argument(
        "--wave-size",
        type=int,
        metavar="K",
        help="train the study in waves of K models into the one run directory (default: all "
        "models at once)",
    )


def add_set_option(parser: argparse.ArgumentParser, help: str = "override a config value") -> None:
    """Adds the repeatable ``--set KEY=VALUE`` option; read it with :func:`parse_assignments`."""
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help=help)


def parse_assignments(items: list[str]) -> dict[str, Any]:
    """``["optim.rho=0.1", "data.pool_size=null"]`` -> ``{"optim.rho": 0.1, ...}``.

    Values are JSON where they parse (``1``, ``0.5``, ``null``, ``true``), else strings. This is
    the ``--set KEY=VALUE`` syntax of every command that takes config overrides.
    """
    out: dict[str, Any] = {}
    for item in items:
        key, sep, raw = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"--set {item!r} is not KEY=VALUE; write e.g. --set optim.rho=0.1")
        try:
            out[key.strip()] = json.loads(raw)
        except json.JSONDecodeError:
            out[key.strip()] = raw
        except (ValueError, RecursionError) as e:  # e.g. an integer of more than 4,300 digits
            raise ConfigError(
                f"--set {key.strip()}=... cannot be read ({str(e).split(';')[0]}); pass a "
                "smaller value"
            ) from e
    return out


def add_config_options(
    parser: argparse.ArgumentParser,
    config_help: str = "JSON config file (default: the built-in one)",
    set_help: str = SET_HELP,
) -> None:
    """``--config FILE`` and the repeatable ``--set KEY=VALUE``; read them with
    :func:`load_config`."""
    parser.add_argument("--config", type=Path, help=config_help)
    add_set_option(parser, set_help)


def load_config(path: Path | None, assignments: list[str] | None = None):
    """The config a command runs: ``path``'s (the defaults when None), then the ``--set``
    ``assignments`` applied; checked whole (:func:`jaxsam.plan.check_config`)."""
    from jaxsam import config as config_lib
    from jaxsam.plan import check_config

    cfg = config_lib.load(path) if path is not None else config_lib.Config()
    if assignments:
        cfg = config_lib.replace(cfg, **parse_assignments(assignments))
    return check_config(cfg)


def add_distributed_options(parser: argparse.ArgumentParser) -> None:
    """Adds ``--distributed``, ``--coordinator``, ``--num-processes``, ``--process-id``; pass
    them on with :func:`initialize_distributed`."""
    from jaxsam.train.distributed import ENV_FLAG

    g = parser.add_argument_group("multi-host (jax.distributed)")
    g.add_argument(
        "--distributed",
        action="store_true",
        help="call jax.distributed.initialize() first (SLURM / TPU VM settings are read from "
        f"the environment); same as {ENV_FLAG}=1",
    )
    g.add_argument("--coordinator", help="HOST:PORT of process 0 (default: from the cluster)")
    g.add_argument("--num-processes", type=int, help="number of processes (default: cluster)")
    g.add_argument("--process-id", type=int, help="this process's index (default: cluster)")


def initialize_distributed(args: argparse.Namespace) -> bool:
    """:func:`jaxsam.train.distributed.maybe_initialize_distributed` with the options of
    :func:`add_distributed_options`; returns whether ``jax.distributed`` is up."""
    from jaxsam.train.distributed import maybe_initialize_distributed

    return maybe_initialize_distributed(
        bool(getattr(args, "distributed", False)),
        coordinator=getattr(args, "coordinator", None),
        num_processes=getattr(args, "num_processes", None),
        process_id=getattr(args, "process_id", None),
    )


_ROLE = re.compile(r":(?:func|class|mod|data|meth|attr|exc|obj|ref):`~?([^`]+)`")


def plain(text: str | None) -> str | None:
    """``text`` without reStructuredText markup, for ``--help``.

    ``:func:`jaxsam.x.f``` becomes ``jaxsam.x.f``, ````code```` becomes ``code``; the
    docstrings that serve as descriptions keep their markup for the API docs.
    """
    if not text:
        return text
    text = _ROLE.sub(
        lambda m: m.group(1).rsplit(".", 1)[-1] if "~" in m.group(0) else m.group(1), text
    )
    return text.replace("``", "")


def shows_default(default: object) -> bool:
    """Whether ``--help`` should state ``default`` (not None, False, an empty list)."""
    trivial = default is None or default is False or default is argparse.SUPPRESS
    return not trivial and default != []


class HelpFormatter(argparse.HelpFormatter):
    """Appends ``(default: X)`` to an option's help when its default is worth showing
    (:func:`shows_default`) and the help does not already state one."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        if action.option_strings and shows_default(action.default) and "default" not in text:
            text += " (default: %(default)s)"
        return text


class RawDescriptionFormatter(HelpFormatter, argparse.RawDescriptionHelpFormatter):
    """:class:`HelpFormatter` keeping the description's line breaks (usage examples)."""


def tidy(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """Applies :class:`HelpFormatter` and :func:`plain` to ``parser`` and all its subparsers
    (descriptions, help strings and the subcommand list), in place; returns ``parser``."""
    raw = issubclass(parser.formatter_class, argparse.RawDescriptionHelpFormatter)
    parser.formatter_class = RawDescriptionFormatter if raw else HelpFormatter
    parser.description = plain(parser.description)
    parser.epilog = plain(parser.epilog)
    for action in parser._actions:
        action.help = plain(action.help)
        if isinstance(action, argparse._SubParsersAction):
            for choice in action._choices_actions:
                choice.help = plain(choice.help)
            for sub in set(action.choices.values()):
                tidy(sub)
    return parser
