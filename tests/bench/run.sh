#!/usr/bin/env bash
# The loracle benchmark suite: every ratio from one run on one machine (these machines are noisy;
# compare only numbers from the same run). Usage, after building (see the top README):
#   tests/bench/run.sh [BUILD_DIR=build] [DURATION_S=10]
# Writes tests/bench/results/<host>-<date>.json and prints a Markdown table.
set -euo pipefail
build="${1:-build}"
duration="${2:-10}"
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
  "$build/loracle-server" --grpc_host=127.0.0.1 --grpc_port="$port" --metrics_port=-1 \
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
gemm="$("$build/loracle-gemm-rate" 2)"
echo "torch float32 GEMM rate: $gemm GFLOP/s"

# Each load keeps the server saturated: 32 requests of K=1 in flight, or 8 of K=8 (64 rows, one
# full batch at the default --max_batch_size=64).
start_server
bench k1 a0 "$concurrency"
bench k8 ens8 8
bench mixed64 "$all64" "$concurrency"
bench base base "$concurrency"
start_server --max_batch_size=1
bench batch1 a0 "$concurrency"
kill -TERM "$server_pid"; wait "$server_pid" || true; server_pid=""

mkdir -p "$root/tests/bench/results"
out="$root/tests/bench/results/$(hostname)-$(date -u +%Y%m%dT%H%M%SZ).json"
python3 - "$work" "$gemm" "$layers" "$hidden" "$tokens" "$out" <<'PY'
import json, sys
work, gemm, L, H, T, out = sys.argv[1], float(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5]), sys.argv[6]
r = {n: json.load(open(f"{work}/{n}.json")) for n in ["k1", "k8", "mixed64", "base", "batch1"]}
I = 4 * H
# Forward FLOPs of one row of T tokens: the linear layers (2 flops per multiply-add), attention
# scores and context (2 * 2 * T * T * H per layer), pooler; LoRA rank 8 on q, v adds ~0.5%.
flops = T * L * 2 * (4 * H * H + 2 * H * I) + L * 4 * T * T * H + 2 * H * H + T * L * 2 * 2 * (2 * H * 8)
achieved = r["k1"]["requests_per_s"] * flops / 1e9
ratios = {
    "roofline_efficiency": achieved / gemm,
    "dynamic_batching_vs_batch1": r["k1"]["requests_per_s"] / r["batch1"]["requests_per_s"],
    "k8_cost_vs_k1": r["k1"]["requests_per_s"] / r["k8"]["requests_per_s"],
    "mixed64_vs_one_adapter": r["mixed64"]["requests_per_s"] / r["k1"]["requests_per_s"],
    "lora_vs_base": r["k1"]["requests_per_s"] / r["base"]["requests_per_s"],
}
json.dump({"gemm_gflops": gemm, "flops_per_request": flops, "achieved_gflops": achieved,
           "ratios": ratios, "runs": r}, open(out, "w"), indent=2)
print(f"\nresults: {out}\n")
print("| ratio | measured | goal |\n|---|---|---|")
goals = {"roofline_efficiency": ">= 0.7", "dynamic_batching_vs_batch1": "> 1",
         "k8_cost_vs_k1": "<= 8.4 (1.05 x K)", "mixed64_vs_one_adapter": ">= 0.9", "lora_vs_base": ">= 0.9"}
for k, v in ratios.items():
    print(f"| {k} | {v:.3f} | {goals[k]} |")
print(f"\nGEMM {gemm:.1f} GFLOP/s; {flops/1e9:.3f} GFLOP per request; achieved {achieved:.1f} GFLOP/s")
for n, x in r.items():
    print(f"{n:8s} {x['requests_per_s']:8.2f} req/s  p50 {x['latency_ms']['p50']:8.1f} ms  p99 {x['latency_ms']['p99']:8.1f} ms  errors {x['errors']}")
PY
