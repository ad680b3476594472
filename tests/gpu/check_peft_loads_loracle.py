#!/usr/bin/env python3
"""The other direction of tests/unit/hf_reference_test.cc: an adapter trained and written by
loracle (HfReferenceTest.TrainedAdapterExport with LORACLE_HF_EXPORT_DIR=DIR), loaded by PEFT onto
the transformers model it was trained on, must give loracle's logits within 1e-4.

    python3 tests/gpu/check_peft_loads_loracle.py DIR
"""
import json
import sys

import torch
from peft import PeftModel
from transformers import AutoModelForSequenceClassification, AutoTokenizer


def main():
    d = json.load(open(sys.argv[1] + "/loracle_logits.json"))
    tok = AutoTokenizer.from_pretrained(d["model"])
    model = AutoModelForSequenceClassification.from_pretrained(d["model"])
    model = PeftModel.from_pretrained(model, d["adapter"]).eval()
    worst = 0.0
    with torch.no_grad():
        for i, text in enumerate(d["texts"]):
            pair = d["pairs"][i] if d.get("pairs") else None
            enc = tok(text, pair, truncation=True, max_length=64, return_tensors="pt")
            got = model(**enc).logits[0].float()
            want = torch.tensor(d["logits"][i])
            worst = max(worst, (got - want).abs().max().item())
    ok = worst <= 1e-4
    print(f"PEFT on loracle's adapter: max |logit difference| {worst:.2e} over "
          f"{len(d['texts'])} texts: {'OK' if ok else 'FAIL'} (tolerance 1e-4)")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
