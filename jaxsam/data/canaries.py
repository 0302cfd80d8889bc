"""Canaries for a DP audit: which pool examples they are, which models are targets, and the
masks over them (``audit.*`` in the config; docs/audit.md).

A run with ``audit.canaries = C > 0`` has ``T = audit.targets`` target models (default M / 2,
drawn with ``audit.seed``) and ``M - T`` references:

- each target trains on each canary independently with probability 1/2;
- no reference ever trains on a canary;
- every other pool example keeps the masks the study would have without canaries (the same
  columns, bit for bit), and the pool's normalisation is the one computed without canaries.

The canaries (``audit.kind``):

- ``mislabel``: C pool examples drawn with the seed keep their inputs and get a wrong label
  (uniform over the other classes). They stay where they are in the pool.
- ``noise``: C added examples with uniform random pixels (images) or features drawn from the
  pool's per-feature mean and spread (tabular data), each with a uniform random label; their
  ids are negative (-1, -2, ...: no source row).
- ``duplicate``: C added second copies of pool examples drawn with the seed (same input, label
  and id). The original stays a normal pool example under the study's masks.

Added canaries come after the pool's own examples. With ``audit.canaries = 0`` nothing here
changes the pool or the masks.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import numpy as np

from jaxsam.config import AuditConfig, Config, show
from jaxsam.data.pool import Pool
from jaxsam.errors import DataError

_SOURCES, _TARGETS, _INCLUDE, _CONTENT = 0x63616E, 0x746172, 0x696E63, 0x636F6E


def _rng(seed: int, tag: int) -> np.random.Generator:
    return np.random.default_rng(np.random.SeedSequence([seed, tag]))


def num_targets(audit: AuditConfig, num_models: int) -> int:
    """T: ``audit.targets``, or half of the M models (at least 1)."""
    return audit.targets if audit.targets is not None else max(1, num_models // 2)


def targets(audit: AuditConfig, num_models: int) -> np.ndarray:
    """The target models: int64 [T] sorted model indices, drawn with ``audit.seed``."""
    t = num_targets(audit, num_models)
    if not 1 <= t < num_models:
        raise DataError(
            f"audit.targets = {t} of masks.models = {num_models}: an audit needs at least one "
            "target and one reference; lower audit.targets or raise masks.models"
        )
    pick = _rng(audit.seed, _TARGETS).choice(num_models, size=t, replace=False)
    return np.sort(pick).astype(np.int64)


def appended(audit: AuditConfig) -> bool:
    """Whether the canaries are added after the pool (``noise``, ``duplicate``)."""
    return audit.enabled and audit.kind != "mislabel"


def num_added(audit: AuditConfig) -> int:
    """Examples the canaries add after the pool: ``audit.canaries`` for ``noise`` and
    ``duplicate``, 0 for ``mislabel`` (and without canaries)."""
    return audit.canaries if appended(audit) else 0


def canary_indices(audit: AuditConfig, pool_size: int) -> np.ndarray:
    """The canaries' pool indices, int64 [C] sorted, in the pool *with* canaries.

    Args:
      audit: the config's ``audit`` section.
      pool_size: N, the number of pool examples *without* the added canaries.
    """
    if not audit.enabled:
        return np.zeros(0, np.int64)
    if appended(audit):
        return np.arange(pool_size, pool_size + audit.canaries, dtype=np.int64)
    return np.sort(_sources(audit, pool_size))


def study_columns(audit: AuditConfig, num_columns: int) -> np.ndarray | None:
    """The pool columns that are not canaries (int64, sorted), or None without canaries.

    Args:
      audit: the config's ``audit`` section.
      num_columns: N', the pool size *with* the added canaries (the masks' columns).
    """
    if not audit.enabled:
        return None
    n = num_columns - audit.canaries if appended(audit) else num_columns
    return np.setdiff1d(np.arange(num_columns), canary_indices(audit, n)).astype(np.int64)


def _sources(audit: AuditConfig, pool_size: int) -> np.ndarray:
    """The pool examples a mislabel or duplicate canary is made from (draw order)."""
    if audit.canaries > pool_size:
        raise DataError(
            f"audit.canaries = {audit.canaries} but the pool has {pool_size} examples; "
            f"{audit.kind} canaries are made from distinct pool examples: lower audit.canaries "
            "or raise data.pool_size"
        )
    return _rng(audit.seed, _SOURCES).choice(pool_size, size=audit.canaries, replace=False)


def add_canaries(pool: Pool, audit: AuditConfig) -> Pool:
    """The pool with its canaries (``audit.kind``); ``pool`` itself when there are none.

    The normalisation (``mean``, ``std``) and the held-out points are the pool's own.
    """
    if not audit.enabled:
        return pool
    n, k = pool.size, pool.num_classes
    rng = _rng(audit.seed, _CONTENT)
    if audit.kind == "mislabel":
        if k < 2:
            raise DataError("mislabel canaries need at least 2 classes; use audit.kind = 'noise'")
        src = np.sort(_sources(audit, n))
        y = np.array(pool.y, copy=True)
        y[src] = (y[src] + rng.integers(1, k, size=src.size)) % k
        return dataclasses.replace(pool, y=y.astype(np.int32))
    if audit.kind == "duplicate":
        src = _sources(audit, n)
        x, y, ids = pool.x[src], pool.y[src], pool.ids[src]
    else:  # noise
        c = audit.canaries
        if pool.kind == "image":
            x = rng.integers(0, 256, size=(c, *pool.input_shape), dtype=np.uint8)
        else:
            x = (pool.mean + pool.std * rng.standard_normal((c, *pool.input_shape))).astype(
                pool.x.dtype
            )
        y = rng.integers(0, k, size=c).astype(np.int32)
        ids = -np.arange(1, c + 1, dtype=np.int64)
    return dataclasses.replace(
        pool,
        x=np.concatenate([pool.x, x.astype(pool.x.dtype)]),
        y=np.concatenate([pool.y, y]).astype(np.int32),
        ids=np.concatenate([pool.ids, ids]).astype(np.int64),
    )


def inclusions(audit: AuditConfig, num_models: int) -> np.ndarray:
    """bool [T, C]: whether target ``targets[t]`` trains on canary ``c`` (probability 1/2)."""
    t = num_targets(audit, num_models)
    return _rng(audit.seed, _INCLUDE).random((t, audit.canaries)) < 0.5


def audit_masks(keep: np.ndarray, audit: AuditConfig) -> np.ndarray:
    """The study's masks [M, N] -> the masks with canaries [M, N'] (``keep`` if none).

    Args:
      keep: bool [M, N], the study's masks over the pool *without* added canaries.
      audit: the config's ``audit`` section.

    Returns:
      bool [M, N'] with ``N' = N + C`` for added canaries, else ``N``: canary columns hold the
      targets' independent coins and False for every reference; other columns are ``keep``'s.
    """
    if not audit.enabled:
        return keep
    m, n = keep.shape
    idx = canary_indices(audit, n)
    out = (
        np.concatenate([keep, np.zeros((m, audit.canaries), bool)], 1)
        if appended(audit)
        else (np.array(keep, copy=True))
    )
    out[:, idx] = False
    out[np.ix_(targets(audit, m), idx)] = inclusions(audit, m)
    return out


def header_fields(config: Config, keep: np.ndarray) -> dict:
    """The run-header fields of an audited run: ``{"audit": ...}``, or ``{}`` without canaries.

    ``keep`` is the run's masks with canaries ([M, N']). The record holds ``kind``,
    ``canaries`` (pool indices), ``targets`` (model indices), ``references`` and, for
    mislabel and duplicate canaries, ``sources`` (the pool examples they were made from).

    Raises:
      DataError: the masks do not hold the canaries this config describes.
    """
    audit = config.audit
    if not audit.enabled:
        return {}
    m, n_total = keep.shape
    n = n_total - audit.canaries if appended(audit) else n_total
    idx, tg = canary_indices(audit, n), targets(audit, m)
    refs = np.setdiff1d(np.arange(m), tg)
    if keep[np.ix_(refs, idx)].any() or not np.array_equal(
        keep[np.ix_(tg, idx)], inclusions(audit, m)
    ):
        raise DataError("the masks do not hold this config's canaries; rebuild them (a bug)")
    record = {
        "kind": audit.kind,
        "canaries": idx.tolist(),
        "targets": tg.tolist(),
        "references": refs.tolist(),
        "inclusion_probability": 0.5,
        "seed": audit.seed,
    }
    if audit.kind == "mislabel":
        record["sources"] = idx.tolist()
    elif audit.kind == "duplicate":
        record["sources"] = _sources(audit, n).tolist()
    return {"audit": record}


def _index_problem(value: Any, bound: int) -> str | None:
    """What is wrong with a list of indices into ``range(bound)``, or None."""
    if not isinstance(value, list) or not all(
        isinstance(i, int) and not isinstance(i, bool) for i in value
    ):
        return "is not a list of integer indices"
    bad = [i for i in value if not 0 <= i < bound]
    if bad:
        return f"has index {bad[0]} outside [0, {bound})"
    return "repeats an index" if len(set(value)) != len(value) else None


def record_problem(record: Any, audit: AuditConfig, keep: np.ndarray) -> str | None:
    """What is wrong with an audited run's header record (:func:`header_fields`), or None.

    Checked: the types; ``kind`` is the config's; ``canaries`` are ``audit.canaries`` distinct
    pool indices (added canaries: the last pool columns); ``targets`` are :func:`num_targets`
    distinct model indices; ``references`` are exactly the other models, and no reference's
    masks train on a canary; ``sources`` (when present) are one distinct index per canary into
    the pool without added canaries. The words follow ``run.json``'s path, naming the key.
    """
    if not isinstance(record, dict):
        return f"has audit = {show(record)}, not a JSON object"
    for key in ("kind", "canaries", "targets", "references"):
        if key not in record:
            return f"has no audit.{key} key"
    m, n = keep.shape
    c, n_pool = audit.canaries, n - num_added(audit)

    def has(key: str, problem: str) -> str:
        return f"has audit.{key} = {show(record[key])}, which {problem}"

    if record["kind"] != audit.kind:
        return has("kind", f"is not config.json's audit.kind = {audit.kind!r}")
    bounds = {"canaries": n, "targets": m, "references": m, "sources": n_pool}
    for key, bound in bounds.items():
        if key in record and (problem := _index_problem(record[key], bound)) is not None:
            return has(key, problem)
    canaries, tg, refs = record["canaries"], record["targets"], record["references"]
    if len(canaries) != c:
        return has("canaries", f"lists {len(canaries)} canaries, not audit.canaries = {c}")
    if appended(audit) and sorted(canaries) != list(range(n_pool, n)):
        return has("canaries", f"are not the last {c} pool examples ({audit.kind} adds them)")
    if len(tg) != num_targets(audit, m):
        return has("targets", f"lists {len(tg)} targets, not the {num_targets(audit, m)} of audit")
    if shared := sorted(set(tg) & set(refs)):
        return has("references", f"holds model {shared[0]}, a target in audit.targets too")
    if left := sorted(set(range(m)) - set(tg) - set(refs)):
        return has("references", f"leaves out model {left[0]}, which is no target either")
    rows, cols = np.nonzero(keep[np.ix_(refs, canaries)])
    if rows.size:
        why = f"trained on canary {canaries[cols[0]]} (a reference never does)"
        return has("references", f"holds model {refs[rows[0]]}, whose masks say it {why}")
    if "sources" in record and len(record["sources"]) != c:
        return has("sources", f"lists {len(record['sources'])} sources for {c} canaries")
    return None


def check_record(path: Path, info: dict, config: Config, keep: np.ndarray) -> None:
    """Checks the ``audit`` record of the run header ``path/run.json`` (:func:`record_problem`)
    against the run's config and masks ``keep`` [M, N']: the run reads its canaries and targets
    from it, and the audit takes every model that is not a target for a reference.

    A run whose config has canaries has the record; one whose config has none has none.

    Raises:
      DataError: naming ``run.json``, the key and what is wrong with it.
    """
    c = config.audit.canaries
    if "audit" not in info:
        problem = (
            None if c == 0 else f"has no audit key though config.json has audit.canaries = {c}"
        )
    elif c == 0:
        problem = "has an audit key though config.json has audit.canaries = 0"
    else:
        problem = record_problem(info["audit"], config.audit, keep)
    if problem is not None:
        raise DataError(
            f"{path / 'run.json'} {problem}; the run directory is damaged or was edited: "
            "restore it or retrain the run"
        )
