// File-level operations: reflink copies, freeze-consistent reflinks of image files,
// syncfs and filesystem type detection.
#include <errno.h>
#include <fcntl.h>
#include <linux/fs.h>
#include <linux/magic.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <sys/statfs.h>
#include <unistd.h>

#include <memory>

#include "common.h"

namespace tine {
namespace {

// A destination file this call created: unlinked on destruction unless keep() was called,
// so a failed clone never leaves a partial or empty copy behind.
class CreatedFile {
 public:
  CreatedFile(const std::string& path, mode_t mode)
      : path_(path), fd_(::open(path.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, mode)) {}
  ~CreatedFile() {
    if (fd_.ok() && !keep_) ::unlink(path_.c_str());
  }
  bool ok() const { return fd_.ok(); }
  int fd() const { return fd_.get(); }
  void keep() { keep_ = true; }

 private:
  std::string path_;
  Fd fd_;
  bool keep_ = false;
};

// Holds a filesystem frozen (FIFREEZE) and thaws it when it goes out of scope, whatever the
// exit path (early return, exception). Thaw() does it early so its error can be reported.
class Freeze {
 public:
  explicit Freeze(int fd) : fd_(fd) {
    // A fs that is already frozen fails with EBUSY; then it is not ours to thaw.
    frozen_ = ::ioctl(fd_, FIFREEZE, 0) == 0;
    err_ = frozen_ ? 0 : errno;
  }
  Freeze(const Freeze&) = delete;
  Freeze& operator=(const Freeze&) = delete;
  ~Freeze() { Thaw(); }
  bool frozen() const { return frozen_; }
  int error() const { return err_; }
  // Returns 0 or the errno of FITHAW.
  int Thaw() {
    if (!frozen_) return 0;
    frozen_ = false;
    return ::ioctl(fd_, FITHAW, 0) == 0 ? 0 : errno;
  }

