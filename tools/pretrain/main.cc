// loracle-pretrain: masked-language-model pretraining of a small BERT from scratch, or onward
// from an earlier output (--init) (training/pretrainer.h), written as a float16 BertForMaskedLM
// checkpoint in Hugging Face layout. The built-in model is made with it;
// tools/pretrain/README.md has the exact command, the corpus and the vocabulary.
//
//   loracle-pretrain --corpus=corpus.jsonl --vocab=vocab.txt --out=DIR [--steps=N ...]
//   loracle-pretrain --corpus=corpus.jsonl --init=EARLIER_OUT --out=DIR [--cls_bow_weight=W ...]
//
// corpus: JSONL, one document per line: {"text": "...", "source": "..."}; a document is held
// out for evaluation when the FNV-1a hash of its source (else its line number) falls in the
// first --heldout_percent of 100 buckets. Writes DIR/{config.json, model.safetensors, vocab.txt,
// tokenizer_config.json, pretrain_report.json}; progress to stderr and --log (JSONL).

#include <torch/torch.h>

#include <cstdio>
#include <fstream>
#include <iostream>
#include <string>
#include <vector>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/flags/usage.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/time/clock.h"
#include "nlohmann/json.hpp"
#include "server/model/checkpoint.h"
#include "server/model/cpu_runtime.h"
#include "server/model/default_model.h"
#include "server/model/dropout.h"
#include "server/text/tokenizer.h"
#include "server/util/file_util.h"
#include "tools/pretrain/pretrainer.h"

ABSL_FLAG(std::string, corpus, "", "JSONL corpus files, comma-separated ({\"text\", \"source\"})");
ABSL_FLAG(std::string, vocab, "", "WordPiece vocab.txt ([PAD] [UNK] [CLS] [SEP] [MASK] included)");
ABSL_FLAG(std::string, out, "", "output directory (created)");
ABSL_FLAG(int, layers, 4, "transformer layers");
ABSL_FLAG(int, hidden, 256, "hidden size");
ABSL_FLAG(int, heads, 4, "attention heads");
ABSL_FLAG(int, intermediate, 1024, "feed-forward size");
ABSL_FLAG(int, seq_len, 128,
          "tokens per training row, [CLS] and [SEP] included; also the "
          "model's max_position_embeddings");
ABSL_FLAG(int64_t, steps, 1000,
          "optimiser steps; 0 writes the initial (random) weights in the same format: the "
          "untrained base of the same shape that evaluations compare with");
ABSL_FLAG(int, batch_size, 64, "rows per step");
ABSL_FLAG(double, lr, 1e-3, "peak learning rate (AdamW)");
ABSL_FLAG(double, warmup_fraction, 0.05, "linear warmup share of the steps, then linear decay");
ABSL_FLAG(double, weight_decay, 0.01, "AdamW weight decay (not on biases and LayerNorm)");
ABSL_FLAG(double, max_grad_norm, 1.0, "gradient clipping");
ABSL_FLAG(double, mask_probability, 0.15, "share of tokens predicted");
ABSL_FLAG(int64_t, eval_every, 500, "steps between held-out evaluations");
ABSL_FLAG(int64_t, log_every, 50, "steps between progress lines");
ABSL_FLAG(int, heldout_percent, 2, "documents held out for evaluation, in percent");
ABSL_FLAG(int, eval_rows, 512, "held-out rows evaluated (the first ones)");
ABSL_FLAG(int, threads, 2, "threads (each a shard of a step)");
ABSL_FLAG(uint64_t, seed, 1, "seed of the initial weights, the data order and the masks");
ABSL_FLAG(std::string, dtype, "F16", "checkpoint dtype: F16, BF16 or F32");
ABSL_FLAG(bool, batched_attention, true, "attention of all rows in one product (faster here)");
ABSL_FLAG(std::string, init, "",
          "continue from this BertForMaskedLM checkpoint (loracle-pretrain's output: its weights, "
          "MLM head, vocabulary and shape; --vocab and the shape flags are then not used)");
