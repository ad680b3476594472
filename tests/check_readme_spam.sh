#!/usr/bin/env bash
# A newcomer's first start, as the README has it: loracle-server with no model flags (the built-in
# pretrained model, loaded, nothing generated) reaches SERVING within seconds and trains `spam` in
# the background (the first-start job); then the README's predict example (the line after
# "## Call it" that predicts with --adapter=spam) must label its spam text spam and its ham text
# ham, with the first start's own adapter.
#   tests/check_readme_spam.sh BUILD_DIR
# ctest ReadmeSpamExample.
set -euo pipefail
build="$(cd "$1" && pwd)"
root="$(cd "$(dirname "$0")/.." && pwd)"
work="$(mktemp -d /tmp/loracle-readme-spam-XXXXXX)"
pid=""
cleanup() { [[ -n "$pid" ]] && kill "$pid" 2>/dev/null; rm -rf "$work"; }
trap cleanup EXIT
start_ms=$(( $(date +%s%N) / 1000000 ))
"$build/loracle-server" --grpc_host=127.0.0.1 --grpc_port=0 --metrics_port=-1 --http_port=-1 \
  --cache_dir="$work/cache" --threads=2 --training_priority=normal >"$work/server.log" 2>&1 &
pid=$!
for _ in $(seq 1 300); do grep -q SERVING "$work/server.log" && break; sleep 0.1; done
grep -q SERVING "$work/server.log" || { cat "$work/server.log"; exit 1; }
ready_ms=$(( $(date +%s%N) / 1000000 - start_ms ))
grep -q "SERVING model .*builtin" "$work/server.log" || { cat "$work/server.log"; exit 1; }
echo "SERVING on the built-in model after ${ready_ms} ms"
(( ready_ms < 10000 )) || { echo "not SERVING within seconds"; exit 1; }
[[ ! -e "$work/cache/default-bert-4x256-v1" ]] || { echo "a model was generated at start"; exit 1; }
port="$(grep -o 'gRPC on port [0-9]*' "$work/server.log" | grep -o '[0-9]*$')"
cli=("$build/loracle" "--server=127.0.0.1:$port")

# The first start's job: wait for it (it trains on the 2 cores; about a minute idle).
job=""
for _ in $(seq 1 60); do
  job="$("${cli[@]}" jobs list 2>/dev/null | awk '$0 ~ / spam / {print $1; exit}')"
  [[ -n "$job" ]] && break
  sleep 1
done
[[ -n "$job" ]] || { echo "no spam job after a minute"; "${cli[@]}" jobs list; exit 1; }
"${cli[@]}" --timeout_ms=1800000 jobs watch "$job" >"$work/watch.log" 2>&1 || true
"${cli[@]}" jobs get "$job" | tee "$work/job.txt" | head -20
grep -q SUCCEEDED "$work/job.txt" || { cat "$work/watch.log" "$work/server.log"; exit 1; }

# The README's example, as written but for the binary's path and the server's address.
line="$(awk '/^## Call it/{on=1} on && /predict --adapter=spam "/{print; exit}' "$root/README.md")"
[[ -n "$line" ]] || { echo "no spam predict example after '## Call it' in README.md"; exit 1; }
example="${line#\$ }"
example="${example%%#*}"
example="${example/build\/loracle /$build/loracle --server=127.0.0.1:$port --json }"
reply="$(bash -c "$example")"
echo "$reply" | python3 -c '
import json, sys
r = json.load(sys.stdin)
labels = [p["label"] for p in r["predictions"]]
probs = [max(p["probs"]) for p in r["predictions"]]
print("README example labels:", labels, "confidence", [round(x, 3) for x in probs])
assert labels == ["spam", "ham"], labels
print("README spam example: 1 passed, 0 failed")
'
