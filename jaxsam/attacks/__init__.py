"""Membership-inference attacks on saved logits: every model the target in turn.

Convention: every attack returns numpy float32 scores [M, N]; higher score = member. The attacks
that compare a target with other models (LiRA, RMIA, calibrated loss) share one reference-group
rule, ``equal_groups`` (:mod:`jaxsam.attacks._reference`; :func:`detect_design` says what the
masks look like).
"""

from jaxsam.attacks import signals
from jaxsam.attacks._lira import lira, lira_from_signal
from jaxsam.attacks._lira_options import LiraOptions
from jaxsam.attacks._reference import detect_design, sparse_masks_warning
from jaxsam.attacks._rmia import rmia, rmia_from_signal
from jaxsam.attacks.threshold import (
    calibrated_loss_attack,
    calibrated_loss_from_signal,
    confidence_attack,
    entropy_attack,
    loss_attack,
    modified_entropy_attack,
)

__all__ = [
    "LiraOptions",
    "calibrated_loss_attack",
    "calibrated_loss_from_signal",
    "confidence_attack",
    "detect_design",
    "entropy_attack",
    "lira",
    "lira_from_signal",
    "loss_attack",
    "modified_entropy_attack",
    "rmia",
    "rmia_from_signal",
    "signals",
    "sparse_masks_warning",
]
