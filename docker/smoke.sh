#!/usr/bin/env bash
# Build the sslzoo image, run it, wait until healthy, exercise every endpoint with a real key, check it runs
# as non-root, stop it. Not part of `make test` (slow: a multi-GB torch install). Run as root from the
# repository root:  sudo docker/smoke.sh
#
# On a machine without a Docker daemon or registry access (like the project's build machine) it starts
# dockerd itself (Debian's docker.io: vfs storage, no iptables, no bridge; containers use the host
# network) and bootstraps the base image `debian:bookworm` from Debian packages (debootstrap minbase +
# docker import). The host's CA bundle is copied into the build context (docker/ca-certificates/), so pip
# inside the build trusts a TLS-intercepting proxy.
#
# Environment: IMAGE (default sslzoo:smoke), PORT (default 18080), KEEP_IMAGE=1 to keep the image.
set -euo pipefail

IMAGE=${IMAGE:-sslzoo:smoke}
PORT=${PORT:-18080}
NAME=sslzoo-smoke-$$
ROOT=$(cd "$(dirname "$0")/.." && pwd)
WORK=$(mktemp -d)
STARTED_DOCKERD=""

say() { printf 'smoke: %s\n' "$*"; }
fail() { say "FAIL: $*"; exit 1; }

cleanup() {
    docker rm -f "$NAME" >/dev/null 2>&1 || true
    [ -n "${KEEP_IMAGE:-}" ] || docker rmi "$IMAGE" >/dev/null 2>&1 || true
    rm -f "$ROOT/docker/ca-certificates/host-bundle.crt"
    rm -rf "$WORK"
    if [ -n "$STARTED_DOCKERD" ]; then kill "$STARTED_DOCKERD" 2>/dev/null || true; fi
}
trap cleanup EXIT

# -- daemon ------------------------------------------------------------------------------------------------
if ! docker info >/dev/null 2>&1; then
    command -v dockerd >/dev/null || fail "no Docker daemon and no dockerd (apt-get install docker.io)"
    say "starting dockerd (vfs storage, no iptables, no bridge)"
    dockerd --storage-driver vfs --iptables=false --ip-masq=false --bridge=none >"$WORK/dockerd.log" 2>&1 &
    STARTED_DOCKERD=$!
    for _ in $(seq 60); do docker info >/dev/null 2>&1 && break; sleep 1; done
    docker info >/dev/null 2>&1 || fail "dockerd did not start: $(tail -5 "$WORK/dockerd.log")"
fi

# -- base image --------------------------------------------------------------------------------------------
if ! docker image inspect debian:bookworm >/dev/null 2>&1; then
    command -v debootstrap >/dev/null || fail "no debian:bookworm image and no debootstrap (apt-get install debootstrap)"
    say "bootstrapping debian:bookworm with debootstrap (minbase)"
    debootstrap --variant=minbase bookworm "$WORK/rootfs" http://deb.debian.org/debian >"$WORK/debootstrap.log"
    tar -C "$WORK/rootfs" -c . | docker import - debian:bookworm >/dev/null
    rm -rf "$WORK/rootfs"
fi

# -- build -------------------------------------------------------------------------------------------------
if [ -f /etc/ssl/certs/ca-certificates.crt ]; then
    cp /etc/ssl/certs/ca-certificates.crt "$ROOT/docker/ca-certificates/host-bundle.crt"
fi
say "building $IMAGE"
build_start=$(date +%s)
docker build --network host -t "$IMAGE" "$ROOT" >"$WORK/build.log" 2>&1 || { tail -30 "$WORK/build.log"; fail "build"; }
build_seconds=$(( $(date +%s) - build_start ))
size=$(docker image inspect -f '{{.Size}}' "$IMAGE")
say "built in ${build_seconds} s; image size $(( size / 1024 / 1024 )) MiB"

