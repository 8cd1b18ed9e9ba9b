#!/usr/bin/env bash
# A deploy whose build is skipped (nothing it reads changed: docs/skipping.md) against
# a warm build of the same app (a file changed, lockfile unchanged: node_modules from
# the build cache), side by side on one embedded server, alternating, so the machine's
# state weighs on both alike. The app is the Vite fixture, deployed with the CLI until
# live; each figure is the median of RUNS.
#
#   bench/skip.sh [RUNS]          RUNS default 6
#   PROFILE=dev bench/skip.sh     debug binaries (faster to build; slower builds)
set -euo pipefail
cd "$(dirname "$0")/.."
runs="${1:-6}"
profile="${PROFILE:-release}"
if [ -z "${CARGO_TARGET_DIR:-}" ] && [ -d "$HOME/.cache/cdeploy-target" ]; then
  export CARGO_TARGET_DIR="$HOME/.cache/cdeploy-target"
fi
target="${CARGO_TARGET_DIR:-$PWD/target}"
bin="$target/$([ "$profile" = dev ] && echo debug || echo "$profile")"
cargo build --profile "$profile" --locked -q -p cdeploy -p cdeploy-server -p cdeploy-builder

# Under /tmp, with parents the unprivileged build uid can pass through (root servers).
work=$(mktemp -d /tmp/cdeploy-skip.XXXXXX)
chmod 711 "$work"
server_pid=
trap '[ -n "$server_pid" ] && kill "$server_pid" 2>/dev/null; wait 2>/dev/null; rm -rf "$work"' EXIT

port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
api_port=$(port); proxy_port=$(port)
XDG_CONFIG_HOME="$work/config" "$bin/cdeploy-server" --data-dir "$work/data" \
  --listen "127.0.0.1:$api_port" --proxy-listen "127.0.0.1:$proxy_port" \
  --domain "localhost:$proxy_port" >"$work/server.log" 2>&1 &
server_pid=$!
for _ in $(seq 300); do
  curl -fs "http://127.0.0.1:$api_port/healthz" >/dev/null 2>&1 && break
  sleep 0.1
done
curl -fs "http://127.0.0.1:$api_port/healthz" >/dev/null || { cat "$work/server.log"; exit 1; }
export XDG_CONFIG_HOME="$work/config" NO_COLOR=1 CDEPLOY_API="http://127.0.0.1:$api_port"
CDEPLOY_TOKEN="$(cat "$work/data/admin-token")"
export CDEPLOY_TOKEN
app="$work/app"
cp -r tests/fixtures/vite-app "$app"

# timed KIND: seconds for one deploy until live; `built` changes a file first, and the
# answer must say whether the build was skipped as KIND expects.
timed() {
  local kind=$1 start end id reused
  [ "$kind" = built ] && echo "$(date +%s%N)" >"$app/public/bench-round.txt"
  start=$(date +%s.%N)
  (cd "$app" && "$bin/cdeploy" deploy --slug skip --json) >"$work/last.out" 2>"$work/last.err" \
    || { cat "$work/last.err" "$work/last.out" >&2; exit 1; }
  end=$(date +%s.%N)
  id=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["id"])' "$work/last.out")
  reused=$(curl -fs -H "authorization: Bearer $CDEPLOY_TOKEN" "$CDEPLOY_API/v1/deployments/$id" \
    | python3 -c 'import json,sys; print(json.load(sys.stdin).get("reused_from") or "")')
  if [ "$kind" = skipped ] && [ -z "$reused" ]; then echo "expected a skip: $id built" >&2; exit 1; fi
  if [ "$kind" = built ] && [ -n "$reused" ]; then echo "expected a build: $id skipped" >&2; exit 1; fi
  echo "$end - $start" | bc -l
}

# The first deploy installs and fills the caches; not counted.
timed built >/dev/null
skipped=(); built=()
for i in $(seq "$runs"); do
  built+=("$(timed built)")
  skipped+=("$(timed skipped)")
done
median() { printf '%s\n' "$@" | sort -g | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
b=$(median "${built[@]}"); s=$(median "${skipped[@]}")
echo "deploy of the Vite fixture until live (median of $runs, $profile binaries, $(nproc) cores)"
printf '%-40s %7.3f s\n' "warm build (a file changed)" "$b"
printf '%-40s %7.3f s   %.2f of the build\n' "skipped (nothing it reads changed)" "$s" "$(echo "$s / $b" | bc -l)"
