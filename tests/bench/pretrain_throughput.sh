#!/usr/bin/env bash
# Pretraining throughput (issue 15): tokens/s of loracle-pretrain in the shape of each stage of
# the built-in model's recipe (tools/pretrain/README.md), in float32 and with --bf16
# (bfloat16 matrix products under CPU autocast), back to back in one run, and the recipe's time
# estimated from them. Usage, after building loracle-pretrain and making the
# corpora as that README says:
#   tests/bench/pretrain_throughput.sh [BUILD_DIR=build] [CORPUS=/tmp/corpus.jsonl]
#       [CORPUS2=/tmp/corpus2.jsonl] [STEPS=30]
# Each configuration starts from random weights (a step's cost does not depend on the weights):
#   stage1  corpus,  12,206-word vocabulary (the built-in vocab.txt's first entries), MLM only
#   stage2  corpus,  12,206 words, MLM + the pooled [CLS] bag-of-words term
#   stage3  corpus2, 12,206 words, the same
#   stage4  corpus2, 20,000 words (the built-in vocabulary), the same
# tokens/s is over all STEPS steps (the first is slower), before the final held-out evaluation.
# Writes tests/bench/results/pretrain-throughput-<date>.json and prints a Markdown table.
set -euo pipefail
build="${1:-build}"
corpus="${2:-/tmp/corpus.jsonl}"
corpus2="${3:-/tmp/corpus2.jsonl}"
steps="${4:-30}"
root="$(cd "$(dirname "$0")/../.." && pwd)"
work="$(mktemp -d /tmp/loracle-pretrain-tp-XXXXXX)"
trap 'rm -rf "$work"' EXIT
for f in "$corpus" "$corpus2" "$build/loracle-pretrain"; do
  [[ -e "$f" ]] || { echo "missing $f (see tools/pretrain/README.md)" >&2; exit 2; }
done
head -n 12206 "$root/server/model/builtin/vocab.txt" >"$work/vocab12k.txt"

declare -A config=(
  [stage1]="--corpus=$corpus --vocab=$work/vocab12k.txt --lr=7e-4"
  [stage2]="--corpus=$corpus --vocab=$work/vocab12k.txt --lr=3e-4 --cls_bow_weight=1"
  [stage3]="--corpus=$corpus2 --vocab=$work/vocab12k.txt --lr=3e-4 --cls_bow_weight=1"
  [stage4]="--corpus=$corpus2 --vocab=$root/server/model/builtin/vocab.txt --lr=3e-4 --cls_bow_weight=1"
)
# The committed model's steps per stage (its pretrain_report*.json).
declare -A recipe_steps=([stage1]=3600 [stage2]=1500 [stage3]=800 [stage4]=1000)

results="$work/results.jsonl"
for stage in stage1 stage2 stage3 stage4; do
  for bf16 in false true; do
    # shellcheck disable=SC2086
    "$build/loracle-pretrain" ${config[$stage]} --out="$work/out" --steps="$steps" \
      --batch_size=64 --threads=2 --seed=9 --eval_every=0 --log_every="$steps" --eval_rows=32 \
      --bf16="$bf16" --log="$work/$stage-$bf16.jsonl" >"$work/$stage-$bf16.out" 2>&1 ||
      { cat "$work/$stage-$bf16.out"; exit 1; }
    python3 - "$work/$stage-$bf16.jsonl" "$stage" "$bf16" "${recipe_steps[$stage]}" >>"$results" <<'EOF'
import json, sys
path, stage, bf16, recipe_steps = sys.argv[1:]
last = [json.loads(l) for l in open(path)][-1]
print(json.dumps({"stage": stage, "bf16": bf16 == "true", "steps": last["step"],
                  "tokens_per_s": last["tokens_per_s"], "loss": last["loss"],
                  "recipe_steps": int(recipe_steps)}))
EOF
    tail -n 1 "$results"
  done
done

mkdir -p "$root/tests/bench/results"
out="$root/tests/bench/results/pretrain-throughput-$(date -u +%Y%m%dT%H%M%SZ).json"
python3 - "$results" "$out" <<'EOF'
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1])]
tokens_per_step = 64 * 128
summary = {}
print("| stage | recipe steps | tokens/s, float32 | tokens/s, --bf16 | speed-up | loss after the steps, float32 / bf16 |")
print("|---|---|---|---|---|---|")
for stage in sorted({r["stage"] for r in rows}):
    off = next(r for r in rows if r["stage"] == stage and not r["bf16"])
    on = next(r for r in rows if r["stage"] == stage and r["bf16"])
    summary[stage] = {"float32_tokens_per_s": off["tokens_per_s"], "bf16_tokens_per_s": on["tokens_per_s"],
                      "recipe_steps": on["recipe_steps"], "float32_loss": off["loss"], "bf16_loss": on["loss"]}
    print(f"| {stage} | {on['recipe_steps']:,} | {off['tokens_per_s']:,.0f} | {on['tokens_per_s']:,.0f} | "
          f"{on['tokens_per_s'] / off['tokens_per_s']:.2f}x | {off['loss']:.4f} / {on['loss']:.4f} |")
est = {k: sum(s["recipe_steps"] * tokens_per_step / s[k] for s in summary.values())
       for k in ("float32_tokens_per_s", "bf16_tokens_per_s")}
print(f"\nrecipe at these rates: {est['float32_tokens_per_s']:,.0f} s ({est['float32_tokens_per_s'] / 3600:.2f} h) "
      f"in float32, {est['bf16_tokens_per_s']:,.0f} s ({est['bf16_tokens_per_s'] / 3600:.2f} h) with --bf16")
json.dump({"runs": rows, "stages": summary, "recipe_estimate_s": est, "tokens_per_step": tokens_per_step},
          open(sys.argv[2], "w"), indent=2)
print(f"wrote {sys.argv[2]}")
EOF
