// Pins a path inside a repository as a detached mount: the inode that was opened (never a
// path looked up again later) is what dockerd/runc mount, whatever the sandbox user swaps
// into the repository tree afterwards.
#include <errno.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <string>
#include <vector>

#include "common.h"

#include "mount-api.h"

namespace tine {
namespace {

std::vector<std::string> Components(const std::string& rel) {
  std::vector<std::string> out;
  size_t i = 0;
  while (i <= rel.size()) {
    size_t j = rel.find('/', i);
    if (j == std::string::npos) j = rel.size();
    std::string c = rel.substr(i, j - i);
    if (!c.empty() && c != ".") out.push_back(c);
    i = j + 1;
  }
  return out;
}

// Opens root, then each component of rel with O_PATH|O_NOFOLLOW: a symlink or `..` anywhere
// is refused (ELOOP / EXDEV), so the fd is of an inode beneath root reached by names only.
// Missing components are made (mkdirat, then chowned to uid:gid) when create is set, as
// dockerd would for a -v source, but beneath the opened directory instead of by path.
// Then clones that inode's mount tree and attaches it on `target`, which this call creates
// (an empty directory, or an empty file for a non-directory source) and removes on failure.
void PinBeneath(const std::string& root, const std::string& rel, const std::string& target, bool create,
                uid_t uid, gid_t gid, SysError& e) {
  Fd cur(::open(root.c_str(), O_PATH | O_DIRECTORY | O_CLOEXEC));
  if (!cur.ok()) return e.set(errno, "open", root);
  std::string walked = root;
  for (const std::string& c : Components(rel)) {
    walked += "/" + c;
    if (c == "..") return e.set(EXDEV, "openat", walked);
    int fd = ::openat(cur.get(), c.c_str(), O_PATH | O_NOFOLLOW | O_CLOEXEC);
    if (fd < 0 && errno == ENOENT && create) {
      if (::mkdirat(cur.get(), c.c_str(), 0755) < 0 && errno != EEXIST) return e.set(errno, "mkdirat", walked);
      // NOFOLLOW: a link swapped in meanwhile keeps its owner, and is refused below.
      if (::fchownat(cur.get(), c.c_str(), uid, gid, AT_SYMLINK_NOFOLLOW) < 0) return e.set(errno, "fchownat", walked);
      fd = ::openat(cur.get(), c.c_str(), O_PATH | O_NOFOLLOW | O_CLOEXEC);
    }
    if (fd < 0) return e.set(errno, "openat", walked);
    Fd next(fd);
    struct stat st;
    if (::fstat(next.get(), &st) < 0) return e.set(errno, "fstat", walked);
    if (S_ISLNK(st.st_mode)) return e.set(ELOOP, "openat", walked);
    cur = std::move(next);
  }
  struct stat st;
  if (::fstat(cur.get(), &st) < 0) return e.set(errno, "fstat", walked);
  bool dir = S_ISDIR(st.st_mode);
  int tree = (int)::syscall(SYS_open_tree, cur.get(), "", OPEN_TREE_CLONE | OPEN_TREE_CLOEXEC | AT_EMPTY_PATH | AT_RECURSIVE);
  if (tree < 0) return e.set(errno, "open_tree", walked);
  Fd treeFd(tree);
  if (dir) {
    if (::mkdir(target.c_str(), 0700) < 0) return e.set(errno, "mkdir", target);
  } else {
    int f = ::open(target.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600);
    if (f < 0) return e.set(errno, "open", target);
    ::close(f);
  }
  if (::syscall(SYS_move_mount, treeFd.get(), "", AT_FDCWD, target.c_str(), MOVE_MOUNT_F_EMPTY_PATH) < 0) {
    e.set(errno, "move_mount", walked, target);
    if (dir) ::rmdir(target.c_str());
    else ::unlink(target.c_str());
  }
}

Napi::Value JsPinBeneath(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  std::string root = PathArg(info, 0, "root");
  if (info.Length() < 2 || !info[1].IsString()) throw Napi::TypeError::New(env, "relPath must be a string");
  std::string rel = info[1].As<Napi::String>().Utf8Value();
  std::string target = PathArg(info, 2, "target");
  bool create = false;
  uid_t uid = 0;
  gid_t gid = 0;
  if (info.Length() > 3 && info[3].IsObject()) {
    Napi::Object o = info[3].As<Napi::Object>();
    if (o.Has("uid") && o.Has("gid")) {
      create = true;
      uid = o.Get("uid").As<Napi::Number>().Uint32Value();
      gid = o.Get("gid").As<Napi::Number>().Uint32Value();
    }
  }
  SysError e;
  PinBeneath(root, rel, target, create, uid, gid, e);
  if (e.failed()) throw MakeSystemError(env, e);
  return env.Undefined();
}

}  // namespace

void InitPin(Napi::Env env, Napi::Object exports) {
  exports.Set("pinBeneath", Napi::Function::New(env, JsPinBeneath, "pinBeneath"));
}

}  // namespace tine
