"""The one optimizer registry: each name maps to its factory and the spec of its arguments.

Everything that needs to know which optimizers exist reads this table: config validation
(``optim.name`` and ``optim.extra``), :func:`jaxsam.optim.make_optimizer`, the trainer and
``jaxsam plan``. Adding an optimizer is adding one :class:`Entry`.

The module imports nothing heavy (no jax, no optax): the config layer can read it before any
array library is loaded, and factories are resolved only when an optimizer is built.

A second table, :data:`BASES`, holds the base optimizers (``optim.base``, with keywords in
``optim.base_args``): the optax transform that turns a (SAM) gradient into an update. Besides
its entries, any optax optimizer factory (a function of ``optax`` or ``optax.contrib`` that
takes ``learning_rate``) is accepted by name; its keywords are checked against its signature
(:func:`check_base_args`). Reading a factory's signature imports optax, so only the base
functions do, and only when called.
"""

from __future__ import annotations

import dataclasses
import importlib
import inspect
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
      high_open: ``high`` itself is not allowed (a range ``[low, high)``).
    """

    kind: type
    low: float | None = None
    high: float | None = None
    what: str = ""
    high_open: bool = False

    def out_of_range(self, value: float) -> bool:
        """Whether ``value`` (a finite number) lies outside the allowed range."""
        if self.low is not None and value < self.low:
            return True
        if self.high is not None and (value > self.high or (self.high_open and value == self.high)):
            return True
        return False


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


def runs_fused_passes(optim: Any) -> bool:
    """An optimizer config's ``fused_passes`` as it takes effect: plain SGD has one pass and
    ignores it (``optim``: a :class:`jaxsam.config.OptimConfig`)."""
    return bool(optim.fused_passes) and is_sam_family(optim.name)


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
        if arg.out_of_range(value):
            raise error(f"{path} = {value!r} is out of range; it must be {arg.what}")


@dataclasses.dataclass(frozen=True)
class Base:
    """A base optimizer: ``factory(learning_rate=schedule, **keywords)``.

    Attributes:
      name: the config name (``optim.base``).
      factory: ``"module:function"`` of the optimizer factory.
      fixed: keywords that the name fixes (``nesterov=True`` for ``nesterov``); a config may not
        set them in ``optim.base_args``.
      from_config: factory keywords filled from the ``optim`` section of the same name
        (``momentum``, ``weight_decay``); a config sets them there, not in ``optim.base_args``.
      decay: how ``optim.weight_decay`` acts on this base, in words (docs and ``jaxsam plan``).
        Where ``weight_decay`` is not in ``from_config``, it is coupled: ``weight_decay * w`` is
        added to the gradient before the base optimizer (``optax.add_decayed_weights``).
      args: range specs for some keywords of ``optim.base_args`` (the signature alone says
        which keywords exist).
    """

    name: str
    factory: str
    fixed: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    from_config: tuple[str, ...] = ()
    decay: str = "coupled"
    args: Mapping[str, Arg] = dataclasses.field(default_factory=dict)

    def load(self) -> Callable[..., Any]:
        """The factory function (imported on first use)."""
        module, _, attr = self.factory.partition(":")
        return getattr(importlib.import_module(module), attr)


_BETA = Arg(float, 0.0, 1.0, "in [0, 1)", high_open=True)
_ADAM_ARGS = {"b1": _BETA, "b2": _BETA, "eps": _NONNEG, "eps_root": _NONNEG}
_COUPLED = "coupled: weight_decay * w is added to the gradient (L2 in the loss)"

BASES: Mapping[str, Base] = MappingProxyType(
    {
        "sgd": Base(
            "sgd",
            "jaxsam.optim.factory:base_sgd",
            fixed={"nesterov": False},
            from_config=("momentum", "weight_decay"),
            decay=_COUPLED + ", then heavy-ball momentum",
        ),
        "nesterov": Base(
            "nesterov",
            "jaxsam.optim.factory:base_sgd",
            fixed={"nesterov": True},
            from_config=("momentum", "weight_decay"),
            decay=_COUPLED + ", then Nesterov momentum",
        ),
        "adam": Base("adam", "optax:adam", decay=_COUPLED + " before Adam", args=_ADAM_ARGS),
        "adamw": Base(
            "adamw",
            "optax:adamw",
            from_config=("weight_decay",),
            decay="decoupled (AdamW): the update is lr * (adam step + weight_decay * w)",
            args=_ADAM_ARGS,
        ),
        "lamb": Base(
            "lamb",
            "optax:lamb",
            from_config=("weight_decay",),
            decay="decoupled (LAMB): weight_decay * w is added to the Adam step, inside the "
            "layer-wise trust ratio",
            args=_ADAM_ARGS,
        ),
    }
)
"""The registered base optimizers. Other optax factories are accepted by name."""


def _optax_factory(name: str) -> Callable[..., Any] | None:
    """``optax.NAME`` or ``optax.contrib.NAME`` (for ``contrib.NAME``) if it is a factory."""
    if not name or name.startswith("_") or name.count(".") > 1:
        return None
    module = "optax"
    if "." in name:
        prefix, _, name = name.partition(".")
        if prefix != "contrib" or not name or name.startswith("_"):
            return None
        module = "optax.contrib"
    fn = getattr(importlib.import_module(module), name, None)
    if not inspect.isfunction(fn):
        return None
    try:
        params = inspect.signature(fn).parameters
    except (TypeError, ValueError):
        return None
    return fn if "learning_rate" in params else None


def base_entry(name: str, error: type[Exception] = ValueError, *, prefix: str = "") -> Base:
    """The :class:`Base` of ``name``: registered, or an optax optimizer factory by name.

    An optax factory whose signature has ``weight_decay`` gets ``optim.weight_decay`` there (its
    own decay, coupled or decoupled as that optimizer defines it); any other gets coupled decay.

    Raises:
      error: ``name`` is neither registered nor an optax function taking ``learning_rate``.
    """
    if not isinstance(name, str):
        raise error(f"{prefix}base = {name!r} must be a string naming a base optimizer")
    if name in BASES:
        return BASES[name]
    fn = _optax_factory(name) if name.isidentifier() or name.startswith("contrib.") else None
    if fn is None:
        raise error(
            f"{prefix}base = {name!r} is not a base optimizer; use one of {', '.join(BASES)}, or "
            "the name of an optax optimizer factory (a function of optax taking learning_rate, "
            "e.g. rmsprop, lion, adabelief, or contrib.NAME for optax.contrib)"
        )
    takes_decay = "weight_decay" in inspect.signature(fn).parameters
    module = "optax.contrib" if name.startswith("contrib.") else "optax"
    attr = name.removeprefix("contrib.")
    return Base(
        name,
        f"{module}:{attr}",
        from_config=("weight_decay",) if takes_decay else (),
        decay=f"the own weight_decay of optax.{name}" if takes_decay else _COUPLED,
    )


def _type_error(value: Any, default: Any) -> str | None:
    """Why ``value`` cannot stand for a keyword whose default is ``default``, or None."""
    if isinstance(default, bool):
        return None if isinstance(value, bool) else "expected true or false"
    if isinstance(default, int | float):
        if isinstance(value, bool) or not isinstance(value, int | float):
            return f"expected a number (the default is {default!r})"
        if not math.isfinite(value):
            return "expected a finite number"
        return None
    if isinstance(default, str):
        return None if isinstance(value, str) else f"expected a string (the default is {default!r})"
    return None


def check_base_args(
    name: str,
    args: Mapping[str, Any],
    *,
    prefix: str = "",
    error: type[Exception] = ValueError,
) -> None:
    """:func:`check_args` for a base optimizer: ``args`` against ``name``'s factory signature.

    ``name`` is a base name (:data:`BASES`, or an optax optimizer factory), ``args`` e.g. a
    config's ``optim.base_args`` (``prefix`` ``"optim.base_args."``); ``prefix`` and ``error`` as
    in :func:`check_args`.

    Raises:
      error: an unknown base; a keyword the factory does not take, or that the config sets
        elsewhere (``learning_rate``, ``momentum``, ``weight_decay``) or the name fixes; a value
        of the wrong type (judged by the keyword's default) or out of the registered range; a
        required keyword that is missing.
    """
    base = base_entry(name, error, prefix=prefix.removesuffix("base_args."))
    if not isinstance(args, Mapping):
        raise error(f"{prefix.rstrip('.')} = {args!r} must be a JSON object of keywords")
    fn = base.load()
    params = {
        key: p
        for key, p in inspect.signature(fn).parameters.items()
        if p.kind not in (inspect.Parameter.VAR_POSITIONAL, inspect.Parameter.VAR_KEYWORD)
    }
    where = f"optax.{name}" if base.factory.startswith("optax") else f"base {name!r}"
    allowed = sorted(set(params) - {"learning_rate"} - set(base.fixed) - set(base.from_config))
    for key, value in args.items():
        path = f"{prefix}{key}"
        if key == "learning_rate":
            raise error(
                f"{path}: the learning rate comes from optim.learning_rate, optim.schedule and "
                "optim.warmup_epochs (for every base); set those instead"
            )
        if key in base.from_config:
            raise error(f"{path}: {where} takes {key} from optim.{key}; set that instead")
        if key in base.fixed:
            raise error(
                f"{path}: {key} = {base.fixed[key]!r} is fixed by optim.base = {name!r}; "
                "choose another base instead (e.g. nesterov)"
            )
        if key not in params:
            raise error(f"{path} is not a keyword of {where}; allowed here: {allowed or 'none'}")
        default = params[key].default
        if default is not inspect.Parameter.empty:
            why = _type_error(value, default)
            if why:
                raise error(f"{path} = {value!r} has the wrong type; {why}")
        if key in base.args:
            arg = base.args[key]
            if isinstance(value, bool) or not isinstance(value, int | float):
                raise error(f"{path} = {value!r} has the wrong type; expected a number")
            if not math.isfinite(value) or arg.out_of_range(value):
                raise error(f"{path} = {value!r} is out of range; it must be {arg.what}")
    for key, p in params.items():
        if (
            p.default is inspect.Parameter.empty
            and key != "learning_rate"
            and key not in base.from_config
            and key not in base.fixed
            and key not in args
        ):
            raise error(f"{prefix}{key} is required by {where}; add it to optim.base_args")


OPTIMIZERS: tuple[str, ...] = names()
"""The registered names (a view of :data:`REGISTRY` for ``jaxsam.optim.OPTIMIZERS``)."""
