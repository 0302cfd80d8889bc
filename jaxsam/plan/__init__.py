"""The plan step: a config checked and resolved before anything runs or is written.

- :mod:`~jaxsam.plan.study`: :func:`make_plan`, the one pure step from a config to a
  :class:`StudyPlan` (checked config, pool and fingerprint, masks, model, optimizer, DP
  guarantee, memory and disk estimates, what the run directory holds), which training
  executes and ``jaxsam plan`` prints;
- :mod:`~jaxsam.plan.checks`: the config checks that need the optimizer registry or the model
  code (:func:`check_config`), and the config against the loaded pool
  (:func:`check_compatible`);
- :mod:`~jaxsam.plan.memory`: memory per model and example, models per device, time
  (``jaxsam plan``; CPU only, known datasets not loaded);

This module only re-exports.
"""

# ruff: noqa: F401 - this module only re-exports
from jaxsam.plan.checks import check_compatible, check_config
from jaxsam.plan.memory import (
    KNOWN_DATASETS,
    KNOWN_DEVICES,
    GiB,
    MemoryEstimate,
    device_table,
    human_bytes,
    human_seconds,
    memory_estimate,
    pool_shapes,
    time_estimates,
)
from jaxsam.plan.study import (
    StudyPlan,
    build_study,
    make_plan,
    open_plan,
    stored_execution,
    study_header,
)
