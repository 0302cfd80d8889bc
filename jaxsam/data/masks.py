"""Membership masks: which pool examples each shadow model trains on."""

from __future__ import annotations

import math

import numpy as np

from jaxsam.config import MASK_DESIGNS as DESIGNS  # "exact", "bernoulli"
from jaxsam.errors import ConfigError


def make_masks(
    num_models: int,
    num_examples: int,
    pkeep: float = 0.5,
    seed: int = 0,
    design: str = "exact",
) -> np.ndarray:
    """Draws ``keep[m, i]``: True when model ``m`` trains on pool example ``i``.

    ``design="exact"`` (the default): every example is in exactly ``round(pkeep * num_models)``
    models (the argsort-of-uniforms construction of Carlini et al. 2022): in each column, the
    models whose uniform draw ranks among the lowest ``k`` keep the example. Rows (subset sizes)
    vary around ``pkeep * N``. ``design="bernoulli"``: each model keeps each example
    independently with probability ``pkeep``, so an example's IN count varies (Binomial(M,
    pkeep)) and the other models' memberships do not depend on any one model's. The attacks'
    reference groups follow the design (docs/attacks.md, "Reference groups").

    Args:
      num_models: M >= 2.
      num_examples: N >= 1.
      pkeep: fraction of models that train on each example (exact) or probability that a model
        trains on an example (bernoulli), strictly in (0, 1).
      seed: the masks are a pure function of (M, N, pkeep, seed, design).
      design: ``"exact"`` or ``"bernoulli"``.

    Returns:
      bool array [M, N].
    """
    if design not in DESIGNS:
        raise ConfigError(
            f"masks.design = {design!r} is unknown; choose one of {', '.join(DESIGNS)}"
        )
    if num_models < 2:
        raise ConfigError(f"masks.models = {num_models}: need at least 2 models (target + shadow)")
    if num_examples < 1:
        raise ConfigError(f"pool has {num_examples} examples; it needs at least one")
    if not 0.0 < pkeep < 1.0:
        raise ConfigError(f"masks.pkeep = {pkeep} must lie strictly between 0 and 1 (e.g. 0.5)")
    if design == "bernoulli":
        rng = np.random.default_rng(np.random.SeedSequence([seed, 0x6D61736B, 1]))
        return rng.uniform(size=(num_models, num_examples)) < pkeep
    k = round(pkeep * num_models)
    if not 0 < k < num_models:
        raise ConfigError(
            f"pkeep * models rounds to {k} of {num_models}: each example needs at least one IN "
            "and one OUT model; use more models"
        )
    rng = np.random.default_rng(np.random.SeedSequence([seed, 0x6D61736B]))
    uniforms = rng.uniform(size=(num_models, num_examples))
    rank = uniforms.argsort(axis=0).argsort(axis=0)
    return rank < k


def steps_per_epoch(keep: np.ndarray, batch_size: int) -> int:
    """Steps of one epoch of masks ``keep`` [M, N]: ``ceil(max_m sum_i keep[m, i] / B)``.

    Every model walks its own training subset; subset sizes differ between models, so an epoch
    is as long as the largest subset takes (:mod:`jaxsam.train.batches`).
    """
    return max(1, math.ceil(int(keep.sum(axis=1).max()) / batch_size))
