// A working directory for one image operation (build contexts, exported file systems), 0700
// under $TMPDIR, removed with everything in it when the object goes away.
#pragma once

#include <string>

#include "common/status.h"

namespace scone::image {

class TempDir {
 public:
  static Result<TempDir> Create(const std::string& prefix);
  ~TempDir();
  TempDir(TempDir&& other) noexcept : path_(std::move(other.path_)) { other.path_.clear(); }
  TempDir& operator=(TempDir&&) = delete;
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;

  const std::string& path() const { return path_; }

 private:
  explicit TempDir(std::string path) : path_(std::move(path)) {}
  std::string path_;
};

}  // namespace scone::image
