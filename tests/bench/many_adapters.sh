#!/usr/bin/env bash
# Many adapters, one memory budget (issue 14): 500 rank-8 adapters registered, a budget
# (--adapter_memory_bytes) that holds 50 of them, Zipf-distributed traffic. Usage, after building:
#   tests/bench/many_adapters.sh [BUILD_DIR=build] [DURATION_S=20] [ZIPF_S=1.0]
# One run, one machine, phases back to back:
#   resident  Zipf traffic, no budget (every adapter in memory)          -> throughput baseline
#   budget    the same traffic with the budget                          -> throughput, hit rate
#   cold      one client cycling a0..a499 with the budget: every request reloads its adapter
#   warm      one client on a0 alone                                     -> cold minus warm
# Hit rate = 1 - reloads / requests over the measured window (server counters scraped before and
# after it); reload time p50/p99 from loracle_adapter_reload_seconds (bucket-interpolated).
# Writes tests/bench/results/many-adapters-<date>.json and prints a Markdown table.
set -euo pipefail
build="${1:-build}"
duration="${2:-20}"
zipf="${3:-1.0}"
root="$(cd "$(dirname "$0")/../.." && pwd)"
work="$(mktemp -d /tmp/loracle-many-XXXXXX)"
count=500 fits=50 tokens=64 concurrency=16
port=50800 metrics=50900
server_pid=""
cleanup() { [[ -n "$server_pid" ]] && kill "$server_pid" 2>/dev/null; rm -rf "$work"; }
trap cleanup EXIT

"$build/loracle-bench-fixture" "$work/fixture" 4 512 "$count"
all="$(seq -s, -f 'a%g' 0 $((count - 1)))"

start_server() {  # NAME extra-flags...
  local name="$1"; shift
  [[ -n "$server_pid" ]] && { kill -TERM "$server_pid"; wait "$server_pid" || true; }
  port=$((port + 1)) metrics=$((metrics + 1))
  local t0; t0=$(date +%s.%N)
  "$build/loracle-server" --grpc_host=127.0.0.1 --grpc_port="$port" --http_port=-1 --metrics_host=127.0.0.1 \
    --metrics_port="$metrics" --model_dir="$work/fixture/model" \
    --adapters_dir="$work/fixture/adapters" --threads=2 --training_workers=0 --store_poll_s=0 \
    "$@" >"$work/$name.log" 2>&1 &
  server_pid=$!
  for _ in $(seq 1 1200); do
    if grep -q SERVING "$work/$name.log"; then
      awk -v a="$(date +%s.%N)" -v b="$t0" 'BEGIN { print a - b }' >"$work/$name.start_s"
      return 0
    fi
    sleep 0.1
  done
  cat "$work/$name.log"; exit 1
}
scrape() { curl -sf "http://127.0.0.1:$metrics/metrics" >"$work/$1.prom"; }
bench() {  # NAME ADAPTERS CONCURRENCY WARMUP_S [extra flags]
  local name="$1" adapters="$2" conc="$3" warm="$4"; shift 4
  "$build/loracle" --server="127.0.0.1:$port" bench --adapters="$adapters" --concurrency="$conc" \
    --input_tokens="$tokens" --duration_s="$duration" --warmup_s="$warm" \
    --json_out="$work/$name.json" "$@" | sed "s/^/[$name] /"
}

start_server resident
bytes="$("$build/loracle" --server="127.0.0.1:$port" adapters get a0 --json |
  python3 -c 'import json,sys; print(json.load(sys.stdin)["memory_bytes"])')"
budget=$((bytes * fits))
echo "one adapter: $bytes bytes; budget: $budget bytes ($fits adapters)"
bench warmup_resident "$all" "$concurrency" 0 --zipf_s="$zipf" --duration_s=5 >/dev/null
bench resident "$all" "$concurrency" 0 --zipf_s="$zipf"

start_server budget --adapter_memory_bytes="$budget"
bench warmup_budget "$all" "$concurrency" 0 --zipf_s="$zipf" --duration_s=5 >/dev/null
scrape budget_before
bench budget "$all" "$concurrency" 0 --zipf_s="$zipf"
scrape budget_after
bench warm a0 1 2
scrape cold_before
bench cold "$all" 1 0
scrape cold_after
kill -TERM "$server_pid"; wait "$server_pid" || true; server_pid=""

mkdir -p "$root/tests/bench/results"
out="$root/tests/bench/results/many-adapters-$(date -u +%Y%m%dT%H%M%SZ).json"
python3 - "$work" "$out" "$bytes" "$budget" "$zipf" "$count" "$fits" <<'PY'
import json, re, sys
work, out, one, budget, zipf, count, fits = sys.argv[1:]
def prom(name):
    series = {}
    for line in open(f"{work}/{name}.prom"):
        if line.startswith("#") or not line.strip():
            continue
        key, value = line.rsplit(" ", 1)
        series[key] = float(value)
    return series
def delta(before, after, key):
    return prom(after).get(key, 0.0) - prom(before).get(key, 0.0)
