#!/usr/bin/env bash
# Installs Debian's Fashion-MNIST (dataset-fashion-mnist) for the real-tfds-path tests when it is
# missing. Never fails the CI run: without the files those tests skip and say how to get them.
set -u
if [ -f /usr/share/datasets/fashion-mnist/train-labels-idx1-ubyte.gz ]; then
  echo "setup-data: Fashion-MNIST already in /usr/share/datasets/fashion-mnist"
  exit 0
fi
if ! command -v apt-get >/dev/null 2>&1; then
  echo "setup-data: no apt-get; the Fashion-MNIST tfds tests will skip"
  exit 0
fi
SUDO=""
if [ "$(id -u)" != "0" ]; then
  if command -v sudo >/dev/null 2>&1; then SUDO="sudo -n"; else
    echo "setup-data: not root and no sudo; the Fashion-MNIST tfds tests will skip"
    exit 0
  fi
fi
export DEBIAN_FRONTEND=noninteractive
if $SUDO apt-get install -y -q dataset-fashion-mnist >/dev/null 2>&1 \
  || { $SUDO apt-get update -q >/dev/null 2>&1 \
       && $SUDO apt-get install -y -q dataset-fashion-mnist >/dev/null 2>&1; }; then
  echo "setup-data: installed dataset-fashion-mnist"
else
  echo "setup-data: could not install dataset-fashion-mnist; the Fashion-MNIST tfds tests will skip"
fi
exit 0
