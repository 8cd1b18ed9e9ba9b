#!/usr/bin/env bash
# Hostile-load figures in one run, against the real binaries (the same scenarios the
# end-to-end tests assert on, run with their figures printed):
#   * a flood of 1,000 silent + 200 slow connections on the API, the proxy and its
#     TLS port, against a server whose soft open-file limit is 1,024 and header
#     timeout 10 s: how many are still open, and when;
#   * a 100 MB file: server RSS before, peak after the upload, 20 one-byte ranges,
#     20 HEADs and 5 full GETs;
#   * a 2,000,000-line build (plus a 5 MB line): server RSS before and peak;
#   * 200 requests for 10 unknown sites behind an HTTP origin: origin GETs.
#
#   bench/load.sh
set -euo pipefail
cd "$(dirname "$0")/.."
if [ -z "${CARGO_TARGET_DIR:-}" ] && [ -d "$HOME/.cache/cdeploy-target" ]; then
  export CARGO_TARGET_DIR="$HOME/.cache/cdeploy-target"
fi
cargo build --workspace --locked -q
# (--nocapture output of parallel tests can share a line: match anywhere in it.)
cargo test -q -p cdeploy-tests --test e2e --locked load:: -- --nocapture --test-threads 4 2>&1 |
  grep -oE '(flood|large file|log flood|unknown hosts): .*|test result.*' |
  sed 's/^/  /'
