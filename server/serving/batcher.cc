#include "server/serving/batcher.h"

#include <algorithm>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "server/metrics/metrics.h"

namespace loracle::serving {

absl::StatusOr<std::unique_ptr<Batcher>> Batcher::Create(const Options& options, RunFn run,
                                                         metrics::Metrics* metrics) {
  if (options.max_batch_size < 1) return absl::InvalidArgumentError("max_batch_size must be >= 1");
  if (options.max_queue_delay_us < 0)
    return absl::InvalidArgumentError("max_queue_delay_us must be >= 0");
  if (options.max_queued_rows < 1)
    return absl::InvalidArgumentError("max_queued_rows must be >= 1");
  if (!(options.adaptive_delay_fraction >= 0 && options.adaptive_delay_fraction <= 1)) {
    return absl::InvalidArgumentError("adaptive_delay_fraction must be in [0, 1]");
  }
  if (options.num_batch_threads < 1)
    return absl::InvalidArgumentError("num_batch_threads must be >= 1");
  if (!run) return absl::InvalidArgumentError("Batcher needs a run function");
  std::unique_ptr<Batcher> b(new Batcher(options, std::move(run), metrics));
  for (int i = 0; i < options.num_batch_threads; ++i) {
    b->threads_.emplace_back([p = b.get()] { p->Loop(); });
  }
  return b;
}

Batcher::~Batcher() { Shutdown(); }

absl::Status Batcher::Submit(std::unique_ptr<InferenceRequest> request) {
  const int64_t rows = request->rows();
  if (rows <= 0) return absl::InvalidArgumentError("request has no rows to run");
  if (!request->windows.empty()) {
    int64_t encodings = 0;
    for (int w : request->windows) {
      if (w < 1) return absl::InvalidArgumentError("an input has no windows");
      encodings += w;
    }
    if (encodings != static_cast<int64_t>(request->inputs.size())) {
      return absl::InvalidArgumentError("request windows do not add up to its encodings");
    }
  }
  absl::MutexLock lock(&mu_);
  if (stopping_) return absl::UnavailableError("server is shutting down");
  // Always admit into an empty queue so a request larger than the bound can still run.
  if (queued_rows_ > 0 && queued_rows_ + rows > options_.max_queued_rows) {
    return absl::ResourceExhaustedError(absl::StrCat("inference queue is full (", queued_rows_,
                                                     " of ", options_.max_queued_rows,
                                                     " rows queued); retry with backoff"));
  }
  queued_rows_ += rows;
  request->enqueued = absl::Now();
  queue_.push_back(std::move(request));
  if (metrics_ != nullptr) metrics_->SetQueued(static_cast<int64_t>(queue_.size()), queued_rows_);
  return absl::OkStatus();
}

void Batcher::Shutdown() {
  {
    absl::MutexLock lock(&mu_);
    if (stopping_ && threads_.empty()) return;
    stopping_ = true;
  }
  for (std::thread& t : threads_) t.join();
  threads_.clear();
}

int64_t Batcher::queued_rows() const {
  absl::MutexLock lock(&mu_);
  return queued_rows_;
}

absl::Duration Batcher::FillDelay() const {
  return std::max(absl::Microseconds(options_.max_queue_delay_us),
                  run_time_avg_ * options_.adaptive_delay_fraction);
}

void Batcher::Loop() {
  for (;;) {
    std::vector<std::unique_ptr<InferenceRequest>> batch;
    // Dropped unrun: past their deadline (checked first: gRPC also cancels such calls) or
    // cancelled.
    std::vector<std::pair<std::unique_ptr<InferenceRequest>, absl::Status>> dropped;
    {
      absl::MutexLock lock(&mu_, absl::Condition(this, &Batcher::HasWork));
      if (queue_.empty()) return;  // stopping and drained
      // Let the batch fill: wait until enough rows are queued or the delay passes.
      const absl::Time fill_deadline = absl::Now() + FillDelay();
      auto full = [this]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
        return stopping_ || queued_rows_ >= options_.max_batch_size;
      };
      while (!full() && absl::Now() < fill_deadline) {
        mu_.AwaitWithDeadline(absl::Condition(&full), fill_deadline);
      }
      int64_t rows = 0;
      const absl::Time now = absl::Now();
      while (!queue_.empty()) {
        InferenceRequest* next = queue_.front().get();
        absl::Status drop;
        if (next->deadline < now) {
          drop = absl::DeadlineExceededError("deadline passed while the request was queued");
        } else if (next->cancelled && next->cancelled()) {
          drop = absl::CancelledError("the caller cancelled the request while it was queued");
        }
        if (!drop.ok()) {
          queued_rows_ -= next->rows();
          dropped.emplace_back(std::move(queue_.front()), std::move(drop));
          queue_.pop_front();
          continue;
        }
        if (!batch.empty() && rows + next->rows() > options_.max_batch_size) break;
        rows += next->rows();
        queued_rows_ -= next->rows();
        batch.push_back(std::move(queue_.front()));
        queue_.pop_front();
      }
      if (metrics_ != nullptr) {
        metrics_->SetQueued(static_cast<int64_t>(queue_.size()), queued_rows_);
      }
    }
    for (auto& [request, status] : dropped) request->done(status);
    if (batch.empty()) continue;
    if (metrics_ != nullptr) {
      const absl::Time now = absl::Now();
      for (const auto& r : batch) {
        metrics_->RecordDequeued(absl::ToDoubleSeconds(now - r->enqueued),
                                 r->members * r->mc_samples);
      }
    }
    const absl::Time start = absl::Now();
    run_(std::move(batch));
    const absl::Duration took = absl::Now() - start;
    absl::MutexLock lock(&mu_);
    run_time_avg_ = run_time_avg_ == absl::ZeroDuration() ? took : 0.8 * run_time_avg_ + 0.2 * took;
  }
}

}  // namespace loracle::serving
