#!/usr/bin/env bash
# The whole test suite: formatting, lints, unit tests and the end-to-end suite (real
# git daemon, npm-built Vite app, headless Chromium). Installs what is missing first.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ -z "${CARGO_TARGET_DIR:-}" ] && [ -d "$HOME/.cache/cdeploy-target" ]; then
  export CARGO_TARGET_DIR="$HOME/.cache/cdeploy-target"
fi
./install.sh --dev
echo "==> cargo fmt --check"
cargo fmt --all -- --check
echo "==> cargo clippy"
cargo clippy --workspace --all-targets --locked -- -D warnings
echo "==> cargo clippy, without AWS (what ./install.sh builds)"
cargo clippy --no-default-features -p cdeploy-server -p cdeploy-proxy -p cdeploy-builder --locked -- -D warnings
echo "==> cargo test, storage without AWS (an s3:// spec is refused by name)"
cargo test -p cdeploy-storage --lib --locked
echo "==> cargo test"
cargo test --workspace --locked
