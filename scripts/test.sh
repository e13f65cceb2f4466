#!/usr/bin/env bash
# Runs every test: core unit tests, host tests and the end-to-end tests in
# tests/*.rs, including the ones that drive real clients (skopeo, umoci, the
# docker CLI, Python oras).
#
# Made for a fresh Debian (12, bookworm) machine with a Rust toolchain from
# rustup: it first installs whatever the tests need, skipping anything already
# there, so running it again costs only the cargo build and the tests.
#
#   scripts/test.sh            # extra arguments go to `cargo test`
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"

say() { printf '==> %s\n' "$*" >&2; }

SUDO=()
if [ "$(id -u)" -ne 0 ]; then
    SUDO=(sudo)
fi

# --- Rust: the wasm target the components are built for -------------------
if ! rustup target list --installed | grep -qx wasm32-wasip2; then
    say "rustup target add wasm32-wasip2"
    rustup target add wasm32-wasip2 >/dev/null
fi

# --- Debian packages ------------------------------------------------------
APT_UPDATED=0
installed() { dpkg-query -W -f='${Status}' "$1" 2>/dev/null | grep -q 'install ok installed'; }

apt_update() {
    if [ "$APT_UPDATED" -eq 0 ]; then
        say "apt-get update"
        "${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive apt-get update -qq >/dev/null
        APT_UPDATED=1
    fi
}

