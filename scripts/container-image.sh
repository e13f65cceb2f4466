#!/usr/bin/env bash
# Builds skiff's container image (container/Dockerfile) without pulling
# anything: cargo builds the statically linked binary here, and the image is
# FROM scratch around it.
#
#   scripts/container-image.sh [TAG]     # default tag: skiff:latest
#
# SKIFF_BIN=path uses an already built static binary instead (the tests pass
# the one they run).
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
TAG=${1:-skiff:latest}

BIN=${SKIFF_BIN:-}
if [ -z "$BIN" ]; then
    HOST_TARGET=$(rustc -vV | sed -n 's/^host: //p')
    # crt-static: glibc linked in, so the binary runs with no libc around it.
    # With an explicit --target, RUSTFLAGS reach only target code.
    (cd "$ROOT" && RUSTFLAGS="-C target-feature=+crt-static" \
        cargo build --release -p skiff --target "$HOST_TARGET")
    BIN="${CARGO_TARGET_DIR:-$ROOT/target}/$HOST_TARGET/release/skiff"
fi
if readelf -l "$BIN" 2>/dev/null | grep -q 'program interpreter'; then
    echo "error: $BIN is dynamically linked; a FROM scratch image needs a static binary" >&2
    exit 1
fi

CTX=$(mktemp -d)
trap 'rm -rf "$CTX"' EXIT
cp "$BIN" "$CTX/skiff"
cp "$ROOT/container/config.json" "$CTX/config.json"
# The CA certificates of the machine building the image (Debian's
# ca-certificates), so skiff can check the TLS certificates of S3 or
# DynamoDB endpoints: a scratch image has none of its own.
CA=/etc/ssl/certs/ca-certificates.crt
if [ ! -s "$CA" ]; then
    echo "error: $CA is missing; install Debian's ca-certificates package" >&2
    exit 1
fi
cp "$CA" "$CTX/ca-certificates.crt"
mkdir "$CTX/data"
docker build -q -t "$TAG" -f "$ROOT/container/Dockerfile" "$CTX"
