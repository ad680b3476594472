#!/usr/bin/env bash
# REST vs gRPC on the bench model (issue 16): the same closed-loop load, 32 clients, 128-token
# inputs over a0..a7, through `loracle bench` (gRPC) and `loracle bench --rest` (POST
# /v2/models/{adapter}/infer, JSON, one keep-alive connection per client), alternating, ROUNDS
# rounds of DURATION_S each on one server. Usage, after building:
#   tests/bench/rest_vs_grpc.sh [BUILD_DIR=build] [DURATION_S=30] [ROUNDS=2]
# Writes tests/bench/results/rest-vs-grpc-<date>.json and prints a Markdown table.
set -euo pipefail
build="${1:-build}"
duration="${2:-30}"
rounds="${3:-2}"
root="$(cd "$(dirname "$0")/../.." && pwd)"
work="$(mktemp -d /tmp/loracle-rest-bench-XXXXXX)"
port=50990 http=50991
pid=""
cleanup() { [[ -n "$pid" ]] && kill "$pid" 2>/dev/null; rm -rf "$work"; }
trap cleanup EXIT
"$build/loracle-bench-fixture" "$work/fixture" 4 512 8 >/dev/null
"$build/loracle-server" --grpc_host=127.0.0.1 --grpc_port="$port" --http_port="$http" \
  --metrics_port=-1 --model_dir="$work/fixture/model" --adapters_dir="$work/fixture/adapters" \
  --threads=2 --training_workers=0 --store_poll_s=0 >"$work/server.log" 2>&1 &
pid=$!
for _ in $(seq 1 600); do grep -q SERVING "$work/server.log" && break; sleep 0.1; done
grep -q SERVING "$work/server.log" || { cat "$work/server.log"; exit 1; }
bench() {  # NAME [--rest=...]
  local name="$1"; shift
  "$build/loracle" --server="127.0.0.1:$port" bench --adapters=a0,a1,a2,a3,a4,a5,a6,a7 \
    --concurrency=32 --input_tokens=128 --duration_s="$duration" --warmup_s=3 \
    --json_out="$work/$name.json" "$@" | sed "s/^/[$name] /"
}
for r in $(seq 1 "$rounds"); do
  bench "grpc_$r"
  bench "rest_$r" --rest="127.0.0.1:$http"
done
kill -TERM "$pid"; wait "$pid" || true; pid=""
mkdir -p "$root/tests/bench/results"
out="$root/tests/bench/results/rest-vs-grpc-$(date -u +%Y%m%dT%H%M%SZ).json"
python3 - "$work" "$out" "$rounds" <<'PY'
import json, statistics, sys
work, out, rounds = sys.argv[1], sys.argv[2], int(sys.argv[3])
runs = {f"{p}_{r}": json.load(open(f"{work}/{p}_{r}.json")) for p in ("grpc", "rest") for r in range(1, rounds + 1)}
ratios = [runs[f"rest_{r}"]["requests_per_s"] / runs[f"grpc_{r}"]["requests_per_s"] for r in range(1, rounds + 1)]
result = {"rounds": rounds, "ratio_rest_over_grpc": ratios, "median_ratio": statistics.median(ratios), "runs": runs}
json.dump(result, open(out, "w"), indent=2)
print(f"\nresults: {out}\n")
print("| round | gRPC req/s | REST req/s | REST / gRPC | gRPC p50 / p99 ms | REST p50 / p99 ms | errors |")
print("|---|---|---|---|---|---|---|")
for r in range(1, rounds + 1):
    g, h = runs[f"grpc_{r}"], runs[f"rest_{r}"]
    print(f"| {r} | {g['requests_per_s']:.1f} | {h['requests_per_s']:.1f} | {ratios[r-1]:.3f} | "
          f"{g['latency_ms']['p50']:.0f} / {g['latency_ms']['p99']:.0f} | "
          f"{h['latency_ms']['p50']:.0f} / {h['latency_ms']['p99']:.0f} | "
          f"{sum(g['errors'].values())} / {sum(h['errors'].values())} |")
print(f"\nmedian REST / gRPC: {result['median_ratio']:.3f}")
PY
