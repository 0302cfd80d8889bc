"""The one config tree of a jaxsam run, serialisable to and from the run directory.

A :class:`Config` is a tree of frozen dataclasses. ``config.json`` in a run directory is
``to_dict(config)``; ``jaxsam train --config FILE`` reads it back with :func:`from_dict`, which
rejects unknown keys, wrong types and out-of-range values with the key path and the allowed
values, before anything runs.

A leaf: no jax, flax or optax, and of jaxsam only :mod:`jaxsam.errors`. The checks that need
the optimizer registry, the model code or the data's naming rules are the plan step's
(:func:`jaxsam.plan.check_config`), which runs them after these, before anything runs.
"""

from __future__ import annotations

import dataclasses
import math
import types
import typing
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from jaxsam.errors import ConfigError, read_json_file

CONFIG_VERSION = 1

QUERY_AUGMENTS = (1, 2, 18)
TRAIN_AUGMENTS = ("auto", "none", "flip", "crop", "flip_crop")
STRATEGIES = ("auto", "vmap", "vmap_matmul", "chunked", "loop", "sharded")
SCHEDULES = ("cosine", "constant", "linear")
DIVERGENCE_POLICIES = ("stop", "exclude")
DTYPES = ("float32", "bfloat16")
DP_SAMPLINGS = ("poisson", "shuffle")
DP_ACCOUNTANTS = ("pld", "rdp")
AUDIT_KINDS = ("mislabel", "noise", "duplicate")
# masks.design: every example in round(pkeep * M) models, or each model and example independently
MASK_DESIGNS = ("exact", "bernoulli")

# Upper bounds that catch a typo before it allocates: sizes and counts are int32 on the device,
# and no membership study needs more shadow models than this (the masks alone are M x N bits).
MAX_INT = 2**31 - 1
MAX_MODELS = 2**20


@dataclasses.dataclass(frozen=True)
class DataConfig:
    """Where the pool comes from.

    Attributes:
      dataset: ``digits`` (embedded, scikit-learn), a tfds name (``cifar10``, ``fashion_mnist``,
        ...), or a local file source ``idx:DIR`` / ``npz:FILE``.
      data_dir: tfds data directory (``None``: tfds' default).
      manual_dir: directory holding the original files for offline tfds preparation.
      pool_split: split the membership pool is drawn from.
      pool_size: number of pool examples (``None``: the whole split).
      test_split: split of held-out points no model trains on (``None``: none).
      test_size: number of held-out test points (``None``: the whole split).
      train_augment: on-device train-time augmentation; ``auto`` picks flip+crop for colour
        images, none for digits and tabular data.
      query_augment: number of query augmentations for the logits: 1 (identity), 2 (+ mirror),
        18 (mirror x 9 shifts).
      seed: seed of the pool subsampling.
      download: let tfds download a dataset that is not prepared (off: prepare offline from
        ``manual_dir``, or from a known system directory such as Debian's
        ``/usr/share/datasets/fashion-mnist``).
    """

    dataset: str = "digits"
    data_dir: str | None = None
    manual_dir: str | None = None
    pool_split: str = "train"
    pool_size: int | None = None
    test_split: str | None = "test"
    test_size: int | None = None
    train_augment: str = "auto"
    query_augment: int = 1
    seed: int = 0
    download: bool = False


@dataclasses.dataclass(frozen=True)
class MaskConfig:
    """Membership masks: which pool examples each of the M models trains on.

    Attributes:
      models: M, the number of shadow models trained at once.
      pkeep: the fraction of the M models each pool example is in (0.5: LiRA's half masks); with
        `design = "bernoulli"` the probability that a model trains on an example.
      seed: seed of the masks (the argsort-of-uniforms construction, or the Bernoulli draws).
      design: `exact` (every example in exactly round(pkeep * models) models) or `bernoulli`
        (each model and example independently with probability pkeep). The attacks' reference
        groups follow it (docs/attacks.md); run.json records it.
    """

    models: int = 32
    pkeep: float = 0.5
    seed: int = 0
    design: str = "exact"


