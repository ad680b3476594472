#!/usr/bin/env bash
# Smoke-tests a built loracle image without `docker run` (which sandboxes like CI's refuse):
# exports the image's filesystem, starts loracle-server in it under chroot as the image's user,
# predicts with the image's own CLI, scrapes /metrics, and stops it with SIGTERM. Needs root.
#   deploy/smoke-test-image.sh [IMAGE]        (default loracle:dev; podman, or docker if absent)
set -euo pipefail
image="${1:-loracle:dev}"
engine=podman
command -v podman >/dev/null || engine=docker
root="$(mktemp -d /tmp/loracle-image-XXXXXX)"
chmod 755 "$root"  # the image user must be able to enter its own root
cleanup() {
  pkill -TERM -f "loracle-server.*--grpc_port=50591" 2>/dev/null || true
  umount "$root/proc" 2>/dev/null || true
  rm -rf "$root"
}
trap cleanup EXIT

cid="$($engine create "$image")"
$engine export "$cid" | tar -C "$root" -x
$engine rm "$cid" >/dev/null
mount --bind /proc "$root/proc"

chroot --userspec=10001:10001 "$root" env LORACLE_CACHE_DIR=/var/cache/loracle HOME=/var/lib/loracle \
  /usr/local/bin/loracle-server --adapters_dir=/var/lib/loracle/adapters \
  --grpc_port=50591 --metrics_port=19591 >"$root/tmp/server.log" 2>&1 &
for _ in $(seq 1 120); do
  grep -q SERVING "$root/tmp/server.log" && break
  sleep 0.5
done
cat "$root/tmp/server.log"
grep -q SERVING "$root/tmp/server.log"
chroot "$root" /usr/local/bin/loracle --server=127.0.0.1:50591 jobs list | grep ' spam '  # first start
chroot "$root" /usr/local/bin/loracle --server=127.0.0.1:50591 adapters list
curl -sf localhost:19591/metrics | grep -E '^loracle_(model_ready|requests_total)'
pkill -TERM -f "loracle-server.*--grpc_port=50591"
for _ in $(seq 1 40); do
  grep -q stopped "$root/tmp/server.log" && break
  sleep 0.5
done
grep -q stopped "$root/tmp/server.log"
echo "smoke test of $image passed"
