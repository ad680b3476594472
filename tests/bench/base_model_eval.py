#!/usr/bin/env python3
"""Does pretraining help? Fine-tunes the same adapter configuration through the real server's
Training RPC (the `loracle finetune` CLI) on two bases of one shape: the pretrained built-in
model and a random one (its initial weights: `loracle-pretrain --steps=0`, same seed and
vocabulary). A bag-of-words logistic regression (scikit-learn; the regularisation chosen by
validation NLL) is the baseline a base model has to beat. Each is scored on the held-out test
split of each task: accuracy, NLL, ECE (15 bins), Brier.

    tests/bench/base_model_eval.py BUILD_DIR PRETRAINED_DIR RANDOM_DIR [--reuse=EARLIER.json] [FLAG ...]

RANDOM_DIR may instead be the results JSON of an earlier run on the same random base, build, grid
and flags: its random-base rows are copied (fine-tuning is deterministic given the seeds and the
thread count), which halves the time when only the pretrained model changed. --reuse=EARLIER.json
copies, for each base whose directory is the earlier run's, the validation scores of the
candidates it already trained with the same flags (marked "reused"), and trains only the new
ones; when a reused candidate is still chosen, its test scores are the earlier run's.

Tasks: tests/data/spam-assassin (ham/spam mail) and tests/data/wordnet-supersenses (six noun
supersenses from WordNet glosses, not in the pretraining corpus). As the baseline's C, the
fine-tune's recipe is chosen by validation NLL, from GRID (loracle's defaults; a larger step for
longer, as an ensemble of 4 independently trained adapters, loracle's deep-ensemble mode; the
same with LoRA on every linear layer, not only query and value; that again with each text read in
up to 8 windows for validation, temperature and serving, its weights trained on the first); only
the chosen adapter sees
the test split. FLAGs are added to every `loracle finetune`. Needs python3-sklearn for the
baseline. Prints a Markdown table; writes tests/bench/results/base-model-<date>.json.
"""
import json, math, os, subprocess, sys, tempfile, time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from finetune_eval import score  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
DATA = os.path.join(ROOT, "tests", "data")
TASKS = ["spam-assassin", "wordnet-supersenses"]
GRID = [[], ["--lr=3e-3", "--epochs=6", "--members=4"],
        ["--lr=3e-3", "--epochs=6", "--members=4", "--targets=query,key,value,dense"],
        ["--lr=3e-3", "--epochs=6", "--members=4", "--targets=query,key,value,dense",
         "--max_windows=8", "--train_windows=1"]]


