#include "server/model/safetensors.h"

#include <gtest/gtest.h>

#include <cstring>
#include <string>

#include "tests/support/test_util.h"

namespace loracle::model {
namespace {

// 135-byte header, then tensor "a" (F32 [2] = 1.0, -2.5) and "b" (I32 [1,1] = 7), laid out by
// hand from the format's description, not by our writer.
std::string HandWrittenFile() {
  const std::string header =
      R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"b":{"dtype":"I32","shape":[1,1],"data_offsets":[8,12]},"__metadata__":{"k":"v"}})";
  std::string bytes("\x87\x00\x00\x00\x00\x00\x00\x00", 8);  // 135, little-endian u64
  bytes += header;
  bytes += std::string("\x00\x00\x80\x3f", 4);  // 1.0f
  bytes += std::string("\x00\x00\x20\xc0", 4);  // -2.5f
  bytes += std::string("\x07\x00\x00\x00", 4);  // 7
  return bytes;
}

TEST(SafetensorsTest, ReadsAFileWrittenByteByByte) {
  testing::TempDir tmp;
  testing::WriteFile(tmp / "x.safetensors", HandWrittenFile());
  auto file = SafetensorsFile::Open(tmp / "x.safetensors");
  ASSERT_TRUE(file.ok()) << file.status();
  EXPECT_EQ((*file)->names(), (std::vector<std::string>{"a", "b"}));
  EXPECT_EQ((*file)->metadata().at("k"), "v");
  auto a = (*file)->Get("a");
  ASSERT_TRUE(a.ok());
  EXPECT_EQ(a->dtype, DType::kF32);
  EXPECT_EQ(a->shape, (std::vector<int64_t>{2}));
  float values[2];
  std::memcpy(values, a->data, sizeof(values));
  EXPECT_EQ(values[0], 1.0f);
  EXPECT_EQ(values[1], -2.5f);
  auto b = (*file)->Get("b");
  ASSERT_TRUE(b.ok());
  EXPECT_EQ(b->dtype, DType::kI32);
  EXPECT_EQ(b->shape, (std::vector<int64_t>{1, 1}));
  int32_t seven;
  std::memcpy(&seven, b->data, 4);
  EXPECT_EQ(seven, 7);
}

TEST(SafetensorsTest, WriterProducesWhatTheReaderReads) {
  const std::vector<uint16_t> half = {0x3c00, 0xc000, 0x0000};  // 1, -2, 0 in F16
  const std::vector<double> f64 = {3.25};
  std::vector<TensorToWrite> tensors = {
      {"h", DType::kF16, {3}, {reinterpret_cast<const uint8_t*>(half.data()), 6}},
      {"d", DType::kF64, {1, 1, 1}, {reinterpret_cast<const uint8_t*>(f64.data()), 8}},
      {"empty", DType::kF32, {0, 4}, {}},
  };
  auto bytes = SerializeSafetensors(tensors, {{"format", "pt"}});
  ASSERT_TRUE(bytes.ok()) << bytes.status();
  uint64_t n = 0;
  std::memcpy(&n, bytes->data(), 8);
  EXPECT_EQ(n % 8, 0u) << "header is padded to 8 bytes";
  auto file = SafetensorsFile::FromBytes(*bytes, "mem");
  ASSERT_TRUE(file.ok()) << file.status();
  auto h = (*file)->Get("h");
  ASSERT_TRUE(h.ok());
  EXPECT_EQ(std::memcmp(h->data, half.data(), 6), 0);
  auto d = (*file)->Get("d");
  ASSERT_TRUE(d.ok());
  EXPECT_EQ(d->shape, (std::vector<int64_t>{1, 1, 1}));
  EXPECT_EQ((*file)->Get("empty")->nbytes, 0u);
  EXPECT_EQ((*file)->metadata().at("format"), "pt");
}

