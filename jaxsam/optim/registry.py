"""The one optimizer registry: each name maps to its factory and the spec of its arguments.

Everything that needs to know which optimizers exist reads this table: config validation
(``optim.name`` and ``optim.extra``), :func:`jaxsam.optim.make_optimizer`, the trainer and
``jaxsam plan``. Adding an optimizer is adding one :class:`Entry`.

The module imports nothing heavy (no jax, no optax): the config layer can read it before any
array library is loaded, and factories are resolved only when an optimizer is built.

Design note: an :class:`Entry` describes a transform and its validated keywords in general
terms (a factory path and typed, bounded arguments). A later table of base optimizers (optax's
own, for a config key such as ``optim.base`` with ``optim.base_args``) can use the same
:class:`Entry` and :func:`check_args`, next to this table of the SAM family.
"""

from __future__ import annotations

import dataclasses
import importlib
import math
from collections.abc import Callable, Mapping
from types import MappingProxyType
from typing import Any


@dataclasses.dataclass(frozen=True)
class Arg:
    """One keyword of an optimizer, as a config may set it in ``optim.extra``.

    Attributes:
      kind: ``int`` or ``float`` (an int is accepted for a float).
      low: smallest allowed value, or None.
      high: largest allowed value, or None.
      what: the allowed range in words, for error messages.
    """

    kind: type
    low: float | None = None
    high: float | None = None
    what: str = ""


@dataclasses.dataclass(frozen=True)
class Entry:
    """A registered optimizer.

    Attributes:
      name: the config name (``optim.name``).
      factory: ``"module:function"`` of the SAM-family transform that wraps the base optimizer
        (``function(base, rho=..., **args)``), or None for the base optimizer alone.
      args: the keywords a config may pass in ``optim.extra``, with their spec.
      sam_family: whether the optimizer takes ``rho`` and needs ``grad_fn`` in ``update``.
    """

    name: str
    factory: str | None
    args: Mapping[str, Arg]
    sam_family: bool

    def load(self) -> Callable[..., Any] | None:
        """The factory function (imported on first use), or None for the base optimizer."""
        if self.factory is None:
            return None
        module, _, attr = self.factory.partition(":")
        return getattr(importlib.import_module(module), attr)


_NONNEG = Arg(float, 0.0, None, "non-negative")

REGISTRY: Mapping[str, Entry] = MappingProxyType(
    {
        "sgd": Entry("sgd", None, {}, sam_family=False),
        "sam": Entry("sam", "jaxsam.optim._sam:sam", {}, sam_family=True),
        "asam": Entry("asam", "jaxsam.optim._sam:asam", {"eta": _NONNEG}, sam_family=True),
        "gsam": Entry("gsam", "jaxsam.optim._gsam:gsam", {"alpha": _NONNEG}, sam_family=True),
        "looksam": Entry(
            "looksam",
            "jaxsam.optim._looksam:looksam",
            {"k": Arg(int, 1, None, "a positive integer"), "alpha": Arg(float, 0.0, None, ">= 0")},
            sam_family=True,
        ),
    }
)


def names() -> tuple[str, ...]:
    """The registered optimizer names, in registry order."""
    return tuple(REGISTRY)


def entry(name: str, error: type[Exception] = ValueError) -> Entry:
    """The entry of ``name``; raises ``error`` naming the choices when it is unknown."""
    if name not in REGISTRY:
        raise error(f"unknown optimizer {name!r}; choose one of {', '.join(REGISTRY)}.")
    return REGISTRY[name]


def is_sam_family(name: str) -> bool:
    """Whether the registered optimizer ``name`` is a member of the SAM family."""
    return name in REGISTRY and REGISTRY[name].sam_family


def check_args(
    name: str,
    args: Mapping[str, Any],
    *,
    prefix: str = "",
    error: type[Exception] = ValueError,
) -> None:
    """Check ``args`` against the spec of optimizer ``name``.

    Args:
      name: a registered optimizer name.
      args: keyword -> value, e.g. a config's ``optim.extra``.
      prefix: put before each keyword in messages (``"optim.extra."`` for a config).
      error: the exception type to raise (the config layer passes its ``ConfigError``).

    Raises:
      error: a keyword the optimizer does not take, a value of the wrong type, or out of range.
    """
    spec = entry(name, error).args
    for key, value in args.items():
        path = f"{prefix}{key}"
        if key not in spec:
            allowed = sorted(spec) or "none"
            raise error(f"{path} is not a keyword of optimizer {name!r}; allowed here: {allowed}")
        arg = spec[key]
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise error(f"{path} = {value!r} has the wrong type; expected {arg.kind.__name__}")
        if arg.kind is int and not isinstance(value, int):
            raise error(f"{path} = {value!r} has the wrong type; expected int")
        if not math.isfinite(value):
            raise error(f"{path} = {value!r} is not a finite number; it must be {arg.what}")
        if (arg.low is not None and value < arg.low) or (arg.high is not None and value > arg.high):
            raise error(f"{path} = {value!r} is out of range; it must be {arg.what}")


OPTIMIZERS: tuple[str, ...] = names()
"""The registered names (a view of :data:`REGISTRY` for ``jaxsam.optim.OPTIMIZERS``)."""
