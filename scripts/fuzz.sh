#!/usr/bin/env bash
# Runs every cargo-fuzz target for a bounded time (not part of the test suite):
# URL path resolution, manifests, source maps, cdeploy.toml and log events.
#
#   scripts/fuzz.sh [SECONDS_PER_TARGET] [TARGET...]    (default 60 s, all targets)
#
# Needs a nightly toolchain and cargo-fuzz (`rustup toolchain install nightly`,
# `cargo install cargo-fuzz`). Crashes are saved under fuzz/artifacts/<target>/.
set -euo pipefail
cd "$(dirname "$0")/../fuzz"
secs="${1:-60}"
shift || true
targets=("$@")
if [ ${#targets[@]} -eq 0 ]; then
  mapfile -t targets < <(cargo +nightly fuzz list)
fi
cargo +nightly fuzz build -O
status=0
for t in "${targets[@]}"; do
  mkdir -p "corpus/$t"
  log=$(mktemp)
  if cargo +nightly fuzz run -O "$t" -- -max_total_time="$secs" -print_final_stats=1 >"$log" 2>&1; then
    runs=$(grep -E '^stat::number_of_executed_units' "$log" | awk '{print $2}')
    cov=$(grep -Eo 'cov: [0-9]+' "$log" | tail -1)
    printf '%-14s ok    %10s runs in %ss  (%s)\n' "$t" "${runs:-?}" "$secs" "${cov:-cov: ?}"
  else
    printf '%-14s CRASH (see fuzz/artifacts/%s)\n' "$t" "$t"
    tail -30 "$log"
    status=1
  fi
  rm -f "$log"
done
exit $status
