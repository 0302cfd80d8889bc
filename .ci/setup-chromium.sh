#!/usr/bin/env bash
# Installs Debian's chromium for the slow test that renders report.html headless
# (tests/test_report_html_render.py). Never fails the CI run: without chromium that test skips
# and says how to install it.
set -u
if command -v chromium >/dev/null 2>&1 || command -v chromium-browser >/dev/null 2>&1; then
  echo "setup-chromium: chromium already installed"
  exit 0
fi
bash "$(dirname "$0")/apt-optional.sh" chromium "the report.html rendering test"
