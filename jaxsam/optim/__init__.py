"""The SAM family as optax transforms: one ``update(..., grad_fn=...)`` call is one whole step.

>>> tx = jaxsam.optim.sam(optax.sgd(0.1, momentum=0.9), rho=0.05)
>>> updates, state = tx.update(grads, state, params, grad_fn=jax.grad(loss_fn))

See docs/sam.md for the math, the BatchNorm rule, ensembles and devices.

The names below are imported on first use, so that :mod:`jaxsam.optim.registry` (which the
config layer reads) loads without jax.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "BASES": "jaxsam.optim.registry",
    "OPTIMIZERS": "jaxsam.optim.registry",
    "LookSAMState": "jaxsam.optim._looksam",
    "SAMState": "jaxsam.optim._family",
    "asam": "jaxsam.optim._sam",
    "base_sgd": "jaxsam.optim.factory",
    "from_config": "jaxsam.optim.factory",
    "fused_update": "jaxsam.optim.fused",
    "gsam": "jaxsam.optim._gsam",
    "is_sam_family": "jaxsam.optim.factory",
    "looksam": "jaxsam.optim._looksam",
    "make_base": "jaxsam.optim.factory",
    "make_optimizer": "jaxsam.optim.factory",
    "sam": "jaxsam.optim._sam",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'jaxsam.optim' has no attribute {name!r}")
    value = getattr(importlib.import_module(_EXPORTS[name]), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
