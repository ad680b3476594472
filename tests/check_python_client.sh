#!/usr/bin/env bash
# The Python client (client/python) installed as a user installs it, into a venv that sees
# Debian's python3-grpcio and python3-protobuf, then its tests (tests/python) and the README's
# Python example, against a real loracle-server on a generated fixture (adapter a0 standing in
# for spam).
#   tests/check_python_client.sh BUILD_DIR
set -euo pipefail
build="$(cd "$1" && pwd)"
root="$(cd "$(dirname "$0")/.." && pwd)"
work="$(mktemp -d /tmp/loracle-python-XXXXXX)"
pid=""
cleanup() { [[ -n "$pid" ]] && kill "$pid" 2>/dev/null; rm -rf "$work"; }
trap cleanup EXIT
py=/usr/bin/python3  # Debian's, whose dist-packages hold python3-grpcio (not a pyenv shim)
"$py" -c "import grpc, google.protobuf" 2>/dev/null ||
  { echo "python3-grpcio and python3-protobuf are needed (deploy/install-deps.sh)"; exit 1; }
"$py" -m venv --system-site-packages "$work/venv"
# A copy of client/ and proto/ (setup.py generates the stubs next to itself from ../../proto).
mkdir -p "$work/client" && cp -r "$root/client/python" "$work/client/" && cp -r "$root/proto" "$work/"
rm -rf "$work/client/python/loracle" "$work/client/python/build" "$work/client/python/"*.egg-info
(cd "$work" && "$work/venv/bin/pip" install -q --no-build-isolation --no-index ./client/python)
"$build/loracle-bench-fixture" "$work/fixture" 1 128 1 >/dev/null
"$build/loracle-server" --grpc_host=127.0.0.1 --grpc_port=0 --metrics_port=-1 --http_port=-1 \
  --model_dir="$work/fixture/model" --adapters_dir="$work/fixture/adapters" \
  --jobs_dir="$work/jobs" --threads=1 --training_workers=1 --store_poll_s=0 \
  --training_priority=normal >"$work/server.log" 2>&1 &
pid=$!
for _ in $(seq 1 300); do grep -q SERVING "$work/server.log" && break; sleep 0.1; done
port="$(grep -o 'gRPC on port [0-9]*' "$work/server.log" | grep -o '[0-9]*$')"
[[ -n "$port" ]] || { cat "$work/server.log"; exit 1; }
export LORACLE_TARGET="127.0.0.1:$port" LORACLE_ADAPTER=a0
cd "$work"
"$work/venv/bin/python" "$root/tests/python/test_client.py" -v 2>&1 | tail -12
# The README's example, as written but for the address and the adapter.
example="$(awk '/<!-- python-example -->/{on=1; next} on && /^```python/{inblock=1; next} inblock && /^```/{exit} inblock' "$root/README.md")"
[[ -n "$example" ]] || { echo "no Python example in README.md"; exit 1; }
example="${example//localhost:50051/127.0.0.1:$port}"
example="${example//\"spam\"/\"a0\"}"
"$work/venv/bin/python" -c "$example" >"$work/example.out"
cat "$work/example.out"
[[ -s "$work/example.out" ]] || { echo "the README's Python example printed nothing"; exit 1; }
echo "README Python example: 1 passed, 0 failed"
