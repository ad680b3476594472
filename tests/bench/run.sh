#!/usr/bin/env bash
# The loracle benchmark suite: every ratio from one run on one machine (these machines are noisy;
# compare only numbers from the same run). Usage, after building (see the top README):
#   tests/bench/run.sh [BUILD_DIR=build] [DURATION_S=10]
#   tests/bench/run.sh [BUILD_DIR=build] [DURATION_S=10] [ROUNDS=2]
# This machine's speed drifts by tens of percent over minutes, so every configuration runs once
# per round, rounds back to back; each ratio is computed within a round from runs minutes apart
# (the roofline from the k1 run and the GEMM rate measured just before and just after it), and
# the reported ratio is the median over rounds, with every round's value kept in the JSON. Writes tests/bench/results/<host>-<date>.json and prints a Markdown table.
set -euo pipefail
build="${1:-build}"
duration="${2:-10}"
rounds="${3:-3}"
root="$(cd "$(dirname "$0")/../.." && pwd)"
work="$(mktemp -d /tmp/loracle-bench-XXXXXX)"
port=50700
layers=4 hidden=512 tokens=128 concurrency=32
server_pid=""
cleanup() { [[ -n "$server_pid" ]] && kill "$server_pid" 2>/dev/null; rm -rf "$work"; }
trap cleanup EXIT

"$build/loracle-bench-fixture" "$work/fixture" "$layers" "$hidden" 64

start_server() {  # extra server flags...
  [[ -n "$server_pid" ]] && { kill -TERM "$server_pid"; wait "$server_pid" || true; }
  port=$((port + 1))
  "$build/loracle-server" --grpc_host=127.0.0.1 --grpc_port="$port" --http_port=-1 --metrics_port=-1 \
    --model_dir="$work/fixture/model" --adapters_dir="$work/fixture/adapters" --threads=2 "$@" \
    >"$work/server.log" 2>&1 &
  server_pid=$!
  for _ in $(seq 1 200); do grep -q SERVING "$work/server.log" && return 0; sleep 0.1; done
  cat "$work/server.log"; exit 1
}

bench() {  # NAME ADAPTERS CONCURRENCY
  "$build/loracle" --server="127.0.0.1:$port" bench --adapters="$2" --concurrency="$3" \
    --input_tokens="$tokens" --duration_s="$duration" --warmup_s=3 --json_out="$work/$1.json" \
    | sed "s/^/[$1] /"
}

all64="$(seq -s, -f 'a%g' 0 63)"
: >"$work/gemm.txt"
for round in $(seq 1 "$rounds"); do
  # Each load keeps the server saturated: 32 requests of K=1 in flight, or 8 of K=8 (64 rows, one
  # full batch at the default --max_batch_size=64).
  start_server --dtype=float32
  before="$("$build/loracle-gemm-rate" 2)"
  bench "k1_$round" a0 "$concurrency"
  after="$("$build/loracle-gemm-rate" 2)"
  echo "round $round: torch float32 GEMM rate $before GFLOP/s before k1, $after after"
  echo "$before $after" >>"$work/gemm.txt"
  bench "k8_$round" ens8 8
  bench "mixed64_$round" "$all64" "$concurrency"
  bench "base_$round" base "$concurrency"
  bench "lone_float32_$round" a0 1
  start_server --dtype=float32 --max_batch_size=1
  bench "batch1_$round" a0 "$concurrency"
  # The fast CPU modes (README --dtype, --quantize): saturated and lone, one adapter. bfloat16
  # only where the CPU multiplies it natively (elsewhere it is emulated, tens of times slower).
  fast_modes=(int8)
  grep -qw 'avx512_bf16\|amx_bf16' /proc/cpuinfo && fast_modes+=(bfloat16)
  for mode in "${fast_modes[@]}"; do
    if [[ "$mode" == int8 ]]; then start_server --dtype=float32 --quantize=int8;
    else start_server --dtype="$mode"; fi
    bench "sat_${mode}_$round" a0 "$concurrency"
    bench "lone_${mode}_$round" a0 1
  done
  kill -TERM "$server_pid"; wait "$server_pid" || true; server_pid=""
done