@dataclasses.dataclass(frozen=True)
class ModelConfig:
    """The network every shadow model shares (each with its own parameters).

    Attributes:
      name: a model from ``jaxsam.models`` (``mlp``, ``cnn``, ...), or your own Flax model as
        an import path ``package.module:attr`` (:mod:`jaxsam.models.custom`; docs/recipes.md):
        ``attr(num_classes, **kwargs)`` returns the ``flax.linen.Module``, or ``attr`` is a
        Module class with a ``num_classes`` field. Only training imports it.
      width: hidden width (MLP) or first-stage channel count (conv nets); ``None``: the
        model's standard size (``jaxsam.models.STANDARD``). Built-in models only.
      depth: hidden layers (MLP) or conv layers (CNN), where the name does not fix it;
        ``None``: the model's standard depth. Built-in models only.
      dtype: compute dtype; ``bfloat16`` keeps float32 master weights. Built-in models only
        (a custom model's dtype is one of its own ``kwargs``).
      kwargs: keyword arguments of a custom model's ``attr`` (JSON values); empty for the
        built-in models.
    """

    name: str = "mlp"
    width: int | None = None
    depth: int | None = None
    dtype: str = "float32"
    kwargs: dict = dataclasses.field(default_factory=dict)


@dataclasses.dataclass(frozen=True)
class DPConfig:
    """DP-SGD for every shadow model (docs/recipes.md): on when ``clip_norm`` is set.

    Attributes:
      clip_norm: per-example L2 clipping bound C; ``None``: no DP (the default).
      noise_multiplier: sigma >= 0; Gaussian noise of standard deviation ``sigma * C`` is added
        to each batch's sum of clipped gradients (0: clipping only, no privacy guarantee).
      delta: the delta of the (epsilon, delta) guarantee recorded in run.json, in (0, 1).
      sampling: ``poisson`` (each training example joins each step independently with
        probability ``B / n``; the accountant's assumption) or ``shuffle`` (the usual epoch
        order; the epsilon is then computed as if Poisson-sampled, not a formal guarantee).
      microbatch_size: examples whose per-example gradients are computed at once (less memory,
        more sequential work); ``None``: the whole batch at once.
      accountant: ``pld`` (privacy-loss distributions, tighter) or ``rdp`` (Renyi DP), both
        from the dp-accounting library.
    """

    clip_norm: float | None = None
    noise_multiplier: float = 0.0
    delta: float = 1e-5
    sampling: str = "poisson"
    microbatch_size: int | None = None
    accountant: str = "pld"

    @property
    def enabled(self) -> bool:
        """Whether DP-SGD is on (``clip_norm`` is set)."""
        return self.clip_norm is not None


