#!/usr/bin/env bash
# The warm path: how long a production redeploy of the Vite fixture takes when its
# node_modules is restored from the build cache (lockfile unchanged: install skipped),
# with this checkout's binaries against a baseline commit's, side by side in one run.
# Each version gets its own embedded server (local builds, default settings); the
# deploys alternate between them, so the machine's state weighs on both alike.
#
# Prints the median of RUNS warm redeploys (`cdeploy deploy` until live) for each, and
# this checkout's ratio to the baseline.
#
#   bench/warm-redeploy.sh [BASE_REF] [RUNS]
#     BASE_REF  default e3d757c (before caches followed trust: one entry per project)
#     RUNS      default 6
#   PROFILE=dev bench/warm-redeploy.sh   debug binaries (faster to build; slower builds)
set -euo pipefail
cd "$(dirname "$0")/.."
base_ref="${1:-e3d757c}"
runs="${2:-6}"
profile="${PROFILE:-release}"
if [ -z "${CARGO_TARGET_DIR:-}" ] && [ -d "$HOME/.cache/cdeploy-target" ]; then
  export CARGO_TARGET_DIR="$HOME/.cache/cdeploy-target"
fi
target="${CARGO_TARGET_DIR:-$PWD/target}"
out_dir() { if [ "$profile" = dev ]; then echo debug; else echo "$profile"; fi; }

# Under /tmp, with parents the unprivileged build uid can pass through (root servers).
work=$(mktemp -d /tmp/cdeploy-warm.XXXXXX)
chmod 711 "$work"
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  git worktree remove --force "$work/base-src" 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT

# Both versions' binaries, each copied out of the shared target folder once built.
cargo build --profile "$profile" --locked -q -p cdeploy -p cdeploy-server -p cdeploy-builder
mkdir -p "$work/head" "$work/base"
cp "$target/$(out_dir)"/{cdeploy,cdeploy-server,cdeploy-builder} "$work/head/"
git worktree add -q --detach "$work/base-src" "$base_ref"
# Built in the same target folder (its dependencies are reused); the baseline's
# binaries then stand where this checkout's were, so this checkout's go back.
(cd "$work/base-src" && cargo build --profile "$profile" --locked -q -p cdeploy -p cdeploy-server -p cdeploy-builder)
cp "$target/$(out_dir)"/{cdeploy,cdeploy-server,cdeploy-builder} "$work/base/"
cp "$work/head"/{cdeploy,cdeploy-server,cdeploy-builder} "$target/$(out_dir)/"

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

# start NAME: an embedded server of that version; sets api_NAME and token_NAME.
start() {
  local name=$1 api proxy
  api=$(free_port); proxy=$(free_port)
  XDG_CONFIG_HOME="$work/$name-config" "$work/$name/cdeploy-server" --data-dir "$work/$name-data" \
    --listen "127.0.0.1:$api" --proxy-listen "127.0.0.1:$proxy" --domain "localhost:$proxy" \
    >"$work/$name-server.log" 2>&1 &
  pids+=($!)
  for _ in $(seq 300); do
    curl -fs "http://127.0.0.1:$api/healthz" >/dev/null 2>&1 && break
    sleep 0.1
  done
  curl -fs "http://127.0.0.1:$api/healthz" >/dev/null || { cat "$work/$name-server.log"; exit 1; }
  printf -v "api_$name" '%s' "http://127.0.0.1:$api"
  printf -v "token_$name" '%s' "$(cat "$work/$name-data/admin-token")"
}
start head
start base

app="$work/app"
cp -r tests/fixtures/vite-app "$app"

# deploy NAME: seconds for one production deploy of the app with that version. Each
# deploy changes a file the install does not read (a new commit, same lockfile): the
# same source again is not built at all since builds are skipped by content
# (docs/skipping.md; bench/skip.sh measures that).
deploy() {
  local name=$1 api_var="api_$1" token_var="token_$1" start end
  echo "$name $(date +%s%N)" >"$app/public/bench-round.txt"
  start=$(date +%s.%N)
  (cd "$app" && XDG_CONFIG_HOME="$work/$name-config" NO_COLOR=1 CDEPLOY_API="${!api_var}" \
    CDEPLOY_TOKEN="${!token_var}" "$work/$name/cdeploy" deploy --slug warm --json) \
    >"$work/last.out" 2>"$work/last.err" || { cat "$work/last.err" "$work/last.out" >&2; exit 1; }
  end=$(date +%s.%N)
  grep -q '"status": *"ready"' "$work/last.out" || { cat "$work/last.out" >&2; exit 1; }
  echo "$end - $start" | bc -l
}

# The first deploy of each installs and fills the cache (and npm's); not counted.
deploy head >/dev/null
deploy base >/dev/null
head_s=(); base_s=()
for i in $(seq "$runs"); do
  if [ $((i % 2)) -eq 1 ]; then
    head_s+=("$(deploy head)"); base_s+=("$(deploy base)")
  else
    base_s+=("$(deploy base)"); head_s+=("$(deploy head)")
  fi
done
median() { printf '%s\n' "$@" | sort -g | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
h=$(median "${head_s[@]}"); b=$(median "${base_s[@]}")
echo "warm production redeploy of the Vite fixture (median of $runs, $profile binaries, $(nproc) cores)"
printf '%-28s %7.3f s\n' "baseline $base_ref" "$b"
printf '%-28s %7.3f s   %+.1f%%\n' "this checkout" "$h" "$(echo "($h / $b - 1) * 100" | bc -l)"
