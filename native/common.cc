#include "common.h"

#include <errno.h>
#include <fcntl.h>
#include <ctype.h>
#include <string.h>

#include <cmath>

namespace tine {

std::string ErrnoName(int err) {
  // The values callers are likely to branch on; anything else is still reported as E<n>.
  // (On Linux ENOTSUP == EOPNOTSUPP and EWOULDBLOCK == EAGAIN, so those have one name.)
  switch (err) {
#define X(e) \
  case e:    \
    return #e;
    X(EPERM) X(ENOENT) X(ESRCH) X(EINTR) X(EIO) X(ENXIO) X(E2BIG) X(ENOEXEC) X(EBADF)
    X(ECHILD) X(EAGAIN) X(ENOMEM) X(EACCES) X(EFAULT) X(ENOTBLK) X(EBUSY) X(EEXIST)
    X(EXDEV) X(ENODEV) X(ENOTDIR) X(EISDIR) X(EINVAL) X(ENFILE) X(EMFILE) X(ENOTTY)
    X(ETXTBSY) X(EFBIG) X(ENOSPC) X(ESPIPE) X(EROFS) X(EMLINK) X(EPIPE) X(ERANGE)
    X(EDEADLK) X(ENAMETOOLONG) X(ENOLCK) X(ENOSYS) X(ENOTEMPTY) X(ELOOP) X(ENODATA)
    X(EOVERFLOW) X(EOPNOTSUPP) X(ETIMEDOUT) X(ECANCELED) X(EDQUOT) X(ESTALE)
    X(ECONNREFUSED) X(ECONNRESET) X(EADDRINUSE) X(ENOTCONN) X(ENOKEY)
#undef X
    default:
      return "E" + std::to_string(err);
  }
}

Napi::Error MakeSystemError(Napi::Env env, const SysError& e) {
  std::string code = ErrnoName(e.err);
  // Lower-case first letter, so messages read like Node's own ("ENOENT: no such file…").
  std::string text = strerror(e.err);
  // (Acronyms such as "I/O error" are left alone.)
  bool acronym = text.size() > 1 && isupper(static_cast<unsigned char>(text[1]));
  if (!text.empty() && !acronym) text[0] = static_cast<char>(tolower(text[0]));
  std::string msg = code + ": " + text + ", " + e.syscall;
  if (!e.path.empty()) msg += " '" + e.path + "'";
  if (!e.dest.empty()) msg += " -> '" + e.dest + "'";
  Napi::Error error = Napi::Error::New(env, msg);
  Napi::Object o = error.Value();
  o.Set("code", code);
  o.Set("errno", -e.err);  // negative, like Node's fs errors (ENOENT -> -2)
  o.Set("syscall", e.syscall);
  if (!e.path.empty()) o.Set("path", e.path);
  if (!e.dest.empty()) o.Set("dest", e.dest);
  return error;
}

static Napi::TypeError ArgError(Napi::Env env, const char* name, const char* what,
                                const char* code = "ERR_INVALID_ARG_TYPE") {
  auto e = Napi::TypeError::New(env, std::string("The \"") + name + "\" argument must be " + what);
  e.Set("code", code);  // as Node's own argument checks
  return e;
}

std::string PathArg(const Napi::CallbackInfo& info, size_t i, const char* name) {
  if (!info[i].IsString()) throw ArgError(info.Env(), name, "of type string");
  std::string s = info[i].As<Napi::String>().Utf8Value();
  // An embedded NUL would silently truncate the path at the syscall boundary.
  if (s.find('\0') != std::string::npos)
    throw ArgError(info.Env(), name, "a string without null bytes", "ERR_INVALID_ARG_VALUE");
  return s;
}

bool BoolArg(const Napi::CallbackInfo& info, size_t i, const char* name) {
  if (!info[i].IsBoolean()) throw ArgError(info.Env(), name, "of type boolean");
  return info[i].As<Napi::Boolean>().Value();
}

int PidArg(const Napi::CallbackInfo& info, size_t i, const char* name) {
  if (!info[i].IsNumber()) throw ArgError(info.Env(), name, "of type number");
  double d = info[i].As<Napi::Number>().DoubleValue();
  if (!(d >= 1 && d <= 0x7fffffff) || std::floor(d) != d)
    throw ArgError(info.Env(), name, "a positive integer", "ERR_OUT_OF_RANGE");
  return static_cast<int>(d);
}

std::string OptionalPathArg(const Napi::CallbackInfo& info, size_t i, const char* name,
                            const std::string& fallback) {
  if (info[i].IsUndefined() || info[i].IsNull()) return fallback;
  std::string s = PathArg(info, i, name);
  return s.empty() ? fallback : s;
}

namespace {

class PromiseWorker : public Napi::AsyncWorker {
 public:
  PromiseWorker(Napi::Env env, Work work)
      : Napi::AsyncWorker(env, "tine_native"),
        deferred_(Napi::Promise::Deferred::New(env)),
        work_(std::move(work)) {}

  Napi::Promise Promise() const { return deferred_.Promise(); }

 protected:
  // Worker thread: no napi calls here, only syscalls and plain data.
  void Execute() override {
    work_(err_);
    if (err_.failed()) SetError(err_.syscall.empty() ? "failed" : err_.syscall);
  }
  void OnOK() override { deferred_.Resolve(Env().Undefined()); }
  void OnError(const Napi::Error& e) override {
    // err_.err == 0 here only if Execute threw a C++ exception (message in e).
    deferred_.Reject(err_.failed() ? MakeSystemError(Env(), err_).Value() : e.Value());
  }

 private:
  Napi::Promise::Deferred deferred_;
  Work work_;
  SysError err_;
};

}  // namespace

Napi::Value RunAsync(const Napi::CallbackInfo& info,
                     const std::function<Work(const Napi::CallbackInfo&)>& build) {
  Napi::Env env = info.Env();
  Work work;
  try {
    work = build(info);
  } catch (const Napi::Error& e) {
    auto d = Napi::Promise::Deferred::New(env);
    d.Reject(e.Value());
    return d.Promise();
  }
  auto* worker = new PromiseWorker(env, std::move(work));
  Napi::Promise p = worker->Promise();
  worker->Queue();  // the worker deletes itself after OnOK/OnError
  return p;
}

std::pair<std::string, std::string> SplitPath(const std::string& path) {
  std::string p = path;
  while (p.size() > 1 && p.back() == '/') p.pop_back();
  size_t slash = p.rfind('/');
  if (slash == std::string::npos) return {".", p};
  if (slash == 0) return {"/", p.substr(1)};
  return {p.substr(0, slash), p.substr(slash + 1)};
}

int ReadWholeFile(const std::string& path, std::string& out, std::string& failedSyscall) {
  Fd fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC));
  if (!fd.ok()) {
    failedSyscall = "open";
    return errno;
  }
  out.clear();
  char buf[16384];
  for (;;) {
    ssize_t n = ::read(fd.get(), buf, sizeof buf);
    if (n < 0) {
      if (errno == EINTR) continue;
      failedSyscall = "read";
      return errno;
    }
    if (n == 0) return 0;
    out.append(buf, static_cast<size_t>(n));
  }
}

}  // namespace tine
