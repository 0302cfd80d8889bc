"""Every config key with its default and meaning, read from the config dataclasses themselves.

The meanings are the ``Attributes:`` sections of the dataclass docstrings in
:mod:`jaxsam.config`, so ``jaxsam config --keys`` and docs/config.md (generated from
:func:`keys_markdown`; a test checks it is current) cannot drift from the code.
"""

from __future__ import annotations

import dataclasses
import json
import re
import textwrap
from typing import Any

from jaxsam import config as config_lib

_ATTR = re.compile(r"^(\w+): ?(.*)$")
_ROLE = re.compile(r":(?:func|class|mod|data|meth|attr|exc|obj|ref):`~?([^`]+)`")


def _attribute_docs(cls: type) -> dict[str, str]:
    """``name -> meaning`` from the ``Attributes:`` section of ``cls``'s docstring."""
    doc = textwrap.dedent("\n".join((cls.__doc__ or "").splitlines()[1:]))
    lines = doc.split("Attributes:", 1)[1].splitlines() if "Attributes:" in doc else []
    out: dict[str, str] = {}
    current, out_indent = None, 0
    for line in lines:
        if not line.strip():
            continue
        stripped = line.strip()
        indent = len(line) - len(line.lstrip())
        m = _ATTR.match(stripped)
        if m and (current is None or indent <= out_indent):
            current, out_indent = m.group(1), indent
            out[current] = m.group(2)
        elif current is not None:
            out[current] += " " + stripped
    return {k: _ROLE.sub(r"``\1``", " ".join(v.split())) for k, v in out.items()}


def keys(cls: type = config_lib.Config, prefix: str = "") -> list[tuple[str, Any, str]]:
    """``(dotted key, default, meaning)`` for every leaf key of the config tree, in order."""
    docs = _attribute_docs(cls)
    defaults = cls()
    out = []
    for f in dataclasses.fields(cls):
        value = getattr(defaults, f.name)
        if dataclasses.is_dataclass(value):
            out += keys(type(value), f"{prefix}{f.name}.")
        else:
            out.append((f"{prefix}{f.name}", value, docs.get(f.name, "")))
    return out


def keys_markdown() -> str:
    """The key reference as Markdown: one table per section (docs/config.md)."""
    out = [
        "# Config keys",
        "",
        "Every key of a jaxsam config with its default and meaning. A config file is JSON with "
        "these sections; `--set KEY=VALUE` overrides one key (JSON values: `--set "
        "data.pool_size=null`), and `jaxsam config [--config FILE] [--set ...]` prints the "
        "resolved config with every key. This page is generated from the config dataclasses "
        "(`jaxsam config --keys`); a test checks it is current.",
    ]
    section = None
    for key, default, meaning in keys():
        top = key.rsplit(".", 1)[0] if "." in key else "(top level)"
        if top != section:
            section = top
            out += ["", f"## {section}", "", "| key | default | meaning |", "|---|---|---|"]
        text = meaning.replace("|", "\\|").replace("``", "`")
        out.append(f"| `{key}` | `{json.dumps(default)}` | {text} |")
    return "\n".join(out) + "\n"
