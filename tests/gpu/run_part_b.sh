#!/usr/bin/env bash
# Issue 12 part B, on the GPU machine (CUDA PyTorch, transformers, peft, CMake, nvcc; no registry).
# Prepare here first:  tests/gpu/fetch_debs.sh   (Debian packages the build needs beside torch)
# Then, through the device tool, carrying .gpu-debs:
#   bash tests/gpu/run_part_b.sh "$OUT"
# It builds loracle's model library, tests and bench tools against the machine's own CUDA
# LibTorch (the C++ headers and libraries inside the torch Python package), then
#   1. writes tests/data/hf_reference with transformers and peft (make_hf_reference.py) and
#      packs it as OUT/hf_reference.tar.gz, to commit;
#   2. runs the device-generic tests on CUDA (DeviceTest: cuda float32/bfloat16/float16), the HF
#      parity tests, and PEFT loading a loracle-trained adapter (check_peft_loads_loracle.py);
#   3. measures: loracle-device-bench in float32 and bfloat16 (GEMM rate, forward at batch
#      1..256, K=8 vs K=1, 64 adapters vs one) and training examples/s against the same loop in
#      Python PyTorch (tests/bench/train_throughput_torch.py), all into OUT.
set -euo pipefail
OUT="${1:?usage: run_part_b.sh OUT_DIR}"
mkdir -p "$OUT"
cd "$(dirname "$0")/../.."
exec > >(tee "$OUT/part_b.log") 2>&1

P="$PWD/.gpu-prefix"
rm -rf "$P" && mkdir -p "$P"
for f in .gpu-debs/*.deb; do dpkg -x "$f" "$P"; done
TORCH_PREFIX=$(python3 -c 'import torch; print(torch.utils.cmake_prefix_path)')
TORCH_LIB=$(python3 -c 'import os, torch; print(os.path.join(os.path.dirname(torch.__file__), "lib"))')
if [[ $(python3 -c 'import torch; print(int(torch._C._GLIBCXX_USE_CXX11_ABI))') != 1 ]]; then
  echo "this torch uses the pre-C++11 ABI; Debian's abseil and gRPC cannot link with it" >&2
  exit 1
fi
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv
python3 -c 'import torch, transformers, peft; print("torch", torch.__version__, "transformers", transformers.__version__, "peft", peft.__version__)'
export PATH="$P/usr/bin:$PATH"
export LD_LIBRARY_PATH="$P/usr/lib/x86_64-linux-gnu:$TORCH_LIB:${LD_LIBRARY_PATH:-}"
export PKG_CONFIG_SYSROOT_DIR="$P"
export PKG_CONFIG_PATH="$P/usr/lib/x86_64-linux-gnu/pkgconfig:$P/usr/share/pkgconfig"
cmake -S . -B build-gpu -G Ninja -DCMAKE_BUILD_TYPE=Release \
  -DCMAKE_PREFIX_PATH="$TORCH_PREFIX;$P/usr;$P/usr/lib/x86_64-linux-gnu/cmake" \
  -DCMAKE_CUDA_ARCHITECTURES=90 -DProtobuf_PROTOC_EXECUTABLE="$P/usr/bin/protoc"
# The must: the model library, its tests and the bench tools; the server if it builds too.
ninja -C build-gpu model_tests loracle-bench-fixture loracle-device-bench loracle-train-throughput
ninja -C build-gpu loracle-server || echo "loracle-server did not build here (optional)"

# 1. Reference fixtures from transformers and peft.
python3 tests/gpu/make_hf_reference.py tests/data/hf_reference
tar -czf "$OUT/hf_reference.tar.gz" tests/data/hf_reference

# 2. Tests on CUDA, HF parity both ways.
mkdir -p "$OUT/export"
LORACLE_HF_EXPORT_DIR="$OUT/export" build-gpu/tests/model_tests \
  --gtest_filter='Placement*:*DeviceTest*:HfReference*:Encoder*:EnsembleRunner*:Trainer*' \
  | tee "$OUT/tests.log" | grep -E '^\[ *(OK|FAILED|SKIPPED|PASSED) '
python3 tests/gpu/check_peft_loads_loracle.py "$OUT/export"
tar -czf "$OUT/export.tar.gz" -C "$OUT" export && rm -rf "$OUT/export"

# 3. Numbers, one run each on this machine.
build-gpu/loracle-bench-fixture /tmp/loracle-bench >/dev/null
for dtype in float32 bfloat16; do
  build-gpu/loracle-device-bench /tmp/loracle-bench cuda "$dtype" 256 "$OUT/device-$dtype.json"
done
for dtype in float32 bfloat16; do
  build-gpu/loracle-train-throughput /tmp/loracle-bench/model 4 24 16 128 1 none cuda "$dtype"
  python3 tests/bench/train_throughput_torch.py 4 512 24 16 128 1 8 cuda "$dtype"
done
echo "part B done: $OUT"
