"""Your own Flax model: ``model.name = "package.module:attr"``.

``attr`` is either a callable ``attr(num_classes, **model.kwargs)`` that returns a
``flax.linen.Module``, or a ``flax.linen.Module`` class with a ``num_classes`` field (built as
``attr(num_classes=num_classes, **model.kwargs)``). The module has the built-in models' call
signature: ``module.apply(variables, x [B, *input_shape] float32, train=bool)`` returns logits
``[B, num_classes]``; its variables are ``params`` and, optionally, ``batch_stats``
(BatchNorm running statistics, updated with ``mutable=["batch_stats"]`` when ``train``).

Only training needs the code (``jaxsam train``, ``--resume``, ``wave init|train|run``,
``plan``): the import happens in :func:`load_factory`, called from :func:`build` and
:func:`check`. Reading and scoring a run directory never imports it, so a run copied to a
machine without the package scores as before.
"""

from __future__ import annotations

import importlib
import re
from collections.abc import Callable, Mapping
from typing import Any

from jaxsam.errors import ConfigError

# "package.module:attr" (attr may be dotted: "pkg.mod:Factory.build").
_IDENT = r"[A-Za-z_][A-Za-z0-9_]*"
IMPORT_PATH = re.compile(rf"^{_IDENT}(\.{_IDENT})*:{_IDENT}(\.{_IDENT})*$")

# The variable collections the trainer carries (anything else would be dropped silently).
COLLECTIONS = ("params", "batch_stats")

_FIX = (
    "training needs the model's code (scoring a finished run does not): make it importable "
    "(pip install its package, or add its directory to PYTHONPATH)"
)


def is_import_path(name: str) -> bool:
    """Whether ``name`` has the ``package.module:attr`` form of a custom model (no import)."""
    return bool(IMPORT_PATH.match(name))


def _first_line(e: BaseException) -> str:
    text = str(e).strip().splitlines()
    return f"{type(e).__name__}: {text[0] if text else ''}".rstrip(": ")


def load_factory(name: str) -> Callable[..., Any]:
    """Imports ``name`` = ``package.module:attr`` and returns ``attr``.

    Raises:
      ConfigError: the module cannot be imported, lacks ``attr``, or ``attr`` is not callable;
        the message names the import path and the fix.
    """
    if not is_import_path(name):
        raise ConfigError(
            f"model.name = {name!r} is not an import path; write 'package.module:attr' "
            "(e.g. 'mymodule:Net')"
        )
    module_name, attr_path = name.split(":")
    try:
        obj: Any = importlib.import_module(module_name)
    except ImportError as e:
        raise ConfigError(
            f"model.name = {name!r}: cannot import module {module_name!r} ({_first_line(e)}); "
            f"{_FIX}"
        ) from e
    except Exception as e:  # noqa: BLE001 - the user's module failed while importing
        raise ConfigError(
            f"model.name = {name!r}: importing module {module_name!r} failed "
            f"({_first_line(e)}); fix that module"
        ) from e
    for part in attr_path.split("."):
        if not hasattr(obj, part):
            raise ConfigError(
                f"model.name = {name!r}: {getattr(obj, '__name__', module_name)!r} has no "
                f"attribute {part!r}; name a Module class or a function returning one"
            )
        obj = getattr(obj, part)
    if not callable(obj):
        raise ConfigError(
            f"model.name = {name!r} names an object of type {type(obj).__name__}, not a "
            "flax.linen.Module class or a function attr(num_classes, **model.kwargs) returning one"
        )
    return obj


def build(name: str, num_classes: int, kwargs: Mapping[str, Any] | None = None) -> Any:
    """Imports and builds the custom model ``name`` for ``num_classes`` classes.

    Args:
      name: ``package.module:attr``.
      num_classes: C, the logits width.
      kwargs: ``model.kwargs``, passed as keyword arguments.

    Returns:
      The ``flax.linen.Module``.

    Raises:
      ConfigError: import failure, a call that rejects the arguments, or a result that is not
        a ``flax.linen.Module``.
    """
    import flax.linen as nn

    factory = load_factory(name)
    kwargs = dict(kwargs or {})
    is_class = isinstance(factory, type) and issubclass(factory, nn.Module)
    attr = name.split(":")[1]
    try:
        if is_class:
            module = factory(num_classes=num_classes, **kwargs)
        else:
            module = factory(num_classes, **kwargs)
    except TypeError as e:
        args = "num_classes=..." if is_class else "num_classes"
        how = f"{attr}({args}, **model.kwargs)"
        raise ConfigError(
            f"model.name = {name!r}: {how} with model.kwargs = {kwargs!r} failed "
            f"({_first_line(e)}); fix model.kwargs (or the factory's signature)"
        ) from e
    if not isinstance(module, nn.Module):
        raise ConfigError(
            f"model.name = {name!r} returned an object of type {type(module).__name__}, not a "
            "flax.linen.Module; name a Module class or a function attr(num_classes, "
            "**model.kwargs) returning one"
        )
    return module


