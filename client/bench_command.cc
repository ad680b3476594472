#include <cstdio>
#include <fstream>
#include <iostream>
#include <map>
#include <string>
#include <vector>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "client/bench.h"
#include "client/commands.h"

namespace loracle::client {

int BenchCommand(const Args& args, const Channel& channel, std::ostream& out, std::ostream& err) {
  BenchOptions o;
  std::string adapters = Flag(args, "adapters", Flag(args, "adapter"));
  for (absl::string_view a : absl::StrSplit(adapters, ',', absl::SkipEmpty()))
    o.adapters.emplace_back(a);
  if (o.adapters.empty()) {
    err << "loracle bench: --adapters=NAME[,NAME...] is required\n";
    return 2;
  }
  struct IntFlag {
    const char* name;
    int* value;
    int min;
  };
  for (IntFlag f :
       {IntFlag{"concurrency", &o.concurrency, 1}, IntFlag{"input_tokens", &o.input_tokens, 3},
        IntFlag{"inputs", &o.inputs_per_request, 1}, IntFlag{"mc_samples", &o.mc_samples, 0},
        IntFlag{"timeout_ms", &o.timeout_ms, 1}}) {
    if (std::string v = Flag(args, f.name);
        !v.empty() && (!absl::SimpleAtoi(v, f.value) || *f.value < f.min)) {
      err << "loracle bench: --" << f.name << " must be an integer >= " << f.min << "\n";
      return 2;
    }
  }
  struct DoubleFlag {
    const char* name;
    double* value;
  };
  for (DoubleFlag f : {DoubleFlag{"rate", &o.rate}, DoubleFlag{"duration_s", &o.duration_s},
                       DoubleFlag{"warmup_s", &o.warmup_s}, DoubleFlag{"zipf_s", &o.zipf_s}}) {
    if (std::string v = Flag(args, f.name);
        !v.empty() && (!absl::SimpleAtod(v, f.value) || *f.value < 0)) {
      err << "loracle bench: --" << f.name << " must be a number >= 0\n";
      return 2;
    }
  }
  o.feedback = Flag(args, "feedback") == "true";
  o.check_versions = Flag(args, "check_versions") == "true";
  o.rest_address = Flag(args, "rest");
  if (!o.rest_address.empty() &&
      (o.rate > 0 || o.feedback || o.rest_address.find(':') == std::string::npos)) {
    err << "loracle bench: --rest=HOST:PORT is closed-loop only (no --rate, no --feedback)\n";
    return 2;
  }
  if (o.duration_s <= 0) {
    err << "loracle bench: --duration_s must be > 0\n";
    return 2;
  }
  const BenchResult r = RunBench(channel, o);
  if (Flag(args, "json") == "true") {
    out << BenchJson(o, r);
  } else {
    PrintBench(o, r, out);
  }
  if (std::string path = Flag(args, "json_out"); !path.empty()) {
    std::ofstream f(path);
    f << BenchJson(o, r);
    if (!f) {
      err << "loracle bench: cannot write " << path << "\n";
      return 1;
    }
  }
  return r.ok > 0 ? 0 : 1;
}

}  // namespace loracle::client
