#!/usr/bin/env bash
# Installs Debian's chromium for the slow test that renders report.html headless
# (tests/test_report_html_render.py). Never fails the CI run: without chromium that test skips
# and says how to install it.
set -u
if command -v chromium >/dev/null 2>&1 || command -v chromium-browser >/dev/null 2>&1; then
  echo "setup-chromium: chromium already installed"
  exit 0
fi
if ! command -v apt-get >/dev/null 2>&1; then
  echo "setup-chromium: no apt-get; the report.html rendering test will skip"
  exit 0
fi
SUDO=""
if [ "$(id -u)" != "0" ]; then
  if command -v sudo >/dev/null 2>&1; then SUDO="sudo -n"; else
    echo "setup-chromium: not root and no sudo; the report.html rendering test will skip"
    exit 0
  fi
fi
export DEBIAN_FRONTEND=noninteractive
if $SUDO apt-get install -y -q chromium >/dev/null 2>&1 \
  || { $SUDO apt-get update -q >/dev/null 2>&1 \
       && $SUDO apt-get install -y -q chromium >/dev/null 2>&1; }; then
  echo "setup-chromium: installed chromium"
else
  echo "setup-chromium: could not install chromium; the report.html rendering test will skip"
fi
exit 0
