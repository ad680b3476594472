#include "server/serving/batcher.h"

#include <gtest/gtest.h>

#include <atomic>
#include <thread>

#include "absl/synchronization/notification.h"
#include "absl/time/clock.h"

namespace loracle::serving {
namespace {

std::unique_ptr<InferenceRequest> Request(
    int inputs, std::function<void(absl::StatusOr<InferenceResult>)> done) {
  auto r = std::make_unique<InferenceRequest>();
  r->inputs.resize(static_cast<size_t>(inputs));
  r->done = std::move(done);
  return r;
}

// Waits (bounded) until the batch thread has dequeued everything.
void WaitUntilTaken(const Batcher& b) {
  const absl::Time end = absl::Now() + absl::Seconds(10);
  while (b.queued_rows() > 0 && absl::Now() < end) absl::SleepFor(absl::Milliseconds(1));
  ASSERT_EQ(b.queued_rows(), 0);
}

// A batcher (batch size 1, no delay) whose batch thread is blocked, until Release(), on a first
// request it has already taken: whatever is submitted next waits in the queue.
struct BlockedBatcher {
  explicit BlockedBatcher(int64_t max_queued_rows = 4096) {
    Batcher::Options o;
    o.max_batch_size = 1;
    o.max_queue_delay_us = 0;
    o.max_queued_rows = max_queued_rows;
    auto b = Batcher::Create(o, [this](auto batch) {
      release.WaitForNotification();
      for (auto& r : batch) {
        ++ran;
        r->done(InferenceResult{});
      }
    });
    EXPECT_TRUE(b.ok());
    batcher = *std::move(b);
    EXPECT_TRUE(batcher->Submit(Request(1, [](auto) {})).ok());
    WaitUntilTaken(*batcher);
  }
  // Lets the batch thread go and drains the queue.
  void Release() {
    release.Notify();
    batcher->Shutdown();
  }

