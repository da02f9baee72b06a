#include "cas/anchor.h"

#include <unistd.h>

#include "attest/las.h"

namespace scone::cas {
namespace {

class LasBacked : public Anchor {
 public:
  explicit LasBacked(std::string socket_path) : socket_path_(std::move(socket_path)) {}
  Result<SecretBytes> SealingKey(const std::string& label) override {
    return attest::RequestSealingKey(socket_path_, label);
  }
  Result<uint64_t> AdvanceCounter(const std::string& name, uint64_t at_least) override {
    return attest::RequestCounter(socket_path_, name, at_least);
  }
  std::string Where() const override { return "LAS at " + socket_path_; }

 private:
  std::string socket_path_;
};

class InProcess : public Anchor {
 public:
  explicit InProcess(const attest::Platform* platform) : platform_(platform) {}
  Result<SecretBytes> SealingKey(const std::string& label) override {
    return platform_->SealingKey(geteuid(), label);
  }
  Result<uint64_t> AdvanceCounter(const std::string& name, uint64_t at_least) override {
    return platform_->AdvanceCounter(geteuid(), name, at_least);
  }
  std::string Where() const override { return "the platform in this process"; }

 private:
  const attest::Platform* platform_;
};

}  // namespace

std::shared_ptr<Anchor> LasAnchor(const std::string& socket_path) {
  return std::make_shared<LasBacked>(socket_path);
}

std::shared_ptr<Anchor> PlatformAnchor(const attest::Platform* platform) {
  return std::make_shared<InProcess>(platform);
}

}  // namespace scone::cas
