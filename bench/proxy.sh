#!/usr/bin/env bash
# Proxy throughput against nginx, side by side on the same files, on loopback only.
#
#   bench/proxy.sh [SECONDS]      (default 5 per measurement)
#   CONNS="64 512" ROUNDS=5       (the defaults: connection counts, rounds per figure)
#
# Deploys a small Vite-like output (an HTML page and a ~200 KB JS bundle) to a fresh
# embedded cdeploy-server (release build), serves the same folder with nginx, and runs
# wrk against both for the page, the bundle and an SPA fallback, at each connection
# count. nginx is tuned as an operator serving static files would tune it (keep-alive
# requests beyond wrk's count, sendfile, tcp_nopush, open_file_cache; the configuration
# is printed), so the baseline does not measure reconnects. Each figure is the median of
# ROUNDS runs, cdeploy and nginx alternating. Prints requests/s and the ratio
# cdeploy/nginx (above 1.0: cdeploy is faster), and the range of the rounds' own ratios:
# how far this machine's noise moves a single round. Numbers from a 2-core machine that
# also runs wrk are noisy: compare ratios from the same run, not absolute numbers.
set -euo pipefail
cd "$(dirname "$0")/.."
secs="${1:-5}"
conns="${CONNS:-64 512}"
rounds="${ROUNDS:-5}"
# 512 connections need more descriptors than a shell's default 1,024 leaves wrk, nginx
# and the server.
ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)"

need=()
command -v wrk >/dev/null || need+=(wrk)
command -v nginx >/dev/null || [ -x /usr/sbin/nginx ] || need+=(nginx)
if [ "${#need[@]}" -gt 0 ]; then
  sudo=""; [ "$(id -u)" = 0 ] || sudo=sudo
  echo "installing ${need[*]}" >&2
  $sudo apt-get install -y -qq "${need[@]}" >/dev/null
fi
nginx_bin=$(command -v nginx || echo /usr/sbin/nginx)

if [ -z "${CARGO_TARGET_DIR:-}" ] && [ -d "$HOME/.cache/cdeploy-target" ]; then
  export CARGO_TARGET_DIR="$HOME/.cache/cdeploy-target"
fi
cargo build --release --locked -p cdeploy-server -p cdeploy >&2
bin="${CARGO_TARGET_DIR:-$PWD/target}/release"

work=$(mktemp -d)
chmod 755 "$work" # nginx workers run as another user and must read the site
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; rm -rf "$work"; }
trap cleanup EXIT

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
api=$(free_port); proxy=$(free_port); nginx_port=$(free_port)
tls=$(free_port); nginx_tls=$(free_port)

# One certificate for both servers (ECDSA P-256, as an ACME CA issues by default), for
# `localhost` and `*.localhost`: wrk's SNI is `localhost`, its Host header the site's.
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 2 \
  -subj /CN=localhost -addext "subjectAltName=DNS:localhost,DNS:*.localhost" \
  -keyout "$work/key.pem" -out "$work/cert.pem" 2>/dev/null

site="$work/site"
mkdir -p "$site/assets"
printf '<!doctype html><html><head><meta charset="utf-8"><title>bench</title><script type="module" src="/assets/index-B3nch4Xy.js"></script></head><body><div id="app"></div>%s</body></html>\n' \
  "$(head -c 1500 /dev/zero | tr '\0' ' ')" > "$site/index.html"
for i in $(seq 1 5000); do echo "export const v$i = \"value number $i of the bundle\";"; done > "$site/assets/index-B3nch4Xy.js"

XDG_CONFIG_HOME="$work/config" "$bin/cdeploy-server" --data-dir "$work/data" \
  --listen "127.0.0.1:$api" --proxy-listen "127.0.0.1:$proxy" --domain "localhost:$proxy" \
  --tls-listen "127.0.0.1:$tls" --tls-cert "$work/cert.pem" --tls-key "$work/key.pem" 2>"$work/server.log" &
