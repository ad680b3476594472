#!/usr/bin/env bash
# The sanitizer builds (.ci/run runs both):
#   tests/sanitizers.sh asan [BUILD_DIR=build-asan]   the whole suite (every ctest test) built
#       with gcc -fsanitize=address,undefined (LeakSanitizer on); any report fails its test.
#   tests/sanitizers.sh tsan [BUILD_DIR=build-tsan]   the torch-free unit tests (batcher,
#       registry, store, job queue, feedback store, metrics, ...) built with clang
#       -fsanitize=thread, in a tree without torch. torch and OpenBLAS are not instrumented,
#       so TSan would be noise around them; Debian's libabsl_synchronization is not either, so
#       this build compiles against tests/tsan/, a header-only absl::Mutex on std::mutex that
#       TSan can see (see tests/tsan/absl/synchronization/mutex.h).
set -euo pipefail
cd "$(dirname "$0")/.."
mode="${1:?usage: tests/sanitizers.sh asan|tsan [BUILD_DIR]}"
start=$(date +%s)
case "$mode" in
  tsan)
    dir="${2:-build-tsan}"
    CXX=clang++ cmake -S . -B "$dir" -G Ninja -DLORACLE_TORCH_FREE_ONLY=ON \
      -DCMAKE_BUILD_TYPE=RelWithDebInfo \
      -DCMAKE_CXX_FLAGS="-I$PWD/tests/tsan -fvisibility-inlines-hidden -fsanitize=thread -O1 -g" \
      -DCMAKE_CXX_FLAGS_RELWITHDEBINFO="-DNDEBUG" \
      -DCMAKE_EXE_LINKER_FLAGS="-fsanitize=thread" >/dev/null
    if ! cmake --build "$dir" -j"$(nproc)" --target unit_tests >"$dir/build.log" 2>&1; then
      grep -E "error|FAILED" -A5 "$dir/build.log" | head -40
      echo "tsan: the build failed (log: $dir/build.log)"
      exit 1
    fi
    echo "tsan: built in $(( $(date +%s) - start )) s"
    export TSAN_OPTIONS="halt_on_error=1 second_deadlock_stack=1 history_size=4 suppressions=$PWD/tests/tsan.supp"
    if ! "$dir/tests/unit_tests" --gtest_brief=1 >"$dir/tsan.log" 2>&1; then
      grep -E "WARNING: ThreadSanitizer|SUMMARY|FAILED" -A12 "$dir/tsan.log" | head -80
      echo "tsan: FAILED (log: $dir/tsan.log)"
      exit 1
    fi
    echo "tsan: $(grep -Eo '[0-9]+ tests from [0-9]+ test suites ran' "$dir/tsan.log"), no reports;" \
      "$(( $(date +%s) - start )) s in all"
    ;;
  asan)
    dir="${2:-build-asan}"
    flags="-fsanitize=address,undefined -fno-sanitize-recover=undefined -fno-omit-frame-pointer"
    # -O1 only: the build type's own -O3 would come after it and win, and GCC compiles
    # instrumented code ~2.5x slower at -O3 (rest_test.cc: 149 s vs 61 s here). The tests' time
    # is spent in libtorch, which is not rebuilt, so -O1 costs them little.
    cmake -S . -B "$dir" -G Ninja -DCMAKE_BUILD_TYPE=Release \
      -DCMAKE_CXX_FLAGS="$flags -O1 -g0" -DCMAKE_CXX_FLAGS_RELEASE="-DNDEBUG" \
      -DCMAKE_EXE_LINKER_FLAGS="-fsanitize=address,undefined" \
      -DCMAKE_SHARED_LINKER_FLAGS="-fsanitize=address,undefined" >/dev/null
    # What ctest runs (the test binaries, the server, the CLI and the fixture maker the scripted
    # tests spawn), not the bench tools.
    if ! cmake --build "$dir" -j"$(nproc)" --target unit_tests model_tests integration_tests \
        loracle-server loracle loracle-bench-fixture >"$dir/build.log" 2>&1; then
      grep -E "error|FAILED" -A5 "$dir/build.log" | head -40
      echo "asan: the build failed (log: $dir/build.log)"
      exit 1
    fi
    echo "asan: built in $(( $(date +%s) - start )) s"
    export ASAN_OPTIONS="detect_leaks=1:abort_on_error=1:detect_odr_violation=0:strict_string_checks=1"
    export LSAN_OPTIONS="suppressions=$PWD/tests/lsan.supp:print_suppressions=0"
    export UBSAN_OPTIONS="print_stacktrace=1:halt_on_error=1"
    # Each SIGKILL round of BinaryTest.SigkillDuringPublish... is a server start and a fine-tune:
    # 4 here (the plain build runs 20), to keep CI within its time.
    export LORACLE_SIGKILL_ROUNDS=4
    # Label "demo" (ReadmeSpamExample: the first-start training job, minutes under ASan) is left
    # out for time; the server paths it takes are in the integration tests.
    if ! ctest --test-dir "$dir" -j"$(nproc)" -LE demo --output-on-failure >"$dir/ctest.log" 2>&1; then
      grep -E "tests passed|Failed|\*\*\*|ERROR: AddressSanitizer|runtime error|SUMMARY" \
        "$dir/ctest.log" | head -60
      echo "asan: FAILED (log: $dir/ctest.log)"
      exit 1
    fi
    echo "asan: $(grep -E 'tests passed' "$dir/ctest.log"); $(( $(date +%s) - start )) s in all"
    ;;
  *)
    echo "usage: tests/sanitizers.sh asan|tsan [BUILD_DIR]" >&2
    exit 2
    ;;
esac
