#!/usr/bin/env bash
# Builds every torch-free target with clang and -Wthread-safety -Werror=thread-safety, in a tree
# configured without torch at all (LORACLE_TORCH_FREE_ONLY), so the ABSL_GUARDED_BY /
# ABSL_LOCKS_EXCLUDED annotations are checked by the compiler. Run by .ci/run after the tests.
#   tests/thread_safety_build.sh [BUILD_DIR]    (default: build-clang-tsa)
set -euo pipefail
cd "$(dirname "$0")/.."
dir="${1:-build-clang-tsa}"
start=$(date +%s)
CXX=clang++ cmake -S . -B "$dir" -G Ninja -DLORACLE_TORCH_FREE_ONLY=ON -DLORACLE_BUILD_TESTS=OFF \
  -DCMAKE_BUILD_TYPE=Debug >/dev/null
cmake --build "$dir" -j"$(nproc)"
echo "thread-safety: clang -Wthread-safety build of the torch-free targets passed in $(( $(date +%s) - start )) s"