  absl::Notification release;
  std::atomic<int> ran{0};
  std::unique_ptr<Batcher> batcher;
};

struct Recorder {
  absl::Mutex mu;
  std::vector<int64_t> batch_rows;
  void Run(std::vector<std::unique_ptr<InferenceRequest>> batch) {
    int64_t rows = 0;
    for (auto& r : batch) rows += r->rows();
    {
      absl::MutexLock lock(&mu);
      batch_rows.push_back(rows);
    }
    for (auto& r : batch) r->done(InferenceResult{});
  }
};

TEST(BatcherTest, CollectsConcurrentRequestsIntoOneBatch) {
  Recorder rec;
  Batcher::Options o;
  o.max_batch_size = 8;
  o.max_queue_delay_us = 200000;  // long enough that all 8 arrive before the batch closes
  auto b = Batcher::Create(o, [&](auto batch) { rec.Run(std::move(batch)); });
  ASSERT_TRUE(b.ok());
  std::atomic<int> done{0};
  for (int i = 0; i < 8; ++i) {
    ASSERT_TRUE((*b)->Submit(Request(1, [&](auto r) { done += r.ok(); })).ok());
  }
  (*b)->Shutdown();
  EXPECT_EQ(done.load(), 8);
  EXPECT_EQ(rec.batch_rows, std::vector<int64_t>{8}) << "one full batch, not eight";
}

TEST(BatcherTest, NeverExceedsMaxBatchSizeExceptForOneLargeRequest) {
  Recorder rec;
  Batcher::Options o;
  o.max_batch_size = 4;
  o.max_queue_delay_us = 50000;
  auto b = Batcher::Create(o, [&](auto batch) { rec.Run(std::move(batch)); });
  ASSERT_TRUE(b.ok());
  for (int i = 0; i < 6; ++i) ASSERT_TRUE((*b)->Submit(Request(1, [](auto) {})).ok());
  ASSERT_TRUE((*b)->Submit(Request(9, [](auto) {})).ok());
  (*b)->Shutdown();
  int64_t total = 0;
  for (int64_t rows : rec.batch_rows) {
    total += rows;
    EXPECT_TRUE(rows <= 4 || rows == 9) << rows;
  }
  EXPECT_EQ(total, 15);
}

TEST(BatcherTest, FullQueueIsResourceExhaustedAndNeverGrows) {
  BlockedBatcher b(/*max_queued_rows=*/3);
  for (int i = 0; i < 3; ++i) ASSERT_TRUE(b.batcher->Submit(Request(1, [](auto) {})).ok());
  absl::Status full =
      b.batcher->Submit(Request(1, [](auto) { ADD_FAILURE() << "rejected request ran"; }));
  EXPECT_EQ(full.code(), absl::StatusCode::kResourceExhausted);
  EXPECT_NE(full.message().find("queue is full"), std::string::npos);
  EXPECT_EQ(b.batcher->queued_rows(), 3);
  b.Release();
  EXPECT_EQ(b.ran.load(), 4);
}

TEST(BatcherTest, ExpiredRequestsGetDeadlineExceededWithoutRunning) {
  BlockedBatcher b;
  absl::StatusCode code = absl::StatusCode::kOk;
  auto late = Request(1, [&](auto r) { code = r.status().code(); });
  late->deadline = absl::Now() + absl::Milliseconds(10);
  ASSERT_TRUE(b.batcher->Submit(std::move(late)).ok());
  absl::SleepFor(absl::Milliseconds(50));
  b.Release();
  EXPECT_EQ(code, absl::StatusCode::kDeadlineExceeded);
  EXPECT_EQ(b.ran.load(), 1);
}

TEST(BatcherTest, RejectsAfterShutdownAndValidatesOptions) {
  auto b = Batcher::Create({}, [](auto) {});
  ASSERT_TRUE(b.ok());
  (*b)->Shutdown();
  EXPECT_EQ((*b)->Submit(Request(1, [](auto) {})).code(), absl::StatusCode::kUnavailable);
  Batcher::Options bad;
  bad.max_batch_size = 0;
  EXPECT_EQ(Batcher::Create(bad, [](auto) {}).status().code(), absl::StatusCode::kInvalidArgument);
}

TEST(BatcherTest, WindowsMustAddUpToTheEncodings) {
  BlockedBatcher blocked;
  auto windows = [](int encodings, std::vector<int> w) {
    auto r = Request(encodings, [](auto) {});
    r->windows = std::move(w);
    return r;
  };
  EXPECT_EQ(blocked.batcher->Submit(windows(3, {1, 1})).code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(blocked.batcher->Submit(windows(3, {3, 0})).code(), absl::StatusCode::kInvalidArgument);
  EXPECT_TRUE(blocked.batcher->Submit(windows(3, {1, 2})).ok());
  EXPECT_EQ(blocked.batcher->queued_rows(), 3) << "rows count windows";
  blocked.Release();
}

TEST(BatcherTest, CancelledRequestsAreFinishedWithoutRunning) {
  BlockedBatcher b;
  std::atomic<bool> gone{false};
  absl::StatusCode code = absl::StatusCode::kOk;
  auto r = Request(1, [&](auto result) { code = result.status().code(); });
  r->cancelled = [&] { return gone.load(); };
  ASSERT_TRUE(b.batcher->Submit(std::move(r)).ok());
  gone = true;
  b.Release();
  EXPECT_EQ(code, absl::StatusCode::kCancelled);
  EXPECT_EQ(b.ran.load(), 1);
}

}  // namespace
}  // namespace loracle::serving

namespace loracle::serving {
namespace {

// Batches that run long (200 ms here) stretch the fill wait to a fraction of their run time, so
// requests trickling in 10 ms apart join one batch; with the fraction at 0 the 1 ms delay lets
// the first of them go alone.
TEST(BatcherAdaptiveDelayTest, LongBatchesStretchTheFillWait) {
  for (double fraction : {0.5, 0.0}) {
    Batcher::Options o;
    o.max_queue_delay_us = 1000;
    o.adaptive_delay_fraction = fraction;
    absl::Mutex mu;
    std::vector<size_t> sizes;
    auto b = Batcher::Create(o, [&](auto batch) {
      absl::SleepFor(absl::Milliseconds(200));
      {
        absl::MutexLock lock(&mu);
        sizes.push_back(batch.size());
      }
      for (auto& r : batch) r->done(InferenceResult{});
    });
    ASSERT_TRUE(b.ok());
    ASSERT_TRUE((*b)->Submit(Request(1, [](auto) {})).ok());  // teaches it that batches take 200 ms
    WaitUntilTaken(**b);
    absl::SleepFor(absl::Milliseconds(300));
    for (int i = 0; i < 3; ++i) {
      ASSERT_TRUE((*b)->Submit(Request(1, [](auto) {})).ok());
      absl::SleepFor(absl::Milliseconds(10));
    }
    (*b)->Shutdown();
    absl::MutexLock lock(&mu);
    ASSERT_GE(sizes.size(), 2u);
    EXPECT_EQ(sizes[0], 1u);
    if (fraction > 0) {
      EXPECT_EQ(sizes[1], 3u) << "a 100 ms fill wait gathers all three";
    } else {
      EXPECT_EQ(sizes[1], 1u) << "a 1 ms fill wait takes the first alone";
    }
  }
}

}  // namespace
}  // namespace loracle::serving
