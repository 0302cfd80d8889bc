"""``jaxsam bench data``: pool build time from a prepared tfds dataset, and host-to-device copy.

Prepares a CIFAR-shaped dataset (random pixels, 5/6 train and 1/6 test, 32x32x3) through tfds'
own cifar10 builder from a synthetic ``cifar-10-binary.tar.gz`` in a temporary directory, then
times, in the same run:

- ``numpy.load`` of the same uint8 arrays from ``.npy`` files (the baseline);
- building the Pool the first time (array_record reads, PIL decoding, no TensorFlow);
- building it again (from jaxsam's ``.npy`` cache);
- ``jax.device_put`` of the pool images (host-to-device).

Preparation needs TensorFlow. Prints seconds, MB/s and ratios to the baseline.
"""

from __future__ import annotations

import argparse
import io
import json
import tarfile
import tempfile
import time
from pathlib import Path

import numpy as np


def _fake_cifar_binary(path: Path, n_train: int, n_test: int, seed: int = 0) -> None:
    rng = np.random.default_rng(seed)
    with tarfile.open(path, "w:gz", compresslevel=1) as tar:

        def add(name: str, payload: bytes) -> None:
            info = tarfile.TarInfo(f"cifar-10-batches-bin/{name}")
            info.size = len(payload)
            tar.addfile(info, io.BytesIO(payload))

        per = [n_train // 5 + (i < n_train % 5) for i in range(5)]
        for name, n in [(f"data_batch_{i + 1}.bin", p) for i, p in enumerate(per)] + [
            ("test_batch.bin", n_test)
        ]:
            rows = rng.integers(0, 256, (n, 3073), dtype=np.uint8)
            rows[:, 0] = rng.integers(0, 10, n)
            add(name, rows.tobytes())
        add("batches.meta.txt", "".join(f"class{i}\n" for i in range(10)).encode())


def _best(fn, repeats: int) -> float:
    best = float("inf")
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t)
    return best


def run(argv: list[str]) -> int:
    """Runs the benchmark; returns the exit status."""
    from jaxsam.cli_options import tidy

    ap = argparse.ArgumentParser(prog="jaxsam bench data", description=__doc__.splitlines()[0])
    ap.add_argument("--images", type=int, default=60000, help="train + test images (default 60000)")
    ap.add_argument("--quick", action="store_true", help="6,000 images, one repeat")
    ap.add_argument("--repeats", type=int, default=3, help="repeats of the cheap timings (best)")
    ap.add_argument("--json", action="store_true", help="print one JSON object instead of a table")
    args = tidy(ap).parse_args(argv)
    n = 6000 if args.quick else args.images
    repeats = 1 if args.quick else args.repeats
    n_test = n // 6
    n_train = n - n_test

    import jax

    from jaxsam.config import DataConfig
    from jaxsam.data import load_pool, tfds_source

    with tempfile.TemporaryDirectory(prefix="jaxsam-bench-data-") as tmp:
        tmp = Path(tmp)
        (tmp / "manual").mkdir()
        _fake_cifar_binary(tmp / "manual" / "cifar-10-binary.tar.gz", n_train, n_test)
        data_dir = tmp / "tfds"
        t = time.perf_counter()
        tfds_source.prepare("cifar10", str(data_dir), str(tmp / "manual"))
        t_prepare = time.perf_counter() - t
        cfg = DataConfig(dataset="cifar10", data_dir=str(data_dir))

        t = time.perf_counter()
        pool = load_pool(cfg)
        t_cold = time.perf_counter() - t
        t_warm = _best(lambda: load_pool(cfg), repeats)

        np.save(tmp / "x.npy", pool.x)
        np.save(tmp / "y.npy", pool.y)
        np.save(tmp / "tx.npy", pool.test_x)
        np.save(tmp / "ty.npy", pool.test_y)

        def numpy_load():
            for k in ("x", "y", "tx", "ty"):
                np.load(tmp / f"{k}.npy", allow_pickle=False)

        t_numpy = _best(numpy_load, repeats)
        device = jax.devices()[0]
        jax.device_put(pool.x[:8], device).block_until_ready()  # warm-up
        t_put = _best(lambda: jax.device_put(pool.x, device).block_until_ready(), repeats)

    mb = pool.x.nbytes / 1e6
    result = {
        "images": int(n),
        "pool_images": int(pool.size),
        "image_mb": round(mb, 2),
        "device": str(device),
        "prepare_s": round(t_prepare, 3),
        "numpy_load_s": round(t_numpy, 4),
        "pool_cold_s": round(t_cold, 3),
        "pool_cached_s": round(t_warm, 4),
        "device_put_s": round(t_put, 4),
        "device_put_mb_per_s": round(mb / t_put, 1),
        "numpy_load_mb_per_s": round((mb + pool.test_x.nbytes / 1e6) / t_numpy, 1),
        "pool_cold_over_numpy": round(t_cold / t_numpy, 1),
        "pool_cached_over_numpy": round(t_warm / t_numpy, 2),
        "device_put_over_numpy": round(t_put / t_numpy, 2),
    }
    if args.json:
        print(json.dumps(result))
        return 0
    print(
        f"CIFAR-shaped pool: {pool.size} train + {pool.test_x.shape[0]} test images, "
        f"{mb:.1f} MB uint8, device {device}"
    )
    print(f"  tfds prepare (TensorFlow, once)  {t_prepare:8.2f} s")
    print(f"  numpy.load of the same arrays    {t_numpy:8.4f} s   (baseline, 1.00x)")
    print(f"  pool build, first (decode)       {t_cold:8.3f} s   {t_cold / t_numpy:8.1f}x")
    print(f"  pool build, cached               {t_warm:8.4f} s   {t_warm / t_numpy:8.2f}x")
    print(
        f"  jax.device_put of pool images    {t_put:8.4f} s   {t_put / t_numpy:8.2f}x"
        f"   ({mb / t_put:.0f} MB/s)"
    )
    return 0


if __name__ == "__main__":
    import sys

    raise SystemExit(run(sys.argv[1:]))
