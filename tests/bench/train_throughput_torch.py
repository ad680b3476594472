#!/usr/bin/python3
"""The reference for loracle-train-throughput: the same training step in plain PyTorch (Debian's
python3-torch), on a BERT of the same shape with LoRA on query and value, base frozen, AdamW over
the LoRA factors and the classifier, the same batch and token count. Prints examples/s.

    /usr/bin/python3 tests/bench/train_throughput_torch.py [LAYERS=4] [HIDDEN=512] [STEPS=12]
                                                           [BATCH=16] [TOKENS=128] [THREADS=2]
                                                           [RANK=8] [DEVICE=cpu]
                                                           [DTYPE=float32]

DEVICE and DTYPE as loracle-train-throughput's: the base's weights in DTYPE, the LoRA factors and
the classifier in float32 (cast to DTYPE in the forward), as loracle trains.

(/usr/bin/python3: Debian's, where python3-torch installs; deploy/install-deps.sh does not
install it, since only this benchmark needs it.)

Dropout is off on both sides (loracle-train-throughput ... none), so the two loops do the same
arithmetic: forward, cross-entropy, backward through the frozen base to the LoRA factors, step.
"""
import math, sys, time

import torch
from torch import nn


class LoraLinear(nn.Module):
    def __init__(self, base: nn.Linear, rank: int, alpha: float):
        super().__init__()
        self.base = base
        self.a = nn.Parameter(torch.empty(rank, base.in_features).uniform_(
            -1 / math.sqrt(base.in_features), 1 / math.sqrt(base.in_features)))
        self.b = nn.Parameter(torch.zeros(base.out_features, rank))
        self.scaling = alpha / rank

    def forward(self, x):
        return self.base(x) + (x @ self.a.t().to(x.dtype) @ self.b.t().to(x.dtype)) * self.scaling


class Layer(nn.Module):
    def __init__(self, h, heads, rank):
        super().__init__()
        self.heads = heads
        self.q = LoraLinear(nn.Linear(h, h), rank, 2 * rank)
        self.k = nn.Linear(h, h)
        self.v = LoraLinear(nn.Linear(h, h), rank, 2 * rank)
        self.o = nn.Linear(h, h)
        self.ln1 = nn.LayerNorm(h, eps=1e-12)
        self.inter = nn.Linear(h, 4 * h)
        self.out = nn.Linear(4 * h, h)
        self.ln2 = nn.LayerNorm(h, eps=1e-12)

    def forward(self, x):
        n, s, h = x.shape
        d = h // self.heads
        split = lambda t: t.view(n, s, self.heads, d).transpose(1, 2)
        q, k, v = split(self.q(x)), split(self.k(x)), split(self.v(x))
        att = torch.softmax(q @ k.transpose(-1, -2) / math.sqrt(d), -1)
        ctx = (att @ v).transpose(1, 2).reshape(n, s, h)
        a = self.ln1(x + self.o(ctx))
        return self.ln2(a + self.out(torch.nn.functional.gelu(self.inter(a))))


class Model(nn.Module):
    def __init__(self, layers, h, vocab, rank):
        super().__init__()
        self.word = nn.Embedding(vocab, h)
        self.pos = nn.Embedding(512, h)
        self.token_type = nn.Embedding(2, h)
        self.ln = nn.LayerNorm(h, eps=1e-12)
        self.layers = nn.ModuleList(Layer(h, h // 64, rank) for _ in range(layers))
        self.pooler = nn.Linear(h, h)
        self.classifier = nn.Linear(h, 2)

    def forward(self, ids):
        pos = torch.arange(ids.shape[1], device=ids.device).unsqueeze(0)
        x = self.ln(self.word(ids) + self.pos(pos) + self.token_type.weight[0])
        for layer in self.layers:
            x = layer(x)
        return self.classifier(torch.tanh(self.pooler(x[:, 0])).float())


def main():
    args = [int(a) for a in sys.argv[1:8]] + [None] * 7
    layers, hidden, steps, batch, tokens, threads, rank = (
        a or d for a, d in zip(args[:7], (4, 512, 12, 16, 128, 2, 8)))
    device = torch.device(sys.argv[8] if len(sys.argv) > 8 else "cpu")
    dtype = getattr(torch, sys.argv[9] if len(sys.argv) > 9 else "float32")
    torch.manual_seed(1)
    torch.set_num_threads(threads)
    model = Model(layers, hidden, 12192, rank)
    for name, p in model.named_parameters():
        p.requires_grad = name.endswith(".a") or name.endswith(".b") or name.startswith("classifier")
        if not p.requires_grad:
            p.data = p.data.to(dtype)
    model.to(device)
    trainable = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(trainable, lr=5e-4, weight_decay=0.01)
    ids = torch.randint(5, 12192, (steps * batch, tokens)).to(device)
    labels = (torch.arange(steps * batch) % 2).to(device)
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)

    def epoch():
        for s in range(steps):
            x, y = ids[s * batch:(s + 1) * batch], labels[s * batch:(s + 1) * batch]
            loss = nn.functional.cross_entropy(model(x), y)
            opt.zero_grad()
            loss.backward()
            torch.nn.utils.clip_grad_norm_(trainable, 1.0)
            opt.step()

    epoch()  # warm-up
    sync()
    start = time.time()
    epoch()
    sync()
    seconds = time.time() - start
    print(f"PyTorch {torch.__version__}: {steps * batch / seconds:.2f} examples/s "
          f"({seconds:.2f} s for {steps} steps of {batch} x {tokens} tokens, {threads} threads, "
          f"{device}, {dtype})")


if __name__ == "__main__":
    main()
