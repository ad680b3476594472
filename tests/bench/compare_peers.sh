#!/usr/bin/env bash
# loracle against ONNX Runtime on the same weights, in interleaved rounds (README "Fast CPU
# modes" in tests/bench/README.md):
#   tests/bench/compare_peers.sh [BUILD_DIR=build] [DURATION_S=10] [ROUNDS=2] [ORT_NODE_MODULES]
# The bench model (4 layers x 512, 128-token inputs, adapter a0: rank 8 on query/value) is written
# by loracle-bench-fixture, exported with the adapter merged by peers/export_onnx.py (Debian's
# /usr/bin/python3 with python3-torch) and run by ONNX Runtime in process on pre-built ids
# (peers/ort_bench.mjs; ORT_NODE_MODULES: a node_modules holding onnxruntime-node, default
# /tmp/ortpeer/node_modules; `npm install --ignore-scripts onnxruntime-node` there). First the
# three engines' probabilities for one text are checked to agree. Each round then runs loracle end
# to end (gRPC, tokenising, the bench client on the same cores) in float32, --quantize=int8 and
# --dtype=bfloat16 (concurrency 32, then a lone caller), and ORT (lone, then batch 1/8/16/32).
# Prints medians over rounds and writes tests/bench/results/peers-<date>.json.
set -euo pipefail
build="$(cd "${1:-build}" && pwd)"
duration="${2:-10}"
rounds="${3:-2}"
ort_modules="${4:-/tmp/ortpeer/node_modules}"
root="$(cd "$(dirname "$0")/../.." && pwd)"
work="$(mktemp -d /tmp/loracle-peers-XXXXXX)"
port=50800
server_pid=""
cleanup() { [[ -n "$server_pid" ]] && kill "$server_pid" 2>/dev/null; rm -rf "$work"; }
trap cleanup EXIT
[[ -d "$ort_modules/onnxruntime-node" ]] || {
  echo "no onnxruntime-node in $ort_modules: (cd $(dirname "$ort_modules") && npm install --ignore-scripts onnxruntime-node)"
  exit 2
}

"$build/loracle-bench-fixture" "$work/fixture" 4 512 2 >/dev/null
text="the cat sat on the table and the dog ran to the house"
/usr/bin/python3 "$root/tests/bench/peers/export_onnx.py" "$work/fixture" "$work/model.onnx" a0 \
  "$text" 2>/dev/null | tail -1 >"$work/torch_check.json"

start_server() {  # extra server flags...
  [[ -n "$server_pid" ]] && { kill -TERM "$server_pid"; wait "$server_pid" || true; }
  port=$((port + 1))
  "$build/loracle-server" --grpc_host=127.0.0.1 --grpc_port="$port" --http_port=-1 --metrics_port=-1 \
    --model_dir="$work/fixture/model" --adapters_dir="$work/fixture/adapters" --threads=2 "$@" \
    >"$work/server.log" 2>&1 &
  server_pid=$!
  for _ in $(seq 1 300); do grep -q SERVING "$work/server.log" && return 0; sleep 0.1; done
  cat "$work/server.log"; exit 1
}
bench() {  # NAME CONCURRENCY
  "$build/loracle" --server="127.0.0.1:$port" bench --adapters=a0 --concurrency="$2" \
    --input_tokens=128 --duration_s="$duration" --warmup_s=3 --json_out="$work/$1.json" \
    | sed "s/^/[$1] /"
}
ort() {  # NAME [CHECK_JSON]
  NODE_PATH="$ort_modules" node "$root/tests/bench/peers/ort_bench.mjs" "$work/model.onnx" \
    "$work/$1.json" "$duration" 128 2 ${2:+"$2"} | sed "s/^/[$1] /"
}
# bfloat16 only where the CPU multiplies it natively: elsewhere LibTorch emulates it, tens of times
# slower (README --dtype), and a 10 s window would not see one answer at concurrency 32.
modes=(float32 int8)
grep -qw 'avx512_bf16\|amx_bf16' /proc/cpuinfo && modes+=(bfloat16)
flags() { case "$1" in int8) echo "--dtype=float32 --quantize=int8" ;; *) echo "--dtype=$1" ;; esac; }

