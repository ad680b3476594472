#!/usr/bin/env bash
# Builds the libFuzzer targets with clang, ASan and UBSan (a torch-free tree) and runs each for a
# fixed time from seeds made by make_seeds.py plus the corpus it grew before (kept in the build
# directory). A crash, leak or sanitizer report fails the run and leaves the input under
# BUILD_DIR/findings/; add it to tests/fuzz/regressions/<fuzzer>/ (replayed on every run) with a fix.
#   tests/fuzz/run.sh [SECONDS_PER_FUZZER=20] [BUILD_DIR=build-fuzz]
# CI runs 20 s each. The long run (tests/fuzz/README.md) stops each fuzzer after a number of
# executions instead: FUZZ_RUNS=10000000 tests/fuzz/run.sh 0. Environment:
#   FUZZ_RUNS     executions per fuzzer (libFuzzer -runs); SECONDS then only bounds the time if > 0
#   FUZZ_MAX_LEN  the largest input libFuzzer makes (default 16384)
#   FUZZERS       a space-separated subset of the fuzzers below
set -euo pipefail
cd "$(dirname "$0")/../.."
seconds="${1:-20}"
dir="${2:-build-fuzz}"
start=$(date +%s)
flags="-fsanitize=address,undefined,fuzzer-no-link -fno-sanitize-recover=undefined -g -O1"
CXX=clang++ cmake -S . -B "$dir" -G Ninja -DLORACLE_TORCH_FREE_ONLY=ON -DLORACLE_BUILD_TESTS=OFF \
  -DLORACLE_FUZZ=ON -DCMAKE_BUILD_TYPE=Debug -DCMAKE_CXX_FLAGS="$flags" \
  -DCMAKE_EXE_LINKER_FLAGS="-fsanitize=address,undefined" >/dev/null
fuzzers=(safetensors_fuzzer config_fuzzer tokenizer_files_fuzzer tokenizer_text_fuzzer
         training_data_fuzzer request_fuzzer auth_tokens_fuzzer)
if [[ -n "${FUZZERS:-}" ]]; then read -r -a fuzzers <<<"$FUZZERS"; fi
limits=(-max_len="${FUZZ_MAX_LEN:-16384}")
if [[ -n "${FUZZ_RUNS:-}" ]]; then limits+=(-runs="$FUZZ_RUNS"); fi
if (( seconds > 0 )); then limits+=(-max_total_time="$seconds"); fi
if ! cmake --build "$dir" -j"$(nproc)" --target "${fuzzers[@]}" >"$dir/build.log" 2>&1; then
  grep -E "error|FAILED" -A5 "$dir/build.log" | head -40
  echo "fuzz: the build failed (log: $dir/build.log)"
  exit 1
fi
echo "fuzz: built in $(( $(date +%s) - start )) s"
seeds="$dir/seeds-$$"
rm -rf "$seeds" && python3 tests/fuzz/make_seeds.py "$seeds"
mkdir -p "$dir/findings"
export TMPDIR="${TMPDIR:-/dev/shm}"
export UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1
status=0
for f in "${fuzzers[@]}"; do
  corpus="$dir/corpus/$f"
  mkdir -p "$corpus"
  regressions=()
  [[ -d "tests/fuzz/regressions/$f" ]] && regressions=("tests/fuzz/regressions/$f")
  log="$dir/$f.log"
  t0=$(date +%s)
  if "$dir/tests/fuzz/$f" "$corpus" "$seeds/$f" "${regressions[@]}" "${limits[@]}" \
      -timeout=10 -rss_limit_mb=2048 -print_final_stats=1 -artifact_prefix="$dir/findings/$f-" >"$log" 2>&1; then
    execs="$(awk '/stat::number_of_executed_units/ {print $NF}' "$log")"
    echo "fuzz: $f: $execs executions in $(( $(date +%s) - t0 )) s, no findings"
  else
    status=1
    echo "fuzz: $f FAILED; input and log:"
    ls "$dir/findings/" | grep "^$f-" || true
    grep -E "ERROR|runtime error|SUMMARY" "$log" | head -20
  fi
done
rm -rf "$seeds"
echo "fuzz: done in $(( $(date +%s) - start )) s"
exit $status