@dataclasses.dataclass(frozen=True)
class OptimConfig:
    """Optimizer: a base optimizer (``base``), alone or wrapped by a SAM-family variant (``name``).

    Attributes:
      name: the SAM variant, a name of the optimizer registry (:mod:`jaxsam.optim.registry`):
        ``sgd`` (no SAM wrapper: the base optimizer alone), ``sam``, ``asam``, ``gsam``,
        ``looksam``.
      base: the base optimizer that turns the (SAM) gradient into an update: ``sgd`` (heavy-ball
        SGD with coupled weight decay, the default), ``nesterov``, ``adam``, ``adamw``, ``lamb``
        (:data:`jaxsam.optim.registry.BASES`), or any optax optimizer factory by name
        (``rmsprop``, ``lion``, ``contrib.NAME``, ...). docs/recipes.md says per base whether
        ``weight_decay`` is coupled or decoupled.
      base_args: keyword arguments of the base's factory, e.g. ``{"b2": 0.98}`` for adam;
        checked against the factory's signature. ``learning_rate`` comes from the fields below,
        ``momentum`` (sgd, nesterov) and ``weight_decay`` (sgd, nesterov, and factories with
        their own ``weight_decay`` such as adamw, lamb) from this section.
      learning_rate: peak learning rate (of every base; schedule and warm-up apply to all).
      momentum: heavy-ball momentum of the ``sgd`` / ``nesterov`` base (other bases ignore it:
        set theirs in ``base_args``, e.g. ``b1``).
      weight_decay: weight-decay coefficient of the base: coupled (``weight_decay * w`` added to
        the gradient) for sgd, nesterov, adam and factories without their own decay; the
        factory's own (decoupled for adamw and lamb) otherwise.
      rho: SAM neighbourhood radius.
      schedule: learning-rate schedule over all training steps.
      warmup_epochs: linear warm-up length in epochs.
      extra: variant-specific keyword arguments (``eta`` for ASAM, ``alpha`` for GSAM, ``k`` and
        ``alpha`` for LookSAM), checked against the registry entry's argument spec.
      dp: DP-SGD (:class:`DPConfig`): per-example clipping and Gaussian noise, off by default.
      fused_passes: SAM family only: run the clean and the perturbed gradient pass as the two
        iterations of one ``lax.scan`` body (:func:`jaxsam.optim.fused_update`), so that they
        share one set of activation buffers (peak memory of an SGD step plus about one
        parameter buffer; see docs/sam.md for the speed on each backend). Ignored for ``sgd``.
    """

    name: str = "sgd"
    base: str = "sgd"
    base_args: dict = dataclasses.field(default_factory=dict)
    learning_rate: float = 0.1
    momentum: float = 0.9
    weight_decay: float = 5e-4
    rho: float = 0.05
    schedule: str = "cosine"
    warmup_epochs: float = 0.0
    extra: dict = dataclasses.field(default_factory=dict)
    fused_passes: bool = False
    dp: DPConfig = dataclasses.field(default_factory=DPConfig)


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    """The training loop.

    Attributes:
      epochs: passes over each model's own training subset.
      batch_size: examples per model per step.
      seed: seed of initialisation, data order and augmentation (each model its own keys).
      strategy: how the model axis is executed (``auto`` measures).
      chunk_size: models per chunk for the ``chunked`` strategy (``None``: auto).
      steps_per_call: training steps fused into one jitted call (``None``: one epoch).
      checkpoint_every_steps: orbax checkpoint period in steps (0: only at the end).
      checkpoint_every_minutes: checkpoint period in minutes (0: off).
      on_divergence: ``stop`` the run, or ``exclude`` diverged models from scoring.
      progress: show a progress bar.
      label_smoothing: in [0, 1): the training loss's target puts ``1 - label_smoothing`` on
        the label and spreads ``label_smoothing`` evenly over all classes (0: plain
        cross-entropy). Training only: the exported logits and every attack signal are the
        model's raw outputs, never smoothed.
    """

    epochs: int = 30
    batch_size: int = 64
    seed: int = 0
    strategy: str = "auto"
    chunk_size: int | None = None
    steps_per_call: int | None = None
    checkpoint_every_steps: int = 0
    checkpoint_every_minutes: float = 10.0
    on_divergence: str = "stop"
    progress: bool = True
    label_smoothing: float = 0.0