def check(
    name: str,
    module: Any,
    input_shape: tuple[int, ...],
    num_classes: int,
    *,
    needs_per_example_grads: bool = False,
) -> bool:
    """Checks that ``module`` works as jaxsam's trainer calls it, from shapes only.

    Runs ``jax.eval_shape`` (nothing is allocated or computed) of ``init`` with ``train=False``
    and of ``apply`` with ``train=True`` and ``train=False`` on a float32 batch
    ``[2, *input_shape]``.

    Args:
      name: the import path, for messages.
      module: the built module (:func:`build`).
      input_shape: one example's shape (the pool's ``input_shape``).
      num_classes: C, the expected logits width.
      needs_per_example_grads: DP-SGD is on: refuse BatchNorm (it mixes a batch's examples).

    Returns:
      Whether the module keeps BatchNorm statistics (a ``batch_stats`` collection).

    Raises:
      ConfigError: naming the import path and what is wrong.
    """
    import jax
    import jax.numpy as jnp

    x = jax.ShapeDtypeStruct((2, *input_shape), jnp.float32)
    where = f"model.name = {name!r}"
    try:
        shapes = jax.eval_shape(lambda x: module.init(jax.random.key(0), x, train=False), x)
    except Exception as e:  # noqa: BLE001 - any failure of the user's code is reported
        raise ConfigError(
            f"{where}: init(key, x [2, {', '.join(map(str, input_shape))}], train=False) "
            f"failed ({_first_line(e)}); the module must take (x, train: bool) like the "
            "built-in models (RNG streams such as Dropout's are not supplied)"
        ) from e
    extra = sorted(set(shapes) - set(COLLECTIONS))
    if extra:
        raise ConfigError(
            f"{where} creates variable collections {extra}; jaxsam's trainer carries only "
            f"{list(COLLECTIONS)}: drop them (e.g. sow/intermediates) from the module"
        )
    has_bn = "batch_stats" in shapes
    if needs_per_example_grads and has_bn:
        raise ConfigError(
            f"optim.dp needs a model without BatchNorm, and {where} has a 'batch_stats' "
            "collection (BatchNorm mixes the examples of a batch, so per-example gradients are "
            "not separable); use a normalisation without batch statistics (e.g. GroupNorm)"
        )
    for train in (True, False):
        _check_apply(where, module, shapes, x, train, has_bn, num_classes)
    return has_bn


def _check_apply(where: str, module, shapes, x, train: bool, has_bn: bool, num_classes: int):
    """``apply(variables, x, train=train)`` runs on shapes and returns float logits [2, C]."""
    import jax
    import jax.numpy as jnp

    mutable = ["batch_stats"] if train and has_bn else False

    def apply(v, x):
        out = module.apply(v, x, train=train, mutable=mutable)
        return out[0] if mutable else out

    try:
        logits = jax.eval_shape(apply, shapes, x)
    except Exception as e:  # noqa: BLE001 - any failure of the user's code is reported
        raise ConfigError(
            f"{where}: apply(variables, x, train={train}) failed ({_first_line(e)}); the "
            "module must take (x, train: bool) like the built-in models"
        ) from e
    ok = (
        isinstance(logits, jax.ShapeDtypeStruct)
        and tuple(logits.shape) == (2, num_classes)
        and jnp.issubdtype(logits.dtype, jnp.floating)
    )
    if not ok:
        got = (
            f"{tuple(logits.shape)} {logits.dtype}"
            if isinstance(logits, jax.ShapeDtypeStruct)
            else type(logits).__name__
        )
        raise ConfigError(
            f"{where}: apply(variables, x [2, ...], train={train}) returned {got}; it must "
            f"return float logits of shape [2, {num_classes}] (one row per example, "
            "num_classes columns)"
        )


def uses_convolutions(module: Any, input_shape: tuple[int, ...]) -> bool:
    """Whether ``module``'s forward pass contains a convolution (traced, never run).

    Used where the built-in models are known by name (``jaxsam.models.CONV_MODELS``): the
    ``auto`` strategy's measurement and the fused-SAM warning on the CPU.
    """
    import jax
    import jax.numpy as jnp

    x = jnp.zeros((1, *input_shape), jnp.float32)
    try:
        jaxpr = jax.make_jaxpr(lambda x: module.init(jax.random.key(0), x, train=False))(x)
    except Exception:  # noqa: BLE001 - check() reports failures; here: not known to convolve
        return False
    return _has_primitive(jaxpr.jaxpr, "conv_general_dilated")


def _has_primitive(jaxpr: Any, prim: str) -> bool:
    from jax.extend import core as jcore

    for eqn in jaxpr.eqns:
        if eqn.primitive.name == prim:
            return True
        for value in eqn.params.values():
            for sub in value if isinstance(value, tuple | list) else (value,):
                if isinstance(sub, jcore.ClosedJaxpr):
                    sub = sub.jaxpr
                if isinstance(sub, jcore.Jaxpr) and _has_primitive(sub, prim):
                    return True
    return False
