#include <unistd.h>

#include <cstdio>
#include <iostream>
#include <string>

#include "client/commands.h"
#include "client/job_view.h"
#include "loracle/v1/training.grpc.pb.h"

namespace loracle::client {
int JobsCommand(const Args& args, const Channel& channel, std::ostream& out, std::ostream& err) {
  auto stub = loracle::v1::Training::NewStub(channel);
  const std::string sub = args.positional.size() > 1 ? args.positional[1] : "list";
  const std::string id = args.positional.size() > 2 ? args.positional[2] : "";
  const bool json = Flag(args, "json") == "true";
  if (sub == "list") {
    grpc::ClientContext ctx;
    SetDeadline(&ctx, args);
    loracle::v1::ListJobsRequest req;
    loracle::v1::ListJobsResponse resp;
    grpc::Status s = stub->List(&ctx, req, &resp);
    if (!s.ok()) return Fail(err, s);
    for (const loracle::v1::Job& j : resp.jobs()) {
      if (json) {
        out << JobJson(j);
      } else {
        out << JobLine(j) << "\n";
      }
    }
    return 0;
  }
  if (id.empty() || (sub != "get" && sub != "watch" && sub != "cancel")) {
    err << "loracle jobs: expected 'list', 'get ID', 'watch ID' or 'cancel ID'\n";
    return 2;
  }
  loracle::v1::Job job;
  if (sub == "watch") {
    const bool tty = !json && &out == &std::cout && isatty(fileno(stdout));
    grpc::Status s = WatchJob(*stub, id, tty, out, &job);
    if (!s.ok()) return Fail(err, s);
  } else {
    grpc::ClientContext ctx;
    SetDeadline(&ctx, args);
    loracle::v1::GetJobRequest req;
    req.set_id(id);
    grpc::Status s = sub == "get" ? stub->Get(&ctx, req, &job) : stub->Cancel(&ctx, req, &job);
    if (!s.ok()) return Fail(err, s);
  }
  if (json) {
    out << JobJson(job);
  } else {
    out << JobLine(job) << "\n";
    PrintReport(job, out);
  }
  return 0;
}

}  // namespace loracle::client
