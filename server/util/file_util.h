#ifndef LORACLE_SERVER_UTIL_FILE_UTIL_H_
#define LORACLE_SERVER_UTIL_FILE_UTIL_H_

#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace loracle::util {

// `what: strerror(err)` with the canonical code for errno `err`: NOT_FOUND (ENOENT),
// PERMISSION_DENIED (EACCES, EPERM), RESOURCE_EXHAUSTED (ENOSPC, EDQUOT, EFBIG), else INTERNAL.
absl::Status ErrnoStatus(int err, absl::string_view what);

// Reads a whole file. NOT_FOUND / PERMISSION_DENIED / INTERNAL from errno, naming the path.
absl::StatusOr<std::string> ReadFileToString(const std::string& path);

// Writes `contents` to `path` via a temporary file in the same folder, fsync and rename, so
// readers see the old file or the new one, never a torn one.
absl::Status WriteFileAtomically(const std::string& path, absl::string_view contents);

// mkdir -p.
absl::Status MakeDirs(const std::string& path);

// rm -rf; OK when `path` does not exist.
absl::Status RemoveTree(const std::string& path);

// fsyncs a directory so a rename inside it is durable.
absl::Status FsyncDir(const std::string& path);

// Names of the entries of `dir` (no "." or ".."), sorted. NOT_FOUND when missing.
absl::StatusOr<std::vector<std::string>> ListDir(const std::string& dir);

bool IsDirectory(const std::string& path);
bool FileExists(const std::string& path);
// The latest mtime (and ctime, with `ctime`) of `path` and everything under it, in nanoseconds
// since the epoch (symlinks not followed); 0 when nothing can be read.
int64_t NewestChangeNanos(const std::string& path, bool ctime = true);

// A fresh, empty directory under $TMPDIR (or /tmp) whose name starts with `prefix`.
absl::StatusOr<std::string> MakeTempDir(absl::string_view prefix);

}  // namespace loracle::util

#endif  // LORACLE_SERVER_UTIL_FILE_UTIL_H_
