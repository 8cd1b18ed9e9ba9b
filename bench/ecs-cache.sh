#!/usr/bin/env bash
# ECS-mode builds with and without the dependency cache kept in storage, in one run:
# the Astro fixture (~190 packages) built by three fresh builder tasks (the test ECS agent, moto's S3,
# redis-server): cold (install, then save node_modules), warm (restored from storage,
# no install), forced (--force: a clean install again). Wall time of `cdeploy deploy`
# for each, and warm/cold (the target is <= 0.4). Release binaries, as deployed (the
# e2e harness runs the binaries next to its test executable). Each build starts on a
# settled disk (the previous task's files deleted, dirty pages flushed), as each Fargate
# task has a disk of its own; without that, the warm build's unpack here waits behind the
# writeback of the cold build's files.
#
#   bench/ecs-cache.sh [runs]
set -euo pipefail
cd "$(dirname "$0")/.."
if [ -z "${CARGO_TARGET_DIR:-}" ] && [ -d "$HOME/.cache/cdeploy-target" ]; then
  export CARGO_TARGET_DIR="$HOME/.cache/cdeploy-target"
fi
runs="${1:-3}"
cargo build --release --workspace --locked -q
for _ in $(seq 1 "$runs"); do
  CDEPLOY_BENCH=1 cargo test --release -q -p cdeploy-tests --test e2e --locked an_ecs_build_restores_its_dependency_cache_from_storage -- --nocapture 2>&1 |
    grep -oE 'ecs build cache: .*' | sed 's/^/  /'
done
