// btrfs subvolume operations. All of them act on the *parent* directory fd with the last
// path component as name, which is how the btrfs ioctls are defined.
#include <errno.h>
#include <fcntl.h>
#include <linux/btrfs.h>
#include <linux/magic.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <sys/statfs.h>

#include "common.h"

namespace tine {
namespace {

// Inode number of every subvolume root directory (BTRFS_FIRST_FREE_OBJECTID).
constexpr ino_t kSubvolRootIno = 256;

// Copies the last component of `path` into `name` (size n incl. NUL); returns 0 or errno.
int CopyName(const std::string& name, char* out, size_t n) {
  if (name.empty() || name == "." || name == "..") return EINVAL;
  if (name.size() >= n) return ENAMETOOLONG;
  memcpy(out, name.c_str(), name.size() + 1);
  return 0;
}

int OpenDir(const std::string& path) {
  return ::open(path.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
}

void SubvolumeCreate(const std::string& path, SysError& e) {
  static const char* kCall = "ioctl(BTRFS_IOC_SUBVOL_CREATE_V2)";
  auto [parent, name] = SplitPath(path);
  btrfs_ioctl_vol_args_v2 args;
  memset(&args, 0, sizeof args);
  if (int err = CopyName(name, args.name, sizeof args.name)) return e.set(err, kCall, path);
  Fd dir(OpenDir(parent));
  if (!dir.ok()) return e.set(errno, "open", parent);
  if (::ioctl(dir.get(), BTRFS_IOC_SUBVOL_CREATE_V2, &args) < 0) e.set(errno, kCall, path);
}

void Snapshot(const std::string& src, const std::string& dst, bool readonly, SysError& e) {
  static const char* kCall = "ioctl(BTRFS_IOC_SNAP_CREATE_V2)";
  auto [parent, name] = SplitPath(dst);
  btrfs_ioctl_vol_args_v2 args;
  memset(&args, 0, sizeof args);
  if (int err = CopyName(name, args.name, sizeof args.name)) return e.set(err, kCall, src, dst);
  Fd from(OpenDir(src));
  if (!from.ok()) return e.set(errno, "open", src);
  Fd dir(OpenDir(parent));
  if (!dir.ok()) return e.set(errno, "open", parent);
  args.fd = from.get();
  args.flags = readonly ? BTRFS_SUBVOL_RDONLY : 0;
  if (::ioctl(dir.get(), BTRFS_IOC_SNAP_CREATE_V2, &args) < 0) e.set(errno, kCall, src, dst);
}

void SubvolumeDestroy(const std::string& path, SysError& e) {
  auto [parent, name] = SplitPath(path);
  btrfs_ioctl_vol_args_v2 v2;
  memset(&v2, 0, sizeof v2);
  if (int err = CopyName(name, v2.name, sizeof v2.name))
    return e.set(err, "ioctl(BTRFS_IOC_SNAP_DESTROY_V2)", path);
  Fd dir(OpenDir(parent));
  if (!dir.ok()) return e.set(errno, "open", parent);
  if (::ioctl(dir.get(), BTRFS_IOC_SNAP_DESTROY_V2, &v2) == 0) return;
  int err = errno;
  // Kernels before 5.7 have no _V2 (ENOTTY) or reject its args (EINVAL): use the classic
  // by-name ioctl. (A genuine EINVAL, e.g. "not a subvolume", recurs there and is reported.)
  if (err != ENOTTY && err != EINVAL) return e.set(err, "ioctl(BTRFS_IOC_SNAP_DESTROY_V2)", path);
  btrfs_ioctl_vol_args v1;
  memset(&v1, 0, sizeof v1);
  if (int err1 = CopyName(name, v1.name, sizeof v1.name))
    return e.set(err1, "ioctl(BTRFS_IOC_SNAP_DESTROY)", path);
  if (::ioctl(dir.get(), BTRFS_IOC_SNAP_DESTROY, &v1) < 0)
    e.set(errno, "ioctl(BTRFS_IOC_SNAP_DESTROY)", path);
}

Napi::Value JsSubvolumeCreate(const Napi::CallbackInfo& info) {
  return RunAsync(info, [](const Napi::CallbackInfo& i) -> Work {
    std::string path = PathArg(i, 0, "path");
    return [path](SysError& e) { SubvolumeCreate(path, e); };
  });
}

Napi::Value JsSnapshot(const Napi::CallbackInfo& info) {
  return RunAsync(info, [](const Napi::CallbackInfo& i) -> Work {
    std::string src = PathArg(i, 0, "src");
    std::string dst = PathArg(i, 1, "dst");
    bool readonly = BoolArg(i, 2, "readonly");
    return [src, dst, readonly](SysError& e) { Snapshot(src, dst, readonly, e); };
  });
}

Napi::Value JsSubvolumeDestroy(const Napi::CallbackInfo& info) {
  return RunAsync(info, [](const Napi::CallbackInfo& i) -> Work {
    std::string path = PathArg(i, 0, "path");
    return [path](SysError& e) { SubvolumeDestroy(path, e); };
  });
}

// Sync: two cheap metadata syscalls.
Napi::Value JsIsSubvolume(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  std::string path = PathArg(info, 0, "path");
  struct stat st;
  if (::stat(path.c_str(), &st) < 0) {
    if (errno == ENOENT) return Napi::Boolean::New(env, false);
    SysError e;
    e.set(errno, "stat", path);
    throw MakeSystemError(env, e);
  }
  if (!S_ISDIR(st.st_mode) || st.st_ino != kSubvolRootIno) return Napi::Boolean::New(env, false);
  // Inode 256 is only meaningful on btrfs.
  struct statfs sfs;
  if (::statfs(path.c_str(), &sfs) < 0) {
    SysError e;
    e.set(errno, "statfs", path);
    throw MakeSystemError(env, e);
  }
  return Napi::Boolean::New(env, static_cast<uint32_t>(sfs.f_type) == BTRFS_SUPER_MAGIC);
}

}  // namespace

void InitBtrfs(Napi::Env env, Napi::Object exports) {
  exports.Set("subvolumeCreate", Napi::Function::New(env, JsSubvolumeCreate, "subvolumeCreate"));
  exports.Set("snapshot", Napi::Function::New(env, JsSnapshot, "snapshot"));
  exports.Set("subvolumeDestroy",
              Napi::Function::New(env, JsSubvolumeDestroy, "subvolumeDestroy"));
  exports.Set("isSubvolume", Napi::Function::New(env, JsIsSubvolume, "isSubvolume"));
}

}  // namespace tine
