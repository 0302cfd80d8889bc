"""``jaxsam`` command line: demo / train / score / audit / compare / analyze / bench / plan /
status / import-logits.

Each subcommand lives in ``jaxsam.commands.<name>`` with ``add_parser(subparsers)`` and
``run(args) -> int``. Bad input (a :class:`jaxsam.errors.JaxsamError`) is printed on one line,
without a traceback, and exits with status 2; so is a write that fails because the disk is full,
read-only or forbidden (an ``OSError`` with ``ENOSPC``, ``EDQUOT``, ``EROFS``, ``EACCES`` or
``EPERM``). A reader that closes the pipe early (``jaxsam compare ... | head``) ends the
command quietly with status 141 (128 + SIGPIPE). Any other exception is a bug and keeps its
traceback.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys

from jaxsam import __version__
from jaxsam.cli_options import tidy
from jaxsam.errors import Interrupted, JaxsamError, WriteFailed, command_line

COMMANDS = (
    "demo",
    "train",
    "score",
    "audit",
    "compare",
    "analyze",
    "bench",
    "plan",
    "status",
    "prepare",
    "wave",
    "import_logits",
    "config",
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="jaxsam",
        description="Membership-inference audits of training recipes (SGD vs SAM) with many "
        "shadow models trained at once.",
    )
    parser.add_argument("--version", action="version", version=f"jaxsam {__version__}")
    sub = parser.add_subparsers(
        dest="command",
        metavar="COMMAND",
        required=True,
        help="what to do (COMMAND --help for its options)",
    )
    for name in COMMANDS:
        importlib.import_module(f"jaxsam.commands.{name}").add_parser(sub)
    return tidy(parser)  # no RST markup in --help; defaults shown


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        with command_line():  # messages name --flags, not keyword arguments
            status = int(args.func(args) or 0)
            sys.stdout.flush()  # a closed pipe shows here, not at the interpreter's exit
            return status
    except BrokenPipeError:  # e.g. `jaxsam compare ... | head`: the reader has gone
        return _quiet_broken_pipe()
    except JaxsamError as e:
        line = f"jaxsam {args.command}: error: {e}"
        if isinstance(e, WriteFailed):
            _exit_before_threads_report(line)
        print(line, file=sys.stderr)
        return 2
    except OSError as e:  # a full, read-only or forbidden disk: one line, like bad input
        from jaxsam.store import write_problem

        problem = write_problem(e)
        if problem is None:
            raise
        where = f" {e.filename}" if e.filename else ""
        line = f"jaxsam {args.command}: error: cannot write{where}: {problem}"
        _exit_before_threads_report(line)
        print(line, file=sys.stderr)
        return 2
    except Interrupted as e:
        print(f"jaxsam {args.command}: {e}", file=sys.stderr)
        return 128 + e.signum
    except KeyboardInterrupt:
        print(f"jaxsam {args.command}: interrupted; finished work is kept", file=sys.stderr)
        return 130


def _quiet_broken_pipe() -> int:
    """Ends a command whose stdout reader closed the pipe, quietly, with 128 + SIGPIPE.

    stdout is pointed at /dev/null first, so the interpreter's final flush of the unwritten
    output cannot raise the error again at exit.
    """
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError):  # stdout is not a file descriptor (captured)
        pass
    finally:
        os.close(devnull)
    return 141


# The name prefix of the compiled kernels' helper threads (``jaxsam.attacks._pool``), which
# stay alive, idle, between passes and have nothing to report.
KERNEL_HELPERS = "jaxsam-kernels"


def _exit_before_threads_report(line: str) -> None:
    """Prints ``line`` and ends the process with status 2 at once when other threads are alive:
    those of a failed asynchronous write would otherwise print their tracebacks, at shutdown or
    while the line is written. Standard error is pointed at /dev/null first (the line goes to
    a copy of it), so no other thread's output can come before or after the one line."""
    import threading

    others = [
        t
        for t in threading.enumerate()
        if t is not threading.main_thread() and not t.name.startswith(KERNEL_HELPERS)
    ]
    if not others:  # the kernels' idle helper threads print nothing
        return
    sys.stdout.flush()
    sys.stderr.flush()
    try:
        err = os.dup(2)
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, 2)
        os.write(err, (line + "\n").encode())
    except OSError:  # no file descriptor 2: say it the ordinary way
        print(line, file=sys.stderr)
        sys.stderr.flush()
    os._exit(2)


if __name__ == "__main__":
    sys.exit(main())
