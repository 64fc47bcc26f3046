// Shared helpers for the tine native addon: fd ownership, Node-style SystemErrors,
// argument validation and a Promise-returning worker for blocking syscalls.
#pragma once

#include <napi.h>
#include <unistd.h>

#include <functional>
#include <string>
#include <utility>

namespace tine {

// Owns a file descriptor; closes it on every exit path.
class Fd {
 public:
  Fd() = default;
  explicit Fd(int fd) : fd_(fd) {}
  Fd(const Fd&) = delete;
  Fd& operator=(const Fd&) = delete;
  Fd(Fd&& o) noexcept : fd_(std::exchange(o.fd_, -1)) {}
  Fd& operator=(Fd&& o) noexcept {
    if (this != &o) {
      if (fd_ >= 0) ::close(fd_);
      fd_ = std::exchange(o.fd_, -1);
    }
    return *this;
  }
  ~Fd() {
    if (fd_ >= 0) ::close(fd_);
  }
  int get() const { return fd_; }
  bool ok() const { return fd_ >= 0; }

 private:
  int fd_ = -1;
};

// What failed, captured off the JS thread (plain data, no napi values) and turned into a
// JS Error on the main thread. err == 0 means success.
struct SysError {
  int err = 0;
  std::string syscall;
  std::string path;
  std::string dest;

  bool failed() const { return err != 0; }
  // Records errno (read immediately, before anything else can clobber it).
  void set(int e, std::string sc, std::string p, std::string d = "") {
    err = e;
    syscall = std::move(sc);
    path = std::move(p);
    dest = std::move(d);
  }
};

// "ENOENT", "EPERM", … or "E<number>" for values not in the table.
std::string ErrnoName(int err);

// Error shaped like Node's SystemError: message `${code}: ${strerror}, ${syscall} '${path}'`
// (plus ` -> '${dest}'`), and properties code, errno (negative, as in Node's fs errors),
// syscall, path, dest. Must be called on the JS thread.
Napi::Error MakeSystemError(Napi::Env env, const SysError& e);

// Argument validation; throws a TypeError naming the argument.
std::string PathArg(const Napi::CallbackInfo& info, size_t i, const char* name);
bool BoolArg(const Napi::CallbackInfo& info, size_t i, const char* name);
int PidArg(const Napi::CallbackInfo& info, size_t i, const char* name);
// undefined/null/"" -> fallback.
std::string OptionalPathArg(const Napi::CallbackInfo& info, size_t i, const char* name,
                            const std::string& fallback);

// Runs `work` on the libuv thread pool and returns a Promise<void>. `work` records a
// failure in the SysError it is given; the rejection value is built on the JS thread.
using Work = std::function<void(SysError&)>;

// Builds the work from the arguments (validation may throw) and starts it; argument
// errors become a rejected promise, so callers see one failure channel.
Napi::Value RunAsync(const Napi::CallbackInfo& info,
                     const std::function<Work(const Napi::CallbackInfo&)>& build);

// Splits a path into parent directory and last component, ignoring trailing slashes:
// "/a/b/" -> ("/a", "b"), "b" -> (".", "b"), "/b" -> ("/", "b").
std::pair<std::string, std::string> SplitPath(const std::string& path);

// Reads a whole file (any size; /proc files report size 0). Returns errno or 0.
int ReadWholeFile(const std::string& path, std::string& out, std::string& failedSyscall);

// Registration hooks implemented by each source file.
void InitBtrfs(Napi::Env env, Napi::Object exports);
void InitFs(Napi::Env env, Napi::Object exports);
void InitProc(Napi::Env env, Napi::Object exports);
void InitPin(Napi::Env env, Napi::Object exports);

}  // namespace tine
