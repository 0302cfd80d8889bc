#!/usr/bin/env bash
# Usage: apt-optional.sh PACKAGE WHAT
# Installs the Debian package PACKAGE with apt-get (as root, or through `sudo -n`), trying the
# cached package lists first and `apt-get update` second. Never fails: where it cannot install,
# it says that WHAT will skip. Used by the CI set-up scripts for optional test inputs.
set -u
pkg="$1"
what="$2"
if ! command -v apt-get >/dev/null 2>&1; then
  echo "apt-optional: no apt-get; $what will skip"
  exit 0
fi
SUDO=""
if [ "$(id -u)" != "0" ]; then
  if command -v sudo >/dev/null 2>&1; then SUDO="sudo -n"; else
    echo "apt-optional: not root and no sudo; $what will skip"
    exit 0
  fi
fi
export DEBIAN_FRONTEND=noninteractive
if $SUDO apt-get install -y -q "$pkg" >/dev/null 2>&1 \
  || { $SUDO apt-get update -q >/dev/null 2>&1 \
       && $SUDO apt-get install -y -q "$pkg" >/dev/null 2>&1; }; then
  echo "apt-optional: installed $pkg"
else
  echo "apt-optional: could not install $pkg; $what will skip"
fi
exit 0