# The same numbers from all three: PyTorch's export source, ORT and loracle (float32).
start_server --dtype=float32
"$build/loracle" --server="127.0.0.1:$port" --json predict --adapter=a0 "$text" >"$work/loracle_check.json"
ort ort_check "$work/torch_check.json" >/dev/null
python3 - "$work" <<'PY'
import json, math, sys
w = sys.argv[1]
torch_p = json.load(open(f"{w}/torch_check.json"))["probs"]
ort_p = json.load(open(f"{w}/ort_check.json"))["check_probs"]
lor_p = json.load(open(f"{w}/loracle_check.json"))["predictions"][0]["probs"]
lp = lambda v: [math.log(max(x, 1e-30)) for x in v]
d_ort = max(abs(a - b) for a, b in zip(lp(torch_p), lp(ort_p)))
d_lor = max(abs(a - b) for a, b in zip(lp(torch_p), lp(lor_p)))
print(f"check: |log p| differences vs PyTorch: ORT {d_ort:.2e}, loracle {d_lor:.2e}")
assert d_ort < 1e-2 and d_lor < 1e-2, "the engines do not compute the same model"
PY

for round in $(seq 1 "$rounds"); do
  for m in "${modes[@]}"; do
    # shellcheck disable=SC2046
    start_server $(flags "$m")
    bench "${m}_c32_$round" 32
    bench "${m}_lone_$round" 1
  done
  kill -TERM "$server_pid"; wait "$server_pid" || true; server_pid=""
  ort "ort_$round"
done

mkdir -p "$root/tests/bench/results"
out="$root/tests/bench/results/peers-$(date -u +%Y%m%dT%H%M%SZ).json"
python3 - "$work" "$rounds" "$out" "$(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs)" \
  "$(grep -m1 -o 'avx512_bf16\|amx_bf16' /proc/cpuinfo || echo 'no native bf16')" <<'PY'
import json, os, sys
w, rounds, out, cpu, bf16 = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4], sys.argv[5]
def med(v):
    v = sorted(v); n = len(v)
    return v[n // 2] if n % 2 else (v[n // 2 - 1] + v[n // 2]) / 2
R = range(1, rounds + 1)
ort = [json.load(open(f"{w}/ort_{i}.json")) for i in R]
res = {"cpu": cpu, "bf16": bf16, "ort": ort, "loracle": {}}
ort_tp = [o["best_inputs_per_s"] for o in ort]
ort_lone = [o["lone"]["p50_ms"] for o in ort]
print(f"\nCPU: {cpu} ({bf16}); medians of {rounds} interleaved rounds; ratios per round, then median\n")
print("| engine | inputs/s at concurrency 32 | x ORT | lone p50 ms | x ORT |\n|---|---|---|---|---|")
print(f"| ONNX Runtime (in process, best batch) | {med(ort_tp):.1f} | 1 | {med(ort_lone):.1f} | 1 |")
for m in ["float32", "int8", "bfloat16"]:
    if not os.path.exists(f"{w}/{m}_c32_1.json"):
        continue
    c32 = [json.load(open(f"{w}/{m}_c32_{i}.json"))["requests_per_s"] for i in R]
    lone = [json.load(open(f"{w}/{m}_lone_{i}.json"))["latency_ms"]["p50"] for i in R]
    tp_ratio = med([c32[i] / ort_tp[i] for i in range(rounds)])
    lone_ratio = med([lone[i] / ort_lone[i] for i in range(rounds)])
    res["loracle"][m] = {"requests_per_s": c32, "lone_p50_ms": lone,
                         "throughput_vs_ort": tp_ratio, "lone_p50_vs_ort": lone_ratio}
    print(f"| loracle {m} (end to end) | {med(c32):.1f} | {tp_ratio:.2f} | {med(lone):.1f} | {lone_ratio:.2f} |")
json.dump(res, open(out, "w"), indent=1)
print(f"\nresults: {out}")
PY
