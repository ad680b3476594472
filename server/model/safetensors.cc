#include "server/model/safetensors.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <limits>
#include <set>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "nlohmann/json.hpp"
#include "server/util/file_util.h"

namespace loracle::model {
namespace {

using json = nlohmann::json;

// The format caps the header at 100 MB to bound memory on hostile files.
constexpr uint64_t kMaxHeaderSize = 100'000'000;

struct DTypeInfo {
  DType dtype;
  const char* name;
  size_t size;
};
constexpr DTypeInfo kDTypes[] = {
    {DType::kBool, "BOOL", 1}, {DType::kU8, "U8", 1},     {DType::kI8, "I8", 1},
    {DType::kI16, "I16", 2},   {DType::kI32, "I32", 4},   {DType::kI64, "I64", 8},
    {DType::kF16, "F16", 2},   {DType::kBF16, "BF16", 2}, {DType::kF32, "F32", 4},
    {DType::kF64, "F64", 8},
};

}  // namespace

size_t DTypeSize(DType dtype) {
  for (const auto& d : kDTypes)
    if (d.dtype == dtype) return d.size;
  return 0;
}

absl::string_view DTypeName(DType dtype) {
  for (const auto& d : kDTypes)
    if (d.dtype == dtype) return d.name;
  return "?";
}

absl::StatusOr<DType> ParseDType(absl::string_view name) {
  for (const auto& d : kDTypes)
    if (name == d.name) return d.dtype;
  return absl::InvalidArgumentError(absl::StrCat("unsupported dtype \"", name, "\""));
}

int64_t TensorView::numel() const {
  int64_t n = 1;
  for (int64_t d : shape) n *= d;
  return n;
}

SafetensorsFile::~SafetensorsFile() {
  if (mapping_ != nullptr) ::munmap(mapping_, size_);
}

absl::StatusOr<std::unique_ptr<SafetensorsFile>> SafetensorsFile::Open(const std::string& path) {
  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) {
    if (errno == ENOENT) return absl::NotFoundError(absl::StrCat(path, ": no such file"));
    return absl::InternalError(absl::StrCat(path, ": ", std::strerror(errno)));
  }
  struct stat st;
  if (::fstat(fd, &st) != 0) {
    const int err = errno;
    ::close(fd);
    return absl::InternalError(absl::StrCat(path, ": fstat: ", std::strerror(err)));
  }
  std::unique_ptr<SafetensorsFile> file(new SafetensorsFile());
  file->source_ = path;
  file->size_ = static_cast<size_t>(st.st_size);
  if (file->size_ > 0) {
    void* m = ::mmap(nullptr, file->size_, PROT_READ, MAP_PRIVATE, fd, 0);
    if (m == MAP_FAILED) {
      const int err = errno;
      ::close(fd);
      return absl::InternalError(absl::StrCat(path, ": mmap: ", std::strerror(err)));
    }
    file->mapping_ = m;
    file->base_ = static_cast<const uint8_t*>(m);
  }
  ::close(fd);
  if (absl::Status s = file->Parse(); !s.ok()) return s;
  return file;
}

absl::StatusOr<std::unique_ptr<SafetensorsFile>> SafetensorsFile::FromBytes(std::string bytes,
                                                                            std::string source) {
  std::unique_ptr<SafetensorsFile> file(new SafetensorsFile());
  file->source_ = std::move(source);
  file->owned_ = std::move(bytes);
  file->base_ = reinterpret_cast<const uint8_t*>(file->owned_.data());
  file->size_ = file->owned_.size();
  if (absl::Status s = file->Parse(); !s.ok()) return s;
  return file;
}

