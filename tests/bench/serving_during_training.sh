#!/usr/bin/env bash
# Does serving keep priority while a fine-tune job trains? Predict p99 at half of saturation load,
# idle vs. during a job, all in one run on one machine (tests/bench/README.md has the results):
#   tests/bench/serving_during_training.sh [BUILD_DIR=build] [DURATION_S=30] [ROUNDS=3]
# The bench model (4 x 512, `a0`: rank 8 on query+value, K=1, 128-token inputs) serves; the job
# fine-tunes on the bundled SpamAssassin training split (M=1, LoRA Dropout, batch 16, 128 tokens)
# and is cancelled after each measurement. Scenarios, each on a fresh server:
#   idle, default  no job, then the shipped thread split (--training_threads=0
#                  --training_priority=idle), alternating for ROUNDS rounds on one server (an
#                  open loop's p99 is noisy: the ratio reported is the median round's)
#   idle_1thread   --training_threads=1 --training_priority=idle
#   normal         --training_priority=normal (training competes as an equal)
# Writes tests/bench/results/serving-during-training-<date>.json and prints a Markdown table.
set -euo pipefail
build="${1:-build}"
duration="${2:-30}"
rounds="${3:-3}"
root="$(cd "$(dirname "$0")/../.." && pwd)"
work="$(mktemp -d /tmp/loracle-sdt-XXXXXX)"
port=50800
server_pid=""
cleanup() { [[ -n "$server_pid" ]] && kill "$server_pid" 2>/dev/null; rm -rf "$work"; }
trap cleanup EXIT

"$build/loracle-bench-fixture" "$work/fixture" 4 512 1 >/dev/null

start_server() {  # extra server flags...
  if [[ -n "$server_pid" ]]; then kill -TERM "$server_pid"; wait "$server_pid" || true; fi
  port=$((port + 1))
  rm -rf "$work/jobs"
  "$build/loracle-server" --grpc_host=127.0.0.1 --grpc_port="$port" --http_port=-1 --metrics_port=-1 \
    --model_dir="$work/fixture/model" --adapters_dir="$work/fixture/adapters" --threads=2 \
    --jobs_dir="$work/jobs" --data_dir="$root/tests/data/spam-assassin" "$@" \
    >"$work/server.log" 2>&1 &
  server_pid=$!
  for _ in $(seq 1 300); do grep -q SERVING "$work/server.log" && return 0; sleep 0.1; done
  cat "$work/server.log"; exit 1
}

cli() { "$build/loracle" --server="127.0.0.1:$port" "$@"; }

bench() {  # NAME LOAD-FLAG
  cli bench --adapters=a0 "$2" --input_tokens=128 --duration_s="$duration" --warmup_s=3 \
    --json_out="$work/$1.json" | sed "s/^/[$1] /"
}

field() { python3 -c "import json,sys; print(json.load(open(sys.argv[1]))$2)" "$1"; }

# Starts a long job and waits until it has taken optimiser steps; prints its id.
start_job() {
  local id  # --detach --json prints the job id
  id="$(cli finetune --name=spam_bg --server_data=train.jsonl \
    --server_validation=validation.jsonl --epochs=50 --detach --json | tail -1)"
  for _ in $(seq 1 600); do
    cli jobs get "$id" --json >"$work/job_now.json"
    [[ "$(field "$work/job_now.json" '.get("step", 0)')" -ge 3 ]] && break
    sleep 0.5
  done
  echo "$id"
}

during_job() {  # NAME RATE
  local id
  id="$(start_job)"
  cli jobs get "$id" --json >"$work/$1_job_before.json"
  bench "$1" "--rate=$2"
  cli jobs get "$id" --json >"$work/$1_job_after.json"
  cli jobs cancel "$id" >/dev/null
  for _ in $(seq 1 120); do
    cli jobs get "$id" --json >"$work/job_now.json"
    [[ "$(field "$work/job_now.json" '["state"]')" == JOB_STATE_CANCELLED ]] && break
    sleep 0.5
  done
}

