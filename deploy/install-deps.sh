#!/usr/bin/env bash
# Installs every build, test and runtime dependency of loracle from Debian 12 packages.
# Idempotent and non-interactive; the README, .ci/run and the Dockerfile all call it.
#   deploy/install-deps.sh            build + test dependencies
#   deploy/install-deps.sh --runtime  only what the loracle-server binary needs at run time
#   ... --no-torch                    either set without Debian's LibTorch (the Dockerfile's CUDA
#                                     variant brings its own)
set -euo pipefail

runtime_pkgs=(
  libtorch1.13 libopenblas0-pthread libgrpc++1.51 libgrpc29 libprotobuf32
  libprometheus-cpp-core1.0 libutf8proc2 libabsl20220623 libssl3 ca-certificates
  libcpp-httplib0.11
)
build_pkgs=(
  build-essential g++ cmake ninja-build pkg-config git
  libtorch-dev libopenblas0-pthread libgrpc++-dev protobuf-compiler-grpc libprotobuf-dev
  protobuf-compiler prometheus-cpp-dev libabsl-dev libgtest-dev libgmock-dev
  nlohmann-json3-dev libutf8proc-dev libcpp-httplib-dev
  libssl-dev openssl  # role tokens: SHA-256 (libcrypto); tests: openssl makes TLS certificates
  prometheus curl  # tests: a real Prometheus server scrapes loracle; promtool checks the format
  clang  # CI: the -Wthread-safety build of the torch-free targets (tests/thread_safety_build.sh)
  libclang-rt-14-dev python3  # CI: libFuzzer + sanitizer runtimes, the fuzz seeds (tests/fuzz)
  python3-grpcio python3-protobuf python3-venv  # tests: the Python client (client/python)
)

pkgs=("${build_pkgs[@]}")
# tests/k8s: Node.js and npm validate the Kubernetes manifests (Debian's, unless some are there).
if [[ -d "$(dirname "$0")/../tests/k8s" ]] && ! command -v npm >/dev/null 2>&1; then
  pkgs+=(nodejs npm)
fi
runtime=0
no_torch=0
for arg in "$@"; do
  case "$arg" in
    --runtime) pkgs=("${runtime_pkgs[@]}"); runtime=1 ;;
    --no-torch) no_torch=1 ;;
    *) echo "install-deps: unknown argument $arg" >&2; exit 2 ;;
  esac
done
if ((no_torch)); then
  kept=()
  for p in "${pkgs[@]}"; do [[ "$p" == libtorch* ]] || kept+=("$p"); done
  pkgs=("${kept[@]}")
fi

SUDO=""
if [[ "$(id -u)" != "0" ]]; then SUDO="sudo"; fi

missing=()
for p in "${pkgs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
  echo "install-deps: installing ${missing[*]}"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}"
else
  echo "install-deps: all ${#pkgs[@]} packages already installed"
fi

# torch's matmul runs ~40x slower on the reference BLAS: make OpenBLAS the system BLAS.
blas=/usr/lib/x86_64-linux-gnu/openblas-pthread/libblas.so.3
if [[ -e "$blas" ]]; then
  $SUDO update-alternatives --set libblas.so.3-x86_64-linux-gnu "$blas" >/dev/null
  $SUDO update-alternatives --set liblapack.so.3-x86_64-linux-gnu \
    /usr/lib/x86_64-linux-gnu/openblas-pthread/liblapack.so.3 >/dev/null 2>&1 || true
fi

# The npm packages of the manifest checks (tests/k8s/package-lock.json), from the npm registry.
if ((!runtime)); then
  k8s_tests="$(cd "$(dirname "$0")/.." && pwd)/tests/k8s"
  stamp="$k8s_tests/node_modules/.installed-from-lock"
  if [[ -f "$k8s_tests/package-lock.json" ]] && ! cmp -s "$k8s_tests/package-lock.json" "$stamp"; then
    npm ci --prefix "$k8s_tests" --no-audit --no-fund --loglevel=error
    cp "$k8s_tests/package-lock.json" "$stamp"
  fi
fi
