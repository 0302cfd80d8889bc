"""Logits of every model on every pool example under every query view: [M, N, A, C]."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from jaxsam.data.augment import normalize, query_views
from jaxsam.train.setup import TrainSetup
from jaxsam.train.strategies import model_map


def make_logits_fn(setup: TrainSetup, mean: jax.Array, std: jax.Array, kind: str, queries: int):
    """Returns ``f(params, batch_stats, x) -> [M, B, A, C]`` float32.

    ``params`` / ``batch_stats`` are stacked [M, ...]; ``x`` [B, ...] is one batch of raw pool
    inputs shared by all models (one copy on each device, never one per model). The model axis
    runs under the setup's execution plan (``setup.execution``: vmap, chunks, loop or sharded over
    all local devices; plain vmap when no plan is set). BatchNorm runs in inference mode
    (running statistics).
    """
    model, has_bn = setup.model, setup.has_batch_norm
    plan = setup.execution

    def one_model(state, data, x):
        del data
        params, batch_stats = state
        views = query_views(x, queries)  # [A, B, ...]
        a, b = views.shape[:2]
        flat = normalize(views.reshape(a * b, *views.shape[2:]), mean, std, kind)
        variables = {"params": params}
        if has_bn:
            variables["batch_stats"] = batch_stats
        logits = model.apply(variables, flat, train=False).astype(jnp.float32)
        return logits.reshape(a, b, -1).transpose(1, 0, 2)

    strategy = plan.strategy if plan is not None else "vmap"
    chunk = plan.chunk_size if plan is not None else None
    mapped = model_map(one_model, strategy, chunk_size=chunk)

    def logits_fn(params, batch_stats, x):
        return mapped((params, batch_stats), None, x)

    return logits_fn


def compute_logits(
    logits_fn, params, batch_stats, x: jax.Array, batch_size: int = 256
) -> np.ndarray:
    """Runs ``logits_fn`` over ``x`` [N, ...] in batches; returns host float32 [M, N, A, C]."""
    n = x.shape[0]
    if n == 0:
        m = jax.tree.leaves(params)[0].shape[0]
        probe = logits_fn(params, batch_stats, jnp.zeros((1, *x.shape[1:]), x.dtype))
        return np.zeros((m, 0, *probe.shape[2:]), np.float32)
    parts = []
    for start in range(0, n, batch_size):
        stop = min(start + batch_size, n)
        batch = x[start:stop]
        if stop - start < batch_size and n > batch_size:
            # Pad the last batch so that one compiled shape serves every batch.
            pad = batch_size - (stop - start)
            batch = jnp.concatenate([batch, jnp.repeat(batch[-1:], pad, axis=0)], axis=0)
        out = logits_fn(params, batch_stats, batch)
        parts.append(np.asarray(out[:, : stop - start]))
    return np.concatenate(parts, axis=1)
