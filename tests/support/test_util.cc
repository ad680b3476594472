#include "tests/support/test_util.h"

#include <arpa/inet.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <random>
#include <sstream>

#include "absl/strings/str_join.h"
#include "server/model/default_model.h"
#include "server/text/tokenizer_files.h"
#include "server/util/file_util.h"

namespace loracle::testing {

TempDir::TempDir() {
  absl::StatusOr<std::string> dir = util::MakeTempDir("loracle-test-");
  EXPECT_TRUE(dir.ok()) << dir.status();
  path_ = dir.ok() ? *dir : "/tmp/loracle-test-fallback";
}

TempDir::~TempDir() { util::RemoveTree(path_).IgnoreError(); }

std::string TinyVocab() {
  std::vector<std::string> v = {"[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"};
  for (const char* w :
       {"the",   "a",   "free",   "money", "meeting", "please", "review", "invoice", "hello",
        "world", "un",  "##want", "##ed",  "runn",    "##ing",  "want",   "cafe",    "naive",
        "good",  "bad", "movie",  "mail",  "you",     "win",    "now"}) {
    v.push_back(w);
  }
  for (const char* p : {"!", ",", ".", "?", "'", "-", "(", ")", "\xe4\xb8\xad", "\xe6\x96\x87"}) {
    v.push_back(p);
  }
  for (char c = 'a'; c <= 'z'; ++c) {
    if (std::find(v.begin(), v.end(), std::string(1, c)) == v.end()) v.push_back(std::string(1, c));
    v.push_back("##" + std::string(1, c));
  }
  return absl::StrJoin(v, "\n") + "\n";
}

model::ModelConfig ConfigOfShape(const std::string& model_type, int64_t hidden, int64_t layers,
                                 int64_t heads, int64_t intermediate) {
  model::ModelConfig c;
  c.model_type = model_type;
  c.hidden_size = hidden;
  c.num_hidden_layers = layers;
  c.num_attention_heads = heads;
  c.intermediate_size = intermediate;
  return c;
}

model::ModelConfig TinyConfig() {
  model::ModelConfig c = ConfigOfShape("bert", 32, 2, 2, 64);
  const std::string vocab = TinyVocab();
  c.vocab_size = static_cast<int64_t>(std::count(vocab.begin(), vocab.end(), '\n'));
  c.max_position_embeddings = 64;
  return c;
}

void WriteTinyModel(const std::string& dir, uint64_t seed) {
  absl::Status s = model::WriteRandomBertCheckpoint(dir, TinyConfig(), TinyVocab(), seed);
  ASSERT_TRUE(s.ok()) << s;
}

std::vector<std::pair<std::string, int>> SpamHamTexts(int n, uint64_t seed) {
  const std::vector<std::string> spam = {"free", "money", "win", "now", "!"};
  const std::vector<std::string> ham = {"meeting", "please", "review", "invoice", "hello"};
  std::mt19937 rng(static_cast<uint32_t>(seed));
  std::vector<std::pair<std::string, int>> out;
  for (int i = 0; i < n; ++i) {
    const int label = i % 2;
    const auto& words = label == 1 ? spam : ham;
    std::string text = "the mail";
    for (int w = 0; w < 4; ++w) text += " " + words[rng() % words.size()];
    out.emplace_back(std::move(text), label);
  }
  return out;
}

adapters::RandomAdapterSpec TinyAdapterSpec(std::vector<std::string> labels, int members,
                                            uint64_t seed) {
  adapters::RandomAdapterSpec spec;
  spec.serving.labels = std::move(labels);
  spec.serving.members = members;
  spec.lora.rank = 4;
  spec.lora.lora_alpha = 8;
  spec.lora.target_modules = {"query", "value"};
  spec.lora_std = 0.2f;
  spec.seed = seed;
  return spec;
}

model::ModelConfig WriteFixtureModel(const std::string& dir, model::ModelConfig c,
                                     const std::string& tokenizer, int64_t positions,
                                     const CheckpointLayout& layout, uint64_t seed) {
  namespace fs = std::filesystem;
  fs::create_directories(dir);
  for (const auto& e : fs::directory_iterator(std::string(LORACLE_SOURCE_DIR) +
                                              "/tests/data/tokenizers/" + tokenizer)) {
    fs::copy_file(e.path(), dir + "/" + e.path().filename().string());
  }
  int max_length = 1 << 20;
  auto tok = text::LoadTokenizer(dir, &max_length);
  EXPECT_TRUE(tok.ok()) << tok.status();
  if (!tok.ok()) return c;
  c.vocab_size = (*tok)->vocab_size();
  c.pad_token_id = (*tok)->pad_id();
  c.max_position_embeddings = positions + c.position_offset();
  c.type_vocab_size = c.model_type == "bert" ? 2 : c.model_type == "roberta" ? 1 : 0;
  absl::Status s = WriteRandomCheckpoint(dir, c, seed, layout);
  EXPECT_TRUE(s.ok()) << s;
  return c;
}

std::string ReadFile(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::ostringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

void WriteFile(const std::string& path, const std::string& contents) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out << contents;
}

std::string HttpGet(int port, const std::string& path) {
  const int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(static_cast<uint16_t>(port));
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (::connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) != 0) {
    ::close(fd);
    return "";
  }
  const std::string req = "GET " + path + " HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n";
  ::send(fd, req.data(), req.size(), MSG_NOSIGNAL);
  std::string out;
  char buf[4096];
  for (ssize_t n; (n = ::recv(fd, buf, sizeof(buf), 0)) > 0;)
    out.append(buf, static_cast<size_t>(n));
  ::close(fd);
  return out;
}

int FreePort() {
  const int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  ::bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr));
  socklen_t len = sizeof(addr);
  ::getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len);
  ::close(fd);
  return ntohs(addr.sin_port);
}

}  // namespace loracle::testing
