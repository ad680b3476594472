#include "server/training/job_queue.h"

#include <gtest/gtest.h>

#include <string>
#include <vector>

#include "absl/synchronization/mutex.h"
#include "absl/synchronization/notification.h"
#include "absl/time/clock.h"
#include "server/util/file_util.h"
#include "tests/support/test_util.h"

namespace loracle::training {
namespace {

using loracle::v1::Job;
using loracle::v1::SubmitRequest;

SubmitRequest Spec(const std::string& adapter) {
  SubmitRequest r;
  r.set_adapter(adapter);
  r.add_examples()->set_text("x");
  return r;
}

// A runner that reports a step, then waits until released (or cancelled), then succeeds with
// version 7, or fails when the adapter is named "bad".
class FakeRunner {
 public:
  JobQueue::Runner runner() {
    return [this](const SubmitRequest& spec, JobContext& ctx) -> absl::StatusOr<JobOutcome> {
      ctx.Update([](Job& j) { j.set_step(1); }, false);
      started_.Notify();
      while (!released_.HasBeenNotified()) {
        if (ctx.Cancelled()) return absl::CancelledError("cancelled");
        absl::SleepFor(absl::Milliseconds(1));
      }
      if (spec.adapter() == "bad")
        return absl::InvalidArgumentError("data.jsonl:3: not valid JSON");
      JobOutcome out;
      out.published_version = 7;
      out.report.set_examples(12);
      return out;
    };
  }
  void WaitStarted() { ASSERT_TRUE(started_.WaitForNotificationWithTimeout(absl::Seconds(30))); }
  void Release() { released_.Notify(); }

