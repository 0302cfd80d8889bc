"""Peak memory of one attack call at full size, against the signal's size (docs/performance.md).

    python experiments/score_peak_memory.py lira_online|lira_offline|rmia [--models M]

Builds the [M, 50,000, 18] float32 signal in place (standard normal plus 1.5 where the model
trained on the example, exact M/2-of-M masks; RMIA gets its sigmoid), compiles the attack on a
200-example slice, then prints the process's resident memory before the full call, its peak
(``ru_maxrss``) after it, and that peak over the signal's bytes (the goal: at most 2). The
peak counts the whole process: the signal, the masks, the JAX and numba runtimes and the
attack's own buffers.
"""

from __future__ import annotations

import argparse
import resource

import numpy as np

from jaxsam.attacks import lira_from_signal, rmia_from_signal

CALLS = {
    "lira_online": lambda s, k: lira_from_signal(s, k, online=True),
    "lira_offline": lambda s, k: lira_from_signal(s, k, online=False),
    "rmia": lambda s, k: rmia_from_signal(s, k),
}


def study(m: int, n: int, a: int, rmia: bool) -> tuple[np.ndarray, np.ndarray]:
    """The synthetic signal [M, N, A] float32 (probabilities for RMIA) and masks [M, N]."""
    rng = np.random.default_rng(0)
    keep = np.argsort(rng.random((m, n)), axis=0) < m // 2
    sig = np.empty((m, n, a), np.float32)
    for i in range(m):  # one model at a time: no temporary of the signal's size
        sig[i] = rng.standard_normal((n, a), dtype=np.float32) + 1.5 * keep[i][:, None]
    if rmia:  # sigmoid in place
        np.negative(sig, out=sig)
        np.exp(sig, out=sig)
        sig += 1
        np.reciprocal(sig, out=sig)
    return sig, keep


def resident_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * resource.getpagesize()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("attack", choices=sorted(CALLS))
    p.add_argument("--models", type=int, default=256)
    p.add_argument("--examples", type=int, default=50_000)
    p.add_argument("--queries", type=int, default=18)
    args = p.parse_args()
    sig, keep = study(args.models, args.examples, args.queries, args.attack == "rmia")
    call = CALLS[args.attack]
    call(np.ascontiguousarray(sig[:, :200]), np.ascontiguousarray(keep[:, :200]))  # compile
    before = resident_bytes()
    call(sig, keep)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    gib = 2.0**30
    print(
        f"{args.attack}: signal {sig.nbytes / gib:.3f} GiB, resident before the call "
        f"{before / gib:.3f} GiB, peak {peak / gib:.3f} GiB = {peak / sig.nbytes:.2f}x the signal"
    )


if __name__ == "__main__":
    main()
