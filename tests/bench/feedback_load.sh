#!/usr/bin/env bash
# Feedback under load: Predict throughput with and without a client that labels every prediction
# (loracle bench --feedback), and the server's resident memory, which the feedback store must keep
# bounded (--feedback_capacity). Rounds interleave the two loads on one server:
#   tests/bench/feedback_load.sh [BUILD_DIR=build] [DURATION_S=60] [ROUNDS=2] [CAPACITY=10000]
# Short inputs (16 tokens, 8 per request) so that tens of thousands of predictions fit in a
# minute. Writes tests/bench/results/feedback-load-<date>.json and prints a Markdown table.
set -euo pipefail
build="${1:-build}"
duration="${2:-60}"
rounds="${3:-2}"
capacity="${4:-10000}"
root="$(cd "$(dirname "$0")/../.." && pwd)"
work="$(mktemp -d /tmp/loracle-fb-XXXXXX)"
port=50850
metrics_port=50851
server_pid=""
cleanup() { [[ -n "$server_pid" ]] && kill "$server_pid" 2>/dev/null; rm -rf "$work"; }
trap cleanup EXIT

"$build/loracle-bench-fixture" "$work/fixture" 4 512 1 >/dev/null
"$build/loracle-server" --grpc_host=127.0.0.1 --grpc_port="$port" --http_port=-1 \
  --metrics_port="$metrics_port" --model_dir="$work/fixture/model" \
  --adapters_dir="$work/fixture/adapters" --threads=2 --training_workers=0 \
  --feedback_capacity="$capacity" >"$work/server.log" 2>&1 &
server_pid=$!
for _ in $(seq 1 300); do grep -q SERVING "$work/server.log" && break; sleep 0.1; done

rss_kb() { awk '/^VmRSS/ {print $2}' "/proc/$server_pid/status"; }
remembered() {
  python3 - "$metrics_port" <<'PY'
import sys, urllib.request
for line in urllib.request.urlopen(f"http://127.0.0.1:{sys.argv[1]}/metrics").read().decode().splitlines():
    if line.startswith("loracle_feedback_remembered "):
        print(int(float(line.split()[1])))
PY
}

echo "{\"rss_start_kb\": $(rss_kb)}" >"$work/start.json"
for round in $(seq 1 "$rounds"); do
  for mode in plain feedback; do
    flag=""
    [[ "$mode" == feedback ]] && flag="--feedback"
    "$build/loracle" --server="127.0.0.1:$port" bench --adapters=a0 --concurrency=32 \
      --input_tokens=16 --inputs=8 --duration_s="$duration" --warmup_s=3 $flag \
      --json_out="$work/${mode}_$round.json" | sed "s/^/[$mode $round] /"
    echo "{\"rss_kb\": $(rss_kb), \"remembered\": $(remembered)}" >"$work/${mode}_${round}_mem.json"
  done
done
kill -TERM "$server_pid"; wait "$server_pid" || true; server_pid=""

mkdir -p "$root/tests/bench/results"
out="$root/tests/bench/results/feedback-load-$(date -u +%Y%m%dT%H%M%SZ).json"
python3 - "$work" "$rounds" "$capacity" "$out" <<'PY'
import json, sys
work, rounds, capacity, out = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
load = lambda n: json.load(open(f"{work}/{n}.json"))
start = load("start")["rss_start_kb"]
rows, result = [], {"capacity": capacity, "rss_start_kb": start, "rounds": []}
print(f"--feedback_capacity={capacity}; server RSS at start {start / 1024:.0f} MiB\n")
print("| round | plain inputs/s | with feedback inputs/s | ratio | feedback calls ok / errors | RSS after (MiB) | remembered |")
print("|---|---|---|---|---|---|---|")
for i in range(1, rounds + 1):
    p, f = load(f"plain_{i}"), load(f"feedback_{i}")
    pm, fm = load(f"plain_{i}_mem"), load(f"feedback_{i}_mem")
    ratio = f["inputs_per_s"] / p["inputs_per_s"]
    errors = sum(f.get("feedback_errors", {}).values())
    print(f"| {i} | {p['inputs_per_s']:.0f} | {f['inputs_per_s']:.0f} | {ratio:.3f} | "
          f"{f['feedback_ok']} / {errors} | {pm['rss_kb'] / 1024:.0f} / {fm['rss_kb'] / 1024:.0f} | "
          f"{fm['remembered']} |")
    result["rounds"].append({"plain": p, "feedback": f, "plain_mem": pm, "feedback_mem": fm,
                             "ratio": ratio})
json.dump(result, open(out, "w"), indent=2)
print(f"\nresults: {out}", file=sys.stderr)
PY
