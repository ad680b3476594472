#!/usr/bin/env bash
# Soak: saturation load for DURATION_S on one loracle-server, with everything else a production
# replica does at the same time, and the signs of a slow leak or decay:
#   tests/bench/soak.sh [DURATION_S=600] [BUILD_DIR=build]
# Load, all at once:
#   - 16 clients on 8 single adapters (a0..a7), labelling every prediction (Feedback);
#   - 4 clients on the 8-member ensemble ens8 with 2 test-time samples;
#   - fine-tune jobs one after another (200 SpamAssassin mails, 30 steps each);
#   - a hot swap every 3 s: a new version of a0 is published into the store and loaded.
# The load runs in 60 s segments (each its own `loracle bench`), so p99 is per minute.
# The server remembers every prediction for Feedback, up to --feedback_capacity; 1000 fills in the
# first minute, so growth after it is not that bounded store filling up.
# Pass: only RESOURCE_EXHAUSTED (load shedding, --max_queued_rows=256) among the errors; RSS
# growth from the end of the first minute (warm-up) to the end <= 5%; no FD growth; the last
# minute's p99 within 1.5x of the first's (each client). Writes
# tests/bench/results/soak-<date>.json and prints a Markdown table; exits 1 when a check fails.
set -euo pipefail
duration="${1:-600}"
build="${2:-build}"
root="$(cd "$(dirname "$0")/../.." && pwd)"
work="$(mktemp -d /tmp/loracle-soak-XXXXXX)"
port=50870
metrics_port=50871
server_pid=""
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  [[ -n "$server_pid" ]] && kill "$server_pid" 2>/dev/null
  rm -rf "$work"
}
trap cleanup EXIT
cli() { "$build/loracle" --server="127.0.0.1:$port" "$@"; }

"$build/loracle-bench-fixture" "$work/fixture" 4 512 8 >/dev/null
mkdir -p "$work/data"
head -n 200 "$root/tests/data/spam-assassin/train.jsonl" >"$work/data/train.jsonl"
store="$work/fixture/adapters"
"$build/loracle-server" --grpc_host=127.0.0.1 --grpc_port="$port" --http_port=-1 \
  --metrics_port="$metrics_port" --metrics_host=127.0.0.1 --model_dir="$work/fixture/model" \
  --adapters_dir="$store" --jobs_dir="$work/jobs" --data_dir="$work/data" --threads=2 \
  --max_queued_rows=256 --feedback_capacity=1000 --spam_demo=false >"$work/server.log" 2>&1 &
server_pid=$!
for _ in $(seq 1 300); do grep -q SERVING "$work/server.log" && break; sleep 0.1; done
grep -q SERVING "$work/server.log" || { cat "$work/server.log"; exit 1; }

end=$(( $(date +%s) + duration ))
segments=$(( duration / 60 ))

# Load: two clients, each a sequence of 60 s segments.
load() {  # NAME ARGS...
  local name="$1"; shift
  for s in $(seq 1 "$segments"); do
    cli bench "$@" --duration_s=60 --warmup_s=0 --json_out="$work/${name}_$s.json" >/dev/null
  done
}
load singles --adapters=a0,a1,a2,a3,a4,a5,a6,a7 --concurrency=16 --input_tokens=64 --feedback &
pids+=($!)
load ensemble --adapters=ens8 --concurrency=4 --input_tokens=64 --mc_samples=2 &
pids+=($!)

# Fine-tune jobs, one after another.
(
  n=0
  while (( $(date +%s) < end - 30 )); do
    cli finetune --name=soaked --server_data=train.jsonl --epochs=1 --max_steps=30 \
      --max_length=64 --json >"$work/job_$n.json" 2>"$work/job_$n.err" || true
    n=$((n + 1))
  done
) &
pids+=($!)

# A hot swap every 3 s: publish a0's version 1 as the next version, load it, drop old copies.
(
  v=1
  while (( $(date +%s) < end - 5 )); do
    sleep 3
    v=$((v + 1))
    cp -r "$store/a0/1" "$store/.tmp-soak-$v" && mv "$store/.tmp-soak-$v" "$store/a0/$v"
    if cli adapters load a0 >/dev/null 2>>"$work/swap.err"; then echo ok >>"$work/swaps"; fi
    (( v > 3 )) && rm -rf "$store/a0/$((v - 2))"
  done
) &
pids+=($!)

# Samples every 5 s: seconds, RSS (KiB), open FDs, threads.
t0=$(date +%s)
while (( $(date +%s) < end )) && kill -0 "$server_pid" 2>/dev/null; do
  echo "$(( $(date +%s) - t0 )) $(awk '/^VmRSS/ {print $2}' /proc/$server_pid/status)" \
    "$(ls /proc/$server_pid/fd | wc -l) $(awk '/^Threads/ {print $2}' /proc/$server_pid/status)" \
    >>"$work/samples"
  sleep 5
