#!/usr/bin/env python3
"""Issue 41's trust outputs on real data, through the real server and CLI: fine-tunes one adapter
per dataset (the server's defaults unless flags are given), then scores the held-out test split:
accuracy, NLL, ECE; AURC ranked by 1 - confidence and by the adapter's error_score; the conformal
sets' coverage and mean size at coverage 0.8 / 0.9 / 0.95; and abstain_risk=0.1's answered share
and error rate among answered texts.

    tests/bench/trust_eval.py BUILD_DIR DATASET_DIR [DATASET_DIR ...] [-- finetune flags]

Each DATASET_DIR holds train.jsonl, validation.jsonl and test.jsonl ({"text", "label"} lines).
Prints a Markdown table and writes tests/bench/results/trust-<date>.json.
"""
import json, math, os, subprocess, sys, tempfile, time

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
COVERAGES = [0.8, 0.9, 0.95]
RISK = 0.1


def aurc(scores, wrong):
    """Mean selective risk over coverages k/n, lowest scores answered first (ties in expectation)."""
    order = sorted(range(len(scores)), key=lambda i: scores[i])
    area, before, i = 0.0, 0.0, 0
    while i < len(order):
        j = i
        while j < len(order) and scores[order[j]] == scores[order[i]]:
            j += 1
        block = sum(wrong[order[k]] for k in range(i, j))
        for k in range(i, j):
            area += (before + block * (k - i + 1) / (j - i)) / (k + 1)
        before += block
        i = j
    return area / len(order)


def predict(cli, addr, adapter, texts, extra):
    rows = []
    for i in range(0, len(texts), 50):
        p = subprocess.run([cli, addr, "--timeout_ms=600000", "predict", f"--adapter={adapter}",
                            "--json"] + extra + ["-"],
                           input="\n".join(t.replace("\n", " ") for t in texts[i:i + 50]) + "\n",
                           capture_output=True, text=True)
        if p.returncode != 0:
            raise SystemExit(f"{adapter}: predict failed: {p.stderr}")
        resp = json.loads(p.stdout)
        for pred in resp["predictions"]:
            pred["label_names"] = resp["labels"]
            rows.append(pred)
    return rows


def evaluate(rows_by_coverage, labels):
    rows = rows_by_coverage[COVERAGES[0]]
    n, bins = len(rows), 15
    acc = nll = 0.0
    count, correct, conf_sum = [0] * bins, [0] * bins, [0.0] * bins
    wrong, unconf, err_score = [], [], []
    answered = answered_wrong = 0
    for row, y in zip(rows, labels):
        probs = row["probs"]
        k = row["label_names"].index(y)
        pred = max(range(len(probs)), key=lambda c: probs[c])
        ok = pred == k
        acc += ok
        nll -= math.log(max(probs[k], 1e-12))
        b = min(max(math.ceil(probs[pred] * bins) - 1, 0), bins - 1)
        count[b] += 1
        correct[b] += ok
        conf_sum[b] += probs[pred]
        wrong.append(not ok)
        unconf.append(1 - probs[pred])
        err_score.append(row["uncertainty"]["error_score"])
        if not row["abstained"]:
            answered += 1
            answered_wrong += not ok
    out = {"test_examples": n, "accuracy": acc / n, "nll": nll / n,
           "ece": sum(count[b] / n * abs(correct[b] / count[b] - conf_sum[b] / count[b])
                      for b in range(bins) if count[b]),
           "aurc_one_minus_confidence": aurc(unconf, wrong), "aurc_error_score": aurc(err_score, wrong),
           "risk": RISK, "risk_answered": answered / n,
           "risk_error_rate": answered_wrong / answered if answered else float("nan")}
    for c in COVERAGES:
        rs = rows_by_coverage[c]
        out[f"coverage_{c}"] = sum(y in r["prediction_set"] for r, y in zip(rs, labels)) / n
        out[f"set_size_{c}"] = sum(len(r["prediction_set"]) for r in rs) / n
    return out


def main():
    args = sys.argv[1:]
    flags = args[args.index("--") + 1:] if "--" in args else []
    args = args[:args.index("--")] if "--" in args else args
    build, datasets = args[0], args[1:]
    cli = os.path.join(build, "loracle")
    work = tempfile.mkdtemp(prefix="loracle-trust-")
    port = int(os.environ.get("LORACLE_TRUST_PORT", "50941"))
    server = subprocess.Popen(
        [os.path.join(build, "loracle-server"), f"--cache_dir={work}", f"--grpc_port={port}",
         "--grpc_host=127.0.0.1", "--metrics_port=-1", "--http_port=-1", "--threads=2",
         "--training_threads=2", "--training_priority=normal", "--spam_demo=false"],
        stderr=open(os.path.join(work, "server.log"), "w"))
    addr = f"--server=127.0.0.1:{port}"
    results = []
    try:
        for _ in range(300):
            if "SERVING" in open(os.path.join(work, "server.log")).read():
                break
            time.sleep(0.1)
        for d in datasets:
            name = os.path.basename(os.path.normpath(d)).replace("_", "-")[:60]
            start = time.time()
            out = subprocess.run([cli, addr, "--timeout_ms=7200000", "finetune", f"--name={name}",
                                  f"--data={os.path.join(d, 'train.jsonl')}",
                                  f"--validation={os.path.join(d, 'validation.jsonl')}", "--json"]
                                 + flags, capture_output=True, text=True)
            if out.returncode != 0:
                raise SystemExit(f"{name}: finetune failed: {out.stderr}{out.stdout}")
            job = json.loads(out.stdout)
            train_s = time.time() - start
            test = [json.loads(l) for l in open(os.path.join(d, "test.jsonl"), encoding="utf-8")]
            texts, labels = [t["text"] for t in test], [t["label"] for t in test]
            rows = {c: predict(cli, addr, name, texts,
                               [f"--coverage={c}", f"--abstain_risk={RISK}"]) for c in COVERAGES}
            r = evaluate(rows, labels)
            r.update(dataset=name, flags=flags, train_seconds=round(train_s, 1),
                     error_score=job["report"].get("error_score"),
                     candidates=job["report"].get("error_score_candidates"),
                     validation_examples=job.get("validation_examples"))
            results.append(r)
            print(json.dumps(r), file=sys.stderr)
    finally:
        server.terminate()
        server.wait()
    print("| dataset | test acc | NLL | ECE | AURC 1-conf | AURC error_score (chosen) | "
          + " | ".join(f"cov / size @{c}" for c in COVERAGES)
          + f" | risk {RISK}: answered, error | train s |")
    print("|---" * (7 + len(COVERAGES)) + "|")
    for r in results:
        print(f"| {r['dataset']} | {r['accuracy']:.4f} | {r['nll']:.4f} | {r['ece']:.4f} | "
              f"{r['aurc_one_minus_confidence']:.4f} | {r['aurc_error_score']:.4f} "
              f"({r['error_score']}) | "
              + " | ".join(f"{r[f'coverage_{c}']:.3f} / {r[f'set_size_{c}']:.2f}" for c in COVERAGES)
              + f" | {r['risk_answered']:.3f}, {r['risk_error_rate']:.3f} | {r['train_seconds']:.0f} |")
    os.makedirs(os.path.join(ROOT, "tests", "bench", "results"), exist_ok=True)
    path = os.path.join(ROOT, "tests", "bench", "results",
                        time.strftime("trust-%Y%m%dT%H%M%SZ.json", time.gmtime()))
    with open(path, "w") as f:
        json.dump(results, f, indent=2)
    print(f"results: {path}", file=sys.stderr)


if __name__ == "__main__":
    main()