def quantile(before, after, q):
    a, b = prom(after), prom(before)
    buckets = sorted((float(re.search(r'le="([^"]+)"', k).group(1)), v - b.get(k, 0.0))
                     for k, v in a.items() if k.startswith("loracle_adapter_reload_seconds_bucket"))
    total = buckets[-1][1]
    if total == 0:
        return None
    prev_le, prev_n = 0.0, 0.0
    for le, n in buckets:
        if n >= q * total:
            if le == float("inf"):
                return prev_le
            return prev_le + (le - prev_le) * (q * total - prev_n) / max(n - prev_n, 1e-9)
        prev_le, prev_n = le, n
runs = {n: json.load(open(f"{work}/{n}.json")) for n in ["resident", "budget", "warm", "cold"]}
for run in runs.values():  # 500 names per run: keep the count
    run["options"]["adapters"] = len(run["options"]["adapters"])
start = {n: float(open(f"{work}/{n}.start_s").read()) for n in ["resident", "budget"]}
reloads = delta("budget_before", "budget_after", 'loracle_adapter_reloads_total{result="ok"}')
failed = delta("budget_before", "budget_after", 'loracle_adapter_reloads_total{result="error"}')
evictions = delta("budget_before", "budget_after", "loracle_adapter_evictions_total")
requests = runs["budget"]["ok"] + sum(runs["budget"]["errors"].values())
cold_reloads = delta("cold_before", "cold_after", 'loracle_adapter_reloads_total{result="ok"}')
cold_requests = runs["cold"]["ok"] + sum(runs["cold"]["errors"].values())
result = {
    "adapters": int(count), "budget_adapters": int(fits), "adapter_bytes": int(one),
    "budget_bytes": int(budget), "zipf_s": float(zipf),
    "throughput_resident_rps": runs["resident"]["requests_per_s"],
    "throughput_budget_rps": runs["budget"]["requests_per_s"],
    "throughput_ratio": runs["budget"]["requests_per_s"] / runs["resident"]["requests_per_s"],
    "p50_ms": {"resident": runs["resident"]["latency_ms"]["p50"], "budget": runs["budget"]["latency_ms"]["p50"]},
    "p99_ms": {"resident": runs["resident"]["latency_ms"]["p99"], "budget": runs["budget"]["latency_ms"]["p99"]},
    "errors": {"resident": runs["resident"]["errors"], "budget": runs["budget"]["errors"],
               "cold": runs["cold"]["errors"]},
    "hit_rate": 1 - reloads / requests, "requests": requests, "reloads": reloads,
    "failed_reloads": failed, "evictions": evictions,
    "reload_ms_p50": 1e3 * quantile("budget_before", "budget_after", 0.5),
    "reload_ms_p99": 1e3 * quantile("budget_before", "budget_after", 0.99),
    "cold_request_ms": {"p50": runs["cold"]["latency_ms"]["p50"], "p99": runs["cold"]["latency_ms"]["p99"]},
    "warm_request_ms": {"p50": runs["warm"]["latency_ms"]["p50"], "p99": runs["warm"]["latency_ms"]["p99"]},
    "cold_phase_hit_rate": 1 - cold_reloads / cold_requests,
    "start_s": start, "runs": runs,
}
json.dump(result, open(out, "w"), indent=2)
r = result
print(f"\nresults: {out}\n")
print(f"| {count} rank-8 adapters ({int(one)} B each), budget {fits}, Zipf s={zipf} | measured |")
print("|---|---|")
print(f"| throughput, all resident | {r['throughput_resident_rps']:.1f} req/s |")
print(f"| throughput, budget | {r['throughput_budget_rps']:.1f} req/s ({r['throughput_ratio']:.3f} x) |")
print(f"| p50 / p99, all resident | {r['p50_ms']['resident']:.1f} / {r['p99_ms']['resident']:.1f} ms |")
print(f"| p50 / p99, budget | {r['p50_ms']['budget']:.1f} / {r['p99_ms']['budget']:.1f} ms |")
print(f"| hit rate | {r['hit_rate']:.3f} ({int(reloads)} reloads in {requests} requests, {int(evictions)} evictions) |")
print(f"| reload (cold load) p50 / p99, server | {r['reload_ms_p50']:.2f} / {r['reload_ms_p99']:.2f} ms |")
print(f"| one client, every request cold: p50 / p99 | {r['cold_request_ms']['p50']:.1f} / {r['cold_request_ms']['p99']:.1f} ms (hit rate {r['cold_phase_hit_rate']:.3f}) |")
print(f"| one client, warm (a0): p50 / p99 | {r['warm_request_ms']['p50']:.1f} / {r['warm_request_ms']['p99']:.1f} ms |")
print(f"| errors | resident {r['errors']['resident'] or 'none'}, budget {r['errors']['budget'] or 'none'}, cold {r['errors']['cold'] or 'none'} |")
print(f"| start to SERVING | resident {start['resident']:.1f} s, budget {start['budget']:.1f} s |")
PY
