"""Chunks of examples handed to one thread per core (at most 2), for the compiled kernels.

Each kernel is serial and releases the GIL; :func:`run` hands chunks of examples to the
threads as they free up, so a core that another job holds does not stall the other (a static
split over threads, as ``prange`` does, waits for the slowest). Results come back in chunk
order, so whatever a caller sums over chunks is summed in the same order for any number of
threads.

The calling thread works too, beside helper threads that live as long as the process (one
with two cores): a LiRA call runs about a dozen of these passes, and starting a new pool of
threads for each cost about 2 ms a pass. A helper that has not started on a call's chunks by
the time the caller has taken the last one is not waited for (its queued task is cancelled),
so a pass run from inside another pass's chunk, or from two user threads at once, never waits
on a helper that is busy elsewhere. A process forked from this one starts its own helpers.
"""

from __future__ import annotations

import concurrent.futures
import itertools
import os
import threading

# The helper threads' name prefix (the command line tells them from threads that may report a
# failed write: ``jaxsam.cli.KERNEL_HELPERS``).
THREAD_NAME = "jaxsam-kernels"

_lock = threading.Lock()
_helpers: concurrent.futures.ThreadPoolExecutor | None = None


def threads() -> int:
    """Threads the kernels use: one per core, at most 2."""
    return max(1, min(2, os.cpu_count() or 1))


def _pool() -> concurrent.futures.ThreadPoolExecutor:
    global _helpers
    with _lock:
        if _helpers is None:
            _helpers = concurrent.futures.ThreadPoolExecutor(
                threads() - 1, thread_name_prefix=THREAD_NAME
            )
        return _helpers


def _forget_helpers() -> None:  # in a forked child: the parent's threads are not there
    global _helpers, _lock
    _helpers, _lock = None, threading.Lock()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget_helpers)


def run(fn, n: int, chunk: int) -> list:
    """``[fn(n0, n1) for each chunk of examples n0..n1 of 0..n]``, on :func:`threads` threads
    (the caller's among them). An exception raised by ``fn`` (the calling thread's where both
    threads raise) is raised here once every chunk already started has finished; no chunk
    starts after it."""
    spans = [(s, min(n, s + chunk)) for s in range(0, n, chunk)]
    if threads() == 1 or len(spans) == 1:
        return [fn(*s) for s in spans]
    out: list = [None] * len(spans)
    claim = itertools.count()  # next() on it is atomic under the GIL
    failed = threading.Event()

    def work() -> None:
        while not failed.is_set():
            i = next(claim)
            if i >= len(spans):
                return
            try:
                out[i] = fn(*spans[i])
            except BaseException:
                failed.set()
                raise

    helpers = [_pool().submit(work) for _ in range(threads() - 1)]
    error: BaseException | None = None
    try:
        work()
    except BaseException as e:  # still wait for the helpers' chunks before raising
        failed.set()  # (an interrupt between two chunks, too)
        error = e
    for h in helpers:
        if h.cancel():  # never started: it holds no chunk
            continue
        try:
            h.result()
        except BaseException as e:
            error = error or e
    if error is not None:
        raise error
    return out