absl::Status SafetensorsFile::Parse() {
  auto corrupt = [this](absl::string_view what) {
    return absl::DataLossError(absl::StrCat(source_, ": corrupt safetensors file: ", what));
  };
  if (size_ < 8) {
    return corrupt(absl::StrCat("file is ", size_, " bytes, shorter than the 8-byte header size"));
  }
  uint64_t n = 0;
  for (int i = 7; i >= 0; --i) n = (n << 8) | base_[i];  // little-endian
  if (n > kMaxHeaderSize) {
    return corrupt(
        absl::StrCat("header size ", n, " exceeds the format's limit of ", kMaxHeaderSize));
  }
  if (n > size_ - 8) {
    return corrupt(absl::StrCat("header size ", n, " runs past the end of the file (", size_,
                                " bytes): truncated?"));
  }
  const char* header = reinterpret_cast<const char*>(base_ + 8);
  if (n == 0 || header[0] != '{') return corrupt("header is not a JSON object");
  json j = json::parse(header, header + n, nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded() || !j.is_object()) return corrupt("header is not valid JSON");
  const uint8_t* buffer = base_ + 8 + n;
  const uint64_t buffer_size = size_ - 8 - n;

  std::vector<std::pair<uint64_t, uint64_t>> ranges;
  for (auto it = j.begin(); it != j.end(); ++it) {
    const std::string& name = it.key();
    if (name == "__metadata__") {
      if (!it->is_object()) return corrupt("__metadata__ must be an object");
      for (auto m = it->begin(); m != it->end(); ++m) {
        if (!m->is_string())
          return corrupt(absl::StrCat("__metadata__[", m.key(), "] is not a string"));
        metadata_[m.key()] = m->get<std::string>();
      }
      continue;
    }
    const json& e = *it;
    auto bad = [&](absl::string_view what) {
      return corrupt(absl::StrCat("tensor \"", name, "\": ", what));
    };
    if (!e.is_object()) return bad("entry is not an object");
    auto dt = e.find("dtype");
    auto sh = e.find("shape");
    auto off = e.find("data_offsets");
    if (dt == e.end() || !dt->is_string()) return bad("missing string \"dtype\"");
    if (sh == e.end() || !sh->is_array()) return bad("missing array \"shape\"");
    if (off == e.end() || !off->is_array() || off->size() != 2) {
      return bad("\"data_offsets\" must be [begin, end]");
    }
    absl::StatusOr<DType> dtype = ParseDType(dt->get<std::string>());
    if (!dtype.ok()) return bad(dtype.status().message());
    TensorView view;
    view.dtype = *dtype;
    uint64_t numel = 1;
    for (const json& d : *sh) {
      if (!d.is_number_unsigned()) return bad("shape entries must be non-negative integers");
      const uint64_t v = d.get<uint64_t>();
      if (v != 0 && numel > std::numeric_limits<uint64_t>::max() / 16 / v) {
        return bad("shape overflows");
      }
      numel *= v;
      view.shape.push_back(static_cast<int64_t>(v));
    }
    if (!(*off)[0].is_number_unsigned() || !(*off)[1].is_number_unsigned()) {
      return bad("data_offsets must be non-negative integers");
    }
    const uint64_t begin = (*off)[0].get<uint64_t>();
    const uint64_t end = (*off)[1].get<uint64_t>();
    if (begin > end) return bad(absl::StrCat("data_offsets [", begin, ", ", end, "] are reversed"));
    if (end > buffer_size) {
      return bad(absl::StrCat("data_offsets end ", end, " is past the data buffer (", buffer_size,
                              " bytes): truncated file?"));
    }
    const uint64_t expected = numel * DTypeSize(view.dtype);
    if (end - begin != expected) {
      return bad(absl::StrCat("holds ", end - begin, " bytes but dtype ", DTypeName(view.dtype),
                              " and shape [", absl::StrJoin(view.shape, ", "), "] need ",
                              expected));
    }
    view.data = buffer + begin;
    view.nbytes = static_cast<size_t>(end - begin);
    tensors_.emplace(name, std::move(view));
    ranges.emplace_back(begin, end);
  }
  // The buffer must be covered exactly: sorted ranges are contiguous from 0 to its end.
  std::vector<std::pair<uint64_t, std::string>> order;
  for (const auto& [name, view] : tensors_) {
    order.emplace_back(static_cast<uint64_t>(view.data - buffer), name);
  }
  std::sort(ranges.begin(), ranges.end());
  std::sort(order.begin(), order.end());
  uint64_t cursor = 0;
  for (const auto& [begin, end] : ranges) {
    if (begin != cursor) {
      return corrupt(begin < cursor ? absl::StrCat("tensor data overlaps at byte ", begin)
                                    : absl::StrCat("hole in the data buffer at bytes [", cursor,
                                                   ", ", begin, ")"));
    }
    cursor = end;
  }
  if (cursor != buffer_size) {
    return corrupt(absl::StrCat(buffer_size - cursor,
                                " trailing bytes after the last tensor in the data buffer"));
  }
  for (auto& [offset, name] : order) names_.push_back(std::move(name));
  return absl::OkStatus();
}

absl::StatusOr<TensorView> SafetensorsFile::Get(const std::string& name) const {
  auto it = tensors_.find(name);
  if (it == tensors_.end()) {
    return absl::NotFoundError(absl::StrCat(source_, ": no tensor named \"", name, "\""));
  }
  return it->second;
}

