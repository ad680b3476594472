#!/usr/bin/env python3
"""Issue 41's trust outputs on real data, through the real server and CLI. Per dataset, two jobs
in one run: the default job (the server's defaults, or the flags after --) and the simplest thing a
user could do instead (one plain LoRA adapter, no dropout, 6 epochs; LORACLE_TRUST_BASELINE
overrides its flags). Each is scored on the held-out test split: accuracy, NLL, ECE; AURC ranked
by 1 - confidence and by the adapter's error_score; the conformal sets' coverage and mean size at
coverage 0.8 / 0.9 / 0.95; abstain_risk=0.1's answered share and error rate among answered texts;
and, against near-OOD and far-OOD texts, the AUROC of ood_score and of 1 - confidence.

    tests/bench/make_trust_sets.py NPM_NODE_MODULES /tmp/trust
    tests/bench/trust_eval.py BUILD_DIR /tmp/trust/spam /tmp/trust/wordnet /tmp/trust/sotu \
        [-- finetune flags]

Each DATASET_DIR holds train.jsonl, validation.jsonl and test.jsonl ({"text", "label"} lines), and
optionally near_ood.jsonl and far_ood.jsonl. Prints two Markdown tables (the jobs; the
acceptance ratios of issue 41) and writes tests/bench/results/trust-<date>.json.
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


def auroc(pos, neg):
    """P(score of a positive > score of a negative), ties counted half."""
    allv = sorted([(v, 1) for v in pos] + [(v, 0) for v in neg])
    rank_sum, i = 0.0, 0
    while i < len(allv):
        j = i
        while j < len(allv) and allv[j][0] == allv[i][0]:
            j += 1
        avg = (i + j + 1) / 2  # 1-based mean rank of the tie block
        rank_sum += avg * sum(1 for k in range(i, j) if allv[k][1])
        i = j
    n1, n0 = len(pos), len(neg)
    return (rank_sum - n1 * (n1 + 1) / 2) / (n1 * n0) if n1 and n0 else float("nan")


def ood_stats(test_rows, ood_rows):
    out = {}
    for name, key in (("ood_score", lambda r: r["uncertainty"].get("ood_score", 0.0)),
                      ("one_minus_confidence", lambda r: 1 - max(r["probs"]))):
        out[name] = auroc([key(r) for r in ood_rows], [key(r) for r in test_rows])
    out["share_ood_score_above_1"] = sum(
        r["uncertainty"].get("ood_score", 0.0) > 1 for r in ood_rows) / max(len(ood_rows), 1)
    return out


def read(path):
    return [json.loads(l) for l in open(path, encoding="utf-8")] if os.path.exists(path) else []


def run_config(cli, addr, d, name, flags):
    start = time.time()
    out = subprocess.run([cli, addr, "--timeout_ms=7200000", "finetune", f"--name={name}",
                          f"--data={os.path.join(d, 'train.jsonl')}",
                          f"--validation={os.path.join(d, 'validation.jsonl')}", "--json"]
                         + flags, capture_output=True, text=True)
    if out.returncode != 0:
        raise SystemExit(f"{name}: finetune failed: {out.stderr}{out.stdout}")
    job = json.loads(out.stdout)
    train_s = time.time() - start
    test = read(os.path.join(d, "test.jsonl"))
    texts, labels = [t["text"] for t in test], [t["label"] for t in test]
    rows = {c: predict(cli, addr, name, texts,
                       [f"--coverage={c}", f"--abstain_risk={RISK}"]) for c in COVERAGES}
    r = evaluate(rows, labels)
    for kind in ("near_ood", "far_ood"):
        ood = read(os.path.join(d, f"{kind}.jsonl"))
        if ood:
            ood_rows = predict(cli, addr, name, [t["text"] for t in ood], [])
            r[kind] = ood_stats(rows[COVERAGES[0]], ood_rows)
            r[kind]["texts"] = len(ood)
    report = job.get("report", {})
    r.update(flags=flags, train_seconds=round(train_s, 1), error_score=report.get("error_score"),
             candidates=report.get("error_score_candidates"), ood_report=report.get("ood"),
             validation_conformal=report.get("conformal"), steps=job.get("step"),
             validation_examples=job.get("validation_examples"))
    return r


# The simplest thing a user could do instead: one plain LoRA adapter, no dropout, 6 epochs (with
# the server's temperature fit, as every job has, and its default targets: every linear layer
# since issue 41; add --targets=query,value for the original baseline).
BASELINE = ["--members=1", "--dropout=none", "--epochs=6"]


def main():
    args = sys.argv[1:]
    flags = args[args.index("--") + 1:] if "--" in args else []
    args = args[:args.index("--")] if "--" in args else args
    baseline = os.environ.get("LORACLE_TRUST_BASELINE")
    baseline = baseline.split() if baseline is not None else BASELINE
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
            base = os.path.basename(os.path.normpath(d)).replace("_", "-")[:50]
            pair = {}
            for config, f in (("default", flags), ("baseline", baseline)):
                r = run_config(cli, addr, d, f"{base}-{config}", f)
                r.update(dataset=base, config=config)
                pair[config] = r
                results.append(r)
                print(json.dumps(r), file=sys.stderr)
    finally:
        server.terminate()
        server.wait()
    print("| dataset | job | test acc | NLL | ECE | AURC (score) | risk 0.1: answered, error | "
          "cov / size @0.8 | @0.9 | @0.95 | near-OOD AUROC: ood_score, 1-conf | "
          "far-OOD AUROC: ood_score, 1-conf | train s |")
    print("|---" * 13 + "|")
    for r in results:
        aurc_col = (f"{r['aurc_error_score']:.4f} ({r['error_score']})" if r["config"] == "default"
                    else f"{r['aurc_one_minus_confidence']:.4f} (1-conf)")
        ood = lambda k: (f"{r[k]['ood_score']:.3f}, {r[k]['one_minus_confidence']:.3f}"
                         if k in r else "-")
        print(f"| {r['dataset']} | {r['config']} | {r['accuracy']:.4f} | {r['nll']:.4f} | "
              f"{r['ece']:.4f} | {aurc_col} | {r['risk_answered']:.3f}, {r['risk_error_rate']:.3f} | "
              + " | ".join(f"{r[f'coverage_{c}']:.3f} / {r[f'set_size_{c}']:.2f}" for c in COVERAGES)
              + f" | {ood('near_ood')} | {ood('far_ood')} | {r['train_seconds']:.0f} |")
    print()
    print("| dataset | NLL ratio (<= 0.95) | ECE diff (<= +0.005) | acc diff (>= -0.01) | "
          "time ratio (<= 6) | AURC ratio (<= 0.92) | far ood_score (>= 0.90) | "
          "near ood_score - baseline 1-conf (>= 0.02) |")
    print("|---" * 8 + "|")
    for i in range(0, len(results), 2):
        a, b = results[i], results[i + 1]
        near = (a["near_ood"]["ood_score"] - b["near_ood"]["one_minus_confidence"]
                if "near_ood" in a else float("nan"))
        far = a["far_ood"]["ood_score"] if "far_ood" in a else float("nan")
        print(f"| {a['dataset']} | {a['nll'] / b['nll']:.3f} | {a['ece'] - b['ece']:+.4f} | "
              f"{a['accuracy'] - b['accuracy']:+.4f} | {a['train_seconds'] / b['train_seconds']:.2f} | "
              f"{a['aurc_error_score'] / b['aurc_one_minus_confidence']:.3f} | {far:.3f} | "
              f"{near:+.3f} |")
    os.makedirs(os.path.join(ROOT, "tests", "bench", "results"), exist_ok=True)
    path = os.path.join(ROOT, "tests", "bench", "results",
                        time.strftime("trust-%Y%m%dT%H%M%SZ.json", time.gmtime()))
    with open(path, "w") as f:
        json.dump(results, f, indent=2)
    print(f"results: {path}", file=sys.stderr)


if __name__ == "__main__":
    main()
