#!/usr/bin/env python3
"""Reference fixtures from Hugging Face's own code, for tests/unit/hf_reference_test.cc.

    python3 tests/gpu/make_hf_reference.py OUT_DIR      (OUT_DIR: tests/data/hf_reference)

Needs torch, transformers, peft and safetensors (the GPU machine has them; nothing is downloaded:
the tokenizers are the project's own fixtures in tests/data/tokenizers). Writes, per architecture:

  OUT_DIR/<arch>/model/              random tiny *ForSequenceClassification, save_pretrained
                                     (safetensors; roberta's sharded), AutoTokenizer.save_pretrained
  OUT_DIR/<arch>/adapters/<variant>/ PEFT LoRA adapters from get_peft_model(...).save_pretrained:
                                     plain (query/value), rslora (every linear, use_rslora),
                                     rank_pattern (per-module ranks and alphas); all with random B
                                     (init_lora_weights=False) and the head in modules_to_save,
                                     perturbed so that it differs from the base's
  OUT_DIR/reference.json             texts (and pairs for BERT), the token ids of each, and the
                                     float32 logits of the base head and of each adapter

Deterministic given --seed. Small: a few hundred kB in all.
"""
import argparse
import json
import os
import shutil
import sys

import peft
import torch
import transformers
from peft import LoraConfig, get_peft_model
from transformers import AutoTokenizer

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

ARCHS = {
    # name: (config class, model class, tokenizer fixture, linears, head modules)
    "bert": (transformers.BertConfig, transformers.BertForSequenceClassification, "bert-uncased",
             ["query", "key", "value", "dense"], ["classifier"]),
    # Not "dense" for RoBERTa: it would also match the head's classifier.dense.
    "roberta": (transformers.RobertaConfig, transformers.RobertaForSequenceClassification,
                "roberta", ["query", "key", "value", "intermediate.dense", "output.dense"],
                ["classifier"]),
    "distilbert": (transformers.DistilBertConfig,
                   transformers.DistilBertForSequenceClassification, "bert-uncased",
                   ["q_lin", "k_lin", "v_lin", "out_lin", "lin1", "lin2"],
                   ["pre_classifier", "classifier"]),
}


def texts():
    out = []
    with open(os.path.join(ROOT, "tests/data/spam-assassin/test.jsonl")) as f:
        for line in f:
            out.append(json.loads(line)["text"][:300])
            if len(out) == 6:
                break
    out += ["Hello, World!", "Café naïve résumé Über ÉCOLE", "I ❤️ 🍕 and 😀!",
            "Wow!!! (test) [x] {y} — “quoted” ... ¿qué?"]
    return out


def config_for(arch, tok, labels):
    cls = ARCHS[arch][0]
    id2label = {i: l for i, l in enumerate(labels)}
    label2id = {l: i for i, l in id2label.items()}
    common = dict(vocab_size=len(tok), id2label=id2label, label2id=label2id,
                  pad_token_id=tok.pad_token_id)
    if arch == "distilbert":
        return cls(dim=32, n_layers=2, n_heads=2, hidden_dim=64, max_position_embeddings=72,
                   **common)
    extra = dict(bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id,
                 type_vocab_size=1, max_position_embeddings=72) if arch == "roberta" else dict(
                     max_position_embeddings=72)
    return cls(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
               **extra, **common)


@torch.no_grad()
def logits_of(model, tok, batch_texts, pairs):
    model.eval()
    out = []
    for i, t in enumerate(batch_texts):
        enc = tok(t, pairs[i] if pairs else None, truncation=True, max_length=64,
                  return_tensors="pt")
        out.append(model(**enc).logits[0].float().tolist())
    return out


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("out")
    ap.add_argument("--seed", type=int, default=1)
    args = ap.parse_args()
    shutil.rmtree(args.out, ignore_errors=True)
    os.makedirs(args.out)
    torch.use_deterministic_algorithms(True)
    sample = texts()
    pairs = [sample[(i + 1) % len(sample)][:80] for i in range(len(sample))]
    labels = ["ham", "spam", "other"]
    reference = {"transformers": transformers.__version__, "peft": peft.__version__,
                 "torch": torch.__version__, "max_length": 64, "models": []}
    for arch, (_, model_cls, tok_name, linears, heads) in ARCHS.items():
        torch.manual_seed(args.seed)
        tok = AutoTokenizer.from_pretrained(os.path.join(ROOT, "tests/data/tokenizers", tok_name))
        model = model_cls(config_for(arch, tok, labels)).eval()
        model_dir = os.path.join(args.out, arch, "model")
        model.save_pretrained(model_dir, safe_serialization=True,
                              **({"max_shard_size": "100KB"} if arch == "roberta" else {}))
        tok.save_pretrained(model_dir)
        use_pairs = arch == "bert"
        entry = {"name": arch, "model": f"{arch}/model", "labels": labels, "texts": sample,
                 "pairs": pairs if use_pairs else None, "input_ids": [], "token_type_ids": [],
                 "logits": logits_of(model, tok, sample, pairs if use_pairs else None),
                 "adapters": []}
        for i, t in enumerate(sample):
            enc = tok(t, pairs[i] if use_pairs else None, truncation=True, max_length=64)
            entry["input_ids"].append(enc["input_ids"])
            entry["token_type_ids"].append(enc.get("token_type_ids", [0] * len(enc["input_ids"])))
        variants = {
            "plain": LoraConfig(r=4, lora_alpha=8, target_modules=linears[:3:2]),
            "rslora": LoraConfig(r=4, lora_alpha=8, target_modules=linears, use_rslora=True),
            "rank_pattern": LoraConfig(r=4, lora_alpha=8, target_modules=linears,
                                       rank_pattern={linears[0]: 2, linears[-1]: 8},
                                       alpha_pattern={linears[1]: 4}),
        }
        for name, cfg in variants.items():
            cfg.task_type = "SEQ_CLS"
            cfg.modules_to_save = heads
            cfg.init_lora_weights = False  # random B: a visible delta
            torch.manual_seed(args.seed + len(entry["adapters"]) + 1)
            base = model_cls.from_pretrained(model_dir).eval()
            peft_model = get_peft_model(base, cfg)
            with torch.no_grad():
                for pname, p in peft_model.named_parameters():
                    if "modules_to_save" in pname:
                        p.add_(torch.randn_like(p) * 0.5)
            adapter_dir = os.path.join(args.out, arch, "adapters", name)
            peft_model.save_pretrained(adapter_dir)
            entry["adapters"].append({
                "name": name, "dir": f"{arch}/adapters/{name}",
                "logits": logits_of(peft_model, tok, sample, pairs if use_pairs else None)})
        reference["models"].append(entry)
    with open(os.path.join(args.out, "reference.json"), "w") as f:
        json.dump(reference, f, indent=1, ensure_ascii=False)
    print(f"wrote {args.out} (transformers {transformers.__version__}, peft {peft.__version__})")


if __name__ == "__main__":
    sys.exit(main())