absl::StatusOr<std::string> SerializeSafetensors(
    const std::vector<TensorToWrite>& tensors, const std::map<std::string, std::string>& metadata) {
  json header = json::object();
  if (!metadata.empty()) header["__metadata__"] = metadata;
  std::set<std::string> seen;
  uint64_t offset = 0;
  for (const TensorToWrite& t : tensors) {
    if (t.name.empty() || t.name == "__metadata__" || !seen.insert(t.name).second) {
      return absl::InvalidArgumentError(
          absl::StrCat("bad or duplicate tensor name \"", t.name, "\""));
    }
    uint64_t numel = 1;
    for (int64_t d : t.shape) {
      if (d < 0) return absl::InvalidArgumentError(absl::StrCat(t.name, ": negative dimension"));
      numel *= static_cast<uint64_t>(d);
    }
    if (numel * DTypeSize(t.dtype) != t.data.size()) {
      return absl::InvalidArgumentError(
          absl::StrCat(t.name, ": ", t.data.size(), " bytes do not match shape and dtype"));
    }
    header[t.name] = {{"dtype", std::string(DTypeName(t.dtype))},
                      {"shape", t.shape},
                      {"data_offsets", {offset, offset + t.data.size()}}};
    offset += t.data.size();
  }
  std::string h = header.dump();
  h.append((8 - h.size() % 8) % 8, ' ');
  std::string out;
  out.reserve(8 + h.size() + offset);
  uint64_t n = h.size();
  for (int i = 0; i < 8; ++i) out.push_back(static_cast<char>((n >> (8 * i)) & 0xff));
  out += h;
  for (const TensorToWrite& t : tensors) {
    out.append(reinterpret_cast<const char*>(t.data.data()), t.data.size());
  }
  return out;
}

absl::Status WriteSafetensors(const std::string& path, const std::vector<TensorToWrite>& tensors,
                              const std::map<std::string, std::string>& metadata) {
  absl::StatusOr<std::string> bytes = SerializeSafetensors(tensors, metadata);
  if (!bytes.ok()) return bytes.status();
  return util::WriteFileAtomically(path, *bytes);
}

namespace {

// IEEE binary16 / bfloat16 bits of `f`, rounded to nearest even.
uint16_t ToHalf(float f) {
  uint32_t x;
  std::memcpy(&x, &f, 4);
  const uint32_t sign = (x >> 16) & 0x8000u;
  const uint32_t abs = x & 0x7FFFFFFFu;
  if (abs >= 0x7F800000u)
    return static_cast<uint16_t>(sign | (abs > 0x7F800000u ? 0x7E00u : 0x7C00u));
  if (abs >= 0x477FF000u) return static_cast<uint16_t>(sign | 0x7C00u);  // overflows to inf
  if (abs < 0x38800000u) {  // subnormal half (or zero): scale the float's value by 2^24
    float a;
    std::memcpy(&a, &abs, 4);
    return static_cast<uint16_t>(sign | static_cast<uint32_t>(std::nearbyint(a * 16777216.0f)));
  }
  const uint32_t mant = abs & 0x7FFFFFu;
  uint32_t h = ((abs >> 23) - 112) << 10 | (mant >> 13);
  const uint32_t rest = mant & 0x1FFFu;
  if (rest > 0x1000u || (rest == 0x1000u && (h & 1u))) ++h;  // may carry into the exponent: fine
  return static_cast<uint16_t>(sign | h);
}
uint16_t ToBFloat16(float f) {
  uint32_t x;
  std::memcpy(&x, &f, 4);
  if ((x & 0x7FFFFFFFu) > 0x7F800000u) return static_cast<uint16_t>((x >> 16) | 0x40u);  // NaN
  x += 0x7FFFu + ((x >> 16) & 1u);
  return static_cast<uint16_t>(x >> 16);
}

}  // namespace

std::vector<uint8_t> EncodeFloats(const std::vector<float>& values, DType dtype) {
  std::vector<uint8_t> out;
  if (dtype == DType::kF32) {
    out.resize(values.size() * 4);
    std::memcpy(out.data(), values.data(), out.size());
    return out;
  }
  std::vector<uint16_t> half(values.size());
  for (size_t i = 0; i < values.size(); ++i) {
    half[i] = dtype == DType::kF16 ? ToHalf(values[i]) : ToBFloat16(values[i]);
  }
  out.resize(half.size() * 2);
  std::memcpy(out.data(), half.data(), out.size());
  return out;
}

}  // namespace loracle::model
