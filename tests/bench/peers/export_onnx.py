#!/usr/bin/python3
"""Exports the bench fixture's model with one adapter merged into it (W + scaling * B A, the
adapter's classifier as the head) to ONNX, for ONNX Runtime as a peer in compare_peers.sh.

    /usr/bin/python3 tests/bench/peers/export_onnx.py FIXTURE_DIR OUT.onnx [ADAPTER=a0] [TEXT]

Reads the Hugging Face BERT checkpoint (FIXTURE_DIR/model) and the PEFT adapter
(FIXTURE_DIR/adapters/ADAPTER/1) as loracle does, from their safetensors files, and builds the
same float32 forward in PyTorch (Debian's python3-torch): embeddings, post-LN layers with exact
GELU, the pooler's tanh, the classifier, softmax. Inputs input_ids and attention_mask, int64
[batch, seq]; output probabilities [batch, labels]. With TEXT (words of the model's vocab.txt,
one token each) it prints {"ids": [...], "probs": [...]} for that text, so the caller can check
the same numbers against loracle's Predict.
"""
import json
import math
import os
import struct
import sys

import torch
from torch import nn


def read_safetensors(path):
    with open(path, "rb") as f:
        n = struct.unpack("<Q", f.read(8))[0]
        header = json.loads(f.read(n))
        data = f.read()
    header.pop("__metadata__", None)
    out = {}
    for name, t in header.items():
        assert t["dtype"] == "F32", (name, t["dtype"])
        begin, end = t["data_offsets"]
        out[name] = torch.frombuffer(bytearray(data[begin:end]), dtype=torch.float32).reshape(t["shape"])
    return out


class Bert(nn.Module):
    def __init__(self, w, config, head_w, head_b):
        super().__init__()
        self.w = {k: nn.Parameter(v, requires_grad=False) for k, v in w.items()}
        for i, (k, v) in enumerate(self.w.items()):
            self.register_parameter("p%d" % i, v)
        self.layers = config["num_hidden_layers"]
        self.heads = config["num_attention_heads"]
        self.eps = config["layer_norm_eps"]
        self.hidden = config["hidden_size"]
        self.head_w = nn.Parameter(head_w, requires_grad=False)
        self.head_b = nn.Parameter(head_b, requires_grad=False)

    def ln(self, x, name):
        return nn.functional.layer_norm(x, (self.hidden,), self.w[name + ".weight"],
                                        self.w[name + ".bias"], self.eps)

    def lin(self, x, name):
        return nn.functional.linear(x, self.w[name + ".weight"], self.w[name + ".bias"])

    def forward(self, input_ids, attention_mask):
        b, s = input_ids.shape
        pos = torch.arange(s, device=input_ids.device).unsqueeze(0)
        h = (self.w["embeddings.word_embeddings.weight"][input_ids]
             + self.w["embeddings.position_embeddings.weight"][pos]
             + self.w["embeddings.token_type_embeddings.weight"][0])
        h = self.ln(h, "embeddings.LayerNorm")
        mask = (1.0 - attention_mask.to(h.dtype))[:, None, None, :] * torch.finfo(h.dtype).min
        hd = self.hidden // self.heads
        for i in range(self.layers):
            p = "encoder.layer.%d." % i
            def split(x):
                return x.view(b, s, self.heads, hd).transpose(1, 2)
            q = split(self.lin(h, p + "attention.self.query"))
            k = split(self.lin(h, p + "attention.self.key"))
            v = split(self.lin(h, p + "attention.self.value"))
            a = torch.softmax(q @ k.transpose(-1, -2) / math.sqrt(hd) + mask, -1) @ v
            a = a.transpose(1, 2).reshape(b, s, self.hidden)
            h = self.ln(self.lin(a, p + "attention.output.dense") + h, p + "attention.output.LayerNorm")
            f = nn.functional.gelu(self.lin(h, p + "intermediate.dense"))
            h = self.ln(self.lin(f, p + "output.dense") + h, p + "output.LayerNorm")
        pooled = torch.tanh(self.lin(h[:, 0], "pooler.dense"))
        return torch.softmax(nn.functional.linear(pooled, self.head_w, self.head_b), -1)


def main():
    fixture, out = sys.argv[1], sys.argv[2]
    adapter = sys.argv[3] if len(sys.argv) > 3 else "a0"
    text = sys.argv[4] if len(sys.argv) > 4 else ""
    config = json.load(open(os.path.join(fixture, "model", "config.json")))
    w = read_safetensors(os.path.join(fixture, "model", "model.safetensors"))
    adir = os.path.join(fixture, "adapters", adapter, "1")
    acfg = json.load(open(os.path.join(adir, "adapter_config.json")))
    aw = read_safetensors(os.path.join(adir, "adapter_model.safetensors"))
    scaling = acfg["lora_alpha"] / (math.sqrt(acfg["r"]) if acfg.get("use_rslora") else acfg["r"])
    prefix = "base_model.model.bert."
    for name in list(aw):
        if name.endswith("lora_A.weight"):
            module = name[len(prefix):-len(".lora_A.weight")]
            b = aw[name.replace("lora_A", "lora_B")]
            w[module + ".weight"] = w[module + ".weight"] + scaling * (b @ aw[name])
    model = Bert(w, config, aw["base_model.model.classifier.weight"], aw["base_model.model.classifier.bias"]).eval()
    ids = torch.randint(1000, config["vocab_size"], (2, 128))
    mask = torch.ones_like(ids)
    with torch.no_grad():
        torch.onnx.export(model, (ids, mask), out, input_names=["input_ids", "attention_mask"],
                          output_names=["probabilities"], opset_version=14,
                          dynamic_axes={"input_ids": {0: "batch", 1: "seq"},
                                        "attention_mask": {0: "batch", 1: "seq"},
                                        "probabilities": {0: "batch"}})
    if text:
        vocab = {t.rstrip("\n"): i for i, t in enumerate(open(os.path.join(fixture, "model", "vocab.txt")))}
        ids = [vocab["[CLS]"]] + [vocab[t] for t in text.split()] + [vocab["[SEP]"]]
        x = torch.tensor([ids])
        with torch.no_grad():
            probs = model(x, torch.ones_like(x))[0].tolist()
        print(json.dumps({"ids": ids, "probs": probs}))


if __name__ == "__main__":
    main()
