#!/usr/bin/env bash
# Installs Debian's Fashion-MNIST (dataset-fashion-mnist) for the real-tfds-path tests when it is
# missing. Never fails the CI run: without the files those tests skip and say how to get them.
set -u
if [ -f /usr/share/datasets/fashion-mnist/train-labels-idx1-ubyte.gz ]; then
  echo "setup-data: Fashion-MNIST already in /usr/share/datasets/fashion-mnist"
  exit 0
fi
bash "$(dirname "$0")/apt-optional.sh" dataset-fashion-mnist "the Fashion-MNIST tfds tests"