ABSL_FLAG(std::string, extend_vocab, "",
          "with --init: grow its vocabulary to this vocab.txt (the old entries first, in order; "
          "make_vocab.py --base); added words start at the mean of their old pieces' embeddings");
ABSL_FLAG(double, cls_bow_weight, 0,
          "weight of the pooled [CLS] output's bag-of-words prediction beside MLM (trains the "
          "pooler that sequence classification reads); 0 = MLM only");
ABSL_FLAG(bool, bf16, false,
          "mixed precision: the training forward's matrix products in bfloat16 (CPU autocast; "
          "fast where the CPU has AVX512-BF16), weights, gradients, optimiser and losses float32");
ABSL_FLAG(bool, keep_freed_memory, true,
          "keep memory freed by tensors in the process (glibc malloc) instead of returning it to "
          "the kernel and faulting it in again every step; false only to measure the difference");
ABSL_FLAG(std::string, log, "", "also append progress as JSONL here");

namespace {

using loracle::pretrain::MlmEval;
using loracle::pretrain::PretrainProgress;
using nlohmann::json;

int Fail(const absl::Status& s) {
  std::fprintf(stderr, "loracle-pretrain: %s\n", s.ToString().c_str());
  return 1;
}

uint64_t Fnv1a(const std::string& s) {
  uint64_t h = 1469598103934665603ull;
  for (unsigned char c : s) {
    h ^= c;
    h *= 1099511628211ull;
  }
  return h;
}

json EvalJson(const MlmEval& e) {
  return {{"loss", e.loss}, {"accuracy", e.accuracy}, {"predictions", e.predictions}};
}

json ProgressJson(const PretrainProgress& p) {
  json j = {{"step", p.step},
            {"loss", p.loss},
            {"learning_rate", p.learning_rate},
            {"tokens_per_s", p.tokens_per_s},
            {"elapsed_s", p.elapsed_s}};
  if (p.cls_bow_loss > 0) j["cls_bow_loss"] = p.cls_bow_loss;
  if (p.has_eval) j["heldout"] = EvalJson(p.eval);
  return j;
}

}  // namespace