mkdir -p "$root/tests/bench/results"
out="$root/tests/bench/results/$(hostname)-$(date -u +%Y%m%dT%H%M%SZ).json"
python3 - "$work" "$rounds" "$layers" "$hidden" "$tokens" "$out" <<'PY'
import json, os, sys
work, rounds, L, H, T, out = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5]), sys.argv[6]
gemm_rows = [[float(v) for v in line.split()] for line in open(f"{work}/gemm.txt") if line.strip()]
names = ["k1", "k8", "mixed64", "base", "batch1"]
runs = {n: [json.load(open(f"{work}/{n}_{i}.json")) for i in range(1, rounds + 1)] for n in names}
rps = {n: [x["requests_per_s"] for x in runs[n]] for n in names}
I = 4 * H
# Forward FLOPs of one row of T tokens: the linear layers (2 flops per multiply-add), attention
# scores and context (2 * 2 * T * T * H per layer), pooler; LoRA rank 8 on q, v adds ~0.5%.
flops = T * L * 2 * (4 * H * H + 2 * H * I) + L * 4 * T * T * H + 2 * H * H + T * L * 2 * 2 * (2 * H * 8)
gemm = [sum(g) / len(g) for g in gemm_rows]
per_round = {
    "roofline_efficiency": [rps["k1"][i] * flops / 1e9 / gemm[i] for i in range(rounds)],
    "dynamic_batching_vs_batch1": [rps["k1"][i] / rps["batch1"][i] for i in range(rounds)],
    "k8_cost_vs_k1": [rps["k1"][i] / rps["k8"][i] for i in range(rounds)],
    "mixed64_vs_one_adapter": [rps["mixed64"][i] / rps["k1"][i] for i in range(rounds)],
    "lora_vs_base": [rps["k1"][i] / rps["base"][i] for i in range(rounds)],
}
def median(v):
    v = sorted(v)
    return v[len(v) // 2] if len(v) % 2 else (v[len(v) // 2 - 1] + v[len(v) // 2]) / 2
ratios = {k: median(v) for k, v in per_round.items()}
achieved = median(rps["k1"]) * flops / 1e9
json.dump({"gemm_gflops_before_after_k1": gemm_rows, "flops_per_request": flops,
           "ratios": ratios, "ratios_per_round": per_round, "requests_per_s": rps, "runs": runs},
          open(out, "w"), indent=2)
print(f"\nresults: {out}\n")
print("| ratio | measured | goal |\n|---|---|---|")
goals = {"roofline_efficiency": ">= 0.7", "dynamic_batching_vs_batch1": "> 1",
         "k8_cost_vs_k1": "<= 8.4 (1.05 x K)", "mixed64_vs_one_adapter": ">= 0.9", "lora_vs_base": ">= 0.9"}
for k, v in ratios.items():
    print(f"| {k} | {v:.3f} | {goals[k]} |")
print("\nper round: " + "; ".join(f"{k} " + ", ".join(f"{x:.3f}" for x in v) for k, v in per_round.items()))
print(f"GEMM GFLOP/s (before, after k1) per round: {gemm_rows}; {flops/1e9:.3f} GFLOP per request; "
      f"k1 median {achieved:.1f} GFLOP/s")
modes = {}
for m in ["float32", "bfloat16", "int8"]:
    if m != "float32" and not os.path.exists(f"{work}/sat_{m}_1.json"):
        continue
    sat = rps["k1"] if m == "float32" else [json.load(open(f"{work}/sat_{m}_{i}.json"))["requests_per_s"] for i in range(1, rounds + 1)]
    lone = [json.load(open(f"{work}/lone_{m}_{i}.json"))["latency_ms"]["p50"] for i in range(1, rounds + 1)]
    modes[m] = {"requests_per_s": sat, "lone_p50_ms": lone,
                "vs_float32_requests_per_s": [sat[i] / rps["k1"][i] for i in range(rounds)]}
result = json.load(open(out))
result["modes"] = modes
json.dump(result, open(out, "w"), indent=2)
print("\n| mode | req/s, concurrency 32 (median) | x float32 | lone p50 ms (median) |\n|---|---|---|---|")
for m, v in modes.items():
    print(f"| {m} | {median(v['requests_per_s']):.1f} | {median(v['vs_float32_requests_per_s']):.2f} | {median(v['lone_p50_ms']):.1f} |")
for n in names:
    x = runs[n][0]
    print(f"{n:8s} req/s per round: " + ", ".join(f"{v:.2f}" for v in rps[n]) +
          f"  (round 1: p50 {x['latency_ms']['p50']:.1f} ms, p99 {x['latency_ms']['p99']:.1f} ms, errors {x['errors']})")
PY
