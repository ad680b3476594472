#!/usr/bin/env python3
"""Builds the WordPiece vocabulary of loracle's built-in pretrained model from its corpus
(make_corpus.py), the way server/model/make_default_vocab.py builds the random model's:

    tools/pretrain/make_vocab.py /tmp/corpus.jsonl > /tmp/vocab.txt

Words are split like BERT's basic tokenizer (lower-case, punctuation as its own token). Entries:
the special tokens, every printable ASCII character, `##` continuations of every letter and digit
and of common English suffixes, then the most frequent words (2-16 letters, seen in at least 3
documents so that one long mail cannot fill the list) until NUM_WORDS; any ASCII word therefore
tokenises without [UNK]. Deterministic (ties broken alphabetically).

    tools/pretrain/make_vocab.py /tmp/corpus2.jsonl --base=OLD/vocab.txt --size=N

extends an existing vocabulary instead: OLD's entries unchanged and in order (so its token ids
keep their meaning), then the corpus's most frequent words it lacks, until N entries in all; for
`loracle-pretrain --extend_vocab`.
"""
import collections, json, os, re, sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "server", "model"))
from make_default_vocab import assemble  # noqa: E402  (the shared assembly)

SUFFIXES = ["s", "es", "ed", "ing", "er", "ers", "est", "ly", "ion", "ions", "tion", "tions",
            "ment", "ments", "ness", "able", "ible", "al", "ful", "less", "ity", "ive", "ize",
            "ized", "izing", "ise", "ised", "ous", "ship", "ist", "ists", "ism", "y", "ies", "ied",
            "en", "ish", "ic", "ical", "ally", "ance", "ence", "ant", "ent", "age", "ure", "ary"]
NUM_WORDS = 12000
MIN_DOCUMENTS = 3


def main():
    args = [a for a in sys.argv[1:] if not a.startswith("--")]
    opts = dict(a[2:].split("=", 1) for a in sys.argv[1:] if a.startswith("--"))
    if len(args) != 1 or set(opts) - {"base", "size"} or ("base" in opts) != ("size" in opts):
        sys.exit("usage: make_vocab.py CORPUS.jsonl [--base=VOCAB --size=N]")
    counts, documents = collections.Counter(), collections.Counter()
    with open(args[0], encoding="utf-8") as f:
        for line in f:
            words = re.findall(r"[a-z]+", json.loads(line)["text"].lower())
            counts.update(words)
            documents.update(set(words))
    words = sorted((w for w in counts if 2 <= len(w) <= 16 and documents[w] >= MIN_DOCUMENTS),
                   key=lambda w: (-counts[w], w))
    if "base" in opts:
        with open(opts["base"], encoding="utf-8") as f:
            vocab = f.read().splitlines()
        have = set(vocab)
        vocab += [w for w in words if w not in have][:max(0, int(opts["size"]) - len(vocab))]
    else:
        vocab = assemble(words, SUFFIXES, NUM_WORDS)
    sys.stdout.write("".join(v + "\n" for v in vocab))

if __name__ == "__main__":
    main()