int main(int argc, char** argv) {
  absl::SetProgramUsageMessage("loracle-pretrain --corpus=FILE --vocab=FILE --out=DIR [flags]");
  absl::ParseCommandLine(argc, argv);
  // Before any thread or tensor: the MLM logits and their gradients (tens of MB a shard) would
  // otherwise be fresh mmaps every step, a third of a step spent faulting in zeroed pages.
  if (absl::GetFlag(FLAGS_keep_freed_memory)) loracle::model::KeepFreedMemory();
  const std::string out = absl::GetFlag(FLAGS_out);
  const std::string init_dir = absl::GetFlag(FLAGS_init);
  if (absl::GetFlag(FLAGS_corpus).empty() ||
      (absl::GetFlag(FLAGS_vocab).empty() && init_dir.empty()) || out.empty()) {
    std::fprintf(stderr,
                 "loracle-pretrain: --corpus, --vocab (or --init) and --out are required\n");
    return 2;
  }
  const int threads = absl::GetFlag(FLAGS_threads);
  at::set_num_threads(1);  // each of `threads` shards runs single-threaded
  loracle::model::DType dtype;
  if (absl::GetFlag(FLAGS_dtype) == "F16") {
    dtype = loracle::model::DType::kF16;
  } else if (absl::GetFlag(FLAGS_dtype) == "BF16") {
    dtype = loracle::model::DType::kBF16;
  } else if (absl::GetFlag(FLAGS_dtype) == "F32") {
    dtype = loracle::model::DType::kF32;
  } else {
    std::fprintf(stderr, "loracle-pretrain: --dtype must be F16, BF16 or F32\n");
    return 2;
  }

  // The initial weights: --init's checkpoint (its vocabulary grown by --extend_vocab), or a
  // random BERT of the requested shape over the vocabulary, written and loaded like any
  // checkpoint (transformers' initialisation, seeded).
  const std::string extend_vocab = absl::GetFlag(FLAGS_extend_vocab);
  if (!extend_vocab.empty() && init_dir.empty()) {
    std::fprintf(stderr, "loracle-pretrain: --extend_vocab needs --init\n");
    return 2;
  }
  const bool temporary_init = init_dir.empty() || !extend_vocab.empty();
  const std::string init = temporary_init ? out + "/.init" : init_dir;
  if (!extend_vocab.empty()) {
    absl::StatusOr<std::string> vocab = loracle::util::ReadFileToString(extend_vocab);
    if (!vocab.ok()) return Fail(vocab.status());
    if (auto s = loracle::pretrain::ExtendVocabulary(init_dir, *vocab, init); !s.ok()) {
      return Fail(s);
    }
  } else if (init_dir.empty()) {
    absl::StatusOr<std::string> vocab = loracle::util::ReadFileToString(absl::GetFlag(FLAGS_vocab));
    if (!vocab.ok()) return Fail(vocab.status());
    loracle::model::ModelConfig shape;
    shape.vocab_size = 0;
    for (char c : *vocab) shape.vocab_size += c == '\n';
    shape.hidden_size = absl::GetFlag(FLAGS_hidden);
    shape.num_hidden_layers = absl::GetFlag(FLAGS_layers);
    shape.num_attention_heads = absl::GetFlag(FLAGS_heads);
    shape.intermediate_size = absl::GetFlag(FLAGS_intermediate);
    shape.max_position_embeddings = absl::GetFlag(FLAGS_seq_len);
    if (auto s = loracle::model::WriteRandomBertCheckpoint(init, shape, *vocab,
                                                           absl::GetFlag(FLAGS_seed));
        !s.ok()) {
      return Fail(s);
    }
  }
  absl::StatusOr<std::unique_ptr<loracle::model::BaseModel>> base =
      loracle::model::LoadBaseModel(init);
  if (!base.ok()) return Fail(base.status());
  const loracle::model::ModelConfig config = (*base)->config;
  const loracle::text::Tokenizer& tokenizer = *(*base)->tokenizer;
  // Rows are full (no padding): one batched attention product per layer beats the per-row loop.
  if (absl::GetFlag(FLAGS_batched_attention)) (*base)->backbone->set_batched_attention(true);

  // Special ids from the vocabulary.
  auto id_of = [&](const std::string& token) -> int64_t {
    for (int64_t i = 0; i < tokenizer.vocab_size(); ++i) {
      if (tokenizer.IdToToken(i) == token) return i;
    }
    return -1;
  };
  const int64_t cls = id_of("[CLS]"), sep = id_of("[SEP]"), mask = id_of("[MASK]"),
                pad = id_of("[PAD]");
  if (cls < 0 || sep < 0 || mask < 0 || pad < 0) {
    return Fail(absl::InvalidArgumentError("the vocabulary lacks [CLS], [SEP], [MASK] or [PAD]"));
  }

  // The corpus, tokenised; documents split into training and held out by their source's hash.
  std::vector<std::vector<int64_t>> train_docs, heldout_docs;
  int64_t documents = 0, bytes = 0, tokens = 0;
  const absl::Time t0 = absl::Now();
  for (absl::string_view path : absl::StrSplit(absl::GetFlag(FLAGS_corpus), ',')) {
    std::ifstream in{std::string(path)};
    if (!in) return Fail(absl::NotFoundError(absl::StrCat("cannot open ", path)));
    std::string line;
    int64_t line_no = 0;
    while (std::getline(in, line)) {
      ++line_no;
      if (line.empty()) continue;
      json j = json::parse(line, nullptr, /*allow_exceptions=*/false);
      if (!j.is_object() || !j.contains("text") || !j["text"].is_string()) {
        return Fail(absl::InvalidArgumentError(
            absl::StrCat(path, ":", line_no, ": expected {\"text\": \"...\"}")));
      }
      const std::string text = j["text"].get<std::string>();
      const std::string source = j.contains("source") && j["source"].is_string()
                                     ? j["source"].get<std::string>()
                                     : absl::StrCat(path, ":", line_no);
      absl::StatusOr<std::vector<int64_t>> ids = tokenizer.TokenizeToIds(text);
      if (!ids.ok()) {
        return Fail(absl::InvalidArgumentError(
            absl::StrCat(path, ":", line_no, ": ", ids.status().message())));
      }
      ++documents;
      bytes += static_cast<int64_t>(text.size());
      tokens += static_cast<int64_t>(ids->size());
      const bool held =
          static_cast<int>(Fnv1a(source) % 100) < absl::GetFlag(FLAGS_heldout_percent);
      (held ? heldout_docs : train_docs).push_back(*std::move(ids));
    }
  }
  const int seq_len =
      init_dir.empty() ? absl::GetFlag(FLAGS_seq_len) : config.max_position_embeddings;
  const loracle::pretrain::TokenRows train =
      loracle::pretrain::PackSequences(train_docs, seq_len, cls, sep);
  loracle::pretrain::TokenRows heldout =
      loracle::pretrain::PackSequences(heldout_docs, seq_len, cls, sep);
  if (heldout.size() > static_cast<size_t>(absl::GetFlag(FLAGS_eval_rows))) {
    heldout.resize(static_cast<size_t>(absl::GetFlag(FLAGS_eval_rows)));
  }
  std::fprintf(stderr,
               "corpus: %lld documents, %lld bytes, %lld tokens (%.1f s); %zu training rows, %zu "
               "held-out rows of %d tokens\n",
               static_cast<long long>(documents), static_cast<long long>(bytes),
               static_cast<long long>(tokens), absl::ToDoubleSeconds(absl::Now() - t0),
               train.size(), heldout.size(), seq_len);

  loracle::pretrain::PretrainOptions o;
  o.optimisation.learning_rate = absl::GetFlag(FLAGS_lr);
  o.optimisation.warmup_fraction = absl::GetFlag(FLAGS_warmup_fraction);
  o.optimisation.weight_decay = absl::GetFlag(FLAGS_weight_decay);
  o.optimisation.max_grad_norm = absl::GetFlag(FLAGS_max_grad_norm);
  o.steps = absl::GetFlag(FLAGS_steps);
  o.batch_size = absl::GetFlag(FLAGS_batch_size);
  o.eval_every = absl::GetFlag(FLAGS_eval_every);
  o.threads = threads;
  o.seed = absl::GetFlag(FLAGS_seed);
  o.cls_bow_weight = absl::GetFlag(FLAGS_cls_bow_weight);
  o.bf16 = absl::GetFlag(FLAGS_bf16);
  o.masking.probability = absl::GetFlag(FLAGS_mask_probability);
  o.masking.mask_id = mask;
  o.masking.vocab_size = config.vocab_size;
  o.masking.never_mask = {cls, sep, pad};

  loracle::pretrain::MlmHead head(config, loracle::model::MixSeed(o.seed, 0x4EAD));
  if (!init_dir.empty()) {
    absl::StatusOr<loracle::pretrain::MlmHead> read = loracle::pretrain::ReadMlmHead(init, config);
    if (!read.ok()) return Fail(read.status());
    head = *read;
  }
  const MlmEval initial = loracle::pretrain::EvaluateMlm(
      **base, head, heldout, o.masking, loracle::model::MixSeed(o.seed, 0xE7A1), threads);
  std::fprintf(stderr, "step 0: held-out MLM loss %.4f, accuracy %.4f (%lld predictions)\n",
               initial.loss, initial.accuracy, static_cast<long long>(initial.predictions));
  std::ofstream log;
  if (!absl::GetFlag(FLAGS_log).empty()) log.open(absl::GetFlag(FLAGS_log), std::ios::app);
  absl::StatusOr<loracle::pretrain::PretrainReport> report;
  if (o.steps == 0) {
    report = loracle::pretrain::PretrainReport{};
    report->heldout = initial;
  } else {
    report = loracle::pretrain::Pretrain(
        **base, head, train, heldout, o, absl::GetFlag(FLAGS_log_every),
        [&](const PretrainProgress& p) {
          std::fprintf(stderr, "step %lld/%lld: loss %.4f, lr %.2e, %.0f tokens/s, %.0f s",
                       static_cast<long long>(p.step), static_cast<long long>(p.total_steps),
                       p.loss, p.learning_rate, p.tokens_per_s, p.elapsed_s);
          if (o.cls_bow_weight > 0) std::fprintf(stderr, " (bag of words %.4f)", p.cls_bow_loss);
          if (p.has_eval) {
            std::fprintf(stderr, "; held-out MLM loss %.4f, accuracy %.4f", p.eval.loss,
                         p.eval.accuracy);
          }
          std::fprintf(stderr, "\n");
          if (log.is_open()) log << ProgressJson(p).dump() << "\n" << std::flush;
        });
  }
  if (!report.ok()) return Fail(report.status());

  json r = {{"steps", report->steps},
            {"tokens", report->tokens},
            {"seconds", report->seconds},
            {"tokens_per_s", report->tokens_per_s},
            {"threads", threads},
            {"initial_heldout", EvalJson(initial)},
            {"heldout", EvalJson(report->heldout)},
            {"corpus",
             {{"files", absl::GetFlag(FLAGS_corpus)},
              {"documents", documents},
              {"bytes", bytes},
              {"tokens", tokens},
              {"training_rows", train.size()},
              {"heldout_rows_evaluated", heldout.size()},
              {"heldout_percent", absl::GetFlag(FLAGS_heldout_percent)}}},
            {"options",
             {{"seq_len", seq_len},
              {"batch_size", o.batch_size},
              {"lr", o.optimisation.learning_rate},
              {"warmup_fraction", o.optimisation.warmup_fraction},
              {"weight_decay", o.optimisation.weight_decay},
              {"max_grad_norm", o.optimisation.max_grad_norm},
              {"mask_probability", o.masking.probability},
              {"seed", o.seed},
              {"init", init_dir},
              {"extend_vocab", extend_vocab},
              {"cls_bow_weight", o.cls_bow_weight},
              {"bf16", o.bf16}}},
            {"curve", json::array()}};
  for (const PretrainProgress& p : report->curve) r["curve"].push_back(ProgressJson(p));
  const std::map<std::string, std::string> metadata = {
      {"loracle.pretrain.steps", std::to_string(report->steps)},
      {"loracle.pretrain.heldout_mlm_accuracy", std::to_string(report->heldout.accuracy)},
      {"loracle.pretrain.seed", std::to_string(o.seed)}};
  if (auto s = loracle::pretrain::WriteMlmCheckpoint(out, **base, head, dtype, metadata); !s.ok()) {
    return Fail(s);
  }
  if (auto s = loracle::util::WriteFileAtomically(out + "/pretrain_report.json", r.dump(2) + "\n");
      !s.ok()) {
    return Fail(s);
  }
  if (temporary_init) loracle::util::RemoveTree(init).IgnoreError();
  std::fprintf(stderr, "wrote %s: held-out MLM accuracy %.4f after %lld steps, %.0f tokens/s\n",
               out.c_str(), report->heldout.accuracy, static_cast<long long>(report->steps),
               report->tokens_per_s);
  return 0;
}