@dataclasses.dataclass(frozen=True)
class AuditConfig:
    """Canaries for a DP audit (``jaxsam audit RUN``; docs/audit.md). Off by default.

    Attributes:
      canaries: number of canary examples (0: no audit, and the run is exactly the run without
        this section). Each target model includes each canary independently with probability
        1/2; the other models (references) never train on a canary; every other example keeps
        the study's masks.
      kind: ``mislabel`` (a pool example drawn with ``seed`` whose label is replaced by a wrong
        one), ``noise`` (an added example of random inputs with a random label) or
        ``duplicate`` (an added second copy of a pool example drawn with ``seed``).
      targets: how many of the ``masks.models`` models are targets (``None``: half of them);
        the others are references.
      seed: seed of the canaries, the targets and the targets' canary memberships.
    """

    canaries: int = 0
    kind: str = "mislabel"
    targets: int | None = None
    seed: int = 0

    @property
    def enabled(self) -> bool:
        """Whether the run has canaries."""
        return self.canaries > 0

    def check(self, models: int) -> None:
        """Raises :class:`ConfigError` for a bad value; ``models`` is ``masks.models``."""
        check_range("audit.canaries", self.canaries, 0, None, "a count >= 0 (0: no audit)")
        check_choice("audit.kind", self.kind, AUDIT_KINDS)
        check_range("audit.seed", self.seed, 0, 2**32 - 1, "an integer in [0, 2**32)")
        if self.targets is not None:
            what = f"between 1 and masks.models - 1 = {models - 1} (the others are references)"
            check_range("audit.targets", self.targets, 1, models - 1, what)


@dataclasses.dataclass(frozen=True)
class Config:
    """The whole run: data, masks, model, optimizer and loop.

    Attributes:
      version: the config format version (written by jaxsam; leave it as it is).
    """

    data: DataConfig = dataclasses.field(default_factory=DataConfig)
    masks: MaskConfig = dataclasses.field(default_factory=MaskConfig)
    model: ModelConfig = dataclasses.field(default_factory=ModelConfig)
    optim: OptimConfig = dataclasses.field(default_factory=OptimConfig)
    train: TrainConfig = dataclasses.field(default_factory=TrainConfig)
    audit: AuditConfig = dataclasses.field(default_factory=AuditConfig)
    version: int = CONFIG_VERSION


def show(value: Any, limit: int = 60) -> str:
    """``repr(value)`` cut to ``limit`` characters: a 4,000-digit integer stays one short line."""
    text = repr(value)
    return text if len(text) <= limit else f"{text[: limit - 20]}...({len(text)} characters)"


def check_choice(path: str, value: Any, allowed: tuple) -> None:
    if value not in allowed:
        raise ConfigError(f"{path} = {show(value)} is not allowed; use one of {list(allowed)}")


def check_range(path: str, value: float, lo: float | None, hi: float | None, what: str) -> None:
    if isinstance(value, int) and not isinstance(value, bool) and hi is None and value > MAX_INT:
        hi = MAX_INT  # every count and size is an int32 on the device
        what = f"{what} (at most 2**31 - 1)"
    if not math.isfinite(value):
        raise ConfigError(f"{path} = {show(value)} is not a finite number; it must be {what}")
    if (lo is not None and value < lo) or (hi is not None and value > hi):
        raise ConfigError(f"{path} = {show(value)} is out of range; it must be {what}")


