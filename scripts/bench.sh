#!/usr/bin/env bash
# Benchmark skiff against CNCF distribution (Debian's docker-registry) in the
# same run, on the same machine, and report ratios: the machine is shared and
# noisy, so absolute numbers mean little and the ratio is the result.
#
#   scripts/bench.sh [BLOB_MIB] [BLOBS]     (defaults: 256 MiB, 4 blobs)
#
# Measures, for each registry: pushing BLOBS blobs of BLOB_MIB each (POST then
# PUT with the body), pulling them back (GET), and small-request throughput
# with wrk (manifest GET by tag, tags list) at 16 connections for 5 s each.
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
MIB=${1:-256}
N=${2:-4}

need() { command -v "$1" >/dev/null || { echo "installing $2" >&2; DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$2" >/dev/null; }; }
need docker-registry docker-registry
need wrk wrk
cargo build --release -q -p skiff

WORK=$(mktemp -d)
PIDS=()
cleanup() { for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done; rm -rf "$WORK"; }
trap cleanup EXIT

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
wait_up() { for _ in $(seq 100); do curl -sf "http://127.0.0.1:$1/v2/" >/dev/null && return; sleep 0.1; done; echo "registry on $1 did not start" >&2; exit 1; }

# --- the registries ---------------------------------------------------------
SKIFF_PORT=$(free_port)
cat > "$WORK/skiff.json" <<JSON
{"http":{"address":"127.0.0.1","port":$SKIFF_PORT},"storage":{"rootDirectory":"$WORK/skiff"},"log":{"level":"error"}}
JSON
target/release/skiff serve "$WORK/skiff.json" >/dev/null 2>&1 &
PIDS+=($!)

DIST_PORT=$(free_port)
cat > "$WORK/dist.yml" <<YAML
version: 0.1
log: {level: error}
storage:
  filesystem: {rootdirectory: $WORK/dist}
  delete: {enabled: true}
http: {addr: 127.0.0.1:$DIST_PORT}
YAML
docker-registry serve "$WORK/dist.yml" >/dev/null 2>&1 &
PIDS+=($!)
wait_up "$SKIFF_PORT"
wait_up "$DIST_PORT"

# --- data -------------------------------------------------------------------
echo "generating $N blobs of $MIB MiB" >&2
for i in $(seq "$N"); do
    head -c "$((MIB * 1024 * 1024))" /dev/urandom > "$WORK/blob$i"
    sha256sum "$WORK/blob$i" | cut -d' ' -f1 > "$WORK/blob$i.sha"
done

upload() { # port repo file digest: POST for a session, PUT the bytes to it
    local loc
    loc=$(curl -sf -D - -o /dev/null -X POST "http://127.0.0.1:$1/v2/$2/blobs/uploads/" | tr -d '\r' | sed -n 's/^[Ll]ocation: //p')
    case "$loc" in http*) ;; *) loc="http://127.0.0.1:$1$loc" ;; esac
    case "$loc" in *\?*) loc="$loc&digest=$4" ;; *) loc="$loc?digest=$4" ;; esac
    curl -sf -o /dev/null -X PUT -H 'Content-Type: application/octet-stream' --data-binary "@$3" "$loc"
}

mib_per_s() { echo "$1 $2" | awk -v mib="$((MIB * N))" '{printf "%.1f", mib/($2-$1)}'; }

push_all() { # port repo
    local t0 i
    t0=$(date +%s.%N)
    for i in $(seq "$N"); do
        upload "$1" "$2" "$WORK/blob$i" "sha256:$(cat "$WORK/blob$i.sha")"
    done
    mib_per_s "$t0" "$(date +%s.%N)"
}

pull_all() { # port repo
    local t0 i
    t0=$(date +%s.%N)
    for i in $(seq "$N"); do
        curl -sf -o /dev/null "http://127.0.0.1:$1/v2/$2/blobs/sha256:$(cat "$WORK/blob$i.sha")"
    done
    mib_per_s "$t0" "$(date +%s.%N)"
}

push_manifest() { # port repo
    local cd ld m
    printf '%s' '{"architecture":"amd64","os":"linux"}' > "$WORK/config"
    cd=$(sha256sum "$WORK/config" | cut -d' ' -f1)
    upload "$1" "$2" "$WORK/config" "sha256:$cd"
    ld=$(cat "$WORK/blob1.sha")
    m="{\"schemaVersion\":2,\"mediaType\":\"application/vnd.oci.image.manifest.v1+json\",\"config\":{\"mediaType\":\"application/vnd.oci.image.config.v1+json\",\"digest\":\"sha256:$cd\",\"size\":$(stat -c %s "$WORK/config")},\"layers\":[{\"mediaType\":\"application/vnd.oci.image.layer.v1.tar\",\"digest\":\"sha256:$ld\",\"size\":$((MIB * 1024 * 1024))}]}"
    curl -sf -o /dev/null -X PUT -H 'Content-Type: application/vnd.oci.image.manifest.v1+json' --data-binary "$m" "http://127.0.0.1:$1/v2/$2/manifests/latest"
}

rps() { # url
    wrk -t2 -c16 -d5s -H 'Accept: application/vnd.oci.image.manifest.v1+json' "$1" 2>/dev/null |
        awk '/Requests\/sec/ {print $2}'
}

ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (b > 0) printf "%.2f", a/b; else print "n/a" }'; }

echo "pushing and pulling ($((MIB * N)) MiB each way per registry)" >&2
S_PUSH=$(push_all "$SKIFF_PORT" bench/app); D_PUSH=$(push_all "$DIST_PORT" bench/app)
S_PULL=$(pull_all "$SKIFF_PORT" bench/app); D_PULL=$(pull_all "$DIST_PORT" bench/app)
push_manifest "$SKIFF_PORT" bench/app; push_manifest "$DIST_PORT" bench/app
echo "small requests with wrk (16 connections, 5 s each)" >&2
S_MAN=$(rps "http://127.0.0.1:$SKIFF_PORT/v2/bench/app/manifests/latest")
D_MAN=$(rps "http://127.0.0.1:$DIST_PORT/v2/bench/app/manifests/latest")
# (wrk cannot time HEAD: it waits for the body Content-Length announces.)
S_TAGS=$(rps "http://127.0.0.1:$SKIFF_PORT/v2/bench/app/tags/list")
D_TAGS=$(rps "http://127.0.0.1:$DIST_PORT/v2/bench/app/tags/list")

printf '\n%-28s %12s %12s %8s\n' "measure" "skiff" "distribution" "ratio"
printf '%-28s %12s %12s %8s\n' "push MiB/s" "$S_PUSH" "$D_PUSH" "$(ratio "$S_PUSH" "$D_PUSH")"
printf '%-28s %12s %12s %8s\n' "pull MiB/s" "$S_PULL" "$D_PULL" "$(ratio "$S_PULL" "$D_PULL")"
printf '%-28s %12s %12s %8s\n' "manifest GET req/s" "$S_MAN" "$D_MAN" "$(ratio "$S_MAN" "$D_MAN")"
printf '%-28s %12s %12s %8s\n' "tags list req/s" "$S_TAGS" "$D_TAGS" "$(ratio "$S_TAGS" "$D_TAGS")"
