// ONNX Runtime as the CPU engine a user would otherwise pick: the exported bench model
// (export_onnx.py) run in process on pre-built ids, no RPC, no tokenizer, no client.
//   node tests/bench/peers/ort_bench.mjs MODEL.onnx OUT.json [DURATION_S=10] [TOKENS=128]
//       [THREADS=2] [CHECK_IDS_JSON]
// NODE_PATH must reach onnxruntime-node (npm install --ignore-scripts onnxruntime-node; its CPU
// library ships in the package). Measures the lone request (batch 1, back to back: p50/p99 ms)
// and throughput at batch 1, 8, 16 and 32 (inputs/s; the best is the peer's figure at
// "concurrency 32"). With CHECK_IDS_JSON ({"ids": [...]}) it also writes that input's
// probabilities, for the caller's check against loracle.
import { createRequire } from "module";
import { readFileSync, writeFileSync } from "fs";

const require = createRequire(import.meta.url);
const ort = require("onnxruntime-node");
const [model, out, durationArg, tokensArg, threadsArg, checkPath] = process.argv.slice(2);
const duration = Number(durationArg || 10) * 1000;
const tokens = Number(tokensArg || 128);
const threads = Number(threadsArg || 2);

const session = await ort.InferenceSession.create(model, {
  intraOpNumThreads: threads,
  interOpNumThreads: 1,
  graphOptimizationLevel: "all",
  executionMode: "sequential",
});

function feeds(batch) {
  const ids = new BigInt64Array(batch * tokens);
  for (let i = 0; i < ids.length; ++i) ids[i] = BigInt(1000 + ((i * 7919) % 11000));
  for (let b = 0; b < batch; ++b) {
    ids[b * tokens] = 2n;  // [CLS]
    ids[b * tokens + tokens - 1] = 3n;  // [SEP]
  }
  return {
    input_ids: new ort.Tensor("int64", ids, [batch, tokens]),
    attention_mask: new ort.Tensor("int64", new BigInt64Array(batch * tokens).fill(1n), [batch, tokens]),
  };
}

const result = { engine: "onnxruntime-node " + require("onnxruntime-node/package.json").version,
                 threads, tokens, throughput: {} };
// Lone request.
{
  const f = feeds(1);
  for (let i = 0; i < 5; ++i) await session.run(f);
  const times = [];
  const end = Date.now() + duration;
  while (Date.now() < end) {
    const t = process.hrtime.bigint();
    await session.run(f);
    times.push(Number(process.hrtime.bigint() - t) / 1e6);
  }
  times.sort((a, b) => a - b);
  result.lone = { requests: times.length, p50_ms: times[Math.floor(times.length * 0.5)],
                  p99_ms: times[Math.floor(times.length * 0.99)] };
}
for (const batch of [1, 8, 16, 32]) {
  const f = feeds(batch);
  await session.run(f);
  let n = 0;
  const start = Date.now();
  while (Date.now() - start < duration) {
    await session.run(f);
    n += batch;
  }
  result.throughput[batch] = n / ((Date.now() - start) / 1000);
}
result.best_inputs_per_s = Math.max(...Object.values(result.throughput));
if (checkPath) {
  const ids = JSON.parse(readFileSync(checkPath, "utf8")).ids;
  const r = await session.run({
    input_ids: new ort.Tensor("int64", BigInt64Array.from(ids.map(BigInt)), [1, ids.length]),
    attention_mask: new ort.Tensor("int64", new BigInt64Array(ids.length).fill(1n), [1, ids.length]),
  });
  result.check_probs = Array.from(r.probabilities.data);
}
writeFileSync(out, JSON.stringify(result, null, 1));
console.log(`ort: lone p50 ${result.lone.p50_ms.toFixed(1)} ms; inputs/s by batch ` +
            Object.entries(result.throughput).map(([b, v]) => `${b}: ${v.toFixed(1)}`).join(", "));
