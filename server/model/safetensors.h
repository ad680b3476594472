#ifndef LORACLE_SERVER_MODEL_SAFETENSORS_H_
#define LORACLE_SERVER_MODEL_SAFETENSORS_H_

// A reader and writer for the safetensors format, without torch:
//   8 bytes  little-endian u64 N (header size)
//   N bytes  UTF-8 JSON object: name -> {"dtype", "shape", "data_offsets": [begin, end]},
//            plus an optional "__metadata__" string->string map; may be padded with spaces
//   rest     the byte buffer; offsets are relative to its start, must not overlap and must
//            cover it without holes.
// Every rule is checked on open; violations are DATA_LOSS naming the file and tensor.

#include <cstddef>
#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/types/span.h"

namespace loracle::model {

enum class DType { kBool, kU8, kI8, kI16, kI32, kI64, kF16, kBF16, kF32, kF64 };

// Bytes per element; the format's name ("F32", ...).
size_t DTypeSize(DType dtype);
absl::string_view DTypeName(DType dtype);
absl::StatusOr<DType> ParseDType(absl::string_view name);

// A tensor inside an open file. `data` stays valid while the SafetensorsFile lives; it may be
// unaligned.
struct TensorView {
  DType dtype = DType::kF32;
  std::vector<int64_t> shape;
  const uint8_t* data = nullptr;
  size_t nbytes = 0;
  int64_t numel() const;
};

class SafetensorsFile {
 public:
  // Memory-maps `path` read-only. NOT_FOUND when missing; DATA_LOSS when malformed.
  static absl::StatusOr<std::unique_ptr<SafetensorsFile>> Open(const std::string& path);
  // Parses an in-memory copy (used for tests and small files). `source` names it in errors.
  static absl::StatusOr<std::unique_ptr<SafetensorsFile>> FromBytes(std::string bytes,
                                                                    std::string source);
  ~SafetensorsFile();
  SafetensorsFile(const SafetensorsFile&) = delete;
  SafetensorsFile& operator=(const SafetensorsFile&) = delete;

  // Tensor names in ascending order of their data offsets.
  const std::vector<std::string>& names() const { return names_; }
  bool Contains(const std::string& name) const { return tensors_.count(name) > 0; }
  // NOT_FOUND naming the tensor and the file.
  absl::StatusOr<TensorView> Get(const std::string& name) const;
  const std::map<std::string, std::string>& metadata() const { return metadata_; }
  const std::string& source() const { return source_; }

 private:
  SafetensorsFile() = default;
  absl::Status Parse();

  std::string source_;
  const uint8_t* base_ = nullptr;  // whole file
  size_t size_ = 0;
  void* mapping_ = nullptr;  // owned mmap, or null when `owned_` holds the bytes
  std::string owned_;
  std::map<std::string, TensorView> tensors_;
  std::vector<std::string> names_;
  std::map<std::string, std::string> metadata_;
};

// A tensor to write; `data` must hold numel * DTypeSize(dtype) bytes in row-major order.
struct TensorToWrite {
  std::string name;
  DType dtype = DType::kF32;
  std::vector<int64_t> shape;
  absl::Span<const uint8_t> data;
};

// The file's bytes: tensors in the given order, header padded with spaces to a multiple of 8.
// INVALID_ARGUMENT on duplicate names or a data size that does not match the shape.
absl::StatusOr<std::string> SerializeSafetensors(
    const std::vector<TensorToWrite>& tensors, const std::map<std::string, std::string>& metadata);

// Serializes and writes atomically (temporary file, fsync, rename).
absl::Status WriteSafetensors(const std::string& path, const std::vector<TensorToWrite>& tensors,
                              const std::map<std::string, std::string>& metadata = {});

// `values` as little-endian F32, F16 or BF16 bytes (the halves rounded to nearest even).
std::vector<uint8_t> EncodeFloats(const std::vector<float>& values, DType dtype);

}  // namespace loracle::model

#endif  // LORACLE_SERVER_MODEL_SAFETENSORS_H_
