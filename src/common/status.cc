#include "common/status.h"

#include <cstring>

namespace scone {

Status IoError(const std::string& what, int sys_errno) {
  return Status(Code::kIoError, what + ": " + std::strerror(sys_errno), sys_errno);
}

int Status::ToErrno() const {
  switch (code_) {
    case Code::kOk:
      return 0;
    case Code::kInvalidArgument:
      return EINVAL;
    case Code::kNotFound:
      return ENOENT;
    case Code::kAlreadyExists:
      return EEXIST;
    case Code::kPermissionDenied:
      return EACCES;
    case Code::kDataCorrupted:
    case Code::kRolledBack:
      return EIO;  // a program must never see unauthenticated data: the read fails
    case Code::kUnsupported:
      return sys_errno_ != 0 ? sys_errno_ : ENOTSUP;
    case Code::kIoError:
      return sys_errno_ != 0 ? sys_errno_ : EIO;
    case Code::kInternal:
      return EIO;
    case Code::kTooLarge:
      return EFBIG;
  }
  return EIO;
}

}  // namespace scone
