#!/usr/bin/env python3
"""Builds tests/data/wordnet-supersenses/{train,validation,test}.jsonl: a text classification task
that is not part of the built-in model's pretraining corpus. Each example is the gloss (definition
and usage examples) of a WordNet 3.0 noun synset; the label is the synset's supersense (its
lexicographer file), one of six: animal, artifact, food, location, person, plant. The words of the
synset itself are not in the text, so the task is to recognise what kind of thing a definition
describes (supersense classification; Ciaramita & Johnson, 2003).

    apt-get install wordnet-base
    python3 tests/data/wordnet-supersenses/make_splits.py /usr/share/wordnet/data.noun \\
        tests/data/wordnet-supersenses

Deterministic: per class, the synsets with the smallest SHA-1 of their offset, 250 train /
50 validation / 200 test. WordNet 3.0 license (LICENSE, from Debian's wordnet-base copyright).
One JSON object a line: {"text": ..., "label": ..., "source": "wordnet-3.0/noun/<offset>"}.
"""
import hashlib, json, os, sys

CLASSES = {"05": "animal", "06": "artifact", "13": "food", "15": "location", "18": "person",
           "20": "plant"}
SPLITS = (("train", 250), ("validation", 50), ("test", 200))


def main():
    data, out = sys.argv[1], sys.argv[2]
    by_class = {name: [] for name in CLASSES.values()}
    with open(data, encoding="utf-8") as f:
        for line in f:
            if line.startswith("  "):  # the license header
                continue
            fields, _, gloss = line.partition(" | ")
            offset, lex = fields.split()[:2]
            if lex not in CLASSES or not gloss.strip():
                continue
            text = gloss.strip().replace('"', "").replace("; ", "; ").strip()
            by_class[CLASSES[lex]].append((hashlib.sha1(offset.encode()).hexdigest(), offset, text))
    files = {split: open(os.path.join(out, f"{split}.jsonl"), "w", encoding="utf-8")
             for split, _ in SPLITS}
    for label in sorted(by_class):
        items = sorted(by_class[label])
        start = 0
        for split, n in SPLITS:
            for _, offset, text in items[start:start + n]:
                files[split].write(json.dumps({"text": text, "label": label,
                                               "source": f"wordnet-3.0/noun/{offset}"}) + "\n")
            start += n
    for f in files.values():
        f.close()


if __name__ == "__main__":
    main()
