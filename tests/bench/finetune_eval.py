#!/usr/bin/env python3
"""Fine-tunes adapters on the bundled SpamAssassin data through the real server and CLI, then
scores each on the held-out test split: accuracy, NLL, ECE (15 bins), Brier, and the AUROC of
mutual information (and of 1 - confidence) at flagging the errors. Every configuration runs on the
same server, one after the other (tests/bench/README.md has the results and the command).

    tests/bench/finetune_eval.py BUILD_DIR [CONFIG ...]

CONFIG is NAME:flag,flag,... of `loracle finetune` flags, e.g.
    plain:--dropout=none   lora_dropout_m4:--members=4,--dropout=lora_dropout
Without CONFIGs, the four of the issue: plain LoRA, M=4 LoRA Dropout ensemble, HiddenKey, INPUT.
Prints a Markdown table and writes tests/bench/results/finetune-<date>.json.
"""
import json, math, os, subprocess, sys, tempfile, time

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
DATA = os.path.join(ROOT, "tests", "data", "spam-assassin")
DEFAULT_CONFIGS = [
    "plain:--dropout=none",
    "lora_dropout_m4:--members=4,--dropout=lora_dropout,--rate=0.1,--mc_samples=4",
    "hiddenkey:--dropout=hiddenkey,--dropkey_rate=0.1,--hiddencut_rate=0.1,--kl_weight=0.5,--mc_samples=4",
    "input:--dropout=input,--rate=0.1,--mc_samples=4",
]


def auroc(scores, positives):
    """P(score of a random positive > score of a random negative), ties counted half."""
    pos = [s for s, p in zip(scores, positives) if p]
    neg = [s for s, p in zip(scores, positives) if not p]
    if not pos or not neg:
        return float("nan")
    ranked = sorted((s, i) for i, s in enumerate(scores))
    ranks = [0.0] * len(scores)
    i = 0
    while i < len(ranked):
        j = i
        while j + 1 < len(ranked) and ranked[j + 1][0] == ranked[i][0]:
            j += 1
        for k in range(i, j + 1):
            ranks[ranked[k][1]] = (i + j) / 2 + 1
        i = j + 1
    rank_sum = sum(r for r, p in zip(ranks, positives) if p)
    return (rank_sum - len(pos) * (len(pos) + 1) / 2) / (len(pos) * len(neg))


def score(rows, labels):
    n, bins = len(rows), 15
    acc = nll = brier = 0.0
    count, correct, conf_sum = [0] * bins, [0] * bins, [0.0] * bins
    errors, mi, unconf = [], [], []
    for row, y in zip(rows, labels):
        probs = row["probs"]
        k = row["label_names"].index(y)
        pred = max(range(len(probs)), key=lambda c: probs[c])
        conf = probs[pred]
        ok = pred == k
        acc += ok
        nll -= math.log(max(probs[k], 1e-12))
        brier += sum((p - (1.0 if c == k else 0.0)) ** 2 for c, p in enumerate(probs))
        b = min(max(math.ceil(conf * bins) - 1, 0), bins - 1)
        count[b] += 1
        correct[b] += ok
        conf_sum[b] += conf
        errors.append(not ok)
        mi.append(row["uncertainty"]["mutual_information"])
        unconf.append(1 - conf)
    ece = sum(count[b] / n * abs(correct[b] / count[b] - conf_sum[b] / count[b])
              for b in range(bins) if count[b])
    return {"accuracy": acc / n, "nll": nll / n, "ece": ece, "brier": brier / n,
            "mi_auroc": auroc(mi, errors), "conf_auroc": auroc(unconf, errors), "errors": sum(errors)}