# -- run ---------------------------------------------------------------------------------------------------
python3 -c 'import secrets; print(secrets.token_urlsafe(32))' >"$WORK/api-keys"
chmod 0644 "$WORK/api-keys"
KEY=$(head -1 "$WORK/api-keys")
# host network (no bridge): pick the engine's loopback ports beside PORT so nothing clashes on the host
run_start=$(date +%s)
docker run -d --name "$NAME" --network host --health-interval 5s \
    -v "$WORK/api-keys:/run/secrets/sslzoo/api-keys:ro" -e SSLZOO_API_KEYS_FILE=/run/secrets/sslzoo/api-keys \
    -e SSLZOO_SERVE_PORT="$PORT" "$IMAGE" --engine-port $((PORT + 1)) --management-port $((PORT + 2)) \
    --metrics-port $((PORT + 3)) --grpc-inference-port $((PORT + 4)) --grpc-management-port $((PORT + 5)) >/dev/null
for _ in $(seq 180); do
    state=$(docker inspect -f '{{.State.Health.Status}}' "$NAME" 2>/dev/null || echo gone)
    [ "$state" = healthy ] && break
    [ "$state" = gone ] || [ "$(docker inspect -f '{{.State.Running}}' "$NAME")" = true ] \
        || { docker logs "$NAME" | tail -30; fail "container exited"; }
    sleep 2
done
[ "$state" = healthy ] || { docker logs "$NAME" | tail -30; fail "not healthy after 6 minutes"; }
say "healthy $(( $(date +%s) - run_start )) s after docker run"
docker logs "$NAME" 2>&1 | sed 's/^/  console| /'

# -- endpoints ---------------------------------------------------------------------------------------------
URL=http://127.0.0.1:$PORT
IMG=$ROOT/sslzoo/samples/monuseg/train/images/TCGA-B0-5698-01Z-00-DX1_y128_x128.png
MASK=$ROOT/sslzoo/samples/monuseg/train/masks/TCGA-B0-5698-01Z-00-DX1_y128_x128.png
check() {  # check NAME EXPECTED_STATUS curl-args...
    local name=$1 want=$2; shift 2
    local got
    got=$(curl -s -o "$WORK/out" -w '%{http_code}' "$@")
    [ "$got" = "$want" ] || { head -c 400 "$WORK/out"; echo; fail "$name: HTTP $got, expected $want"; }
    say "ok  $name -> $got ($(wc -c <"$WORK/out") bytes)"
}
AUTH=(-H "Authorization: Bearer $KEY")
check "GET /ping (no key)" 200 "$URL/ping"
check "GET /metrics (no key)" 200 "$URL/metrics"
check "nuclei without a key" 401 -H 'Content-Type: image/png' --data-binary @"$IMG" "$URL/predictions/nuclei"
check "nuclei with a wrong key" 401 -H 'Authorization: Bearer wrong-key-0123456789' -H 'Content-Type: image/png' \
    --data-binary @"$IMG" "$URL/predictions/nuclei"
check "nuclei PNG" 200 "${AUTH[@]}" -H 'Content-Type: image/png' --data-binary @"$IMG" "$URL/predictions/nuclei"
check "nuclei GeoJSON" 200 "${AUTH[@]}" -H 'Accept: application/geo+json' -F image=@"$IMG" "$URL/predictions/nuclei"
check "lesion JSON" 200 "${AUTH[@]}" -F image=@"$IMG" -F format=json "$URL/predictions/lesion"
check "embed" 200 "${AUTH[@]}" -H 'Content-Type: image/png' --data-binary @"$IMG" "$URL/predictions/embed"
check "evaluate" 200 "${AUTH[@]}" -F task=instance -F prediction_1=@"$MASK" -F mask_1=@"$MASK" \
    "$URL/predictions/evaluate"
check "curl --data-binary default type" 200 "${AUTH[@]}" --data-binary @"$IMG" "$URL/predictions/nuclei"
check "/api-description without a key" 401 "$URL/api-description"
check "unknown model" 404 "${AUTH[@]}" -H 'Content-Type: image/png' --data-binary @"$IMG" "$URL/predictions/nope"

uid=$(docker exec "$NAME" id -u)
[ "$uid" != 0 ] || fail "the container runs as root"
say "ok  runs as uid $uid"

# -- stop --------------------------------------------------------------------------------------------------
stop_start=$(date +%s)
docker stop -t 60 "$NAME" >/dev/null
code=$(docker inspect -f '{{.State.ExitCode}}' "$NAME")
say "stopped in $(( $(date +%s) - stop_start )) s with exit code $code"
[ "$code" = 0 ] || fail "exit code $code after SIGTERM"
say "PASS: image $(( size / 1024 / 1024 )) MiB, build ${build_seconds} s"
