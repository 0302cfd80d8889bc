"""Fills the ``{{KEY}}`` placeholders of a launch template (e.g. the SLURM sbatch file).

    python launch/render.py launch/slurm_multinode.sbatch NODES=4 GPUS_PER_NODE=8 \\
        CONFIG=study.json RUN_DIR=/shared/runs/study WAVE_SIZE=256 > study.sbatch

Placeholders without a value on the command line take the defaults below; one with neither is
an error that names it.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

DEFAULTS = {
    "JOB_NAME": "jaxsam",
    "CPUS_PER_TASK": "8",
    "TIME": "24:00:00",
    "LOG_DIR": ".",
}
PLACEHOLDER = re.compile(r"\{\{([A-Z_]+)\}\}")


def placeholders(text: str) -> list[str]:
    """The placeholder names in ``text``, in order of first appearance."""
    return list(dict.fromkeys(PLACEHOLDER.findall(text)))


def render(text: str, values: dict[str, str]) -> str:
    """Replaces every ``{{KEY}}``; raises ``KeyError`` naming a placeholder with no value."""
    merged = {**DEFAULTS, **values}
    missing = [k for k in placeholders(text) if k not in merged]
    if missing:
        raise KeyError(f"no value for {', '.join(missing)}: pass KEY=VALUE for each")
    return PLACEHOLDER.sub(lambda m: str(merged[m.group(1)]), text)


def main(argv: list[str]) -> int:
    if not argv:
        print(__doc__, file=sys.stderr)
        return 2
    template, *pairs = argv
    values = dict(p.split("=", 1) for p in pairs)
    try:
        sys.stdout.write(render(Path(template).read_text(), values))
    except KeyError as e:
        print(f"render.py: {e.args[0]}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