done
wait "${pids[0]}" "${pids[1]}" || true
kill -0 "$server_pid" 2>/dev/null || { echo "soak: the server died"; tail "$work/server.log"; exit 1; }
echo "$(( $(date +%s) - t0 )) $(awk '/^VmRSS/ {print $2}' /proc/$server_pid/status)" \
  "$(ls /proc/$server_pid/fd | wc -l) $(awk '/^Threads/ {print $2}' /proc/$server_pid/status)" \
  >>"$work/samples"
for p in "${pids[@]:2}"; do wait "$p" 2>/dev/null || true; done
pids=()
kill -TERM "$server_pid"; wait "$server_pid" || true; server_pid=""

mkdir -p "$root/tests/bench/results"
out="$root/tests/bench/results/soak-$(date -u +%Y%m%dT%H%M%SZ).json"
python3 - "$work" "$segments" "$out" <<'PY'
import glob, json, sys
work, segments, out = sys.argv[1], int(sys.argv[2]), sys.argv[3]
samples = [list(map(int, l.split())) for l in open(f"{work}/samples") if len(l.split()) == 4]
warm = next(s for s in samples if s[0] >= 60)
last = samples[-1]
rss_growth = last[1] / warm[1] - 1
fd_growth = last[2] - warm[2]
clients, errors, checks = {}, {}, []
for name in ("singles", "ensemble"):
    segs = [json.load(open(f"{work}/{name}_{s}.json")) for s in range(1, segments + 1)]
    clients[name] = [{"minute": i + 1, "ok": s["ok"], "errors": s["errors"],
                      "inputs_per_s": s["inputs_per_s"], "p50_ms": s["latency_ms"]["p50"],
                      "p99_ms": s["latency_ms"]["p99"],
                      "feedback_ok": s.get("feedback_ok", 0),
                      "feedback_errors": s.get("feedback_errors", {})} for i, s in enumerate(segs)]
    for s in segs:
        for code, n in list(s["errors"].items()) + list(s.get("feedback_errors", {}).items()):
            errors[code] = errors.get(code, 0) + n
    p99_ratio = segs[-1]["latency_ms"]["p99"] / segs[0]["latency_ms"]["p99"]
    clients[name + "_p99_last_over_first"] = p99_ratio
    checks.append((f"{name}: p99 last/first minute {p99_ratio:.2f} <= 1.5", p99_ratio <= 1.5))
jobs = []
for f in glob.glob(f"{work}/job_*.json"):
    text = open(f).read()
    if "{" in text:
        jobs.append(json.loads(text[text.index("{"):]))
def state(j):
    return j.get("state") or j.get("job", {}).get("state", "?")
job_states = {}
for j in jobs:
    job_states[state(j)] = job_states.get(state(j), 0) + 1
swaps = sum(1 for _ in open(f"{work}/swaps")) if glob.glob(f"{work}/swaps") else 0
bad = {c: n for c, n in errors.items() if c != "RESOURCE_EXHAUSTED"}
checks += [(f"errors other than RESOURCE_EXHAUSTED: {bad or 'none'}", not bad),
           (f"RSS growth after warm-up {100 * rss_growth:.1f}% <= 5%", rss_growth <= 0.05),
           (f"FD growth after warm-up {fd_growth} <= 0", fd_growth <= 0)]
result = {"segments": segments, "samples": samples, "clients": clients, "errors": errors,
          "jobs": job_states, "swaps": swaps, "rss_warm_kb": warm[1], "rss_end_kb": last[1],
          "fd_warm": warm[2], "fd_end": last[2], "rss_growth": rss_growth,
          "checks": [{"check": c, "ok": ok} for c, ok in checks]}
json.dump(result, open(out, "w"), indent=2)
print(f"{segments} minutes; {swaps} hot swaps; fine-tune jobs {job_states}; errors {errors}\n")
print("| minute | singles inputs/s | singles p99 ms | ensemble inputs/s | ensemble p99 ms | RSS MiB | FDs |")
print("|---|---|---|---|---|---|---|")
for i in range(segments):
    s, e = clients["singles"][i], clients["ensemble"][i]
    at = [x for x in samples if x[0] <= 60 * (i + 1)][-1]
    print(f"| {i + 1} | {s['inputs_per_s']:.1f} | {s['p99_ms']:.0f} | {e['inputs_per_s']:.1f} | "
          f"{e['p99_ms']:.0f} | {at[1] / 1024:.0f} | {at[2]} |")
print()
for c, ok in checks:
    print(f"- {'PASS' if ok else 'FAIL'}: {c}")
print(f"\nresults: {out}", file=sys.stderr)
sys.exit(0 if all(ok for _, ok in checks) else 1)
PY
