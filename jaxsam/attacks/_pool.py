"""Chunks of examples handed to one thread per core (at most 2), for the compiled kernels.

Each kernel is serial and releases the GIL; :func:`run` hands chunks of examples to the
threads as they free up, so a core that another job holds does not stall the other (a static
split over threads, as ``prange`` does, waits for the slowest). Results come back in chunk
order, so whatever a caller sums over chunks is summed in the same order for any number of
threads.
"""

from __future__ import annotations

import concurrent.futures
import os


def threads() -> int:
    """Threads the kernels use: one per core, at most 2."""
    return max(1, min(2, os.cpu_count() or 1))


def run(fn, n: int, chunk: int) -> list:
    """``[fn(n0, n1) for each chunk of examples n0..n1 of 0..n]``, on :func:`threads` threads."""
    spans = [(s, min(n, s + chunk)) for s in range(0, n, chunk)]
    if threads() == 1 or len(spans) == 1:
        return [fn(*s) for s in spans]
    with concurrent.futures.ThreadPoolExecutor(threads()) as pool:
        return list(pool.map(lambda s: fn(*s), spans))