# Install those of the given packages that are missing; `apt-get update` runs
# once, and only when something is to be installed.
apt_install() {
    local missing=() p
    for p in "$@"; do
        installed "$p" || missing+=("$p")
    done
    [ ${#missing[@]} -eq 0 ] && return 0
    apt_update
    say "apt-get install ${missing[*]}"
    "${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive \
        apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
}

# A C toolchain for linking native crates (rustup does not bring one).
command -v cc >/dev/null || apt_install gcc libc6-dev

# strace: the durability tests check the order of fsyncs with it.
# slapd: the LDAP tests run a directory of their own; openssl makes their test CA.
apt_install skopeo umoci strace podman buildah curl ca-certificates slapd openssl
# CNCF distribution, which skiff-bench's smoke test runs beside skiff. Its
# package may start a daemon on :5000 where an init system lets it; the
# tests start their own on free ports, so that one is stopped.
if ! installed docker-registry; then
    apt_install docker-registry
    "${SUDO[@]}" service docker-registry stop >/dev/null 2>&1 || true
fi

# The docker engine and its CLI come with the machine (the tests push and pull
# with the real engine). The CLI must be 23.0 or newer: older clients cannot
# read OCI image manifests (docker/cli#3990).
docker_major() { docker --version 2>/dev/null | sed -n 's/^Docker version \([0-9]*\)\..*/\1/p'; }
if ! command -v docker >/dev/null; then
    echo "error: no docker CLI on PATH; the tests need a Docker Engine and a docker CLI >= 23.0" >&2
    exit 1
fi
major=$(docker_major)
if [ "${major:-0}" -lt 23 ]; then
    echo "error: $(command -v docker) is $(docker --version); the tests need a docker CLI >= 23.0" >&2
    exit 1
fi
if ! docker info >/dev/null 2>&1; then
    echo "error: the docker CLI cannot reach a Docker Engine (docker info failed)" >&2
    exit 1
fi

# --- Python: a venv with the `oras` client --------------------------------
VENV="$ROOT/.venv"
if ! "$VENV/bin/python" -c 'import oras' >/dev/null 2>&1; then
    if ! { command -v python3 >/dev/null && python3 -c 'import ensurepip, venv' >/dev/null 2>&1; }; then
        apt_install python3 python3-venv
    fi
    say "python venv at .venv with oras"
    rm -rf "$VENV"
    python3 -m venv "$VENV"
    "$VENV/bin/python" -m pip install -q --disable-pip-version-check oras
fi
# moto: a local S3 (and DynamoDB) endpoint for the S3 tests.
if ! "$VENV/bin/python" -c 'import moto.server' >/dev/null 2>&1; then
    say "pip install moto[server]"
    "$VENV/bin/python" -m pip install -q --disable-pip-version-check 'moto[server]'
fi
export SKIFF_PYTHON="$VENV/bin/python"

# --- wkg, the wasm package CLI, from crates.io ------------------------------
# Installed once per machine, outside the clone, like the build cache.
WKG_VERSION=0.16.1
for dir in /var/cache/skiff-tools "${XDG_CACHE_HOME:-$HOME/.cache}/skiff-tools"; do
    if mkdir -p "$dir" 2>/dev/null && [ -w "$dir" ]; then
        export SKIFF_TOOLS="$dir"
        break
    fi
done
if ! "$SKIFF_TOOLS/bin/wkg" --version 2>/dev/null | grep -qF "$WKG_VERSION"; then
    say "cargo install wkg $WKG_VERSION"
    env -u CARGO_TARGET_DIR -u RUSTFLAGS \
        cargo install --quiet --locked --root "$SKIFF_TOOLS" --version "$WKG_VERSION" wkg
fi

# --- wasmtime-cli: `wasmtime serve`, the outside runtime for the edge tests --
# The edge compositions (target/edge/) must run under a runtime we did not
# write; Spin cannot be installed here, `wasmtime serve` runs the same
# wasi:http components. Installed once per machine, like wkg.
WASMTIME_VERSION=48.0.8
if ! "$SKIFF_TOOLS/bin/wasmtime" --version 2>/dev/null | grep -qF "$WASMTIME_VERSION"; then
    say "cargo install wasmtime-cli $WASMTIME_VERSION"
    env -u CARGO_TARGET_DIR -u RUSTFLAGS \
        cargo install --quiet --locked --root "$SKIFF_TOOLS" --version "$WASMTIME_VERSION" wasmtime-cli
fi
export SKIFF_WASMTIME="$SKIFF_TOOLS/bin/wasmtime"

# --- Build and test -------------------------------------------------------
# One build cache per machine, outside the clone, so a fresh clone (CI's)
# rebuilds only the workspace's own crates, not wasmtime. An explicit
# CARGO_TARGET_DIR wins.
if [ -z "${CARGO_TARGET_DIR:-}" ]; then
    for dir in /var/cache/skiff-target "${XDG_CACHE_HOME:-$HOME/.cache}/skiff-target"; do
        if mkdir -p "$dir" 2>/dev/null && [ -w "$dir" ]; then
            export CARGO_TARGET_DIR="$dir"
            break
        fi
    done
fi
# The binary is linked statically (glibc, crt-static), so the one the tests
# run is the one the container image ships: a FROM scratch image has no libc.
# With an explicit --target, RUSTFLAGS reach only target code, not build
# scripts or proc macros.
HOST_TARGET=$(rustc -vV | sed -n 's/^host: //p')
export RUSTFLAGS="-C target-feature=+crt-static"
set -- --target "$HOST_TARGET" "$@"
say "cargo build --release -p skiff $1 $2"
cargo build --release -p skiff --target "$HOST_TARGET"
say "cargo test --release --workspace $*"
# One moto server for the run, on a free port of 127.0.0.1, stopped at exit.
MOTO_PORT=$("$VENV/bin/python" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
"$VENV/bin/python" -m moto.server -H 127.0.0.1 -p "$MOTO_PORT" >/dev/null 2>&1 &
MOTO_PID=$!
export SKIFF_TEST_S3_ENDPOINT="http://127.0.0.1:$MOTO_PORT"
for _ in $(seq 100); do
    "$VENV/bin/python" -c "import urllib.request; urllib.request.urlopen('$SKIFF_TEST_S3_ENDPOINT/moto-api/')" >/dev/null 2>&1 && break
    sleep 0.2
done
LOG=$(mktemp)
# Figures the tests measure but do not assert (durations, sizes) gather here.
export SKIFF_REPORT
SKIFF_REPORT=$(mktemp)
# Every password, token and key the tests use is noted here; none may
# appear in the run's output, which holds every registry's log.
export SKIFF_SECRETS
SKIFF_SECRETS=$(mktemp)
trap 'rm -f "$LOG" "$SKIFF_REPORT" "$SKIFF_SECRETS"; kill "$MOTO_PID" 2>/dev/null || true' EXIT
status=0
cargo test --release --workspace "$@" 2>&1 | tee "$LOG" || status=$?
if [ -s "$SKIFF_SECRETS" ]; then
    # Blank lines would match everything; secrets are 8 characters or more.
    grep -E '.{8}' "$SKIFF_SECRETS" | sort -u > "$SKIFF_SECRETS.checked" || true
    mv "$SKIFF_SECRETS.checked" "$SKIFF_SECRETS"
    leaked=$(grep -c -F -f "$SKIFF_SECRETS" "$LOG" || true)
    echo "secrets checked against the run's output: $(wc -l < "$SKIFF_SECRETS"); lines showing one: $leaked"
    if [ "$leaked" != 0 ]; then
        echo "FAILED: a password, token or key the tests used appears in the output above"
        status=1
    fi
fi
if [ -s "$SKIFF_REPORT" ]; then
    echo "measured in this run:"
    sed 's/^/  /' "$SKIFF_REPORT"
fi
# One closing line for the whole run: cargo's own last line is the summary
# of whichever test binary ran last (often a crate with no tests).
awk '/^test result:/ { p += $4; f += $6 } END { printf "tests: %d passed, %d failed\n", p, f }' "$LOG"
exit "$status"