def main():
    build = sys.argv[1]
    configs = sys.argv[2:] or DEFAULT_CONFIGS
    cli = os.path.join(build, "loracle")
    test = [json.loads(l) for l in open(os.path.join(DATA, "test.jsonl"), encoding="utf-8")]
    work = tempfile.mkdtemp(prefix="loracle-ft-")
    port = int(os.environ.get("LORACLE_FT_PORT", "50931"))
    server = subprocess.Popen(
        [os.path.join(build, "loracle-server"), f"--cache_dir={work}", f"--grpc_port={port}",
         "--grpc_host=127.0.0.1", "--metrics_port=-1", f"--data_dir={DATA}", "--threads=2",
         "--spam_demo=false"],
        stderr=open(os.path.join(work, "server.log"), "w"))
    addr = f"--server=127.0.0.1:{port}"
    try:
        for _ in range(100):
            if "SERVING" in open(os.path.join(work, "server.log")).read():
                break
            time.sleep(0.1)
        results = []
        for config in configs:
            name, _, flags = config.partition(":")
            flags = [f for f in flags.split(",") if f]
            start = time.time()
            out = subprocess.run([cli, addr, "--timeout_ms=7200000", "finetune", f"--name={name}",
                                  "--server_data=train.jsonl",
                                  "--server_validation=validation.jsonl", "--json"] + flags,
                                 capture_output=True, text=True)
            if out.returncode != 0:
                print(f"{name}: finetune failed: {out.stderr}{out.stdout}", file=sys.stderr)
                continue
            job = json.loads(out.stdout)
            train_s = time.time() - start
            rows = []
            for i in range(0, len(test), 25):
                chunk = test[i:i + 25]
                p = subprocess.run([cli, addr, "--timeout_ms=600000", "predict",
                                    f"--adapter={name}", "--json", "-"],
                                   input="\n".join(t["text"] for t in chunk) + "\n",
                                   capture_output=True, text=True)
                if p.returncode != 0:
                    raise SystemExit(f"{name}: predict failed: {p.stderr}")
                resp = json.loads(p.stdout)
                for pred in resp["predictions"]:
                    pred["label_names"] = resp["labels"]
                    rows.append(pred)
            r = score(rows, [t["label"] for t in test])
            r.update(name=name, flags=flags, train_seconds=round(train_s, 1),
                     steps=job.get("total_steps"), temperature=job["report"].get("temperature"),
                     validation=job["report"], train_examples=job.get("train_examples"),
                     validation_examples=job.get("validation_examples"), test_examples=len(rows))
            results.append(r)
            print(f"{name}: acc {r['accuracy']:.4f} nll {r['nll']:.4f} ece {r['ece']:.4f} "
                  f"brier {r['brier']:.4f} MI-AUROC {r['mi_auroc']:.3f} ({train_s:.0f} s)",
                  file=sys.stderr)
    finally:
        server.terminate()
        server.wait()
    # Validation columns come from the job's own report (the calibrated ensemble): choose settings
    # by those; the test columns are for reporting only.
    print("| config | val NLL | val accuracy | test accuracy | NLL | ECE | Brier | MI AUROC | "
          "1-conf AUROC | T | train s |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for r in results:
        cal = r["validation"].get("calibrated", {})
        print(f"| {r['name']} | {cal.get('nll', float('nan')):.4f} | "
              f"{cal.get('accuracy', float('nan')):.4f} | {r['accuracy']:.4f} | {r['nll']:.4f} | "
              f"{r['ece']:.4f} | {r['brier']:.4f} | {r['mi_auroc']:.3f} | "
              f"{r['conf_auroc']:.3f} | {r['temperature']:.3f} | {r['train_seconds']:.0f} |")
    os.makedirs(os.path.join(ROOT, "tests", "bench", "results"), exist_ok=True)
    path = os.path.join(ROOT, "tests", "bench", "results",
                        time.strftime("finetune-%Y%m%dT%H%M%SZ.json", time.gmtime()))
    with open(path, "w") as f:
        json.dump(results, f, indent=2)
    print(f"results: {path}", file=sys.stderr)


if __name__ == "__main__":
    main()
