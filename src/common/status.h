// Errors as values: every fallible call in libscone returns a Status or a Result<T>.
//
// A Status carries a code (what kind of failure, so callers can map it to an errno, an exit code
// or an HTTP status in one place each) and a message that names what failed and where. The
// message is for people: it never contains key material or plaintext.
#pragma once

#include <cerrno>
#include <string>
#include <utility>
#include <variant>

namespace scone {

enum class Code {
  kOk = 0,
  kInvalidArgument,   // the caller's input is malformed
  kNotFound,          // a named object does not exist
  kAlreadyExists,     // creating something that exists
  kPermissionDenied,  // wrong key, refused by policy
  kDataCorrupted,     // integrity check failed: tampered, damaged or foreign data
  kRolledBack,        // authentic but older than the trusted state
  kUnsupported,       // valid request we do not serve
  kIoError,           // the OS call failed (errno kept)
  kInternal,          // a broken invariant of our own
  kTooLarge,          // a size or offset past what the object can hold (EFBIG)
};

class [[nodiscard]] Status {
 public:
  Status() = default;
  Status(Code code, std::string message, int sys_errno = 0)
      : code_(code), sys_errno_(sys_errno), message_(std::move(message)) {}

  static Status Ok() { return Status(); }

  bool ok() const { return code_ == Code::kOk; }
  Code code() const { return code_; }
  // errno of the failed OS call for kIoError, 0 otherwise.
  int sys_errno() const { return sys_errno_; }
  const std::string& message() const { return message_; }

  // The errno a C library call should fail with for this status.
  int ToErrno() const;

  // Prefixes the message with context ("volume /data: " + message), keeping code and errno.
  Status Annotate(const std::string& context) const {
    if (ok()) return *this;
    return Status(code_, context + ": " + message_, sys_errno_);
  }

 private:
  Code code_ = Code::kOk;
  int sys_errno_ = 0;
  std::string message_;
};

inline Status InvalidArgument(std::string m) { return {Code::kInvalidArgument, std::move(m)}; }
inline Status NotFound(std::string m) { return {Code::kNotFound, std::move(m), ENOENT}; }
inline Status AlreadyExists(std::string m) { return {Code::kAlreadyExists, std::move(m), EEXIST}; }
inline Status PermissionDenied(std::string m) { return {Code::kPermissionDenied, std::move(m)}; }
inline Status DataCorrupted(std::string m) { return {Code::kDataCorrupted, std::move(m)}; }
inline Status RolledBack(std::string m) { return {Code::kRolledBack, std::move(m)}; }
inline Status Unsupported(std::string m) { return {Code::kUnsupported, std::move(m)}; }
inline Status Internal(std::string m) { return {Code::kInternal, std::move(m)}; }
inline Status TooLarge(std::string m) { return {Code::kTooLarge, std::move(m), EFBIG}; }
// An OS call failed: the message names the call and the object; errno is kept for callers.
Status IoError(const std::string& what, int sys_errno);

// A value or the Status that explains why there is none.
template <typename T>
class [[nodiscard]] Result {
 public:
  Result(T value) : v_(std::move(value)) {}  // NOLINT: implicit by design, like std::expected
  Result(Status status) : v_(std::move(status)) {}  // NOLINT
  Result(Code code, std::string message) : v_(Status(code, std::move(message))) {}

  bool ok() const { return std::holds_alternative<T>(v_); }
  explicit operator bool() const { return ok(); }

  // REQUIRES: ok().
  T& value() & { return std::get<T>(v_); }
  const T& value() const& { return std::get<T>(v_); }
  T&& value() && { return std::get<T>(std::move(v_)); }
  T& operator*() & { return value(); }
  const T& operator*() const& { return value(); }
  T* operator->() { return &value(); }
  const T* operator->() const { return &value(); }

  // OK when a value is held.
  Status status() const { return ok() ? Status::Ok() : std::get<Status>(v_); }

 private:
  std::variant<T, Status> v_;
};

}  // namespace scone

#define SCONE_CONCAT_INNER(a, b) a##b
#define SCONE_CONCAT(a, b) SCONE_CONCAT_INNER(a, b)

// Returns the Status from the enclosing function when `expr` is not OK.
#define SCONE_RETURN_IF_ERROR(expr)            \
  do {                                         \
    ::scone::Status scone_status_ = (expr);    \
    if (!scone_status_.ok()) return scone_status_; \
  } while (0)

// `SCONE_ASSIGN_OR_RETURN(auto x, Foo());` declares x from a Result or returns its Status.
#define SCONE_ASSIGN_OR_RETURN(decl, expr) \
  SCONE_ASSIGN_OR_RETURN_IMPL(SCONE_CONCAT(scone_result_, __LINE__), decl, expr)
#define SCONE_ASSIGN_OR_RETURN_IMPL(tmp, decl, expr) \
  auto tmp = (expr);                                 \
  if (!tmp.ok()) return tmp.status();                \
  decl = std::move(tmp).value()