 private:
  absl::Notification started_, released_;
};

// Waits until job `id` is in `state`.
Job WaitFor(JobQueue& q, const std::string& id, loracle::v1::JobState state) {
  for (int i = 0; i < 30000; ++i) {
    Job j = *q.Get(id);
    if (j.state() == state) return j;
    absl::SleepFor(absl::Milliseconds(1));
  }
  ADD_FAILURE() << "job " << id << " never reached state " << state;
  return *q.Get(id);
}

TEST(JobQueueTest, RunsToSucceededAndWatchersSeeEveryStateInOrder) {
  testing::TempDir dir;
  FakeRunner fake;
  auto q = *JobQueue::Create({dir.path(), 1, 4, fake.runner()});
  Job job = *q->Submit(Spec("spam"));
  EXPECT_EQ(job.state(), loracle::v1::JOB_STATE_QUEUED);
  absl::Mutex mu;
  std::vector<Job> seen;
  ASSERT_TRUE(q->Subscribe(job.id(), [&](const Job& j) {
                 absl::MutexLock lock(&mu);
                 seen.push_back(j);
               }).ok());
  fake.WaitStarted();
  fake.Release();
  Job done = WaitFor(*q, job.id(), loracle::v1::JOB_STATE_SUCCEEDED);
  EXPECT_EQ(done.published_version(), 7);
  EXPECT_EQ(done.report().examples(), 12u);
  q.reset();
  ASSERT_GE(seen.size(), 2u);
  for (size_t i = 1; i < seen.size(); ++i) {
    EXPECT_GE(seen[i].state(), seen[i - 1].state()) << "states only move forward";
  }
  EXPECT_EQ(seen.back().state(), loracle::v1::JOB_STATE_SUCCEEDED);
}

TEST(JobQueueTest, FullQueueIsResourceExhausted) {
  testing::TempDir dir;
  auto q = *JobQueue::Create({dir.path(), /*workers=*/0, /*max_queued=*/2, nullptr});
  ASSERT_TRUE(q->Submit(Spec("a")).ok());
  ASSERT_TRUE(q->Submit(Spec("b")).ok());
  auto third = q->Submit(Spec("c"));
  EXPECT_EQ(third.status().code(), absl::StatusCode::kResourceExhausted);
  std::string next;
  EXPECT_EQ(q->List(10, "", &next)->size(), 2u) << "the refused job left nothing behind";
}

TEST(JobQueueTest, FailureKeepsTheRunnersMessage) {
  testing::TempDir dir;
  FakeRunner fake;
  auto q = *JobQueue::Create({dir.path(), 1, 4, fake.runner()});
  Job job = *q->Submit(Spec("bad"));
  fake.Release();
  Job failed = WaitFor(*q, job.id(), loracle::v1::JOB_STATE_FAILED);
  EXPECT_EQ(failed.error(), "data.jsonl:3: not valid JSON");
  EXPECT_EQ(failed.published_version(), 0);
}

TEST(JobQueueTest, CancelQueuedAtOnceAndRunningAtTheNextStep) {
  testing::TempDir dir;
  FakeRunner fake;
  auto q = *JobQueue::Create({dir.path(), 1, 4, fake.runner()});
  Job running = *q->Submit(Spec("a"));
  Job queued = *q->Submit(Spec("b"));
  fake.WaitStarted();
  EXPECT_EQ(q->Cancel(queued.id())->state(), loracle::v1::JOB_STATE_CANCELLED);
  EXPECT_EQ(q->Cancel(running.id())->state(), loracle::v1::JOB_STATE_RUNNING);
  Job cancelled = WaitFor(*q, running.id(), loracle::v1::JOB_STATE_CANCELLED);
  EXPECT_EQ(cancelled.published_version(), 0);
  EXPECT_EQ(q->Cancel("job-none").status().code(), absl::StatusCode::kNotFound);
}

TEST(JobQueueTest, ListIsNewestFirstInPages) {
  testing::TempDir dir;
  auto q = *JobQueue::Create({dir.path(), 0, 10, nullptr});
  std::vector<std::string> ids;
  for (int i = 0; i < 5; ++i) {
    ids.push_back(q->Submit(Spec("a"))->id());
    absl::SleepFor(absl::Milliseconds(2));  // distinct creation times
  }
  std::string next;
  auto page1 = *q->List(2, "", &next);
  ASSERT_EQ(page1.size(), 2u);
  EXPECT_EQ(page1[0].id(), ids[4]);
  EXPECT_EQ(page1[1].id(), ids[3]);
  auto page2 = *q->List(2, next, &next);
  EXPECT_EQ(page2[0].id(), ids[2]);
  auto page3 = *q->List(2, next, &next);
  ASSERT_EQ(page3.size(), 1u);
  EXPECT_EQ(page3[0].id(), ids[0]);
  EXPECT_EQ(next, "");
  EXPECT_EQ(q->List(2, "job-bogus", &next).status().code(), absl::StatusCode::kInvalidArgument);
}

TEST(JobQueueTest, RestartRequeuesQueuedJobsAndFailsTheOneThatWasRunning) {
  testing::TempDir dir;
  std::string queued_id, running_id;
  {
    auto q = *JobQueue::Create({dir.path(), 0, 10, nullptr});
    running_id = q->Submit(Spec("a"))->id();
    queued_id = q->Submit(Spec("b"))->id();
  }
  // Simulate a crash mid-run: the first job's record says RUNNING.
  const std::string path = dir.path() + "/" + running_id + "/job.json";
  std::string json = *util::ReadFileToString(path);
  json.replace(json.find("JOB_STATE_QUEUED"), 16, "JOB_STATE_RUNNING");
  testing::WriteFile(path, json);

  FakeRunner fake;
  auto q = *JobQueue::Create({dir.path(), 1, 10, fake.runner()});
  Job crashed = *q->Get(running_id);
  EXPECT_EQ(crashed.state(), loracle::v1::JOB_STATE_FAILED);
  EXPECT_EQ(crashed.error(), "server restarted during training");
  fake.Release();
  EXPECT_EQ(WaitFor(*q, queued_id, loracle::v1::JOB_STATE_SUCCEEDED).published_version(), 7);
}

TEST(JobQueueTest, GracefulShutdownPutsTheRunningJobBackInTheQueue) {
  testing::TempDir dir;
  std::string id;
  {
    FakeRunner fake;
    auto q = *JobQueue::Create({dir.path(), 1, 4, fake.runner()});
    id = q->Submit(Spec("a"))->id();
    fake.WaitStarted();
    q->Shutdown();  // cancels the running job, which is stored QUEUED again
    EXPECT_EQ(q->Get(id)->state(), loracle::v1::JOB_STATE_QUEUED);
  }
  FakeRunner fake;
  fake.Release();
  auto q = *JobQueue::Create({dir.path(), 1, 4, fake.runner()});
  EXPECT_EQ(WaitFor(*q, id, loracle::v1::JOB_STATE_SUCCEEDED).published_version(), 7);
}

}  // namespace
}  // namespace loracle::training