pids+=($!)
for _ in $(seq 1 100); do curl -fs "http://127.0.0.1:$api/healthz" >/dev/null 2>&1 && break; sleep 0.1; done
XDG_CONFIG_HOME="$work/config" "$bin/cdeploy" --api "http://127.0.0.1:$api" deploy "$site" --slug bench --prebuilt . -q >/dev/null

# The same site with 1,000 redirect rules and 1,000 header rules, none of which answers
# the paths measured (the cost of having rules), as a large migrated site has: most
# under their own first segment, some (placeholders, splats) tried for every path.
ruled="$work/ruled"
cp -r "$site" "$ruled"
{
  for i in $(seq 1 980); do echo "/old-$i/*  /new-$i/:splat  301"; done
  for i in $(seq 1 20); do echo "/:lang/legacy-$i  /:lang/page-$i  302"; done
} > "$ruled/_redirects"
for i in $(seq 1 1000); do printf '/docs-%s/*\n  X-Robots-Tag: noindex\n' "$i"; done > "$ruled/_headers"
XDG_CONFIG_HOME="$work/config" "$bin/cdeploy" --api "http://127.0.0.1:$api" deploy "$ruled" --slug bench-rules --prebuilt . -q >/dev/null

cat > "$work/nginx.conf" <<CONF
worker_processes auto;
worker_rlimit_nofile 65536;
pid $work/nginx.pid;
error_log $work/nginx-error.log;
events { worker_connections 4096; }
http {
  access_log off;
  sendfile on;
  tcp_nopush on;
  tcp_nodelay on;
  keepalive_requests 10000000;
  keepalive_timeout 75s;
  open_file_cache max=1000 inactive=60s;
  open_file_cache_valid 60s;
  include /etc/nginx/mime.types;
  server {
    listen 127.0.0.1:$nginx_port;
    root $site;
    location / { try_files \$uri \$uri/ /index.html; etag on; }
  }
  # TLS as cdeploy does it: TLS 1.2 and 1.3, the client's cipher order, X25519 first,
  # session tickets and a session cache for resumption, HTTP/2 by ALPN.
  server {
    listen 127.0.0.1:$nginx_tls ssl http2;
    ssl_certificate $work/cert.pem;
    ssl_certificate_key $work/key.pem;
    ssl_protocols TLSv1.2 TLSv1.3;
    ssl_prefer_server_ciphers off;
    ssl_ecdh_curve X25519:prime256v1:secp384r1;
    ssl_session_cache shared:SSL:20m;
    ssl_session_tickets on;
    ssl_buffer_size 16k;
    root $site;
    location / { try_files \$uri \$uri/ /index.html; etag on; }
  }
}
CONF
echo "nginx $("$nginx_bin" -v 2>&1 | sed 's/.*: //'), configured as:" >&2
sed "s|$work|<tmp>|g" "$work/nginx.conf" >&2
"$nginx_bin" -c "$work/nginx.conf" -g 'daemon off;' &
pids+=($!)
sleep 0.5

