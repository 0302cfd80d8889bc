"""The SAM family as optax transforms: one ``update(..., grad_fn=...)`` call is one whole step.

>>> tx = jaxsam.optim.sam(optax.sgd(0.1, momentum=0.9), rho=0.05)
>>> updates, state = tx.update(grads, state, params, grad_fn=jax.grad(loss_fn))

See docs/sam.md for the math, the BatchNorm rule, ensembles and devices.
"""

from jaxsam.optim._family import SAMState
from jaxsam.optim._gsam import gsam
from jaxsam.optim._looksam import LookSAMState, looksam
from jaxsam.optim._sam import asam, sam
from jaxsam.optim.factory import (
    OPTIMIZERS,
    SAM_FAMILY,
    base_sgd,
    is_sam_family,
    make_optimizer,
)
from jaxsam.optim.fused import fused_update

__all__ = [
    "OPTIMIZERS",
    "SAM_FAMILY",
    "LookSAMState",
    "SAMState",
    "asam",
    "base_sgd",
    "fused_update",
    "gsam",
    "is_sam_family",
    "looksam",
    "make_optimizer",
    "sam",
]
