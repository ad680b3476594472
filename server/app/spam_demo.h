#ifndef LORACLE_SERVER_APP_SPAM_DEMO_H_
#define LORACLE_SERVER_APP_SPAM_DEMO_H_

// The newcomer's first adapter: with the built-in model, the server fine-tunes a "spam" ensemble
// on the bundled SpamAssassin splits (embedded in the binary) as an ordinary background job, so
// `loracle predict --adapter spam` gives real answers a few minutes after the first start. The
// result is cached in the store like any adapter; later starts on the same built-in model find it
// and submit nothing.

#include <string>

#include "absl/status/status.h"
#include "loracle/v1/training.pb.h"

namespace loracle::adapters {
class Store;
}
namespace loracle::training {
class JobQueue;
}

namespace loracle::app {

inline constexpr char kSpamDemoAdapter[] = "spam";

// The job: the embedded train (1,399 mails) and validation (200) splits, 2 members with LoRA
// Dropout (p = 0.1, N = 4) on query and value, 2 epochs over the first 96 tokens of each mail.
// Submitted only with the built-in model (a BERT).
loracle::v1::SubmitRequest SpamDemoRequest();

// Submits SpamDemoRequest() unless the store's latest "spam" was trained on the base whose
// fingerprint is `base_fingerprint` (model/fingerprint.h) or a job for it is queued or running. A
// cached "spam" of another base (the built-in model changed with an upgrade) or of none recorded
// is retrained: its new version replaces it. Errors from the queue (full, shutting down) are
// returned; nothing else is changed.
absl::Status SubmitSpamDemoIfNeeded(training::JobQueue& jobs, const adapters::Store& store,
                                    const std::string& base_fingerprint);

}  // namespace loracle::app

#endif  // LORACLE_SERVER_APP_SPAM_DEMO_H_