# A baseline that answers errors measures nothing: both servers must return the same
# 200 body for every path, and wrk must see no error responses.
check_same() {
  local path=$1 ours theirs
  ours=$(curl -fsS -H "Host: bench.localhost:$proxy" "http://127.0.0.1:$proxy$path" | sha256sum)
  theirs=$(curl -fsS "http://127.0.0.1:$nginx_port$path" | sha256sum)
  if [ "$ours" != "$theirs" ]; then
    echo "bench: $path differs between cdeploy and nginx; not measuring" >&2
    exit 1
  fi
}
rps() {
  local c=$1 out
  shift
  out=$(wrk -t2 -c"$c" -d"${secs}s" "$@")
  if grep -q "Non-2xx" <<<"$out"; then
    echo "bench: error responses from $*; not measuring:" >&2
    echo "$out" >&2
    exit 1
  fi
  awk '/Requests\/sec/ {print $2}' <<<"$out"
}
median() { tr ' ' '\n' | sort -g | awk '{v[NR]=$1} END {print v[int((NR+1)/2)]}'; }
# One figure: ROUNDS rounds of A then B, each side's median, their ratio, and the range
# of the rounds' own ratios (how far this machine's noise moves one round).
#   compare LABEL CONNS A_HOST A_URL B_HOST B_URL [wrk options]   (empty host: none)
compare() {
  local label=$1 c=$2 ah=$3 au=$4 bh=$5 bu=$6 a=() b=() o t
  shift 6
  for _ in $(seq 1 "$rounds"); do
    a+=("$(rps "$c" "$@" ${ah:+-H "Host: $ah"} "$au")")
    b+=("$(rps "$c" "$@" ${bh:+-H "Host: $bh"} "$bu")")
  done
  o=$(echo "${a[*]}" | median)
  t=$(echo "${b[*]}" | median)
  python3 - "$label" "$c" "$o" "$t" "${a[*]}" "${b[*]}" <<'PY'
import sys
label, c, o, t, a, b = sys.argv[1:]
each = [float(x) / float(y) for x, y in zip(a.split(), b.split())]
spread = f"{min(each):.2f}-{max(each):.2f}"
print(f"{label:<28} {c:>6} {o:>14} {t:>14} {float(o) / float(t):>8.2f} {spread:>12}")
PY
}
header() { printf '%-28s %6s %14s %14s %8s %12s\n' "$1" "conns" "$2" "$3" "ratio" "rounds"; }
header "path" "cdeploy req/s" "nginx req/s"
for path in / /assets/index-B3nch4Xy.js /deep/link; do
  check_same "$path"
  for c in $conns; do
    compare "$path" "$c" "bench.localhost:$proxy" "http://127.0.0.1:$proxy$path" \
      "" "http://127.0.0.1:$nginx_port$path"
  done
done

# HTTPS: the same files with the same certificate, over keep-alive connections (HTTP/1.1,
# as wrk speaks it), then a new connection per request (`Connection: close`: one TLS
# handshake each; wrk offers the previous session, so both servers resume alike).
tls_params() {
  echo | openssl s_client -connect "127.0.0.1:$1" -servername localhost 2>/dev/null \
    | awk '/^New, / {sub(/^New, /, ""); p=$0} /Server Temp Key/ {sub(/.*: /, ""); k=$0} END {print p ", " k}'
}
echo >&2
echo "TLS negotiated with cdeploy: $(tls_params "$tls")" >&2
echo "TLS negotiated with nginx:   $(tls_params "$nginx_tls")" >&2
check_same_tls() {
  local path=$1 ours theirs
  ours=$(curl -fsSk -H "Host: bench.localhost" "https://localhost:$tls$path" | sha256sum)
  theirs=$(curl -fsSk "https://localhost:$nginx_tls$path" | sha256sum)
  if [ "$ours" != "$theirs" ]; then
    echo "bench: $path differs between cdeploy and nginx over HTTPS; not measuring" >&2
    exit 1
  fi
}
echo
header "HTTPS path" "cdeploy req/s" "nginx req/s"
tls_row() { # label conns path [wrk options]
  local label=$1 c=$2 path=$3
  shift 3
  compare "$label" "$c" "bench.localhost" "https://localhost:$tls$path" \
    "" "https://localhost:$nginx_tls$path" "$@"
}
for path in / /assets/index-B3nch4Xy.js; do
  check_same_tls "$path"
  for c in $conns; do tls_row "$path" "$c" "$path"; done
done
tls_row "/ (handshake per request)" 64 / -H "Connection: close"

# Rules against none: the same files of the same proxy, side by side.
echo
header "path (1,000 rules)" "rules req/s" "none req/s"
for path in / /assets/index-B3nch4Xy.js /deep/link; do
  for c in $conns; do
    compare "$path" "$c" "bench-rules.localhost:$proxy" "http://127.0.0.1:$proxy$path" \
      "bench.localhost:$proxy" "http://127.0.0.1:$proxy$path"
  done
done