start_server
bench saturation --concurrency=32
rate="$(python3 -c "import json; print(round(json.load(open('$work/saturation.json'))['requests_per_s'] / 2, 2))")"
echo "half of saturation: $rate requests/s"
for round in $(seq 1 "$rounds"); do
  bench "idle_$round" "--rate=$rate"
  during_job "default_$round" "$rate"
done
start_server --training_threads=1 --training_priority=idle
during_job idle_1thread "$rate"
start_server --training_priority=normal
during_job normal "$rate"
kill -TERM "$server_pid"; wait "$server_pid" || true; server_pid=""

mkdir -p "$root/tests/bench/results"
out="$root/tests/bench/results/serving-during-training-$(date -u +%Y%m%dT%H%M%SZ).json"
python3 - "$work" "$rate" "$out" "$rounds" <<'PY'
import json, statistics, sys
work, rate, out, rounds = sys.argv[1], float(sys.argv[2]), sys.argv[3], int(sys.argv[4])
load = lambda n: json.load(open(f"{work}/{n}.json"))
def job_rate(name):
    before, after = load(f"{name}_job_before"), load(f"{name}_job_after")
    seconds = (int(after["updated_unix_ms"]) - int(before["updated_unix_ms"])) / 1000
    steps = after.get("step", 0) - before.get("step", 0)
    return {"steps": steps, "seconds": seconds,
            "examples_per_s": steps * 16 / seconds if seconds > 0 else 0}
p99 = lambda r: r["latency_ms"]["p99"]
ratios = [p99(load(f"default_{i}")) / p99(load(f"idle_{i}")) for i in range(1, rounds + 1)]
median_round = sorted(range(1, rounds + 1), key=lambda i: ratios[i - 1])[(rounds - 1) // 2]
print(f"saturation {load('saturation')['requests_per_s']:.1f} req/s; offered {rate} req/s\n")
print("| round | idle p50 / p99 ms | default p50 / p99 ms | p99 ratio | job examples/s |")
print("|---|---|---|---|---|")
for i in range(1, rounds + 1):
    idle_r, job_r = load(f"idle_{i}"), load(f"default_{i}")
    print(f"| {i} | {idle_r['latency_ms']['p50']:.1f} / {p99(idle_r):.1f} | "
          f"{job_r['latency_ms']['p50']:.1f} / {p99(job_r):.1f} | {ratios[i - 1]:.2f} | "
          f"{job_rate(f'default_{i}')['examples_per_s']:.1f} |")
print(f"\nmedian p99 ratio (round {median_round}): {statistics.median(ratios):.2f}\n")
idle = load(f"idle_{median_round}")
rows = [("idle (no job)", idle, None), ("default", load(f"default_{median_round}"),
                                        job_rate(f"default_{median_round}"))]
for name in ["idle_1thread", "normal"]:
    rows.append((name, load(name), job_rate(name)))
print(f"saturation {load('saturation')['requests_per_s']:.1f} req/s; offered {rate} req/s\n")
print("| scenario | req/s | p50 ms | p99 ms | p99 / idle p99 | errors | job examples/s under load |")
print("|---|---|---|---|---|---|---|")
result = {"saturation": load("saturation"), "rate": rate, "p99_ratios": ratios,
          "rounds": {i: {"idle": load(f"idle_{i}"), "default": load(f"default_{i}"),
                         "job": job_rate(f"default_{i}")} for i in range(1, rounds + 1)},
          "scenarios": {}}
for name, r, job in rows:
    errors = sum(r["errors"].values()) if isinstance(r.get("errors"), dict) else r.get("errors", 0)
    ex = f"{job['examples_per_s']:.1f}" if job else "-"
    lat, idle_p99 = r["latency_ms"], idle["latency_ms"]["p99"]
    print(f"| {name} | {r['requests_per_s']:.1f} | {lat['p50']:.1f} | {lat['p99']:.1f} | "
          f"{lat['p99'] / idle_p99:.2f} | {errors} | {ex} |")
    result["scenarios"][name] = {"bench": r, "job": job}
json.dump(result, open(out, "w"), indent=2)
print(f"\nresults: {out}", file=sys.stderr)
PY
