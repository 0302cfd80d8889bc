"""Membership-inference attacks on saved logits: every model the target, leave-one-out.

Convention: every attack returns numpy float32 scores [M, N]; higher score = member.
"""

from jaxsam.attacks import signals
from jaxsam.attacks._lira import lira, lira_from_signal
from jaxsam.attacks._lira_options import LiraOptions
from jaxsam.attacks._rmia import rmia, rmia_from_signal
from jaxsam.attacks.threshold import (
    calibrated_loss_attack,
    confidence_attack,
    entropy_attack,
    loss_attack,
    modified_entropy_attack,
)

__all__ = [
    "LiraOptions",
    "calibrated_loss_attack",
    "confidence_attack",
    "entropy_attack",
    "lira",
    "lira_from_signal",
    "loss_attack",
    "modified_entropy_attack",
    "rmia",
    "rmia_from_signal",
    "signals",
]
