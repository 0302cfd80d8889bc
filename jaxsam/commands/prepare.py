"""``jaxsam prepare DATASET``: prepare a tfds dataset once, offline, for TensorFlow-free reads.

Example (Fashion-MNIST from Debian's ``dataset-fashion-mnist`` package)::

    jaxsam prepare fashion_mnist --manual-dir /usr/share/datasets/fashion-mnist

Example (CIFAR-10 from the archive downloaded by hand, binary or python version)::

    jaxsam prepare cifar10 --manual-dir ~/Downloads --data-dir ~/tensorflow_datasets
"""

from __future__ import annotations

import argparse

from jaxsam.cli_options import command

HELP = "prepare a tfds dataset (offline from its original files, or by download)"
DESCRIPTION = """\
Prepares a tensorflow-datasets dataset in the array_record format, so that jaxsam reads it later
without TensorFlow. Preparing itself needs TensorFlow (pip install tensorflow-cpu)."""


def add_parser(subparsers) -> None:
    """Registers ``prepare`` on an ``argparse`` subparsers object."""
    p = command(subparsers, "prepare", HELP, DESCRIPTION, run=run)
    p.add_argument("dataset", help="tfds name: cifar10, cifar100, svhn_cropped, fashion_mnist ...")
    p.add_argument(
        "--manual-dir",
        help="directory holding the original files under their upstream names (offline)",
    )
    p.add_argument("--data-dir", help="tfds data directory (default: ~/tensorflow_datasets)")
    p.add_argument(
        "--download", action="store_true", help="let tfds download when --manual-dir is not given"
    )


def run(args: argparse.Namespace) -> int:
    """Prepares ``args.dataset``; prints where it went. Raises DataError on bad input."""
    from jaxsam.data import tfds_source

    if tfds_source.is_prepared(args.dataset, args.data_dir):
        print(f"{args.dataset} is already prepared in {args.data_dir or '~/tensorflow_datasets'}")
        return 0
    path = tfds_source.prepare(args.dataset, args.data_dir, args.manual_dir, args.download)
    print(f"prepared {args.dataset} in {path}")
    return 0
