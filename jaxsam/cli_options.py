"""Command-line options that several ``jaxsam`` commands share (one definition each)."""

from __future__ import annotations

import argparse
import re


def add_no_verify_option(parser: argparse.ArgumentParser) -> None:
    """``--no-verify``: read run directories whose files differ from their recorded digests.

    Commands pass ``verify=not args.no_verify`` to :func:`jaxsam.store.load_run`.
    """
    parser.add_argument(
        "--no-verify",
        action="store_true",
        help="read runs whose files differ from the digests recorded when they finished",
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