def validate(config: Config) -> Config:
    """Checks every value's type and range; returns ``config`` or raises :class:`ConfigError`.

    Model, optimizer and dataset names are any non-empty names here (scoring a run needs
    none of them); :func:`jaxsam.plan.check_config` checks them before anything is trained.
    """
    d, m, mo, o, t = config.data, config.masks, config.model, config.optim, config.train
    if not d.dataset:
        raise ConfigError("data.dataset is empty; name a dataset such as 'digits' or 'cifar10'")
    check_choice("data.train_augment", d.train_augment, TRAIN_AUGMENTS)
    check_choice("data.query_augment", d.query_augment, QUERY_AUGMENTS)
    for name in ("pool_size", "test_size"):
        value = getattr(d, name)
        if value is not None:
            check_range(f"data.{name}", value, 1, None, "a positive integer or null")
    if not (isinstance(m.pkeep, float | int) and 0.0 < m.pkeep < 1.0):
        raise ConfigError(f"masks.pkeep = {m.pkeep!r} must lie strictly between 0 and 1 (e.g. 0.5)")
    check_range(
        "masks.models",
        m.models,
        2,
        MAX_MODELS,
        f"at least 2 (each target needs shadows) and at most {MAX_MODELS:,}",
    )
    check_choice("masks.design", m.design, MASK_DESIGNS)
    keep_count = round(m.pkeep * m.models)
    if m.design == "exact" and (keep_count < 1 or keep_count >= m.models):
        raise ConfigError(
            f"masks.pkeep * masks.models rounds to {keep_count} of {m.models} models; every "
            "example needs at least one IN and one OUT model: raise masks.models or change pkeep"
        )
    if not mo.name:
        raise ConfigError("model.name is empty; name a model such as 'mlp' or 'mymodule:Net'")
    check_choice("model.dtype", mo.dtype, DTYPES)
    if mo.width is not None:
        check_range("model.width", mo.width, 1, None, "a positive integer or null")
    if mo.depth is not None:
        check_range("model.depth", mo.depth, 1, None, "a positive integer or null")
    if not o.name:
        raise ConfigError("optim.name is empty; name an optimizer such as 'sgd' or 'sam'")
    check_choice("optim.schedule", o.schedule, SCHEDULES)
    check_range("optim.learning_rate", o.learning_rate, 0.0, None, "non-negative")
    check_range("optim.momentum", o.momentum, 0.0, 1.0, "in [0, 1]")
    check_range("optim.weight_decay", o.weight_decay, 0.0, None, "non-negative")
    check_range("optim.rho", o.rho, 0.0, None, "non-negative")
    check_range("optim.warmup_epochs", o.warmup_epochs, 0.0, None, "non-negative")
    check_range("train.epochs", t.epochs, 1, None, "a positive integer")
    check_range("train.batch_size", t.batch_size, 1, None, "a positive integer")
    check_choice("train.strategy", t.strategy, STRATEGIES)
    check_choice("train.on_divergence", t.on_divergence, DIVERGENCE_POLICIES)
    check_range("train.label_smoothing", t.label_smoothing, 0.0, None, "in [0, 1)")
    if t.label_smoothing >= 1.0:
        raise ConfigError(
            f"train.label_smoothing = {t.label_smoothing!r} is out of range; it must be in [0, 1)"
            " (1 would make every target uniform: use e.g. 0.1)"
        )
    if t.chunk_size is not None:
        check_range("train.chunk_size", t.chunk_size, 1, None, "a positive integer or null")
    if t.steps_per_call is not None:
        check_range("train.steps_per_call", t.steps_per_call, 1, None, "positive or null")
    check_range("train.checkpoint_every_steps", t.checkpoint_every_steps, 0, None, ">= 0")
    check_range("train.checkpoint_every_minutes", t.checkpoint_every_minutes, 0, None, ">= 0")
    _validate_dp(config)
    config.audit.check(config.masks.models)
    for path, seed in (("data.seed", d.seed), ("masks.seed", m.seed), ("train.seed", t.seed)):
        check_range(path, seed, 0, 2**32 - 1, "an integer in [0, 2**32)")
    return config


def _validate_dp(config: Config) -> None:
    """Checks ``optim.dp`` values (what DP-SGD needs of the model and optimizer: the plan
    step's, :func:`jaxsam.plan.check_config`)."""
    dp = config.optim.dp
    check_range("optim.dp.noise_multiplier", dp.noise_multiplier, 0.0, None, "non-negative")
    check_range("optim.dp.delta", dp.delta, 0.0, 1.0, "in (0, 1), e.g. 1e-5")
    if not 0.0 < dp.delta < 1.0:
        raise ConfigError(f"optim.dp.delta = {dp.delta!r} is out of range; it must be in (0, 1)")
    check_choice("optim.dp.sampling", dp.sampling, DP_SAMPLINGS)
    check_choice("optim.dp.accountant", dp.accountant, DP_ACCOUNTANTS)
    if dp.microbatch_size is not None:
        check_range("optim.dp.microbatch_size", dp.microbatch_size, 1, None, "positive or null")
    if not dp.enabled:
        if dp.noise_multiplier or dp.microbatch_size is not None:
            raise ConfigError(
                "optim.dp.noise_multiplier / optim.dp.microbatch_size are set but "
                "optim.dp.clip_norm is null, so DP-SGD is off; set optim.dp.clip_norm (e.g. "
                "optim.dp.clip_norm = 1.0) or drop them"
            )
        return
    check_range("optim.dp.clip_norm", dp.clip_norm, 0.0, None, "positive")
    if dp.clip_norm <= 0:
        raise ConfigError(f"optim.dp.clip_norm = {dp.clip_norm!r} must be positive, e.g. 1.0")


