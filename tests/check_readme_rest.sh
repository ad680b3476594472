#!/usr/bin/env bash
# Runs the README's REST example (the curl block after <!-- rest-example -->) against a real
# loracle-server on a generated fixture (adapter a0 standing in for spam), and checks the reply.
#   tests/check_readme_rest.sh BUILD_DIR
set -euo pipefail
build="$1"
root="$(cd "$(dirname "$0")/.." && pwd)"
work="$(mktemp -d /tmp/loracle-rest-XXXXXX)"
pid=""
cleanup() { [[ -n "$pid" ]] && kill "$pid" 2>/dev/null; rm -rf "$work"; }
trap cleanup EXIT
command -v curl >/dev/null || { echo "curl not installed (deploy/install-deps.sh installs it)"; exit 1; }
"$build/loracle-bench-fixture" "$work/fixture" 1 128 1 >/dev/null
"$build/loracle-server" --grpc_host=127.0.0.1 --grpc_port=0 --metrics_port=-1 --http_port=0 \
  --model_dir="$work/fixture/model" --adapters_dir="$work/fixture/adapters" --threads=1 \
  --training_workers=0 --store_poll_s=0 >"$work/server.log" 2>&1 &
pid=$!
for _ in $(seq 1 300); do grep -q SERVING "$work/server.log" && break; sleep 0.1; done
port="$(grep -o 'REST on port [0-9]*' "$work/server.log" | grep -o '[0-9]*$')"
[[ -n "$port" ]] || { cat "$work/server.log"; exit 1; }
example="$(awk '/<!-- rest-example -->/{on=1; next} on && /^```sh/{inblock=1; next} inblock && /^```/{exit} inblock' "$root/README.md")"
[[ -n "$example" ]] || { echo "no REST example in README.md"; exit 1; }
example="${example//localhost:8000/127.0.0.1:$port}"
example="${example//\/models\/spam\//\/models\/a0\/}"
reply="$(bash -c "$example")"
python3 - "$reply" <<'PY'
import json, sys
r = json.loads(sys.argv[1])
names = [o["name"] for o in r["outputs"]]
assert names == ["probabilities", "label", "mutual_information"], names
p = r["outputs"][0]
assert p["shape"] == [2, 2] and len(p["data"]) == 4, p
assert abs(sum(p["data"][:2]) - 1) < 1e-5 and abs(sum(p["data"][2:]) - 1) < 1e-5, p
assert r["parameters"]["mc_samples"] == 4, r["parameters"]
print("README REST example: 1 passed, 0 failed")
PY
