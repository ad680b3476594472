#!/usr/bin/env bash
# The built-in model's pretraining recipe, all four stages, in one command (issue 15; the stages
# are described in tools/pretrain/README.md). Usage, after making the corpora as that
# README says:
#   tools/pretrain/recipe.sh BUILD_DIR OUT_DIR [CORPUS=/tmp/corpus.jsonl]
#       [CORPUS2=/tmp/corpus2.jsonl]
# OUT_DIR/stage4 is the model (what server/model/builtin holds); OUT_DIR/stage{1,2,3} are the
# stages before it, OUT_DIR/*.log their per-50-step logs, OUT_DIR/recipe.json the wall time.
# Deterministic given the seeds below and --threads=2 on the same CPU (bf16 products included).
set -euo pipefail
build="$1"
out="$2"
corpus="${3:-/tmp/corpus.jsonl}"
corpus2="${4:-/tmp/corpus2.jsonl}"
here="$(cd "$(dirname "$0")" && pwd)"
pretrain="$build/loracle-pretrain"
for f in "$corpus" "$corpus2" "$pretrain"; do
  [[ -e "$f" ]] || { echo "missing $f (see tools/pretrain/README.md)" >&2; exit 2; }
done
mkdir -p "$out"
start=$(date -u +%s)
common=(--batch_size=64 --threads=2 --log_every=50 --bf16)
# Stage 1: MLM from random weights, on a WordPiece vocabulary made from the corpus.
"$here/make_vocab.py" "$corpus" >"$out/vocab.txt"
"$pretrain" --corpus="$corpus" --vocab="$out/vocab.txt" --out="$out/stage1" --steps=5800 --lr=7e-4 \
  --seed=1 --eval_every=725 "${common[@]}" --log="$out/stage1.log"
# Stage 2: MLM plus the pooled [CLS] output's bag-of-words prediction.
"$pretrain" --init="$out/stage1" --corpus="$corpus" --out="$out/stage2" --steps=2400 --lr=3e-4 \
  --warmup_fraction=0.05 --cls_bow_weight=1 --seed=2 --eval_every=800 "${common[@]}" \
  --log="$out/stage2.log"
# Stage 3: the same objective on the corpus with the dictionary.
"$pretrain" --init="$out/stage2" --corpus="$corpus2" --out="$out/stage3" --steps=1300 --lr=3e-4 \
  --warmup_fraction=0.05 --cls_bow_weight=1 --seed=3 --eval_every=650 "${common[@]}" \
  --log="$out/stage3.log"
# Stage 4: the vocabulary grown to 20,000 entries by corpus2's most frequent words it lacks.
"$here/make_vocab.py" "$corpus2" --base="$out/stage3/vocab.txt" --size=20000 >"$out/vocab2.txt"
"$pretrain" --init="$out/stage3" --extend_vocab="$out/vocab2.txt" --corpus="$corpus2" \
  --out="$out/stage4" --steps=1600 --lr=3e-4 --warmup_fraction=0.05 --cls_bow_weight=1 --seed=5 \
  --eval_every=800 "${common[@]}" --log="$out/stage4.log"
end=$(date -u +%s)
printf '{"start": %d, "end": %d, "seconds": %d, "cpus": %d}\n' "$start" "$end" $((end - start)) \
  "$(nproc)" >"$out/recipe.json"
echo "recipe: $((end - start)) s; model in $out/stage4"
