#!/usr/bin/env bash
# Hot swaps and churn under load (issue 14). Usage, after building:
#   tests/bench/swap_under_load.sh [BUILD_DIR=build] [DURATION_S=60] [CYCLES=1000]
# One server process, phases back to back:
#   steady  16 clients Predict adapter "swap" continuously for DURATION_S       -> p99 baseline
#   swap    the same load while a new version of "swap" is published into the store and loaded
#           once a second (version v is a copy of fixture adapter a((v-1) mod 8): eight distinct
#           weight sets)                                                        -> p99, failures
# Both phases run `loracle bench --check_versions`: every response names its version, and all
# responses naming one version give one input the same probabilities. Afterwards this script
# checks across versions: versions copied from the same fixture adapter answer identically,
# versions from different ones differ; a response computed with another version's weights than
# the one it names would break one or the other.
# Then, on a fresh server with no load: CYCLES load/unload cycles of a rank-8 adapter, RSS
# (VmRSS) read before the first and every CYCLES/10 cycles.
# Writes tests/bench/results/swap-under-load-<date>.json and prints a Markdown table.
set -euo pipefail
build="${1:-build}"
duration="${2:-60}"
cycles="${3:-1000}"
root="$(cd "$(dirname "$0")/../.." && pwd)"
work="$(mktemp -d /tmp/loracle-swap-XXXXXX)"
port=50950
server_pid="" swapper_pid=""
cleanup() {
  [[ -n "$swapper_pid" ]] && kill "$swapper_pid" 2>/dev/null
  [[ -n "$server_pid" ]] && kill "$server_pid" 2>/dev/null
  rm -rf "$work"
}
trap cleanup EXIT
cli() { "$build/loracle" --server="127.0.0.1:$port" "$@"; }

"$build/loracle-bench-fixture" "$work/fixture" 4 512 8 >/dev/null
store="$work/fixture/adapters"
publish() {  # NAME VERSION SOURCE_ADAPTER: what Store::Publish does, from a shell
  mkdir -p "$store/$1"
  cp -r "$store/$3/1" "$store/.tmp-$1-$2" && mv -T "$store/.tmp-$1-$2" "$store/$1/$2"
}
publish swap 1 a0
publish churn 1 a1

start_server() {  # NAME
  [[ -n "$server_pid" ]] && { kill -TERM "$server_pid"; wait "$server_pid" || true; }
  port=$((port + 1))
  # No watcher: this script loads each version itself, once a second.
  "$build/loracle-server" --grpc_host=127.0.0.1 --grpc_port="$port" --http_port=-1 --metrics_port=-1 \
    --model_dir="$work/fixture/model" --adapters_dir="$store" --threads=2 \
    --training_workers=0 --store_poll_s=0 --store_inotify=false >"$work/$1.log" 2>&1 &
  server_pid=$!
  for _ in $(seq 1 600); do grep -q SERVING "$work/$1.log" && return 0; sleep 0.1; done
  cat "$work/$1.log"; exit 1
}
bench() {  # NAME WARMUP_S DURATION_S
  cli bench --adapters=swap --concurrency=16 --input_tokens=64 --warmup_s="$2" \
    --duration_s="$3" --check_versions --json_out="$work/$1.json" | sed "s/^/[$1] /"
}

start_server load
bench warmup 0 5 >/dev/null
bench steady 1 "$duration"

# One swap a second, on the clock, while the bench runs.
(
  t0=$(date +%s.%N)
  for i in $(seq 1 "$duration"); do
    sleep "$(awk -v t0="$t0" -v i="$i" -v now="$(date +%s.%N)" 'BEGIN { d = t0 + i - now; print (d > 0 ? d : 0) }')"
    v=$((i + 1))
    publish swap "$v" "a$(( (v - 1) % 8 ))"
    if cli adapters load swap --version="$v" >/dev/null 2>>"$work/swap.err"; then
      echo "$v" >>"$work/swapped"
    else
      echo "$v" >>"$work/swap_failed"
    fi
  done
) &
swapper_pid=$!
bench swap 1 "$duration"
wait "$swapper_pid"; swapper_pid=""

# Churn on a fresh server: RSS across load/unload cycles of "churn" (rank 8, 4 layers).
start_server churn
rss() { awk '/^VmRSS/ { print $2 }' "/proc/$server_pid/status"; }
: >"$work/rss"
echo "0 $(rss)" >>"$work/rss"
for c in $(seq 1 "$cycles"); do
  cli adapters load churn >/dev/null
  cli adapters unload churn >/dev/null
  if (( c % (cycles / 10) == 0 )); then echo "$c $(rss)" >>"$work/rss"; fi
