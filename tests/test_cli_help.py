"""``--help`` of every command and benchmark: plain text, defaults shown, no option undocumented.

Walks the parser of every ``jaxsam`` subcommand (and ``wave`` step) and of every
``jaxsam bench NAME``; each must render without reStructuredText markup (````code````,
``:func:`...``` roles), give every argument a help text, and show every non-trivial default.
"""

import argparse
import re

import pytest

from jaxsam import cli
from jaxsam.commands.bench import BENCHMARKS, MODULES

RST = re.compile(r"``|:(func|class|mod|data|meth|attr|exc|obj|ref):`")


class _Captured(Exception):
    def __init__(self, parser):
        self.parser = parser


def _walk(name: str, parser: argparse.ArgumentParser):
    yield name, parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sub_name, sub in action.choices.items():
                yield from _walk(f"{name} {sub_name}", sub)


def _bench_parser(name: str, monkeypatch) -> argparse.ArgumentParser:
    """The parser ``jaxsam bench NAME`` builds (caught at its ``parse_args``)."""
    import importlib

    def catch(self, *args, **kwargs):
        raise _Captured(self)

    module = importlib.import_module(f"jaxsam.bench.{MODULES.get(name, name)}")
    with monkeypatch.context() as m:
        m.setattr(argparse.ArgumentParser, "parse_args", catch)
        with pytest.raises(_Captured) as caught:
            module.run([])
    return caught.value.parser


def _parsers(monkeypatch):
    yield from _walk("jaxsam", cli.build_parser())
    for name in BENCHMARKS:
        yield f"jaxsam bench {name}", _bench_parser(name, monkeypatch)


def _problems(name: str, parser: argparse.ArgumentParser) -> list[str]:
    out = []
    text = parser.format_help()
    if RST.search(text):
        out.append(f"{name}: RST markup in --help: {RST.search(text).group(0)!r}")
    formatter = parser._get_formatter()
    for action in parser._actions:
        if isinstance(action, argparse._HelpAction | argparse._VersionAction):
            continue
        label = "/".join(action.option_strings) or action.dest
        if not (action.help or "").strip():
            out.append(f"{name}: {label} has no help")
            continue
        default = action.default
        trivial = default is None or default is False or default is argparse.SUPPRESS
        if (
            action.option_strings
            and not trivial
            and default != []
            and "default" not in formatter._get_help_string(action)
        ):
            out.append(f"{name}: {label} does not show its default {default!r}")
    return out


def test_every_parser_is_plain_documented_and_shows_defaults(monkeypatch):
    seen, problems = [], []
    for name, parser in _parsers(monkeypatch):
        seen.append(name)
        problems += _problems(name, parser)
    assert {"jaxsam train", "jaxsam wave train", "jaxsam bench faults"} <= set(seen)
    assert not problems, "\n".join(problems)


def test_the_check_catches_markup_missing_help_and_hidden_defaults():
    p = argparse.ArgumentParser(description="uses ``code`` and :func:`f`")
    p.add_argument("--n", type=int, default=3, help="a number")
    p.add_argument("--seed", type=int, default=0, help="a seed")
    p.add_argument("--quiet", action="store_true")
    found = "\n".join(_problems("x", p))
    assert "RST markup" in found and "--quiet has no help" in found
    assert "--n does not show its default 3" in found
    assert "--seed does not show its default 0" in found
