#!/usr/bin/env bash
# The dashboard's first load, on loopback: what it transfers (the HTML shell, the
# stylesheet and the script modules, gzipped, as the browser received them) and the
# time from navigating to a running build's page to its first log line drawn, in
# headless Chromium with an empty cache, median of ROUNDS (default 5).
#
#   bench/dashboard.sh             ROUNDS=5
#
# Runs the ignored test `dashboard_first_load_bench` (tests/tests/e2e/dashboard.rs)
# against a fresh embedded server (debug build, as the test suite builds it).
set -euo pipefail
cd "$(dirname "$0")/.."
if [ -z "${CARGO_TARGET_DIR:-}" ] && [ -d "$HOME/.cache/cdeploy-target" ]; then
  export CARGO_TARGET_DIR="$HOME/.cache/cdeploy-target"
fi
cargo build --workspace --quiet
ROUNDS="${ROUNDS:-5}" cargo test --workspace --quiet --test e2e -- --ignored --exact \
  dashboard::dashboard_first_load_bench --nocapture 2>&1 | grep '^dashboard:'
