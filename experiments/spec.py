"""Experiment specs: one JSON file per experiment under ``experiments/configs/``.

A spec names a base set of config overrides shared by every arm, the arms (each a few more
overrides, e.g. ``optim.name``), the baseline arm, the seeds and the attacks shown in the table::

    {
      "description": "what the experiment tests",
      "command": "python -m experiments.run experiments/configs/NAME.json",
      "expected": "what the command prints and the claim it checks",
      "set": {"data.dataset": "digits", "masks.models": 32, "train.epochs": 30},
      "arms": {"SGD": {"optim.name": "sgd"}, "SAM": {"optim.name": "sam"}},
      "baseline": "SGD",
      "seeds": [0, 1, 2],
      "attacks": ["lira_online", "lira_offline", "rmia", "loss"]
    }

Keys are dotted paths of :class:`jaxsam.config.Config`. Seed ``s`` sets ``masks.seed`` and
``train.seed`` to ``s`` in every arm (so arms are paired per seed: same masks, same initial
keys); ``data.seed`` (the pool subsample) stays as the spec sets it, so all seeds share one pool.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from pathlib import Path

from jaxsam import config as config_lib
from jaxsam.errors import ConfigError, read_json_file

DEFAULT_ATTACKS = ("lira_online", "lira_offline", "rmia", "loss")
_KEYS = {
    "description",
    "command",
    "expected",
    "notes",
    "set",
    "arms",
    "baseline",
    "seeds",
    "attacks",
}


@dataclasses.dataclass(frozen=True)
class Spec:
    """A parsed experiment spec (see the module docstring)."""

    name: str
    description: str
    command: str
    expected: str
    overrides: dict
    arms: dict[str, dict]
    baseline: str
    seeds: tuple[int, ...]
    attacks: tuple[str, ...]

    def arm_config(self, arm: str, seed: int) -> config_lib.Config:
        """The full, validated config of ``arm`` at ``seed``."""
        over = {**self.overrides, **self.arms[arm], "masks.seed": seed, "train.seed": seed}
        return config_lib.replace(config_lib.Config(), **over)

    def run_dir(self, out: Path, arm: str, seed: int) -> Path:
        """Where the run of ``arm`` at ``seed`` lives under the experiment directory ``out``."""
        return Path(out) / f"seed{seed}" / slug(arm)


def slug(name: str) -> str:
    """A directory-safe lower-case form of an arm name (``rho=0.1`` -> ``rho_0.1``)."""
    return "".join(c if (c.isalnum() or c in ".-") else "_" for c in name.lower())


def parse_sets(items: list[str]) -> dict:
    """``["train.epochs=1", ...]`` -> ``{"train.epochs": 1, ...}`` (jaxsam's ``--set`` syntax)."""
    from jaxsam.cli_options import parse_assignments

    return parse_assignments(items)


def from_dict(data: Mapping, name: str) -> Spec:
    """Builds and checks a :class:`Spec` (every arm's config is validated at seed 0)."""
    unknown = sorted(set(data) - _KEYS)
    if unknown:
        raise ConfigError(
            f"experiment {name}: unknown key {unknown[0]!r}; allowed: {sorted(_KEYS)}"
        )
    arms = data.get("arms")
    if not isinstance(arms, Mapping) or not arms:
        raise ConfigError(f"experiment {name}: 'arms' must map arm names to overrides")
    baseline = data.get("baseline", next(iter(arms)))
    if baseline not in arms:
        raise ConfigError(f"experiment {name}: baseline {baseline!r} is not an arm of {list(arms)}")
    seeds = tuple(int(s) for s in data.get("seeds", [0]))
    if not seeds or len(set(seeds)) != len(seeds):
        raise ConfigError(f"experiment {name}: 'seeds' must be distinct integers, got {seeds}")
    slugs = [slug(a) for a in arms]
    if len(set(slugs)) != len(slugs):
        raise ConfigError(f"experiment {name}: arm names {list(arms)} collide as directories")
    return Spec(
        name=name,
        description=str(data.get("description", "")),
        command=str(data.get("command", "")),
        expected=str(data.get("expected", "")),
        overrides=dict(data.get("set", {})),
        arms={str(k): dict(v) for k, v in arms.items()},
        baseline=str(baseline),
        seeds=seeds,
        attacks=tuple(data.get("attacks", DEFAULT_ATTACKS)),
    )


def load(path: str | Path) -> Spec:
    """Reads an experiment spec file."""
    data = read_json_file(path, "experiment spec", "see experiments/configs/")
    return from_dict(data, Path(path).stem)


def with_overrides(
    spec: Spec,
    sets: Mapping | None = None,
    seeds: tuple[int, ...] | None = None,
    arms: list[str] | None = None,
    keep_baseline: bool = True,
) -> Spec:
    """``spec`` with extra overrides for every arm, other seeds, or a subset of arms.

    ``arms`` keeps the spec's baseline arm too unless ``keep_baseline=False``; then the first
    arm kept becomes the baseline (a table of those arms alone, e.g. one arm trained on a
    machine whose time allows no more).
    """
    new_arms, baseline = spec.arms, spec.baseline
    if arms:
        missing = [a for a in arms if a not in spec.arms]
        if missing:
            raise ConfigError(f"--arms names {missing}, not arms of {list(spec.arms)}")
        new_arms = {a: spec.arms[a] for a in spec.arms if a in arms}
        if spec.baseline not in new_arms and keep_baseline:
            new_arms = {spec.baseline: spec.arms[spec.baseline], **new_arms}
        baseline = baseline if baseline in new_arms else next(iter(new_arms))
    elif not keep_baseline:
        raise ConfigError("--no-baseline needs --arms: name the arms to run without the baseline")
    return dataclasses.replace(
        spec,
        overrides={**spec.overrides, **(sets or {})},
        seeds=tuple(seeds) if seeds else spec.seeds,
        arms=new_arms,
        baseline=baseline,
    )