def to_dict(config: Any) -> dict:
    """The config tree as plain JSON-able dicts."""
    return dataclasses.asdict(config)


def _type_ok(value: Any, annotation: Any) -> bool:
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        return any(_type_ok(value, a) for a in typing.get_args(annotation))
    if annotation is type(None):
        return value is None
    if annotation in (float, int):  # a bool is an int to Python, never to a config
        kinds = (int, float) if annotation is float else int
        return isinstance(value, kinds) and not isinstance(value, bool)
    if annotation in (bool, str):
        return isinstance(value, annotation)
    if annotation is dict or origin is dict:
        return isinstance(value, Mapping)
    return True


def _build(cls: type, data: Any, path: str) -> Any:
    if not isinstance(data, Mapping):
        raise ConfigError(f"{path or 'config'} must be a JSON object, got {type(data).__name__}")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - set(fields))
    if unknown:
        where = f"{path}." if path else ""
        raise ConfigError(
            f"unknown config key {where}{unknown[0]}; allowed keys here: {sorted(fields)}"
        )
    kwargs = {}
    for name, value in data.items():
        key_path = f"{path}.{name}" if path else name
        annotation = hints[name]
        if dataclasses.is_dataclass(annotation):
            kwargs[name] = _build(annotation, value, key_path)
            continue
        if not _type_ok(value, annotation):
            expected = annotation.__name__ if isinstance(annotation, type) else str(annotation)
            hint = ""
            if isinstance(value, float) and math.isfinite(value) and value.is_integer():
                hint = f" (write the integer {int(value)} without a decimal point or exponent)"
            raise ConfigError(
                f"{key_path} = {show(value)} has the wrong type; expected {expected}{hint}"
            )
        if annotation is float or (
            typing.get_origin(annotation) in (typing.Union, types.UnionType)
            and float in typing.get_args(annotation)
            and isinstance(value, int)
        ):
            value = float(value)
        kwargs[name] = dict(value) if isinstance(value, Mapping) else value
    return cls(**kwargs)


def from_dict(data: Mapping) -> Config:
    """Builds and validates a :class:`Config` from nested dicts (missing keys take defaults).

    Types and ranges only (:func:`validate`); :func:`jaxsam.plan.check_config` adds the checks
    that need the optimizer registry or the model code.
    """
    config = _build(Config, data, "")
    if config.version != CONFIG_VERSION:
        raise ConfigError(
            f"config version {config.version} is not supported by this jaxsam "
            f"(expects {CONFIG_VERSION}); upgrade jaxsam or rewrite the config"
        )
    return validate(config)


def load(path: str | Path) -> Config:
    """Reads a JSON config file (such as a run directory's ``config.json``)."""
    return from_dict(read_json_file(path, "config file", "pass an existing JSON file", dict))


def replace(config: Config, **overrides: Any) -> Config:
    """Returns a copy with dotted-path overrides, e.g. ``replace(c, **{"optim.name": "sam"})``."""
    data = to_dict(config)
    for dotted, value in overrides.items():
        node = data
        *parents, leaf = dotted.split(".")
        for p in parents:
            if p not in node or not isinstance(node[p], dict):
                raise ConfigError(f"unknown config key {dotted}")
            node = node[p]
        if leaf not in node:
            raise ConfigError(f"unknown config key {dotted}; allowed: {sorted(node)}")
        node[leaf] = value
    return from_dict(data)