done
kill -TERM "$server_pid"; wait "$server_pid" || true; server_pid=""

mkdir -p "$root/tests/bench/results"
out="$root/tests/bench/results/swap-under-load-$(date -u +%Y%m%dT%H%M%SZ).json"
touch "$work/swapped" "$work/swap_failed"
swapped=$(wc -l <"$work/swapped")
swap_failed=$(wc -l <"$work/swap_failed")
python3 - "$work" "$out" "$swapped" "$swap_failed" "$cycles" <<'PY'
import json, sys
work, out, swapped, swap_failed, cycles = sys.argv[1:]
runs = {n: json.load(open(f"{work}/{n}.json")) for n in ["steady", "swap"]}
probs = runs["swap"]["version_probs"]["swap"]
# Across versions: same source (v - 1 mod 8) -> same answers; different sources -> different.
same_bad = diff_bad = compared = 0
versions = sorted(probs, key=int)
for i, v in enumerate(versions):
    for w in versions[i + 1:]:
        common = set(probs[v]) & set(probs[w])
        if not common:
            continue
        compared += 1
        gap = max(abs(a - b) for k in common for a, b in zip(probs[v][k], probs[w][k]))
        if (int(v) - 1) % 8 == (int(w) - 1) % 8:
            same_bad += gap > 1e-5
        else:
            diff_bad += gap <= 1e-5
rss = [tuple(map(int, l.split())) for l in open(f"{work}/rss")]
result = {
    "duration_s": runs["steady"]["options"]["duration_s"], "clients": 16,
    "swaps_loaded": int(swapped), "swaps_failed": int(swap_failed),
    "versions_answered": len(runs["swap"]["versions"]),
    "errors": {"steady": runs["steady"]["errors"], "swap": runs["swap"]["errors"]},
    "inconsistent": {"steady": runs["steady"]["inconsistent"], "swap": runs["swap"]["inconsistent"]},
    "version_pairs_compared": compared, "same_source_pairs_differing": same_bad,
    "different_source_pairs_equal": diff_bad,
    "p99_ms": {"steady": runs["steady"]["latency_ms"]["p99"], "swap": runs["swap"]["latency_ms"]["p99"]},
    "p50_ms": {"steady": runs["steady"]["latency_ms"]["p50"], "swap": runs["swap"]["latency_ms"]["p50"]},
    "rps": {"steady": runs["steady"]["requests_per_s"], "swap": runs["swap"]["requests_per_s"]},
    "p99_ratio": runs["swap"]["latency_ms"]["p99"] / runs["steady"]["latency_ms"]["p99"],
    "rss_kib": rss, "cycles": int(cycles),
    "rss_ratio": rss[-1][1] / rss[0][1],
}
for r in runs.values():
    r.pop("version_probs", None)
result["runs"] = runs
json.dump(result, open(out, "w"), indent=2)
r = result
print(f"\nresults: {out}\n")
print(f"| {r['clients']} clients, {r['duration_s']:.0f} s a phase | steady | 1 swap/s |")
print("|---|---|---|")
print(f"| requests ok | {runs['steady']['ok']} | {runs['swap']['ok']} |")
print(f"| failed requests | {sum(runs['steady']['errors'].values())} | {sum(runs['swap']['errors'].values())} |")
print(f"| throughput | {r['rps']['steady']:.1f} req/s | {r['rps']['swap']:.1f} req/s |")
print(f"| p50 / p99 | {r['p50_ms']['steady']:.1f} / {r['p99_ms']['steady']:.1f} ms | {r['p50_ms']['swap']:.1f} / {r['p99_ms']['swap']:.1f} ms |")
print(f"| p99 swap / steady | | {r['p99_ratio']:.3f} |")
print(f"| versions answered | {len(runs['steady']['versions'])} | {r['versions_answered']} ({r['swaps_loaded']} swaps loaded, {r['swaps_failed']} failed) |")
print(f"| responses inconsistent with their version | {r['inconsistent']['steady']} | {r['inconsistent']['swap']} |")
print(f"| version pairs compared: same source differing / different sources equal | | {compared}: {same_bad} / {diff_bad} |")
print(f"\n| load/unload cycles | RSS KiB |\n|---|---|")
for c, k in rss:
    print(f"| {c} | {k:,} |")
print(f"\nRSS after {cycles} cycles / before: {r['rss_ratio']:.4f}")
PY