 private:
  int fd_;
  bool frozen_ = false;
  int err_ = 0;
};

// Opens src and creates dst with src's permission bits. Returns false with `e` set.
bool OpenPair(const std::string& src, const std::string& dst, Fd& in,
              std::unique_ptr<CreatedFile>& out, SysError& e) {
  in = Fd(::open(src.c_str(), O_RDONLY | O_CLOEXEC));
  if (!in.ok()) return e.set(errno, "open", src), false;
  struct stat st;
  if (::fstat(in.get(), &st) < 0) return e.set(errno, "fstat", src), false;
  out = std::make_unique<CreatedFile>(dst, st.st_mode & 07777);
  if (!out->ok()) return e.set(errno, "open", dst), false;
  // open() applied the umask; copy the mode exactly, as cp --reflink -p would.
  if (::fchmod(out->fd(), st.st_mode & 07777) < 0) return e.set(errno, "fchmod", dst), false;
  return true;
}

void CloneFile(const std::string& src, const std::string& dst, SysError& e) {
  Fd in;
  std::unique_ptr<CreatedFile> out;
  if (!OpenPair(src, dst, in, out, e)) return;
  if (::ioctl(out->fd(), FICLONE, in.get()) < 0) return e.set(errno, "ioctl(FICLONE)", src, dst);
  out->keep();
}

// Reflinks `src` (e.g. the image file behind a loop-mounted fs) while the fs mounted at
// `mountpoint` is frozen, so the copy is a quiesced, consistent image of it.
void FreezeClone(const std::string& mountpoint, const std::string& src, const std::string& dst,
                 SysError& e) {
  Fd mnt(::open(mountpoint.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
  if (!mnt.ok()) return e.set(errno, "open", mountpoint);
  // Open and create everything before freezing: keeps the frozen window to the one ioctl.
  Fd in;
  std::unique_ptr<CreatedFile> out;
  if (!OpenPair(src, dst, in, out, e)) return;
  // Writing dst on the frozen fs itself would block forever (we are the only thawer).
  // Best effort: st_dev differs per btrfs subvolume, but the frozen fs is normally a loop fs.
  struct stat ms, ds;
  if (::fstat(mnt.get(), &ms) < 0) return e.set(errno, "fstat", mountpoint);
  if (::fstat(out->fd(), &ds) < 0) return e.set(errno, "fstat", dst);
  if (ms.st_dev == ds.st_dev) return e.set(EDEADLK, "ioctl(FIFREEZE)", mountpoint, dst);

  Freeze freeze(mnt.get());
  if (!freeze.frozen()) return e.set(freeze.error(), "ioctl(FIFREEZE)", mountpoint);
  int cloneErr = ::ioctl(out->fd(), FICLONE, in.get()) == 0 ? 0 : errno;
  int thawErr = freeze.Thaw();
  // A fs left frozen is the worse outcome, so a thaw failure wins over a clone failure.
  if (thawErr) return e.set(thawErr, "ioctl(FITHAW)", mountpoint);
  if (cloneErr) return e.set(cloneErr, "ioctl(FICLONE)", src, dst);
  out->keep();
}

void SyncFs(const std::string& path, SysError& e) {
  // O_NONBLOCK: opening a FIFO must not hang; syncfs only needs some fd on the fs.
  Fd fd(::open(path.c_str(), O_RDONLY | O_NONBLOCK | O_CLOEXEC));
  if (!fd.ok()) return e.set(errno, "open", path);
  if (::syncfs(fd.get()) < 0) e.set(errno, "syncfs", path);
}

const char* FsName(uint32_t magic) {
  switch (magic) {
    case BTRFS_SUPER_MAGIC: return "btrfs";
    case EXT4_SUPER_MAGIC: return "ext4";  // shared by ext2/ext3/ext4
    case XFS_SUPER_MAGIC: return "xfs";
    case TMPFS_MAGIC: return "tmpfs";
    case OVERLAYFS_SUPER_MAGIC: return "overlayfs";
    case NFS_SUPER_MAGIC: return "nfs";
    case 0x2fc12fc1: return "zfs";  // not in linux/magic.h (out-of-tree)
    case PROC_SUPER_MAGIC: return "proc";
    default: return "unknown";
  }
}

Napi::Value JsCloneFile(const Napi::CallbackInfo& info) {
  return RunAsync(info, [](const Napi::CallbackInfo& i) -> Work {
    std::string src = PathArg(i, 0, "src");
    std::string dst = PathArg(i, 1, "dst");
    return [src, dst](SysError& e) { CloneFile(src, dst, e); };
  });
}

Napi::Value JsFreezeClone(const Napi::CallbackInfo& info) {
  return RunAsync(info, [](const Napi::CallbackInfo& i) -> Work {
    std::string mountpoint = PathArg(i, 0, "mountpoint");
    std::string src = PathArg(i, 1, "src");
    std::string dst = PathArg(i, 2, "dst");
    return [mountpoint, src, dst](SysError& e) { FreezeClone(mountpoint, src, dst, e); };
  });
}

Napi::Value JsSyncFs(const Napi::CallbackInfo& info) {
  return RunAsync(info, [](const Napi::CallbackInfo& i) -> Work {
    std::string path = PathArg(i, 0, "path");
    return [path](SysError& e) { SyncFs(path, e); };
  });
}

Napi::Value JsFsType(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  std::string path = PathArg(info, 0, "path");
  struct statfs sfs;
  if (::statfs(path.c_str(), &sfs) < 0) {
    SysError e;
    e.set(errno, "statfs", path);
    throw MakeSystemError(env, e);
  }
  uint32_t magic = static_cast<uint32_t>(sfs.f_type);  // f_type is a signed long
  Napi::Object r = Napi::Object::New(env);
  r.Set("type", FsName(magic));
  r.Set("magic", Napi::Number::New(env, magic));
  return r;
}

}  // namespace

void InitFs(Napi::Env env, Napi::Object exports) {
  exports.Set("cloneFile", Napi::Function::New(env, JsCloneFile, "cloneFile"));
  exports.Set("freezeClone", Napi::Function::New(env, JsFreezeClone, "freezeClone"));
  exports.Set("syncfs", Napi::Function::New(env, JsSyncFs, "syncfs"));
  exports.Set("fsType", Napi::Function::New(env, JsFsType, "fsType"));
}

}  // namespace tine
