#!/usr/bin/env bash
# Run HERE (Debian 12, apt works) before tests/gpu/run_part_b.sh: downloads the Debian packages
# the loracle build needs beside LibTorch into .gpu-debs/ (git-ignored), for the GPU machine,
# which has CUDA PyTorch, CMake and a compiler but no registry. Carry .gpu-debs to it.
set -euo pipefail
cd "$(dirname "$0")/../.."
pkgs=(
  libabsl-dev libabsl20220623 nlohmann-json3-dev libutf8proc-dev libutf8proc2
  libprotobuf-dev libprotobuf32 libprotoc32 protobuf-compiler libgrpc++-dev libgrpc++1.51
  libgrpc-dev libgrpc29 protobuf-compiler-grpc libgrpc++1.51 libupb0 libre2-9 libre2-dev
  libc-ares2 libc-ares-dev libssl-dev zlib1g-dev prometheus-cpp-dev
  libprometheus-cpp-core1.0 libprometheus-cpp-pull1.0 libprometheus-cpp-push1.0 libcurl4
  libgtest-dev libgmock-dev libsystemd0
)
mkdir -p .gpu-debs
exclude="$(git rev-parse --git-path info/exclude)"
mkdir -p "$(dirname "$exclude")"
grep -qx "/.gpu-debs/" "$exclude" 2>/dev/null || echo "/.gpu-debs/" >> "$exclude"
(cd .gpu-debs && apt-get download "${pkgs[@]}" 2>&1 | grep -v '^Get:' || true)
du -sh .gpu-debs
