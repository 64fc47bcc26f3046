// /proc/<pid>/stat and /proc/<pid>/environ parsing (used by the guard to walk the process
// tree and read exec-time environments). Both files are small, so these calls are sync.
#include <errno.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <signal.h>

#include <string>
#include <unordered_set>
#include <vector>

#include "common.h"

namespace tine {
namespace {

std::string ProcFile(const Napi::CallbackInfo& info, const char* leaf) {
  int pid = PidArg(info, 0, "pid");
  std::string root = OptionalPathArg(info, 1, "procRoot", "/proc");
  return root + "/" + std::to_string(pid) + "/" + leaf;
}

std::string ReadOrThrow(Napi::Env env, const std::string& path) {
  std::string data, syscall;
  if (int err = ReadWholeFile(path, data, syscall)) {
    SysError e;
    e.set(err, syscall, path);
    throw MakeSystemError(env, e);
  }
  return data;
}

[[noreturn]] void Malformed(Napi::Env env, const std::string& path) {
  SysError e;
  e.set(EINVAL, "read", path);
  throw MakeSystemError(env, e);
}

// Parses a decimal number that must span the whole token.
bool ParseNumber(const std::string& s, double& out) {
  if (s.empty()) return false;
  char* end = nullptr;
  errno = 0;
  long long v = strtoll(s.c_str(), &end, 10);
  if (errno != 0 || *end != '\0') return false;
  out = static_cast<double>(v);
  return true;
}

Napi::Value JsProcStat(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  std::string path = ProcFile(info, "stat");
  std::string data = ReadOrThrow(env, path);

  // "pid (comm) state ppid ...": comm may contain spaces and parentheses (it is chosen by
  // the process), so it ends at the LAST ')', never the first.
  size_t open = data.find('(');
  size_t close = data.rfind(')');
  if (open == std::string::npos || close == std::string::npos || close < open)
    Malformed(env, path);
  double pid;
  std::string pidText = data.substr(0, open);
  while (!pidText.empty() && pidText.back() == ' ') pidText.pop_back();
  if (!ParseNumber(pidText, pid)) Malformed(env, path);
  std::string comm = data.substr(open + 1, close - open - 1);

  // Fields after ')' start at field 3 (state).
  std::vector<std::string> fields;
  size_t i = close + 1;
  while (i < data.size()) {
    while (i < data.size() && (data[i] == ' ' || data[i] == '\n')) i++;
    size_t j = i;
    while (j < data.size() && data[j] != ' ' && data[j] != '\n') j++;
    if (j > i) fields.push_back(data.substr(i, j - i));
    i = j;
  }
  constexpr size_t kState = 3 - 3, kPpid = 4 - 3, kStartTime = 22 - 3;
  double ppid, starttime;
  if (fields.size() <= kStartTime || !ParseNumber(fields[kPpid], ppid) ||
      !ParseNumber(fields[kStartTime], starttime))
    Malformed(env, path);

  Napi::Object r = Napi::Object::New(env);
  r.Set("pid", pid);
  r.Set("comm", Napi::String::New(env, comm));
  r.Set("state", fields[kState]);
  r.Set("ppid", ppid);
  r.Set("starttime", starttime);  // clock ticks since boot; < 2^53 in practice
  return r;
}

Napi::Value JsProcEnviron(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  std::string path = ProcFile(info, "environ");
  std::string data = ReadOrThrow(env, path);

  Napi::Object r = Napi::Object::New(env);
  std::unordered_set<std::string> seen;
  size_t i = 0;
  while (i < data.size()) {
    size_t end = data.find('\0', i);
    if (end == std::string::npos) end = data.size();
    size_t eq = data.find('=', i);
    // Entries without '=' (or with an empty name) are ignored; on duplicates the first
    // wins, as getenv() would.
    if (eq != std::string::npos && eq < end && eq > i) {
      std::string key = data.substr(i, eq - i);
      if (seen.insert(key).second) {
        // Define, not Set: the environment is untrusted, and Set("__proto__", …) would hit
        // the Object.prototype setter instead of creating a property.
        r.DefineProperty(Napi::PropertyDescriptor::Value(
            Napi::String::New(env, key), Napi::String::New(env, data.substr(eq + 1, end - eq - 1)),
            static_cast<napi_property_attributes>(napi_writable | napi_enumerable |
                                                  napi_configurable)));
      }
    }
    i = end + 1;
  }
  return r;
}

// SO_PEERCRED of a connected unix socket: who is on the other end, as the kernel saw it
// at connect(). tine-host serve uses it to run the guard on the caller's process tree.
Napi::Value JsPeerCredentials(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (info.Length() < 1 || !info[0].IsNumber()) throw Napi::TypeError::New(env, "fd must be a number");
  int fd = info[0].As<Napi::Number>().Int32Value();
  struct ucred cred {};
  socklen_t len = sizeof cred;
  if (getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cred, &len) != 0) {
    SysError e;
    e.set(errno, "getsockopt", "fd " + std::to_string(fd));
    throw MakeSystemError(env, e);
  }
  Napi::Object r = Napi::Object::New(env);
  r.Set("pid", Napi::Number::New(env, cred.pid));
  r.Set("uid", Napi::Number::New(env, cred.uid));
  r.Set("gid", Napi::Number::New(env, cred.gid));
  return r;
}

#ifndef SO_PEERPIDFD
#define SO_PEERPIDFD 77
#endif

// SO_PEERPIDFD (Linux 6.5+): a pidfd of the peer taken at connect(). Unlike the pid in
// SO_PEERCRED it cannot come to name another process: pidfdAlive() on it says whether the
// very process that connected still lives. -1 where the kernel lacks the option.
Napi::Value JsPeerPidfd(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (info.Length() < 1 || !info[0].IsNumber()) throw Napi::TypeError::New(env, "fd must be a number");
  int fd = info[0].As<Napi::Number>().Int32Value();
  int pidfd = -1;
  socklen_t len = sizeof pidfd;
  if (getsockopt(fd, SOL_SOCKET, SO_PEERPIDFD, &pidfd, &len) != 0) {
    if (errno == ENOPROTOOPT || errno == EINVAL) return Napi::Number::New(env, -1);
    SysError e;
    e.set(errno, "getsockopt", "fd " + std::to_string(fd));
    throw MakeSystemError(env, e);
  }
  return Napi::Number::New(env, pidfd);
}

Napi::Value JsPidfdAlive(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (info.Length() < 1 || !info[0].IsNumber()) throw Napi::TypeError::New(env, "pidfd must be a number");
  int pidfd = info[0].As<Napi::Number>().Int32Value();
  if (syscall(SYS_pidfd_send_signal, pidfd, 0, nullptr, 0) == 0) return Napi::Boolean::New(env, true);
  if (errno == ESRCH) return Napi::Boolean::New(env, false);
  SysError e;
  e.set(errno, "pidfd_send_signal", "pidfd " + std::to_string(pidfd));
  throw MakeSystemError(env, e);
}

}  // namespace

void InitProc(Napi::Env env, Napi::Object exports) {
  exports.Set("procStat", Napi::Function::New(env, JsProcStat, "procStat"));
  exports.Set("procEnviron", Napi::Function::New(env, JsProcEnviron, "procEnviron"));
  exports.Set("peerCredentials", Napi::Function::New(env, JsPeerCredentials, "peerCredentials"));
  exports.Set("peerPidfd", Napi::Function::New(env, JsPeerPidfd, "peerPidfd"));
  exports.Set("pidfdAlive", Napi::Function::New(env, JsPidfdAlive, "pidfdAlive"));
}

}  // namespace tine
