"""``jaxsam plan --config FILE``: memory per model and example, models per device, time.

It prints the study's plan (:func:`jaxsam.plan.make_plan`, the object training executes),
made from the dataset's shapes: known datasets are not loaded.

Runs on the CPU only (``JAX_PLATFORMS=cpu``; shapes via ``jax.eval_shape``, activation memory
from XLA's compiled memory analysis of one CPU step): it never touches an accelerator.
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

from jaxsam import config as config_lib
from jaxsam.cli_options import add_config_options, command, load_config
from jaxsam.errors import ConfigError
from jaxsam.optim import registry

HELP = "print the memory and time plan of a config without touching an accelerator"
# What `jaxsam plan` says in place of a time estimate when it has no benchmark table.
NO_TABLE = "no benchmark table: run jaxsam bench train --json > table.json"


def add_parser(subparsers) -> None:
    p = command(subparsers, "plan", HELP, __doc__, run=run)
    p.add_argument("config_file", nargs="?", type=Path, metavar="CONFIG", help="config file")
    add_config_options(p, "JSON config file (same as CONFIG)", "override a config value")
    p.add_argument("--device-memory", type=float, metavar="GiB", help="memory of one device")
    p.add_argument("--bench-table", type=Path, help="JSON from `jaxsam bench train --json`")
    p.add_argument("--json", action="store_true", help="print the plan as JSON")


def model_size(model: config_lib.ModelConfig) -> str:
    """``width 64, depth 2``; a null width or depth shows the model's standard value."""
    from jaxsam.models import STANDARD

    std_width, std_depth = STANDARD.get(model.name, (None, None))
    width = f"width {std_width} (standard)" if model.width is None else f"width {model.width}"
    depth = f"depth {std_depth} (standard)" if model.depth is None else f"depth {model.depth}"
    return f"{width}, {depth}"


def run(args: argparse.Namespace) -> int:
    os.environ["JAX_PLATFORMS"] = "cpu"
    import jax

    jax.config.update("jax_platforms", "cpu")
    from jaxsam import plan as plan_lib

    cfg = load_config(args.config or args.config_file, args.set)
    study = plan_lib.make_plan(cfg, load_data=False, activations=True)  # what training executes
    rows = _bench_rows(args.bench_table)
    plan = study.memory
    sam = registry.is_sam_family(cfg.optim.name)
    times = plan_lib.time_estimates(plan, cfg.model.name, sam, rows) if rows else []
    devices = plan_lib.device_table(plan, args.device_memory)
    from jaxsam.attacks import sparse_masks_warning
    from jaxsam.data import canaries

    m = cfg.masks
    examples = plan.pool_size - canaries.num_added(cfg.audit)
    warning = sparse_masks_warning(
        None, design=m.design, pkeep=m.pkeep, models=m.models, examples=examples
    )
    if args.json:
        print(json.dumps(_as_json(plan, devices, times, warning), indent=2))
    else:
        _print_text(cfg, plan, devices, times, sam)
        if warning:
            print(f"warning: {warning}")
    return 0


def _bench_rows(path: Path | None) -> list | None:
    """The rows of ``--bench-table`` (``jaxsam bench train --json``), or None without one."""
    if path is None:
        return None
    try:
        rows = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise ConfigError(
            f"--bench-table {path} is not a readable JSON list ({e}); write it with "
            "`jaxsam bench train --json > table.json`"
        ) from e
    if not isinstance(rows, list):
        raise ConfigError(f"--bench-table {path} must hold a JSON list of rows")
    return rows


