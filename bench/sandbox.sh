#!/usr/bin/env bash
# What the build sandbox costs per deploy: two cdeploy-servers side by side in one run,
# one sandboxed (the default) and one with --unsafe-no-sandbox, deploying the same Vite
# app (tests/fixtures/vite-app) alternately. Each deploy changes one source line, so the
# server really builds (the unchanged lockfile keeps the install cached, as on a real
# redeploy). Prints the mean wall time of `cdeploy deploy` for each and the difference.
#
#   bench/sandbox.sh [RUNS]      (default 8; release binaries are built if missing)
set -euo pipefail
cd "$(dirname "$0")/.."
runs="${1:-8}"
if [ -z "${CARGO_TARGET_DIR:-}" ] && [ -d "$HOME/.cache/cdeploy-target" ]; then
  export CARGO_TARGET_DIR="$HOME/.cache/cdeploy-target"
fi
target="${CARGO_TARGET_DIR:-$PWD/target}"
cargo build --release --locked -q -p cdeploy -p cdeploy-server
bin="$target/release"

# Under /tmp, with parents the unprivileged build uid can pass through (root servers).
work=$(mktemp -d /tmp/cdeploy-bench.XXXXXX)
chmod 711 "$work"
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

# start NAME [extra flags…] → sets API_<NAME>
start() {
  local name=$1; shift
  local api proxy
  api=$(free_port); proxy=$(free_port)
  mkdir -p "$work/$name"
  XDG_CONFIG_HOME="$work/$name/config" "$bin/cdeploy-server" --data-dir "$work/$name/data" \
    --listen "127.0.0.1:$api" --proxy-listen "127.0.0.1:$proxy" --domain "localhost:$proxy" \
    "$@" >"$work/$name/server.log" 2>&1 &
  pids+=($!)
  for _ in $(seq 100); do
    curl -fs "http://127.0.0.1:$api/healthz" >/dev/null 2>&1 && break
    sleep 0.1
  done
  curl -fs "http://127.0.0.1:$api/healthz" >/dev/null || { cat "$work/$name/server.log"; exit 1; }
  printf -v "API_$name" '%s' "$api"
}

start sandboxed
start plain --unsafe-no-sandbox
{ sed 's/\x1b\[[0-9;]*m//g' "$work/sandboxed/server.log" | grep -o 'sandbox=.*' | head -1 | sed 's/^/sandboxed server: /'; } || true

cp -r tests/fixtures/vite-app "$work/app"
rm -rf "$work/app/node_modules" "$work/app/dist"

# deploy NAME → prints seconds
deploy() {
  local name=$1 api_var="API_$1"
  local start end
  echo "// run $RANDOM" >>"$work/app/src/main.ts"
  start=$(date +%s.%N)
  XDG_CONFIG_HOME="$work/$name/config" CDEPLOY_API="http://127.0.0.1:${!api_var}" \
    "$bin/cdeploy" deploy "$work/app" --slug bench -q >/dev/null
  end=$(date +%s.%N)
  echo "$end - $start" | bc -l
}

echo "warming up (first deploys install dependencies)…"
deploy sandboxed >/dev/null
deploy plain >/dev/null

declare -a with without
for i in $(seq "$runs"); do
  with+=("$(deploy sandboxed)")
  without+=("$(deploy plain)")
done

mean() { printf '%s\n' "$@" | awk '{ s += $1 } END { printf "%.3f", s / NR }'; }
m_with=$(mean "${with[@]}")
m_without=$(mean "${without[@]}")
echo
printf 'deploy wall time over %d runs each (Vite app, install cached):\n' "$runs"
printf '  sandboxed     %ss   (%s)\n' "$m_with" "$(printf '%s ' "${with[@]}" | awk '{ for (i = 1; i <= NF; i++) printf "%.2f ", $i }')"
printf '  no sandbox    %ss   (%s)\n' "$m_without" "$(printf '%s ' "${without[@]}" | awk '{ for (i = 1; i <= NF; i++) printf "%.2f ", $i }')"
printf '  sandbox cost  %+.3fs per deploy (ratio %.2f; the budget is +0.3s)\n' \
  "$(echo "$m_with - $m_without" | bc -l)" "$(echo "$m_with / $m_without" | bc -l)"