TEST(SafetensorsTest, TruncatedFileIsDataLossNamingTheTensor) {
  std::string bytes = HandWrittenFile();
  bytes.resize(bytes.size() - 3);
  auto file = SafetensorsFile::FromBytes(bytes, "cut.safetensors");
  ASSERT_FALSE(file.ok());
  EXPECT_EQ(file.status().code(), absl::StatusCode::kDataLoss);
  EXPECT_NE(file.status().message().find("tensor \"b\""), std::string::npos) << file.status();
  EXPECT_NE(file.status().message().find("cut.safetensors"), std::string::npos);
}

TEST(SafetensorsTest, HeaderLengthPastEndIsDataLoss) {
  std::string bytes = HandWrittenFile();
  bytes[0] = '\xff';  // claims a 255-byte header
  bytes.resize(8 + 100);
  auto file = SafetensorsFile::FromBytes(bytes, "x");
  ASSERT_FALSE(file.ok());
  EXPECT_EQ(file.status().code(), absl::StatusCode::kDataLoss);
  EXPECT_NE(file.status().message().find("past the end"), std::string::npos) << file.status();
}

TEST(SafetensorsTest, FileShorterThanLengthPrefixIsDataLoss) {
  auto file = SafetensorsFile::FromBytes("abc", "tiny");
  ASSERT_FALSE(file.ok());
  EXPECT_EQ(file.status().code(), absl::StatusCode::kDataLoss);
}

TEST(SafetensorsTest, RejectsMismatchedShapeOverlapHoleAndBadJson) {
  auto make = [](const std::string& header, size_t data_bytes) {
    std::string h = header;
    std::string bytes(8, '\0');
    uint64_t n = h.size();
    std::memcpy(bytes.data(), &n, 8);
    return bytes + h + std::string(data_bytes, '\0');
  };
  struct Case {
    std::string header;
    size_t data;
    const char* expect;
  } cases[] = {
      {R"({"a":{"dtype":"F32","shape":[3],"data_offsets":[0,8]}})", 8, "need 12"},
      {R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"b":{"dtype":"F32","shape":[2],"data_offsets":[4,12]}})",
       12, "overlaps"},
      {R"({"a":{"dtype":"F32","shape":[1],"data_offsets":[4,8]}})", 8, "hole"},
      {R"({"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}})", 8, "trailing"},
      {R"({"a":{"dtype":"Q4","shape":[1],"data_offsets":[0,4]}})", 4, "unsupported dtype"},
      {R"({"a":{"dtype":"F32","shape":[-1],"data_offsets":[0,4]}})", 4, "non-negative"},
      {R"({"a": nonsense)", 0, "not valid JSON"},
  };
  for (const Case& c : cases) {
    auto file = SafetensorsFile::FromBytes(make(c.header, c.data), "case");
    ASSERT_FALSE(file.ok()) << c.header;
    EXPECT_EQ(file.status().code(), absl::StatusCode::kDataLoss) << c.header;
    EXPECT_NE(file.status().message().find(c.expect), std::string::npos)
        << c.header << " -> " << file.status();
  }
}

TEST(SafetensorsTest, MissingTensorAndMissingFileAreNotFound) {
  auto file = SafetensorsFile::FromBytes(HandWrittenFile(), "x");
  ASSERT_TRUE(file.ok());
  EXPECT_EQ((*file)->Get("nope").status().code(), absl::StatusCode::kNotFound);
  EXPECT_EQ(SafetensorsFile::Open("/nonexistent/model.safetensors").status().code(),
            absl::StatusCode::kNotFound);
}

TEST(SafetensorsTest, WriterRejectsSizeMismatchAndDuplicates) {
  const float f[2] = {1, 2};
  const absl::Span<const uint8_t> bytes(reinterpret_cast<const uint8_t*>(f), 8);
  EXPECT_EQ(SerializeSafetensors({{"a", DType::kF32, {3}, bytes}}, {}).status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(
      SerializeSafetensors({{"a", DType::kF32, {2}, bytes}, {"a", DType::kF32, {2}, bytes}}, {})
          .status()
          .code(),
      absl::StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace loracle::model
