"""``jaxsam bench import``: peak memory of ``jaxsam import-logits`` against the logits file's size.

    jaxsam bench import [--models 128 --examples 60000 --queries 2 --classes 20] [--json]
    jaxsam bench import --quick      # M = 16 (about 150 MB of logits)

Writes a synthetic ``keep.npy`` / ``logits.npy`` (float32 [M, N, A, C], written a model at a
time) / ``labels.npy`` into a temporary folder, runs ``jaxsam import-logits`` on them in a
child process and prints the child's peak resident memory (its ``VmHWM``; Linux) as a ratio to the
logits file's size (``x_file``; below 1 means the import never held the logits whole), with its
wall time. ``--layout lira`` writes the published LiRA layout (one ``logits/*.npy`` per model)
and imports it with ``--lira-dir``. The baseline the ratio divides by is the file itself,
measured in the same run.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

# The import in a child that reports its own peak: VmHWM of its own address space. (ru_maxrss
# would not do: Linux carries it across exec from the address space the child was forked or
# vforked from, i.e. this parent's, which wrote the logits file.)
_CHILD = (
    "import sys; from jaxsam.cli import main; rc = main(sys.argv[1:]); "
    "hwm = [ln for ln in open('/proc/self/status') if ln.startswith('VmHWM:')]; "
    "print('PEAK', int(hwm[0].split()[1]) * 1024); sys.exit(rc)"
)


def write_inputs(root: Path, m: int, n: int, a: int, c: int, layout: str, seed: int = 0) -> int:
    """Writes the synthetic import under ``root``; returns the logits' bytes on disk."""
    rng = np.random.default_rng(seed)
    keep = np.argsort(rng.random((m, n)), axis=0) < m // 2
    labels = rng.integers(0, c, n)
    if layout == "arrays":
        np.save(root / "keep.npy", keep)
        np.save(root / "labels.npy", labels)
        out = np.lib.format.open_memmap(root / "logits.npy", "w+", np.float32, (m, n, a, c))
        for i in range(m):
            out[i] = rng.standard_normal((n, a, c), dtype=np.float32)
        out.flush()
        del out
        return (root / "logits.npy").stat().st_size
    np.save(root / "y_train.npy", labels)
    size = 0
    for i in range(m):
        d = root / f"experiment-{i}_{m}"
        (d / "logits").mkdir(parents=True)
        np.save(d / "keep.npy", keep[i])
        f = d / "logits" / "0000000010.npy"
        np.save(f, rng.standard_normal((n, 1, a, c), dtype=np.float32))
        size += f.stat().st_size
    return size


def run(argv: list[str]) -> int:
    from jaxsam.cli_options import tidy

    p = argparse.ArgumentParser(prog="jaxsam bench import", description=__doc__.splitlines()[0])
    p.add_argument("--models", type=int, default=128, help="M, models")
    p.add_argument("--examples", type=int, default=60_000, help="N, pool examples")
    p.add_argument("--queries", type=int, default=2, help="A, query views")
    p.add_argument("--classes", type=int, default=20, help="C, classes")
    p.add_argument("--layout", choices=("arrays", "lira"), default="arrays", help="input layout")
    p.add_argument("--quick", action="store_true", help="M = 16: about 150 MB of logits")
    p.add_argument("--json", action="store_true", help="print the row as JSON")
    args = tidy(p).parse_args(argv)
    if args.quick:
        args.models = 16
    m, n, a, c = args.models, args.examples, args.queries, args.classes
    with tempfile.TemporaryDirectory(prefix="jaxsam_bench_import_") as tmp:
        root = Path(tmp)
        file_bytes = write_inputs(root, m, n, a, c, args.layout)
        if args.layout == "arrays":
            src = ["--keep", str(root / "keep.npy"), "--logits", str(root / "logits.npy"),
                   "--labels", str(root / "labels.npy")]  # fmt: skip
        else:
            src = ["--lira-dir", str(root)]
        cmd = [sys.executable, "-c", _CHILD, "import-logits", *src, "--out", str(root / "run")]
        t0 = time.perf_counter()
        proc = subprocess.run(cmd, capture_output=True, text=True, env=dict(os.environ))
        seconds = time.perf_counter() - t0
        peaks = [ln for ln in proc.stdout.splitlines() if ln.startswith("PEAK ")]
        if proc.returncode != 0 or not peaks:
            print(proc.stderr[-2000:], file=sys.stderr)
            return 1
        peak = int(peaks[-1].split()[1])
    row = {
        "bench": "import",
        "layout": args.layout,
        "models": m,
        "examples": n,
        "queries": a,
        "classes": c,
        "file_bytes": int(file_bytes),
        "peak_bytes": int(peak),
        "x_file": round(peak / file_bytes, 3),
        "seconds": round(seconds, 2),
    }
    if args.json:
        print(json.dumps(row))
    else:
        print(
            f"import-logits ({args.layout}) M={m} N={n} A={a} C={c}: logits "
            f"{file_bytes / 2**30:.2f} GiB, peak {peak / 2**30:.2f} GiB = x{row['x_file']:.2f} "
            f"the file, {seconds:.1f} s"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(run(sys.argv[1:]))