def load(task, split):
    with open(os.path.join(DATA, task, f"{split}.jsonl"), encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


def bag_of_words(task):
    """Unigram+bigram counts (lower-cased, sublinear tf-idf), L2 logistic regression; C by
    validation NLL over a grid. Returns rows shaped like the CLI's predictions."""
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import log_loss
    train, val, test = load(task, "train"), load(task, "validation"), load(task, "test")
    vec = TfidfVectorizer(lowercase=True, ngram_range=(1, 2), min_df=1, sublinear_tf=True)
    x_train = vec.fit_transform([t["text"] for t in train])
    best = None
    for c in [0.1, 0.3, 1, 3, 10, 30, 100, 300, 1000, 3000, 10000]:
        model = LogisticRegression(C=c, max_iter=5000)
        model.fit(x_train, [t["label"] for t in train])
        nll = log_loss([t["label"] for t in val], model.predict_proba(vec.transform(
            [t["text"] for t in val])), labels=model.classes_)
        if best is None or nll < best[0]:
            best = (nll, c, model)
    _, c, model = best
    probs = model.predict_proba(vec.transform([t["text"] for t in test]))
    rows = [{"probs": list(map(float, p)), "label_names": list(model.classes_),
             "uncertainty": {"mutual_information": 0.0}} for p in probs]
    return rows, {"C": c, "features": len(vec.vocabulary_)}


def fine_tuned(build, model_dir, name, flags, port, earlier=None):
    """Starts a server on `model_dir`, fine-tunes `name`-<task> on each task, predicts the tests.
    `earlier`: task -> that base's row of an earlier run (--reuse), whose candidates are not
    retrained."""
    earlier = earlier or {}
    cli = os.path.join(build, "loracle")
    work = tempfile.mkdtemp(prefix="loracle-base-")
    log = os.path.join(work, "server.log")
    server = subprocess.Popen(
        [os.path.join(build, "loracle-server"), f"--model_dir={model_dir}",
         f"--adapters_dir={work}/adapters", f"--jobs_dir={work}/jobs", f"--grpc_port={port}",
         "--grpc_host=127.0.0.1", "--metrics_port=-1", "--http_port=-1", f"--data_dir={DATA}",
         "--threads=2", "--store_poll_s=0", "--training_priority=normal", "--spam_demo=false"],
        stderr=open(log, "w"))
    addr = f"--server=127.0.0.1:{port}"
    out = {}
    try:
        for _ in range(300):
            if "SERVING" in open(log).read():
                break
            time.sleep(0.1)
        for task in TASKS:
            candidates = []
            old = {json.dumps(c["flags"]): c for c in
                   earlier.get(task, {}).get("candidates", [])}
            for i, grid_flags in enumerate(GRID):
                adapter = f"{name}-{task}-{i}"
                if json.dumps(grid_flags) in old:
                    candidates.append(dict(old[json.dumps(grid_flags)], adapter=adapter,
                                           reused=True))
                    continue
                start = time.time()
                job = subprocess.run([cli, addr, "--timeout_ms=7200000", "finetune",
                                      f"--name={adapter}", f"--server_data={task}/train.jsonl",
                                      f"--server_validation={task}/validation.jsonl", "--json"]
                                     + grid_flags + flags, capture_output=True, text=True)
                if job.returncode != 0:
                    raise SystemExit(f"{adapter}: finetune failed: {job.stderr}{job.stdout}")
                report = json.loads(job.stdout)
                val = report["report"].get("calibrated")
                candidates.append({"adapter": adapter, "flags": grid_flags, "validation": val,
                                   "steps": report.get("total_steps"),
                                   "train_seconds": round(time.time() - start, 1)})
                print(f"{name} {task} {' '.join(grid_flags) or 'defaults'}: validation acc "
                      f"{val['accuracy']:.4f} nll {val['nll']:.4f}", file=sys.stderr)
            best = min(candidates, key=lambda c: c["validation"]["nll"])
            adapter = best["adapter"]
            if best.get("reused"):
                r = {k: v for k, v in earlier[task].items() if k != "candidates"}
                if r["chosen"] != best["flags"]:
                    raise SystemExit(f"{task}: the earlier run chose {r['chosen']}, not "
                                     f"{best['flags']}")
                r.update(candidates=candidates, test_reused=True)
                out[task] = r
                print(f"{name} {task}: earlier choice kept ({' '.join(best['flags'])})",
                      file=sys.stderr)
                continue
            test = load(task, "test")
            rows = []
            for i in range(0, len(test), 50):
                chunk = test[i:i + 50]
                p = subprocess.run([cli, addr, "--timeout_ms=600000", "predict",
                                    f"--adapter={adapter}", "--json", "-"],
                                   input="\n".join(t["text"].replace("\n", " ") for t in chunk) + "\n",
                                   capture_output=True, text=True)
                if p.returncode != 0:
                    raise SystemExit(f"{adapter}: predict failed: {p.stderr}")
                resp = json.loads(p.stdout)
                for pred in resp["predictions"]:
                    pred["label_names"] = resp["labels"]
                    rows.append(pred)
            r = score(rows, [t["label"] for t in test])
            r.update(chosen=best["flags"], train_seconds=best["train_seconds"],
                     steps=best["steps"], validation=best["validation"], candidates=candidates)
            out[task] = r
            print(f"{name} {task}: acc {r['accuracy']:.4f} nll {r['nll']:.4f} ece {r['ece']:.4f} "
                  f"({' '.join(best['flags']) or 'defaults'})", file=sys.stderr)
    finally:
        server.terminate()
        server.wait()
    return out


def main():
    build, pretrained, random_base = sys.argv[1:4]
    flags = sys.argv[4:]
    reuse = None
    if flags and flags[0].startswith("--reuse="):
        reuse_path = flags.pop(0)[len("--reuse="):]
        with open(reuse_path, encoding="utf-8") as f:
            reuse = json.load(f)
        if reuse.get("flags") != flags:
            raise SystemExit(f"--reuse: that run had flags {reuse.get('flags')}, not {flags}")
    port = int(os.environ.get("LORACLE_EVAL_PORT", "50941"))
    results = {"flags": flags, "pretrained": pretrained, "random": random_base, "tasks": {}}
    for task in TASKS:
        rows, info = bag_of_words(task)
        r = score(rows, [t["label"] for t in load(task, "test")])
        r.update(info)
        results["tasks"].setdefault(task, {})["bag_of_words_lr"] = r
        print(f"bag-of-words {task}: acc {r['accuracy']:.4f} nll {r['nll']:.4f} "
              f"ece {r['ece']:.4f} (C={info['C']})", file=sys.stderr)
    bases = [("pretrained", pretrained)]
    if random_base.endswith(".json"):
        with open(random_base, encoding="utf-8") as f:
            earlier = json.load(f)
        if earlier.get("flags") != flags:
            raise SystemExit(f"{random_base} was run with flags {earlier.get('flags')}, not {flags}")
        for task in TASKS:
            grid = [c["flags"] for c in earlier["tasks"][task]["lora_on_random_base"]["candidates"]]
            if grid != GRID:
                raise SystemExit(f"{random_base} chose from another grid ({grid}); --reuse it")
        results["random"] = earlier["random"]
        results["random_copied_from"] = os.path.basename(random_base)
        for task in TASKS:
            results["tasks"][task]["lora_on_random_base"] = \
                earlier["tasks"][task]["lora_on_random_base"]
    else:
        bases.append(("random", random_base))
    if reuse:
        results["reused_from"] = os.path.basename(reuse_path)
    for name, model_dir in bases:
        earlier = None
        if reuse and reuse.get(name) == model_dir:
            earlier = {t: reuse["tasks"][t][f"lora_on_{name}_base"] for t in TASKS}
        for task, r in fine_tuned(build, model_dir, name, flags, port, earlier).items():
            results["tasks"][task][f"lora_on_{name}_base"] = r
    print("| task | model | test accuracy | NLL | ECE | Brier | errors / n |")
    print("|---|---|---|---|---|---|---|")
    for task in TASKS:
        n = len(load(task, "test"))
        for model in ("bag_of_words_lr", "lora_on_pretrained_base", "lora_on_random_base"):
            r = results["tasks"][task][model]
            print(f"| {task} | {model} | {r['accuracy']:.4f} | {r['nll']:.4f} | {r['ece']:.4f} | "
                  f"{r['brier']:.4f} | {r['errors']} / {n} |")
    os.makedirs(os.path.join(ROOT, "tests", "bench", "results"), exist_ok=True)
    path = os.path.join(ROOT, "tests", "bench", "results",
                        time.strftime("base-model-%Y%m%dT%H%M%SZ.json", time.gmtime()))
    with open(path, "w") as f:
        json.dump(results, f, indent=2)
    print(f"results: {path}", file=sys.stderr)


if __name__ == "__main__":
    main()
