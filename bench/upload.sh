#!/usr/bin/env bash
# Big sites: how long `cdeploy deploy` takes for a 10,000-file site (10 MB of HTML pages,
# ~1 KiB each) against `tar` of the same folder piped over loopback, side by side in one
# run, with a release cdeploy-server on loopback (default settings).
#
# Prints, each the median of RUNS:
#   tar             tar -cf - of the folder, sent over a loopback TCP connection
#   tar -x          tar -cf - of the folder piped into tar -xf - on the server's disk:
#                   creating 10,000 files, which storage must do too (on some disks,
#                   ext4 without a journal among them, creating a file is slow for
#                   minutes after many were deleted; this row shows the disk's state)
#   prebuilt new    cdeploy deploy --prebuilt of 10,000 files storage has never seen
#   prebuilt 1      the same folder again with one file changed
#   source upload   cdeploy deploy --no-wait of a 10,000-file repository (until queued)
#   source build    the same repository deployed and built (a `cp` build) until live
# and each cdeploy figure's ratio to tar.
#
#   bench/upload.sh [RUNS]      (default 3; release binaries are built if missing)
set -euo pipefail
cd "$(dirname "$0")/.."
runs="${1:-3}"
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

api=$(free_port); proxy=$(free_port)
XDG_CONFIG_HOME="$work/config" "$bin/cdeploy-server" --data-dir "$work/data" \
  --listen "127.0.0.1:$api" --proxy-listen "127.0.0.1:$proxy" --domain "localhost:$proxy" \
  >"$work/server.log" 2>&1 &
pids+=($!)
for _ in $(seq 100); do
  curl -fs "http://127.0.0.1:$api/healthz" >/dev/null 2>&1 && break
  sleep 0.1
done
curl -fs "http://127.0.0.1:$api/healthz" >/dev/null || { cat "$work/server.log"; exit 1; }
export CDEPLOY_API="http://127.0.0.1:$api" CDEPLOY_TOKEN
CDEPLOY_TOKEN=$(cat "$work/data/admin-token")
export XDG_CONFIG_HOME="$work/config" NO_COLOR=1

# site DIR SEED: 10,000 pages of ~1 KiB in 100 folders, distinct for each SEED.
site() {
  python3 - "$1" "$2" <<'EOF'
import os, sys
root, seed = sys.argv[1], sys.argv[2]
for i in range(10000):
    d = os.path.join(root, "p%03d" % (i // 100))
    os.makedirs(d, exist_ok=True)
    body = "<!doctype html><title>Page %d</title><h1>Page %d (%s)</h1><p>%s</p>\n" % (
        i, i, seed, ("Lorem ipsum dolor sit amet, page %d. " % i) * 25)
    with open(os.path.join(d, "%d.html" % i), "w") as f:
        f.write(body)
with open(os.path.join(root, "index.html"), "w") as f:
    f.write("<!doctype html><h1>Home (%s)</h1>\n" % seed)
EOF
}

# Seconds a command takes (its output discarded; a failure stops the benchmark).
seconds() {
  local start end
  start=$(date +%s.%N)
  "$@" >"$work/last.out" 2>"$work/last.err" || { cat "$work/last.err" >&2; exit 1; }
  end=$(date +%s.%N)
  echo "$end - $start" | bc -l
}

median() { printf '%s\n' "$@" | sort -g | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }

# A receiver that reads a connection to its end, as the server reads an upload.
receiver() {
  python3 -c '
import socket, sys
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("127.0.0.1", int(sys.argv[1]))); s.listen(1)
print("ready", flush=True)
c, _ = s.accept()
n = 0
while True:
    b = c.recv(1 << 20)
    if not b: break
    n += len(b)
print(n)
' "$1"
}
tar_over_loopback() {
  local port
  port=$(free_port)
  coproc RECV { receiver "$port"; }
  read -r _ <&"${RECV[0]}"
  tar -cf - -C "$1" . >"/dev/tcp/127.0.0.1/$port"
  read -r _ <&"${RECV[0]}"
  wait "$RECV_PID" 2>/dev/null || true
}

untar_s=(); tar_s=(); new_s=(); one_s=(); src_up_s=(); src_build_s=()
for run in $(seq "$runs"); do
  site "$work/site$run/out" "run $run"
  sync
  tar_s+=("$(seconds tar_over_loopback "$work/site$run/out")")
  mkdir "$work/untar$run"
  untar_s+=("$(seconds bash -c 'tar -cf - -C "$1" . | tar -xf - -C "$2"' _ "$work/site$run/out" "$work/untar$run")")
  new_s+=("$(seconds "$bin/cdeploy" deploy "$work/site$run" --prebuilt out --slug "bench$run" --json)")
  grep -q '"status": "ready"' "$work/last.out" || { cat "$work/last.out" >&2; exit 1; }
  echo "<h1>changed $run</h1>" >"$work/site$run/out/p042/4242.html"
  one_s+=("$(seconds "$bin/cdeploy" deploy "$work/site$run" --prebuilt out --slug "bench$run" --json)")
  grep -q '"status": "ready"' "$work/last.out" || { cat "$work/last.out" >&2; exit 1; }

  repo="$work/repo$run"
  site "$repo/pages" "source $run"
  printf '[build]\ncommand = "mkdir -p out && cp -r pages/. out/"\noutput = "out"\n' >"$repo/cdeploy.toml"
  src_up_s+=("$(seconds "$bin/cdeploy" deploy "$repo" --slug "src$run" --no-wait --json)")
  id=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["id"])' "$work/last.out")
  "$bin/cdeploy" inspect "$id" --wait >"$work/last.out" 2>&1 || { cat "$work/last.out" "$work/server.log" | tail -30 >&2; exit 1; }
  echo "<h1>source $run</h1>" >"$repo/pages/p007/700.html"
  src_build_s+=("$(seconds "$bin/cdeploy" deploy "$repo" --slug "src$run" --json)")
  grep -q '"status": "ready"' "$work/last.out" || { cat "$work/last.out" >&2; exit 1; }
done

tar_m=$(median "${tar_s[@]}")
row() { printf '%-44s %7.3f s   %6.1fx tar\n' "$1" "$2" "$(echo "$2 / $tar_m" | bc -l)"; }
echo
echo "10,000 files, $(du -sh --apparent-size "$work/site1/out" | cut -f1) (median of $runs runs, $(nproc) cores)"
printf '%-44s %7.3f s\n' "tar -cf - | loopback TCP" "$tar_m"
printf '%-44s %7.3f s   %6.1fx tar\n' "tar -cf - | tar -xf - (creates the files)" \
  "$(median "${untar_s[@]}")" "$(echo "$(median "${untar_s[@]}") / $tar_m" | bc -l)"
row "cdeploy deploy --prebuilt (all new)" "$(median "${new_s[@]}")"
row "cdeploy deploy --prebuilt (one file changed)" "$(median "${one_s[@]}")"
row "cdeploy deploy source upload (until queued)" "$(median "${src_up_s[@]}")"
row "cdeploy deploy source, one file changed, built" "$(median "${src_build_s[@]}")"
