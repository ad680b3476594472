#include "server/app/spam_demo.h"

#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "server/adapters/adapter_config.h"
#include "server/adapters/store.h"
#include "server/data/examples.h"
#include "server/training/dataset.h"
#include "server/training/job_queue.h"
#include "server/util/file_util.h"
#include "server/util/log.h"

namespace loracle::app {

extern const char kSpamTrain[];  // tests/data/spam-assassin/*.jsonl, embedded at build time
extern const char kSpamValidation[];

namespace {

void AddAll(const char* jsonl, const char* source,
            google::protobuf::RepeatedPtrField<loracle::v1::Example>* out) {
  absl::StatusOr<std::vector<data::Example>> examples = data::ParseJsonl(jsonl, source);
  if (!examples.ok()) return;  // embedded at build time and tested; cannot fail at run time
  for (const data::Example& e : *examples) {
    loracle::v1::Example* x = out->Add();
    x->set_text(e.text);
    x->set_label(e.label);
  }
}

}  // namespace

loracle::v1::SubmitRequest SpamDemoRequest() {
  loracle::v1::SubmitRequest r;
  r.set_adapter(kSpamDemoAdapter);
  AddAll(kSpamTrain, "train.jsonl", r.mutable_examples());
  AddAll(kSpamValidation, "validation.jsonl", r.mutable_validation_examples());
  r.add_labels("ham");
  r.add_labels("spam");
  // Only with the built-in model (BERT): its first-start recipe, LoRA on query and value (PEFT's
  // default), which the README's example answers were checked with.
  r.mutable_lora()->add_target_modules("query");
  r.mutable_lora()->add_target_modules("value");
  r.set_ensemble_members(2);
  r.mutable_dropout()->set_method(loracle::v1::DROPOUT_METHOD_LORA_DROPOUT);
  r.mutable_dropout()->set_rate(0.1f);
  r.set_mc_samples(4);
  r.set_epochs(2);
  r.set_max_length(96);
  r.set_seed(1);
  return r;
}

absl::Status SubmitSpamDemoIfNeeded(training::JobQueue& jobs, const adapters::Store& store,
                                    const std::string& base_fingerprint) {
  if (absl::StatusOr<int64_t> latest = store.LatestVersion(kSpamDemoAdapter); latest.ok()) {
    const std::string path = absl::StrCat(store.VersionDir(kSpamDemoAdapter, *latest), "/",
                                          adapters::kServingConfigFile);
    std::string recorded;
    if (absl::StatusOr<std::string> text = util::ReadFileToString(path); text.ok()) {
      absl::StatusOr<adapters::ServingConfig> serving = adapters::ParseServingConfig(*text, path);
      if (serving.ok()) recorded = serving->base.fingerprint;
    }
    if (recorded == base_fingerprint) return absl::OkStatus();
    LORACLE_LOG(INFO,
                "the cached \"%s\" adapter (version %d) was trained on base %s, not on the "
                "built-in model (%s): retraining it",
                kSpamDemoAdapter, *latest, recorded.empty() ? "(none recorded)" : recorded.c_str(),
                base_fingerprint.c_str());
  }
  std::string token, next;
  do {
    absl::StatusOr<std::vector<loracle::v1::Job>> page = jobs.List(100, token, &next);
    if (!page.ok()) return page.status();
    for (const loracle::v1::Job& j : *page) {
      if (j.adapter() == kSpamDemoAdapter && !training::JobEnded(j.state())) {
        return absl::OkStatus();  // queued or running from an earlier start
      }
    }
    token = next;
  } while (!token.empty());
  return jobs.Submit(SpamDemoRequest()).status();
}

}  // namespace loracle::app
