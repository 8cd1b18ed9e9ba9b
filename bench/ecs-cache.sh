#!/usr/bin/env bash
# ECS-mode builds with and without the dependency cache kept in storage, in one run:
# the Astro fixture (~190 packages) built by three fresh builder tasks (the test ECS agent, moto's S3,
# redis-server): cold (install, then save node_modules), warm (restored from storage,
# no install), forced (--force: a clean install again). Wall time of `cdeploy deploy`
# for each, and warm/cold (the target is <= 0.4). Release binaries, as deployed (the
# e2e harness runs the binaries next to its test executable).
#
# What a Fargate task sees is a fresh disk of its own, so each run's temporary files
# (the tasks' disks, the server's data, moto's) are on a new ext4 filesystem (a loop
# device; root only, else the usual temporary folder, and it says so), and each build
# starts on a settled disk (the previous task's files deleted, dirty pages flushed). On a
# long-used disk, ext4's inode allocation in crowded block groups made creating files
# several times slower here, for both builds; and without the settling, the warm build's
# unpack queued behind the writeback of the cold build's files. Node.js itself comes
# from the test toolchain cache for every build (fetched once, before the runs).
#
#   bench/ecs-cache.sh [runs]
set -euo pipefail
cd "$(dirname "$0")/.."
if [ -z "${CARGO_TARGET_DIR:-}" ] && [ -d "$HOME/.cache/cdeploy-target" ]; then
  export CARGO_TARGET_DIR="$HOME/.cache/cdeploy-target"
fi
runs="${1:-3}"
cargo build --release --workspace --locked -q
shared_cache="${TMPDIR:-/tmp}/cdeploy-test-cache"
mkdir -p "$shared_cache"

fresh_disk() {
  [ "$(id -u)" = 0 ] && command -v mkfs.ext4 >/dev/null && command -v losetup >/dev/null || return 1
  img=$(mktemp /var/tmp/cdeploy-bench.XXXXXX)
  mnt=$(mktemp -d /var/tmp/cdeploy-bench-mnt.XXXXXX)
  truncate -s 16G "$img" && mkfs.ext4 -q -F "$img" && mount -o loop "$img" "$mnt" || {
    rm -f "$img"; rmdir "$mnt"; return 1
  }
  chmod 1777 "$mnt"
  ln -s "$shared_cache" "$mnt/cdeploy-test-cache"
}
drop_disk() {
  if [ -n "${mnt:-}" ]; then
    umount "$mnt" && rmdir "$mnt"
    rm -f "$img"
    mnt=""
  fi
}
trap drop_disk EXIT

for _ in $(seq 1 "$runs"); do
  mnt=""
  if fresh_disk; then
    tmp="$mnt"
  else
    echo "  (not root or no loop device: on the usual temporary folder)"
    tmp="${TMPDIR:-/tmp}"
  fi
  TMPDIR="$tmp" CDEPLOY_BENCH=1 cargo test --release -q -p cdeploy-tests --test e2e --locked an_ecs_build_restores_its_dependency_cache_from_storage -- --nocapture 2>&1 |
    grep -oE 'ecs build cache: .*' | sed 's/^/  /'
  drop_disk
done
