"""Builds the optimizer a config names (placeholder until the SAM family lands)."""

from __future__ import annotations

import optax

from jaxsam.errors import ConfigError

OPTIMIZERS = ("sgd", "sam")


def make_optimizer(name, *, learning_rate, momentum=0.9, weight_decay=0.0, rho=0.05, **kw):
    if name not in OPTIMIZERS:
        raise ConfigError(f"unknown optimizer {name!r}; use one of {list(OPTIMIZERS)}")
    base = optax.chain(
        optax.add_decayed_weights(weight_decay),
        optax.sgd(learning_rate, momentum=momentum or None),
    )
    if name == "sgd":
        return optax.with_extra_args_support(base)
    from jaxsam.optim import sam

    return sam(base, rho=rho)
