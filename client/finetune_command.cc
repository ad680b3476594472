#include <unistd.h>

#include <cstdio>
#include <string>
#include <vector>

#include "absl/strings/ascii.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_split.h"
#include "client/commands.h"
#include "client/job_view.h"
#include "loracle/v1/training.grpc.pb.h"
#include "server/data/examples.h"

namespace loracle::client {
namespace {

using loracle::v1::SubmitRequest;

// Reads a local JSONL/CSV file into `out` (uploaded inline). False with the reason on `err`.
bool AddFile(const std::string& path, google::protobuf::RepeatedPtrField<loracle::v1::Example>* out,
             std::ostream& err) {
  absl::StatusOr<std::vector<data::Example>> examples = data::ReadExamples(path);
  if (!examples.ok()) {
    err << "loracle finetune: " << examples.status().message() << "\n";
    return false;
  }
  for (const data::Example& e : *examples) {
    loracle::v1::Example* x = out->Add();
    x->set_text(e.text);
    x->set_text_pair(e.text_pair);
    x->set_label(e.label);
  }
  return true;
}

// The request the flags describe; false with the reason on `err`.
bool BuildRequest(const Args& args, SubmitRequest* r, std::ostream& err) {
  r->set_adapter(Flag(args, "name"));
  if (r->adapter().empty()) {
    err << "loracle finetune: --name=ADAPTER is required\n";
    return false;
  }
  const std::string data = Flag(args, "data"), server_data = Flag(args, "server_data");
  if (data.empty() == server_data.empty()) {
    err << "loracle finetune: give --data=FILE (uploaded) or --server_data=PATH (under the "
           "server's --data_dir)\n";
    return false;
  }
  if (!data.empty() && !AddFile(data, r->mutable_examples(), err)) return false;
  r->set_data_path(server_data);
  if (std::string v = Flag(args, "validation"); !v.empty()) {
    if (!AddFile(v, r->mutable_validation_examples(), err)) return false;
  }
  r->set_validation_path(Flag(args, "server_validation"));
  for (absl::string_view l : absl::StrSplit(Flag(args, "labels"), ',', absl::SkipEmpty())) {
    r->add_labels(std::string(l));
  }
  for (absl::string_view t : absl::StrSplit(Flag(args, "targets"), ',', absl::SkipEmpty())) {
    r->mutable_lora()->add_target_modules(std::string(t));
  }
  r->mutable_lora()->set_use_rslora(Flag(args, "rslora") == "true");
  // Without --dropout the server's default applies (independently trained members, no dropout).
  const std::string method = absl::AsciiStrToLower(Flag(args, "dropout"));
  loracle::v1::DropoutConfig* d = r->mutable_dropout();
  if (method.empty()) {
  } else if (method == "none") {
    d->set_method(loracle::v1::DROPOUT_METHOD_NONE);
  } else if (method == "input") {
    d->set_method(loracle::v1::DROPOUT_METHOD_INPUT);
  } else if (method == "lora_dropout") {
    d->set_method(loracle::v1::DROPOUT_METHOD_LORA_DROPOUT);
  } else if (method == "hiddenkey") {
    d->set_method(loracle::v1::DROPOUT_METHOD_HIDDENKEY);
  } else {
    err << "loracle finetune: --dropout must be none, input, lora_dropout or hiddenkey\n";
    return false;
  }
  struct UintFlag {
    const char* name;
    void (SubmitRequest::*set)(uint32_t);
  };
  for (UintFlag f : {UintFlag{"members", &SubmitRequest::set_ensemble_members},
                     UintFlag{"mc_samples", &SubmitRequest::set_mc_samples},
                     UintFlag{"epochs", &SubmitRequest::set_epochs},
                     UintFlag{"max_steps", &SubmitRequest::set_max_steps},
                     UintFlag{"batch_size", &SubmitRequest::set_batch_size},
                     UintFlag{"max_length", &SubmitRequest::set_max_length},
                     UintFlag{"max_windows", &SubmitRequest::set_max_windows},
                     UintFlag{"train_windows", &SubmitRequest::set_train_windows}}) {
    if (std::string v = Flag(args, f.name); !v.empty()) {
      uint32_t n;
      if (!absl::SimpleAtoi(v, &n)) {
        err << "loracle finetune: --" << f.name << " must be a non-negative integer\n";
        return false;
      }
      (r->*f.set)(n);
    }
  }
  auto number = [&](const char* name, auto set) {
    if (std::string v = Flag(args, name); !v.empty()) {
      double x;
      if (!absl::SimpleAtod(v, &x)) {
        err << "loracle finetune: --" << name << " must be a number\n";
        return false;
      }
      set(x);
    }
    return true;
  };
  return number("rank", [&](double x) { r->mutable_lora()->set_rank(static_cast<uint32_t>(x)); }) &&
         number("alpha", [&](double x) { r->mutable_lora()->set_alpha(static_cast<float>(x)); }) &&
         number("rate", [&](double x) { d->set_rate(static_cast<float>(x)); }) &&
         number("dropkey_rate", [&](double x) { d->set_dropkey_rate(static_cast<float>(x)); }) &&
         number("hiddencut_rate",
                [&](double x) { d->set_hiddencut_rate(static_cast<float>(x)); }) &&
         number("kl_weight", [&](double x) { d->set_kl_weight(static_cast<float>(x)); }) &&
         number("lr", [&](double x) { r->set_learning_rate(static_cast<float>(x)); }) &&
         number("validation_split",
                [&](double x) { r->set_validation_split(static_cast<float>(x)); }) &&
         number("warmup",
                [&](double x) {
                  r->mutable_optimizer()->set_warmup_fraction(static_cast<float>(x));
                }) &&
         number(
             "weight_decay",
             [&](double x) { r->mutable_optimizer()->set_weight_decay(static_cast<float>(x)); }) &&
         number(
             "patience",
             [&](double x) { r->mutable_optimizer()->set_patience(static_cast<uint32_t>(x)); }) &&
         number("seed", [&](double x) { r->set_seed(static_cast<uint64_t>(x)); });
}

}  // namespace

int FinetuneCommand(const Args& args, const Channel& channel, std::ostream& out,
                    std::ostream& err) {
  SubmitRequest request;
  if (!BuildRequest(args, &request, err)) return 2;
  auto stub = loracle::v1::Training::NewStub(channel);
  loracle::v1::Job job;
  {
    grpc::ClientContext ctx;
    SetDeadline(&ctx, args);
    grpc::Status s = stub->Submit(&ctx, request, &job);
    if (!s.ok()) return Fail(err, s);
  }
  const bool json = Flag(args, "json") == "true";
  if (!json) {
    out << "submitted " << job.id() << ": " << request.examples_size() << " example(s)"
        << (request.data_path().empty() ? "" : " from the server's " + request.data_path()) << "\n";
  }
  if (Flag(args, "detach") == "true") {
    if (json) out << job.id() << "\n";
    return 0;
  }
  const bool tty = !json && &out == &std::cout && isatty(fileno(stdout));
  std::ostream null_stream(nullptr);
  grpc::Status s = WatchJob(*stub, job.id(), tty, json ? null_stream : out, &job);
  if (!s.ok()) return Fail(err, s);
  if (json) {
    out << JobJson(job);
  } else {
    PrintReport(job, out);
  }
  return job.state() == loracle::v1::JOB_STATE_SUCCEEDED ? 0 : 1;
}

}  // namespace loracle::client
