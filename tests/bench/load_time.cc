// loracle-load-time: how long loading a BERT-base-sized checkpoint takes beyond reading its file.
//   loracle-load-time DIR [F32|F16|BF16]
// Writes a random 12 x 768 BERT (vocab 30522, about 110 M parameters) into DIR (kept for reuse),
// then reports, best of 3 with the file in the page cache: the time to read() the weights file
// into memory, and the time LoadBaseModel takes (mmap, config, every tensor copied into its
// parameter, tokenizer). Prints one JSON line.

#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <string>
#include <vector>

#include "server/model/checkpoint.h"
#include "server/model/default_model.h"
#include "server/util/file_util.h"
#include "tests/support/fixture_checkpoint.h"

namespace {

double Seconds(std::chrono::steady_clock::time_point t0) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

double ReadWholeFile(const std::string& path) {
  const auto t0 = std::chrono::steady_clock::now();
  const int fd = ::open(path.c_str(), O_RDONLY);
  if (fd < 0) return -1;
  const off_t size = ::lseek(fd, 0, SEEK_END);
  ::lseek(fd, 0, SEEK_SET);
  std::vector<char> all(static_cast<size_t>(size));  // one buffer, as a one-read loader would
  size_t total = 0;
  ssize_t n;
  while (total < all.size() && (n = ::read(fd, all.data() + total, all.size() - total)) > 0) {
    total += static_cast<size_t>(n);
  }
  ::close(fd);
  return total > 0 ? Seconds(t0) : -1;
}

}  // namespace

int main(int argc, char** argv) {
  using namespace loracle::model;
  namespace util = loracle::util;
  if (argc < 2) {
    std::fprintf(stderr, "usage: %s DIR [F32|F16|BF16]\n", argv[0]);
    return 2;
  }
  const std::string dir = argv[1];
  const std::string dtype = argc > 2 ? argv[2] : "F32";
  ModelConfig c = DefaultModelConfig();
  c.vocab_size = 30522;  // bert-base-uncased's; the tokenizer uses the first 12k ids
  c.hidden_size = 768;
  c.num_hidden_layers = 12;
  c.num_attention_heads = 12;
  c.intermediate_size = 3072;
  loracle::testing::CheckpointLayout layout;
  layout.dtype = dtype == "F16" ? DType::kF16 : dtype == "BF16" ? DType::kBF16 : DType::kF32;
  if (!util::FileExists(dir + "/model.safetensors")) {
    if (auto s = loracle::testing::WriteRandomCheckpoint(dir, c, 1, layout); !s.ok()) {
      std::fprintf(stderr, "%s\n", s.ToString().c_str());
      return 1;
    }
    if (auto s = util::WriteFileAtomically(dir + "/vocab.txt", std::string(DefaultVocab()));
        !s.ok()) {
      return 1;
    }
  }
  double read_s = 1e9, load_s = 1e9;
  int64_t params = 0;
  for (int i = 0; i < 3; ++i) {
    read_s = std::min(read_s, ReadWholeFile(dir + "/model.safetensors"));
    const auto t0 = std::chrono::steady_clock::now();
    auto model = LoadBaseModel(dir);
    const double s = Seconds(t0);
    if (!model.ok()) {
      std::fprintf(stderr, "%s\n", model.status().ToString().c_str());
      return 1;
    }
    params = (*model)->num_parameters;
    load_s = std::min(load_s, s);
  }
  std::printf(
      "{\"dtype\": \"%s\", \"parameters\": %lld, \"read_file_s\": %.3f, \"load_s\": %.3f, "
      "\"load_beyond_read_s\": %.3f}\n",
      dtype.c_str(), static_cast<long long>(params), read_s, load_s, load_s - read_s);
  return 0;
}