def _as_json(plan, devices: list, times: list, warning: str | None = None) -> dict:
    """``jaxsam plan --json``: the memory of the study's plan, models per device, times, and
    ``warnings`` (a list of sentences: masks too sparse for the attacks)."""
    return {
        "warnings": [warning] if warning else [],
        "params": plan.num_params,
        "bytes": {
            "params": plan.param_bytes,
            "batch_stats": plan.batch_stats_bytes,
            "opt_state": plan.opt_state_bytes,
            "gradient": plan.grad_bytes,
            "sam": plan.sam_bytes,
            "state_per_model": plan.state_bytes,
            "activation_per_example": plan.activation_bytes_per_example,
            "per_model_with_batch": plan.bytes_per_model,
            "pool": plan.pool_bytes,
            "dp_per_example_gradients": plan.dp_bytes,
        },
        "models": plan.num_models,
        "dp": None
        if plan.dp_microbatch is None
        else {"microbatch": plan.dp_microbatch, "capacity": plan.dp_capacity},
        "steps": plan.steps,
        "model_examples": plan.model_examples,
        "models_per_device": {name: fit for name, _, fit in devices},
        "time": times or None,
        "note": None if times else NO_TABLE,
    }


def _print_text(cfg: config_lib.Config, plan, devices: list, times: list, sam: bool) -> None:
    """``jaxsam plan``'s table: bytes per model and example, steps, fits, times."""
    from jaxsam import plan as plan_lib

    hb = plan_lib.human_bytes
    mo = cfg.model
    size = (
        f"kwargs {json.dumps(mo.kwargs)}"
        if ":" in mo.name  # a custom model (package.module:attr): its size is in its kwargs
        else model_size(mo)
    )
    print(
        f"plan for {cfg.masks.models} x {mo.name} ({size}) on {cfg.data.dataset}, "
        f"optimizer {cfg.optim.name}"
    )
    print(f"  parameters per model       {plan.num_params:,}  ({hb(plan.param_bytes)} float32)")
    print(f"  BatchNorm statistics       {hb(plan.batch_stats_bytes)}")
    print(f"  optimizer state            {hb(plan.opt_state_bytes)}")
    print(f"  gradient buffer            {hb(plan.grad_bytes)}")
    print(f"  SAM perturbed weights      {hb(plan.sam_bytes)}" + ("" if sam else "  (not SAM)"))
    print(f"  = state per model          {hb(plan.state_bytes)}")
    if plan.dp_microbatch is not None:
        print(
            f"  DP-SGD per-example grads   {hb(plan.dp_bytes)}  ({plan.dp_microbatch} per "
            f"microbatch + noise; {plan.dp_capacity} example slots per step)"
        )
    print(
        f"  activations per example    {hb(plan.activation_bytes_per_example)}  "
        f"[{plan.activation_source}]"
    )
    live = (
        f"per model, batch {plan.batch_size}"
        if plan.dp_microbatch is None
        else f"per model, microbatch {plan.dp_microbatch}"
    )
    print(f"  {live:<26} {hb(plan.bytes_per_model)}")
    print(f"  pool on device             {hb(plan.pool_bytes)}  ({plan.pool_size:,} examples)")
    print(
        f"  steps                      {plan.steps:,} ({plan.steps_per_epoch} per epoch x "
        f"{cfg.train.epochs} epochs), {plan.gradient_evaluations_per_step} gradient "
        f"evaluation(s) per step"
    )
    print(f"  model-examples             {plan.model_examples:,}")
    _print_fits(plan, devices, times)


def _print_fits(plan, devices: list, times: list) -> None:
    from jaxsam import plan as plan_lib

    print("models per device (vmap strategy, 90% of memory):")
    for name, gib, fit in devices:
        waves = -(-plan.num_models // fit) if fit else None
        print(
            f"  {name:<12} {gib:6.1f} GiB  {fit:>8,} models"
            + (f"  -> {waves} wave(s) of <= {fit}" if waves else "  -> does not fit")
        )
    if not times:
        print(NO_TABLE)
        return
    print("estimated training time (from the benchmark table):")
    for t in times:
        extra = " (x2 for SAM)" if t["sam_factor"] > 1 else ""
        print(
            f"  {t['backend']:<6} {t['strategy']:<8} "
            f"{t['model_examples_per_s']:,.0f} model-examples/s -> "
            f"{plan_lib.human_seconds(t['seconds'])}{extra}"
        )
