#!/usr/bin/env bash
# Builds and installs cdeploy's binaries (cdeploy, cdeploy-server, cdeploy-proxy,
# cdeploy-builder), and what builds need: git, Node.js/npm, and the build sandbox
# (bubblewrap, passt's pasta, iproute2).
#
#   ./install.sh          release build for one machine (local storage, local builds),
#                         installed to $CDEPLOY_INSTALL_DIR
#                         (default: ~/.cargo/bin when it exists, else ~/.local/bin)
#   ./install.sh --aws    the same with AWS support too (S3 storage, ECS builds): the
#                         AWS SDK about doubles the build time
#   ./install.sh --dev    also installs what the test suite needs (git, Node.js/npm,
#                         Chromium, nginx, redis-server, PostgreSQL, and moto's S3/ECS server,
#                         openapi-spec-validator and schemathesis in a Python virtualenv at
#                         $CDEPLOY_DEV_VENV, default ~/.cache/cdeploy-dev-venv) and builds the
#                         debug workspace;
#                         no cdeploy binary is installed
set -euo pipefail
cd "$(dirname "$0")"

dev=0
aws=0
for arg in "$@"; do
  case "$arg" in
    --dev) dev=1 ;;
    --aws) aws=1 ;;
    -h|--help) sed -n '2,16p' "$0"; exit 0 ;;
    *) echo "install.sh: unknown option $arg (try --help)" >&2; exit 2 ;;
  esac
done

say() { printf '\033[1m==>\033[0m %s\n' "$*" >&2; }
have() { command -v "$1" >/dev/null 2>&1; }

# Debian/Ubuntu packages for what is missing; elsewhere, say what to install.
apt_install() {
  if ! have apt-get; then
    echo "install.sh: please install: $* (no apt-get here)" >&2
    return 1
  fi
  local sudo=""
  [ "$(id -u)" = 0 ] || sudo="sudo"
  if [ -z "${CDEPLOY_APT_UPDATED:-}" ]; then
    $sudo apt-get update -qq
    export CDEPLOY_APT_UPDATED=1
  fi
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "$@" >/dev/null
}

if ! have cargo; then
  echo "install.sh: cargo (Rust) is required: https://rustup.rs, then run ./install.sh again" >&2
  exit 1
fi

missing=()
have git || missing+=(git)
if ! have node || ! have npm; then missing+=(nodejs npm); fi
# The build sandbox: every build runs untrusted code (see docs/self-hosting.md).
have bwrap || missing+=(bubblewrap)
have pasta || missing+=(passt)
have ip || [ -x /usr/sbin/ip ] || [ -x /sbin/ip ] || missing+=(iproute2)
if [ "$dev" = 1 ]; then
  have chromium || have chromium-browser || missing+=(chromium)
  # A caching proxy in front of the proxy (protected previews must never be cached).
  have nginx || [ -x /usr/sbin/nginx ] || missing+=(nginx-light)
  have sha256sum || missing+=(coreutils)
  have openssl || missing+=(openssl)
  have curl || missing+=(curl)
  have pgrep || missing+=(procps)
  have redis-server || missing+=(redis-server)
  have initdb || ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || missing+=(postgresql)
  have python3 || missing+=(python3)
  # A real ACME CA, offline, for the HTTPS tests: pebble and its DNS server pebble-challtestsrv.
  { have pebble || [ -x /usr/bin/pebble ]; } && have pebble-challtestsrv || missing+=(pebble)
  # A DNS server that takes dynamic updates (RFC 2136), for DNS-01 without a hook; the
  # tests start their own on a free port (a system named, if Debian starts one, is unused).
  have named || [ -x /usr/sbin/named ] || missing+=(bind9)
  have dig || missing+=(bind9-dnsutils)
  # The load generator of bench/proxy.sh.
  have wrk || missing+=(wrk)
  # Debian splits venv support out of python3.
  have python3 && python3 -c 'import ensurepip, venv' >/dev/null 2>&1 || missing+=(python3-venv)
fi
if [ "${#missing[@]}" -gt 0 ]; then
  say "installing ${missing[*]}"
  apt_install "${missing[@]}" || {
    echo "install.sh: cdeploy needs git (to clone), node + npm (to build JavaScript apps) and bubblewrap + passt (the build sandbox); install them and retry" >&2
    exit 1
  }
fi
have git || { echo "install.sh: git is required to clone repositories" >&2; exit 1; }
have bwrap && have pasta || echo "install.sh: warning: bubblewrap and passt (pasta) are missing: cdeploy-server will refuse to run builds until they are installed (or --unsafe-no-sandbox is passed)" >&2
have npm || { echo "install.sh: node and npm are required to build JavaScript apps" >&2; exit 1; }

# Reuse a shared target dir when one exists (CI and repeated installs build incrementally).
if [ -z "${CARGO_TARGET_DIR:-}" ] && [ -d "$HOME/.cache/cdeploy-target" ]; then
  export CARGO_TARGET_DIR="$HOME/.cache/cdeploy-target"
fi
target="${CARGO_TARGET_DIR:-$PWD/target}"

if [ "$dev" = 1 ]; then
  venv="${CDEPLOY_DEV_VENV:-$HOME/.cache/cdeploy-dev-venv}"
  if [ ! -x "$venv/bin/moto_server" ]; then
    say "installing moto (the S3, ECS and EC2 APIs for the distributed-mode tests) into $venv"
    python3 -m venv "$venv"
    "$venv/bin/pip" install -q --disable-pip-version-check 'moto[server]>=5.1,<6'
  fi
  if [ ! -x "$venv/bin/openapi-spec-validator" ]; then
    say "installing openapi-spec-validator (checks the API's OpenAPI document) into $venv"
    [ -x "$venv/bin/pip" ] || python3 -m venv "$venv"
    "$venv/bin/pip" install -q --disable-pip-version-check 'openapi-spec-validator>=0.7,<1'
  fi
  if [ ! -x "$venv/bin/schemathesis" ]; then
    say "installing schemathesis (fuzzes the API against its OpenAPI document) into $venv"
    [ -x "$venv/bin/pip" ] || python3 -m venv "$venv"
    "$venv/bin/pip" install -q --disable-pip-version-check 'schemathesis>=4,<5'
  fi
  say "building the workspace (debug) for the tests"
  cargo build --workspace --locked
  say "ready: run ./scripts/test.sh"
  exit 0
fi

# Without --aws: no AWS SDK (S3 storage and ECS builds refuse to start, saying how to get
# them). The test build above and `cargo build` have every feature.
features=(--no-default-features)
[ "$aws" = 1 ] && features=()
say "building release binaries (a few minutes the first time)"
cargo build --release --locked "${features[@]}" -p cdeploy -p cdeploy-server -p cdeploy-proxy -p cdeploy-builder
dest="${CDEPLOY_INSTALL_DIR:-}"
if [ -z "$dest" ]; then
  if [ -d "$HOME/.cargo/bin" ]; then dest="$HOME/.cargo/bin"; else dest="$HOME/.local/bin"; fi
fi
mkdir -p "$dest"
for b in cdeploy cdeploy-server cdeploy-proxy cdeploy-builder; do
  install -m 0755 "$target/release/$b" "$dest/$b"
done
say "installed cdeploy, cdeploy-server, cdeploy-proxy and cdeploy-builder to $dest"
case ":$PATH:" in
  *":$dest:"*) ;;
  *) say "add $dest to your PATH: export PATH=\"$dest:\$PATH\"" ;;
esac
