"""DP-SGD for every shadow model: per-example clipping, Gaussian noise, and the privacy accounting.

The mechanism is the one of Abadi et al. (2016): each example's gradient is clipped to L2 norm
``C`` (``clip_norm``), the clipped gradients of a batch are summed, Gaussian noise of standard
deviation ``sigma * C`` (``noise_multiplier``) is added to the sum, and the result is divided
by the expected batch size. Per-example clipping (with microbatches) is
``jax_privacy.clipped_grad``; the noise is drawn here from each model's own key, so that the
shadow models' noise is independent. The accounting is ``dp_accounting``'s (Google's
differential-privacy library): the privacy-loss-distribution accountant by default, or RDP.

Everything is written for ONE model and runs inside the trainer's step, so the vmapped,
chunked, looped and sharded strategies all train DP models in the same program.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from typing import Any

import numpy as np

from jaxsam.config import DP_ACCOUNTANTS as ACCOUNTANTS
from jaxsam.errors import ConfigError

PyTree = Any

# A model's DP noise and Poisson-sampling streams are folded from its augmentation key with
# these constants, so they never equal an augmentation key (those fold in the step number).
NOISE_STREAM = 0x7FFFFFFF
SAMPLE_STREAM = 0x7FFFFFFE
# The share of delta spent on the chance that a Poisson draw overflows the batch capacity.
TAIL_SHARE = 0.01


def require_libraries() -> None:
    """Raises :class:`ConfigError` naming the fix when dp-accounting or jax-privacy is missing.

    Checked where a DP run starts (not in config validation: scoring a DP run's directory
    needs neither package).
    """
    import importlib.util

    for package, module in (("dp-accounting", "dp_accounting"), ("jax-privacy", "jax_privacy")):
        if importlib.util.find_spec(module) is None:
            raise ConfigError(
                f"optim.dp needs the {package} package, which is not installed; "
                f"`pip install {package}` (jax-privacy needs Python >= 3.11)"
            )


@dataclasses.dataclass(frozen=True)
class DPShape:
    """The static shape of one DP run (host side, from the config and the masks).

    Attributes:
      clip_norm: C, the per-example L2 bound.
      noise_multiplier: sigma; the noise on the sum has standard deviation ``sigma * C``.
      batch_size: B, the expected batch size (the divisor of the noisy sum).
      capacity: fixed number of example slots per step (>= B for Poisson sampling, padded and
        masked; == B when shuffled), a multiple of ``microbatch_size``.
      microbatch_size: examples whose per-example gradients are live at once.
      sampling: ``poisson`` or ``shuffle``.
      releases_per_step: noisy gradients computed per step (1; 2 for a SAM-family variant,
        whose ascent and descent gradients are both privatized).
    """

    clip_norm: float
    noise_multiplier: float
    batch_size: int
    capacity: int
    microbatch_size: int
    sampling: str
    releases_per_step: int


def poisson_capacity(num_in: np.ndarray, batch_size: int, steps: int, tail: float) -> int:
    """Smallest slot count ``c`` with ``steps * P(Binomial(n, B/n) > c) <= tail`` for every n.

    ``num_in`` int [M]: each model's training-set size. A step whose Poisson draw exceeds the
    capacity drops the extra examples; bounding the chance that this happens in any step by
    ``tail`` lets the accountant's guarantee hold with ``delta + tail`` (see docs/recipes.md).
    """
    from scipy import stats

    cap = batch_size
    for n in np.unique(np.asarray(num_in)):
        n = int(n)
        if n <= batch_size:
            cap = max(cap, n)
            continue
        q = batch_size / n
        c = batch_size
        while c < n and steps * stats.binom.sf(c, n, q) > tail:
            c += max(1, int(math.sqrt(batch_size)) // 4)
        cap = max(cap, min(c, n))
    return int(cap)


def poisson_batch(key: Any, keep_row: Any, rate: Any, capacity: int) -> tuple[Any, Any]:
    """One model's Poisson batch: each training example taken independently with ``rate``.

    Args:
      key: the step's sampling key.
      keep_row: bool [N], the model's training set.
      rate: scalar q in [0, 1].
      capacity: slots returned (static).

    Returns:
      ``(indices int32 [capacity], valid bool [capacity])``: the drawn examples first (random
      order), then padding slots (``valid`` False) that contribute nothing. Draws larger than
      ``capacity`` are truncated (rare by the choice of capacity).
    """
    import jax
    import jax.numpy as jnp

    u = jax.random.uniform(key, keep_row.shape)
    chosen = keep_row & (u < rate)
    score = jnp.where(chosen, 1.0 + u, u)  # every chosen example above every other one
    _, idx = jax.lax.top_k(score, capacity)
    valid = jnp.arange(capacity) < jnp.sum(chosen.astype(jnp.int32))
    return idx.astype(jnp.int32), valid


def private_grad_fn(
    example_loss: Callable[..., tuple[Any, Any]], plan: DPShape
) -> Callable[..., tuple[PyTree, Any]]:
    """``f(params, x, y, valid, key) -> (noisy mean gradient, per-example aux)`` for one model.

    ``example_loss(params, x, y) -> (loss, aux)`` sees one example with a batch axis of 1.
    Padding slots (``valid`` False) contribute zero. The result is
    ``(sum_i clip(g_i, C) + N(0, (sigma C)^2 I)) / B``, and ``aux`` is per example
    (``loss`` values and the ``aux`` of ``example_loss``), for logging only.
    """
    import jax
    import jax.numpy as jnp
    import jax_privacy
    import optax

    clipped = jax_privacy.clipped_grad(
        example_loss,
        has_aux=True,
        l2_clip_norm=plan.clip_norm,
        batch_argnums=(1, 2),
        microbatch_size=plan.microbatch_size,
        return_values=True,
    )
    stddev = plan.noise_multiplier * plan.clip_norm

    def fn(params, x, y, valid, key):
        total, aux = clipped(params, x, y, is_padding_example=~valid)
        noise = optax.tree.random_like(key, total, jax.random.normal)
        noisy = jax.tree.map(
            lambda g, z: (g + stddev * z.astype(g.dtype)) / plan.batch_size, total, noise
        )
        return noisy, (jnp.asarray(aux.values), aux.aux)

    return fn


def dp_event(noise_multiplier: float, sampling_rate: float, steps: int, releases: int = 1):
    """The ``dp_accounting`` event of a run: ``steps`` Poisson-sampled Gaussian releases.

    ``releases`` noisy gradients on the same Poisson batch are one Gaussian mechanism with
    noise multiplier ``sigma / sqrt(releases)`` (Gaussian mechanisms compose by adding their
    squared sensitivities over variance), so a SAM step costs as much as one step at that
    lower noise.
    """
    import dp_accounting

    sigma = noise_multiplier / math.sqrt(releases)
    step = dp_accounting.PoissonSampledDpEvent(sampling_rate, dp_accounting.GaussianDpEvent(sigma))
    return dp_accounting.SelfComposedDpEvent(step, int(steps))


def _accountant(name: str):
    from dp_accounting import pld, rdp

    if name == "pld":
        return pld.PLDAccountant()
    if name == "rdp":
        return rdp.RdpAccountant()
    raise ValueError(f"unknown accountant {name!r}; use one of {list(ACCOUNTANTS)}")


def epsilon(
    noise_multiplier: float,
    sampling_rate: float,
    steps: int,
    delta: float,
    *,
    releases: int = 1,
    accountant: str = "pld",
) -> float:
    """The epsilon at ``delta`` of :func:`dp_event` (``inf`` for zero noise)."""
    if noise_multiplier <= 0:
        return math.inf
    acc = _accountant(accountant)
    acc.compose(dp_event(noise_multiplier, sampling_rate, steps, releases))
    return float(acc.get_epsilon(delta))


def accountant_name(name: str) -> str:
    """The accountant as run.json records it."""
    return {
        "pld": "dp_accounting.pld.PLDAccountant (add/remove one example)",
        "rdp": "dp_accounting.rdp.RdpAccountant (add/remove one example)",
    }[name]


def header_fields(config: Any, keep: np.ndarray) -> dict:
    """The run-header fields of the privacy guarantee: ``{"dp": ...}``, or ``{}`` without DP.

    Raises:
      ConfigError: a DP run and the DP libraries are missing (before anything is written).
    """
    record = privacy_record(config, keep)
    return {"dp": record} if record is not None else {}


def privacy_record(config: Any, keep: np.ndarray) -> dict | None:
    """run.json's ``"dp"`` entry for ``config`` trained on masks ``keep`` [M, N], or None.

    Every model gets the same noise, clip and steps; its sampling rate is ``B / n_m`` with
    ``n_m`` its training-set size, so the recorded epsilon is the largest over the models
    (the one with the smallest training set). With Poisson sampling a share
    :data:`TAIL_SHARE` of ``delta`` covers the chance that a draw overflows the batch capacity,
    and epsilon is computed at the rest.
    """
    from jaxsam.data.masks import steps_per_epoch
    from jaxsam.optim import registry

    d, t = config.optim.dp, config.train
    if not d.enabled:
        return None
    require_libraries()
    steps = steps_per_epoch(keep, t.batch_size) * t.epochs
    smallest = max(int(np.asarray(keep).sum(axis=1).min()), 1)
    rate = min(1.0, t.batch_size / smallest)
    releases = 2 if registry.is_sam_family(config.optim.name) else 1
    tail = TAIL_SHARE * d.delta if d.sampling == "poisson" else 0.0
    eps = epsilon(
        d.noise_multiplier, rate, steps, d.delta - tail, releases=releases, accountant=d.accountant
    )
    return {
        "epsilon": eps if math.isfinite(eps) else None,
        "delta": d.delta,
        "accountant": accountant_name(d.accountant),
        "sampling": d.sampling,
        "guarantee": (
            "per shadow model, example-level, add/remove one example"
            if d.sampling == "poisson"
            else "none: batches are shuffled, epsilon is computed as if Poisson-sampled"
        )
        if math.isfinite(eps)
        else "none: noise_multiplier is 0",
        "noise_multiplier": d.noise_multiplier,
        "clip_norm": d.clip_norm,
        "sampling_rate": rate,
        "steps": steps,
        "releases_per_step": releases,
    }
