// tine-sandbox: the kernel sandbox of `repo exec`, `repo connect` and the SSH gateway.
// A small single-threaded executable (Node is multithreaded: after fork() only
// async-signal-safe calls are allowed there), bubblewrap-style: argv in; namespaces,
// a new root that shows only one repository, Landlock, privilege drop; exec.
//
//   tine-sandbox --uid U --gid G --hostname H --repo DIR [--docker-sock FILE]
//                [--netns FILE] [--landlock required|off] [--pty] [--status-fd N] -- CMD [ARG...]
//
// --netns: join that network namespace (the repository's, /run/netns/…) first, as root,
// before the other namespaces are made; if it cannot be opened or joined, nothing runs.
//
// The environment it is started with is the command's environment (built from an
// allow-list by the caller). Every step checks its result; any failure before exec aborts
// with exit 125 and a message on stderr (and on the status fd): nothing runs unconfined.
// 126/127: the command could not be executed / was not found (as in a shell).
// Otherwise: the command's own exit status, or 128+signal.
//
// Processes: P (this process, root, stays outside: relays the pty and forwards signals)
// -> C (pid 1 of the new pid namespace: builds the root, drops everything, reaps)
// -> G (the command).
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <linux/audit.h>
#include <linux/capability.h>
#include <linux/filter.h>
#include <linux/seccomp.h>
#include <stddef.h>
#include <poll.h>
#include <sched.h>
#include <signal.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mount.h>
#include <sys/prctl.h>
#include <sys/signalfd.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <termios.h>
#include <unistd.h>

#define EXIT_SANDBOX 125
#define EXIT_CANNOT_EXEC 126
#define EXIT_NOT_FOUND 127

// --- Landlock ABI, defined here: the distribution's header may predate ABI 4-6. ---
struct ll_ruleset_attr {
  uint64_t handled_access_fs;
  uint64_t handled_access_net;
  uint64_t scoped;
};
struct ll_path_beneath_attr {
  uint64_t allowed_access;
  int32_t parent_fd;
} __attribute__((packed));
#define LL_CREATE_RULESET_VERSION (1U << 0)
#define LL_RULE_PATH_BENEATH 1
#define LL_FS_EXECUTE (1ULL << 0)
#define LL_FS_WRITE_FILE (1ULL << 1)
#define LL_FS_READ_FILE (1ULL << 2)
#define LL_FS_READ_DIR (1ULL << 3)
#define LL_FS_ABI1_ALL ((1ULL << 13) - 1)  // EXECUTE .. MAKE_SYM
#define LL_FS_REFER (1ULL << 13)           // ABI 2
#define LL_FS_TRUNCATE (1ULL << 14)        // ABI 3
#define LL_FS_IOCTL_DEV (1ULL << 15)       // ABI 5
#define LL_SCOPE_ABSTRACT_UNIX_SOCKET (1ULL << 0)  // ABI 6
#define LL_SCOPE_SIGNAL (1ULL << 1)                // ABI 6

// --- new mount API (kernel >= 5.12 for mount_setattr) via syscall(). ---
#include "../mount-api.h"

static int status_fd = -1;
static struct termios saved_tty;
static int tty_saved = 0;

static void restore_tty(void) {
  if (tty_saved) tcsetattr(STDIN_FILENO, TCSADRAIN, &saved_tty);
  tty_saved = 0;
}

// Abort the sandbox: message to stderr and the status fd, exit 125. Never returns.
static void die(const char *fmt, ...) {
  char msg[1024];
  int e = errno;
  va_list ap;
  va_start(ap, fmt);
  int n = vsnprintf(msg, sizeof msg, fmt, ap);
  va_end(ap);
  if (n < 0) n = 0;
  if ((size_t)n >= sizeof msg) n = sizeof msg - 1;
  if (e) n += snprintf(msg + n, sizeof msg - n, ": %s", strerror(e));
  if ((size_t)n >= sizeof msg) n = sizeof msg - 1;
  restore_tty();
  if (status_fd >= 0) (void)!write(status_fd, msg, n);
  (void)!write(STDERR_FILENO, "tine-sandbox: ", 14);
  (void)!write(STDERR_FILENO, msg, n);
  (void)!write(STDERR_FILENO, "\n", 1);
  _exit(EXIT_SANDBOX);
}
#define CHECK(expr, ...) do { errno = 0; if ((expr) < 0) die(__VA_ARGS__); } while (0)

struct opts {
  uid_t uid;
  gid_t gid;
  const char *hostname;
  const char *repo;
  const char *docker_sock;
  const char *netns;
  int landlock;  // 1 = required, 0 = off (operator's explicit choice)
  int pty;
  char **argv;
};

static long parse_id(const char *s, const char *name) {
  char *end;
  errno = 0;
  long v = strtol(s, &end, 10);
  if (errno || *end || v < 1 || v > 65533) { errno = 0; die("--%s: \"%s\" is not a uid/gid >= 1", name, s); }
  return v;
}

static void parse_args(int argc, char **argv, struct opts *o) {
  memset(o, 0, sizeof *o);
  o->landlock = 1;
  int i = 1;
  for (; i < argc; i++) {
    const char *a = argv[i];
    const char *v = i + 1 < argc ? argv[i + 1] : NULL;
    if (!strcmp(a, "--")) { i++; break; }
    if (!strcmp(a, "--pty")) { o->pty = 1; continue; }
    if (!v) { errno = 0; die("%s needs a value", a); }
    if (!strcmp(a, "--uid")) o->uid = parse_id(v, "uid");
    else if (!strcmp(a, "--gid")) o->gid = parse_id(v, "gid");
    else if (!strcmp(a, "--hostname")) o->hostname = v;
    else if (!strcmp(a, "--repo")) o->repo = v;
    else if (!strcmp(a, "--docker-sock")) o->docker_sock = v;
    else if (!strcmp(a, "--netns")) o->netns = v;
    else if (!strcmp(a, "--status-fd")) status_fd = (int)parse_id(v, "status-fd");
    else if (!strcmp(a, "--landlock")) {
      if (!strcmp(v, "required")) o->landlock = 1;
      else if (!strcmp(v, "off")) o->landlock = 0;
      else { errno = 0; die("--landlock must be required or off"); }
    } else { errno = 0; die("unknown option %s", a); }
    i++;
  }
  errno = 0;
  if (status_fd >= 0 && fcntl(status_fd, F_SETFD, FD_CLOEXEC) < 0) { int fd = status_fd; status_fd = -1; die("status fd %d", fd); }
  if (!o->uid || !o->gid) die("--uid and --gid are required");
  if (!o->hostname || !*o->hostname) die("--hostname is required");
  if (!o->repo || o->repo[0] != '/' || strstr(o->repo, "/../") || strstr(o->repo, "/./")) die("--repo must be an absolute, normalized path");
  if (o->docker_sock && o->docker_sock[0] != '/') die("--docker-sock must be an absolute path");
  if (o->netns && o->netns[0] != '/') die("--netns must be an absolute path");
  if (i >= argc) die("no command given after --");
  o->argv = argv + i;
}

static int landlock_abi(void) {
  return (int)syscall(SYS_landlock_create_ruleset, NULL, 0, LL_CREATE_RULESET_VERSION);
}

// mkdir -p, inside the new root (as root; modes 0755).
static void mkdirs(const char *path) {
  char buf[4096];
  if (strlen(path) >= sizeof buf) { errno = ENAMETOOLONG; die("path %s", path); }
  strcpy(buf, path);
  for (char *p = buf + 1; *p; p++) {
    if (*p != '/') continue;
    *p = 0;
    if (mkdir(buf, 0755) < 0 && errno != EEXIST) die("mkdir %s", buf);
    *p = '/';
  }
  if (mkdir(buf, 0755) < 0 && errno != EEXIST) die("mkdir %s", buf);
}

static void touch(const char *path) {
  int fd = open(path, O_WRONLY | O_CREAT | O_CLOEXEC, 0644);
  if (fd < 0) die("create mount point %s", path);
  close(fd);
}

// A detached copy of the mount tree at `src` (taken before the new root hides anything),
// optionally made read-only (recursively, per mount: no remount dance).
static int clone_tree(const char *src, uint64_t attrs) {
  int fd = (int)syscall(SYS_open_tree, AT_FDCWD, src, OPEN_TREE_CLONE | OPEN_TREE_CLOEXEC | AT_RECURSIVE);
  if (fd < 0) die("open_tree %s", src);
  if (attrs) {
    struct mount_attr ma = {.attr_set = attrs};
    if (syscall(SYS_mount_setattr, fd, "", AT_EMPTY_PATH | AT_RECURSIVE, &ma, sizeof ma) < 0) die("mount_setattr %s", src);
  }
  return fd;
}

static void attach(int fd, const char *dst) {
  if (syscall(SYS_move_mount, fd, "", AT_FDCWD, dst, MOVE_MOUNT_F_EMPTY_PATH) < 0) die("move_mount onto %s", dst);
  close(fd);
}

// System directories shown read-only. Where the host has a symlink (merged /usr), the new
// root gets the same symlink instead of a second mount.
static const char *const system_dirs[] = {"/usr", "/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32", "/etc", NULL};
static const char *const dev_nodes[] = {"null", "zero", "full", "random", "urandom", "tty", NULL};

#define NEWROOT "/tmp"  // mount point of the new root's tmpfs, inside our private namespace

static void build_root(const struct opts *o) {
  const uint64_t RO = MOUNT_ATTR_RDONLY | MOUNT_ATTR_NOSUID | MOUNT_ATTR_NODEV;
  int sys_fd[16];
  char sys_link[16][256];
  int n = 0;
  // 1. Take every source first, as detached clones: the new root's tmpfs may then
  //    hide their host paths (the repo may live under /tmp).
  for (int i = 0; system_dirs[i]; i++, n++) {
    struct stat st;
    sys_fd[n] = -1;
    sys_link[n][0] = 0;
    if (lstat(system_dirs[i], &st) < 0) { if (errno == ENOENT) continue; die("lstat %s", system_dirs[i]); }
    if (S_ISLNK(st.st_mode)) {
      ssize_t len = readlink(system_dirs[i], sys_link[n], sizeof sys_link[n] - 1);
      if (len < 0) die("readlink %s", system_dirs[i]);
      sys_link[n][len] = 0;
      continue;
    }
    if (!S_ISDIR(st.st_mode)) continue;
    sys_fd[n] = clone_tree(system_dirs[i], RO);
  }
  int dev_fd[8];
  for (int i = 0; dev_nodes[i]; i++) {
    char p[64];
    snprintf(p, sizeof p, "/dev/%s", dev_nodes[i]);
    dev_fd[i] = clone_tree(p, MOUNT_ATTR_NOSUID | MOUNT_ATTR_NOEXEC);
  }
  int repo_fd = clone_tree(o->repo, MOUNT_ATTR_NOSUID | MOUNT_ATTR_NODEV);
  int sock_fd = -1;
  if (o->docker_sock) {
    struct stat st;
    if (stat(o->docker_sock, &st) == 0 && S_ISSOCK(st.st_mode)) sock_fd = clone_tree(o->docker_sock, MOUNT_ATTR_NOSUID | MOUNT_ATTR_NODEV | MOUNT_ATTR_NOEXEC);
    errno = 0;
  }

  // 2. The new root: an empty tmpfs.
  CHECK(mount("tmpfs", NEWROOT, "tmpfs", MS_NOSUID | MS_NODEV, "mode=0755,size=1m"), "mount tmpfs new root");
  CHECK(chdir(NEWROOT), "chdir new root");
  for (int i = 0; system_dirs[i]; i++) {
    const char *rel = system_dirs[i] + 1;
    if (sys_link[i][0]) CHECK(symlink(sys_link[i], rel), "symlink %s", rel);
    else if (sys_fd[i] >= 0) { mkdirs(rel); attach(sys_fd[i], rel); }
  }
  // Hide tine's own host config directory (paths of the datastore and state).
  if (access("etc/tine", F_OK) == 0) CHECK(mount("tmpfs", "etc/tine", "tmpfs", MS_RDONLY | MS_NOSUID | MS_NODEV | MS_NOEXEC, "mode=0755,size=4k"), "hide /etc/tine");
  errno = 0;

  // 3. The session's tmp, first: the repository path may lie beneath /tmp.
  mkdirs("tmp");
  CHECK(mount("tmpfs", "tmp", "tmpfs", MS_NOSUID | MS_NODEV, "mode=1777,size=512m"), "mount session /tmp");

  // 4. /dev: only harmless nodes, and a private devpts (no other session's terminals).
  mkdirs("dev");
  CHECK(mount("tmpfs", "dev", "tmpfs", MS_NOSUID | MS_NOEXEC, "mode=0755,size=64k"), "mount /dev");
  for (int i = 0; dev_nodes[i]; i++) {
    char p[64];
    snprintf(p, sizeof p, "dev/%s", dev_nodes[i]);
    touch(p);
    attach(dev_fd[i], p);
  }
  mkdirs("dev/pts");
  CHECK(mount("devpts", "dev/pts", "devpts", MS_NOSUID | MS_NOEXEC, "newinstance,ptmxmode=0666,mode=0620"), "mount /dev/pts");
  CHECK(symlink("pts/ptmx", "dev/ptmx"), "symlink /dev/ptmx");
  CHECK(symlink("/proc/self/fd", "dev/fd"), "symlink /dev/fd");
  CHECK(symlink("/proc/self/fd/0", "dev/stdin"), "symlink /dev/stdin");
  CHECK(symlink("/proc/self/fd/1", "dev/stdout"), "symlink /dev/stdout");
  CHECK(symlink("/proc/self/fd/2", "dev/stderr"), "symlink /dev/stderr");
  CHECK(mount(NULL, "dev", NULL, MS_REMOUNT | MS_BIND | MS_RDONLY | MS_NOSUID | MS_NOEXEC, NULL), "remount /dev read-only");

  // 5. A fresh /proc of the new pid namespace: no host processes.
  mkdirs("proc");
  CHECK(mount("proc", "proc", "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC, NULL), "mount /proc");

  // 6. The repository, read-write at its usual path; nothing else of the datastore.
  mkdirs(o->repo + 1);
  attach(repo_fd, o->repo + 1);

  // 7. This repository's own Docker socket, if its daemon runs.
  if (sock_fd >= 0) {
    char dir[4096];
    snprintf(dir, sizeof dir, "%s", o->docker_sock + 1);
    char *slash = strrchr(dir, '/');
    if (slash) { *slash = 0; mkdirs(dir); }
    touch(o->docker_sock + 1);
    attach(sock_fd, o->docker_sock + 1);
  }

  // 8. Switch root; the old root is detached, so nothing of the host stays reachable.
  CHECK(syscall(SYS_pivot_root, ".", "."), "pivot_root");
  CHECK(umount2(".", MNT_DETACH), "detach old root");
  CHECK(chdir("/"), "chdir /");
  CHECK(mount(NULL, "/", NULL, MS_REMOUNT | MS_BIND | MS_RDONLY | MS_NOSUID | MS_NODEV, NULL), "remount / read-only");
}

static void add_rule(int ruleset, const char *path, uint64_t access, uint64_t handled) {
  int fd = open(path, O_PATH | O_CLOEXEC);
  if (fd < 0) { if (errno == ENOENT) { errno = 0; return; } die("landlock rule %s", path); }
  struct ll_path_beneath_attr pb = {.allowed_access = access & handled, .parent_fd = fd};
  // Rules on a non-directory may only carry file rights.
  struct stat st;
  if (fstat(fd, &st) < 0) die("fstat %s", path);
  if (!S_ISDIR(st.st_mode)) pb.allowed_access &= LL_FS_EXECUTE | LL_FS_WRITE_FILE | LL_FS_READ_FILE | LL_FS_TRUNCATE | LL_FS_IOCTL_DEV;
  if (syscall(SYS_landlock_add_rule, ruleset, LL_RULE_PATH_BENEATH, &pb, 0) < 0) die("landlock_add_rule %s", path);
  close(fd);
}

// Landlock, the second layer: rw(+exec) the repository and the session tmp, ro+exec the
// system dirs, read /proc and the device nodes; nothing else. With ABI >= 6, signals and
// abstract unix sockets are scoped to the sandbox too. Returns the ruleset fd.
static int landlock_ruleset(const struct opts *o) {
  int abi = landlock_abi();
  if (abi < 1) die("Landlock is not available on this kernel (set \"landlock\": \"off\" in the host config to run without this layer)");
  uint64_t handled = LL_FS_ABI1_ALL;
  if (abi >= 2) handled |= LL_FS_REFER;
  if (abi >= 3) handled |= LL_FS_TRUNCATE;
  if (abi >= 5) handled |= LL_FS_IOCTL_DEV;
  struct ll_ruleset_attr attr = {.handled_access_fs = handled};
  size_t size = abi >= 6 ? sizeof attr : (abi >= 4 ? 16 : 8);
  if (abi >= 6) attr.scoped = LL_SCOPE_ABSTRACT_UNIX_SOCKET | LL_SCOPE_SIGNAL;
  int rs = (int)syscall(SYS_landlock_create_ruleset, &attr, size, 0);
  if (rs < 0) die("landlock_create_ruleset");
  const uint64_t RX = LL_FS_EXECUTE | LL_FS_READ_FILE | LL_FS_READ_DIR;
  for (int i = 0; system_dirs[i]; i++) add_rule(rs, system_dirs[i], RX, handled);
  add_rule(rs, "/proc", LL_FS_READ_FILE | LL_FS_READ_DIR | LL_FS_WRITE_FILE, handled);
  add_rule(rs, "/dev", LL_FS_READ_FILE | LL_FS_WRITE_FILE | LL_FS_READ_DIR | LL_FS_IOCTL_DEV | LL_FS_TRUNCATE, handled);
  add_rule(rs, "/tmp", handled, handled);
  add_rule(rs, o->repo, handled, handled);
  return rs;
}

// Drop everything, in the order that leaves no window: capabilities we can only drop as
// root (bounding set, ambient), then setgroups -> setresgid -> setresuid -> no_new_privs;
// then verify each drop took.
static void drop_privileges(const struct opts *o) {
  for (int cap = 0; cap <= 63; cap++) {
    if (prctl(PR_CAPBSET_READ, cap, 0, 0, 0) < 0) { errno = 0; break; }  // past CAP_LAST_CAP
    CHECK(prctl(PR_CAPBSET_DROP, cap, 0, 0, 0), "drop bounding capability %d", cap);
  }
  CHECK(prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL, 0, 0, 0), "clear ambient capabilities");
  CHECK(setgroups(0, NULL), "setgroups");
  CHECK(setresgid(o->gid, o->gid, o->gid), "setresgid %d", (int)o->gid);
  CHECK(setresuid(o->uid, o->uid, o->uid), "setresuid %d", (int)o->uid);
  // setresuid from 0 already cleared permitted/effective; clear inheritable too.
  struct __user_cap_header_struct h = {.version = _LINUX_CAPABILITY_VERSION_3, .pid = 0};
  struct __user_cap_data_struct d[2];
  memset(d, 0, sizeof d);
  CHECK(syscall(SYS_capset, &h, d), "capset (clear all)");
  CHECK(prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0), "no_new_privs");

  uid_t ru, eu, su;
  gid_t rg, eg, sg;
  errno = 0;
  if (getresuid(&ru, &eu, &su) < 0 || ru != o->uid || eu != o->uid || su != o->uid) die("uid drop did not take");
  if (getresgid(&rg, &eg, &sg) < 0 || rg != o->gid || eg != o->gid || sg != o->gid) die("gid drop did not take");
  if (getgroups(0, NULL) != 0) die("supplementary groups remain");
  memset(d, 0, sizeof d);
  if (syscall(SYS_capget, &h, d) < 0) die("capget");
  if (d[0].effective | d[0].permitted | d[0].inheritable | d[1].effective | d[1].permitted | d[1].inheritable) die("capabilities remain");
  if (prctl(PR_GET_NO_NEW_PRIVS, 0, 0, 0, 0) != 1) die("no_new_privs did not take");
  if (setuid(0) == 0 || setgid(0) == 0) { errno = 0; die("could regain root after the drop"); }
  errno = 0;
}

// seccomp: no new user namespaces (a way to regain capabilities, and a large kernel attack
// surface). clone3 passes its flags in memory that a filter cannot read, so it gets ENOSYS
// and libc falls back to clone(), whose flags are checked.
#if defined(__x86_64__)
#define SANDBOX_AUDIT_ARCH AUDIT_ARCH_X86_64
#elif defined(__aarch64__)
#define SANDBOX_AUDIT_ARCH AUDIT_ARCH_AARCH64
#endif
static void deny_user_namespaces(void) {
#ifdef SANDBOX_AUDIT_ARCH
  struct sock_filter f[] = {
      BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, arch)),
      BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, SANDBOX_AUDIT_ARCH, 1, 0),
      BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_KILL_PROCESS),
      BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, nr)),
      BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, __NR_clone3, 0, 1),
      BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ERRNO | ENOSYS),
      BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, __NR_unshare, 1, 0),
      BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, __NR_clone, 0, 3),
      BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, args[0])),  // low word of flags
      BPF_JUMP(BPF_JMP | BPF_JSET | BPF_K, CLONE_NEWUSER, 0, 1),
      BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ERRNO | EPERM),
      BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW),
  };
  struct sock_fprog prog = {.len = sizeof f / sizeof f[0], .filter = f};
  CHECK(prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, &prog, 0, 0), "seccomp filter");
#else
#error "tine-sandbox: add this architecture's AUDIT_ARCH"
#endif
}

static int forwarded[] = {SIGINT, SIGTERM, SIGHUP, SIGQUIT, SIGUSR1, SIGUSR2, SIGCONT, SIGTSTP, SIGWINCH, 0};

static void noop_handler(int sig) { (void)sig; }

// A handler (not SIG_DFL) matters: pid 1 drops default-disposition signals.
static void catch_forwarded(sigset_t *set) {
  sigemptyset(set);
  sigaddset(set, SIGCHLD);
  struct sigaction sa;
  memset(&sa, 0, sizeof sa);
  sa.sa_handler = noop_handler;
  for (int i = 0; forwarded[i]; i++) {
    sigaddset(set, forwarded[i]);
    sigaction(forwarded[i], &sa, NULL);
  }
  sigaction(SIGCHLD, &sa, NULL);
  sigprocmask(SIG_BLOCK, set, NULL);
}

static int exit_code_of(int status) {
  if (WIFEXITED(status)) return WEXITSTATUS(status);
  if (WIFSIGNALED(status)) return 128 + WTERMSIG(status);
  return EXIT_SANDBOX;
}

// G: the command. New session (no controlling terminal of the caller: TIOCSTI cannot
// reach it); on --pty the pty slave becomes its controlling terminal.
static void run_command(const struct opts *o, int slave) {
  sigset_t none;
  sigemptyset(&none);
  struct sigaction dfl;
  memset(&dfl, 0, sizeof dfl);
  dfl.sa_handler = SIG_DFL;
  for (int i = 0; forwarded[i]; i++) sigaction(forwarded[i], &dfl, NULL);
  sigaction(SIGCHLD, &dfl, NULL);
  sigprocmask(SIG_SETMASK, &none, NULL);
  if (setsid() < 0) die("setsid");
  if (slave >= 0) {
    if (ioctl(slave, TIOCSCTTY, 0) < 0) die("TIOCSCTTY");
    for (int fd = 0; fd < 3; fd++) if (dup2(slave, fd) < 0) die("dup2 pty");
  }
  if (syscall(SYS_close_range, 3, ~0U, 0) < 0) die("close_range");
  status_fd = -1;
  extern char **environ;
  execvpe(o->argv[0], o->argv, environ);
  int e = errno;
  dprintf(STDERR_FILENO, "tine-sandbox: %s: %s\n", o->argv[0], strerror(e));
  _exit(e == ENOENT || e == ENOTDIR ? EXIT_NOT_FOUND : EXIT_CANNOT_EXEC);
}

// C: pid 1 of the sandbox. Builds it, confines itself, starts G, forwards signals, reaps.
static void sandbox_init(const struct opts *o, int slave, int master) {
  if (prctl(PR_SET_PDEATHSIG, SIGKILL, 0, 0, 0) < 0) die("PR_SET_PDEATHSIG");
  if (master >= 0) close(master);
  CHECK(mount(NULL, "/", NULL, MS_REC | MS_PRIVATE, NULL), "make mounts private");
  CHECK(sethostname(o->hostname, strlen(o->hostname)), "sethostname %s", o->hostname);
  build_root(o);
  int ruleset = o->landlock ? landlock_ruleset(o) : -1;
  drop_privileges(o);
  if (ruleset >= 0) {
    CHECK(syscall(SYS_landlock_restrict_self, ruleset, 0), "landlock_restrict_self");
    close(ruleset);
  }
  deny_user_namespaces();
  // Credential changes reset these: die with the parent, keep /proc/1 unreadable.
  if (prctl(PR_SET_PDEATHSIG, SIGKILL, 0, 0, 0) < 0) die("PR_SET_PDEATHSIG");
  if (prctl(PR_SET_DUMPABLE, 0, 0, 0, 0) < 0) die("PR_SET_DUMPABLE");
  CHECK(chdir(o->repo), "chdir %s", o->repo);

  sigset_t set;
  catch_forwarded(&set);
  pid_t g = fork();
  if (g < 0) die("fork command");
  if (g == 0) run_command(o, slave);
  if (slave >= 0) close(slave);
  if (status_fd >= 0) close(status_fd);
  status_fd = -1;
  for (;;) {
    siginfo_t si;
    int sig = sigwaitinfo(&set, &si);
    if (sig < 0) continue;
    if (sig != SIGCHLD) { if (kill(-g, sig) < 0) kill(g, sig); continue; }
    int status;
    pid_t w;
    while ((w = waitpid(-1, &status, WNOHANG)) > 0) {
      if (w == g) _exit(exit_code_of(status));  // the namespace's other processes die with us
    }
  }
}

static void write_all(int fd, const char *buf, ssize_t n) {
  while (n > 0) {
    ssize_t w = write(fd, buf, n);
    if (w < 0) { if (errno == EINTR || errno == EAGAIN) continue; return; }
    buf += w;
    n -= w;
  }
}

static void copy_winsize(int master) {
  struct winsize ws;
  if (ioctl(STDIN_FILENO, TIOCGWINSZ, &ws) == 0) ioctl(master, TIOCSWINSZ, &ws);
}

// P: stays outside. Forwards signals to C, relays the pty (raw caller terminal, SIGWINCH),
// returns C's exit status.
static int supervise(pid_t c, int master) {
  sigset_t set;
  sigemptyset(&set);
  sigaddset(&set, SIGCHLD);
  for (int i = 0; forwarded[i]; i++) sigaddset(&set, forwarded[i]);
  int sfd = signalfd(-1, &set, SFD_CLOEXEC);
  if (sfd < 0) { kill(c, SIGKILL); die("signalfd"); }
  int in_open = master >= 0;
  int master_open = master >= 0;
  int code = -1;
  char buf[16384];
  while (code < 0 || master_open) {
    struct pollfd p[3] = {{sfd, POLLIN, 0}, {in_open ? STDIN_FILENO : -1, POLLIN, 0}, {master_open ? master : -1, POLLIN, 0}};
    // Once C has exited, drain what the pty still holds, then stop.
    int r = poll(p, 3, code >= 0 ? 100 : -1);
    if (r < 0) { if (errno == EINTR) continue; break; }
    if (r == 0 && code >= 0) break;
    if (p[0].revents & POLLIN) {
      struct signalfd_siginfo si;
      if (read(sfd, &si, sizeof si) == sizeof si) {
        if (si.ssi_signo == SIGCHLD) {
          int status;
          if (waitpid(c, &status, WNOHANG) == c) code = exit_code_of(status);
        } else if (si.ssi_signo == SIGWINCH && master >= 0) {
          copy_winsize(master);
        } else {
          kill(c, si.ssi_signo);
        }
      }
    }
    if (p[1].revents & (POLLIN | POLLHUP | POLLERR)) {
      ssize_t n = read(STDIN_FILENO, buf, sizeof buf);
      if (n > 0) write_all(master, buf, n);
      else if (n == 0 || (errno != EINTR && errno != EAGAIN)) in_open = 0;
    }
    if (p[2].revents & (POLLIN | POLLHUP | POLLERR)) {
      ssize_t n = read(master, buf, sizeof buf);
      if (n > 0) write_all(STDOUT_FILENO, buf, n);
      else if (n == 0 || (errno != EINTR && errno != EAGAIN)) master_open = 0;  // EIO: slave closed
    }
  }
  if (code < 0) {
    int status;
    if (waitpid(c, &status, 0) == c) code = exit_code_of(status);
    else code = EXIT_SANDBOX;
  }
  restore_tty();
  return code;
}

int main(int argc, char **argv) {
  struct opts o;
  parse_args(argc, argv, &o);
  umask(022);  // the new root's directories must be traversable by the sandbox user
  if (geteuid() != 0) { errno = 0; die("must be started as root (by tine-host)"); }
  pid_t parent = getppid();
  if (prctl(PR_SET_PDEATHSIG, SIGKILL, 0, 0, 0) < 0) die("PR_SET_PDEATHSIG");
  if (getppid() != parent) { errno = 0; die("parent exited"); }
  // Fail before doing anything when the required second layer is missing.
  if (o.landlock && landlock_abi() < 1) die("Landlock is not available on this kernel (set \"landlock\": \"off\" in the host config to run without this layer)");

  int master = -1, slave = -1;
  if (o.pty) {
    master = posix_openpt(O_RDWR | O_NOCTTY | O_CLOEXEC);
    if (master < 0 || grantpt(master) < 0 || unlockpt(master) < 0) die("allocate pty");
    char name[128];
    if (ptsname_r(master, name, sizeof name) != 0) die("ptsname");
    slave = open(name, O_RDWR | O_NOCTTY | O_CLOEXEC);
    if (slave < 0) die("open %s", name);
    if (isatty(STDIN_FILENO)) {
      copy_winsize(master);
      if (tcgetattr(STDIN_FILENO, &saved_tty) == 0) {
        struct termios raw = saved_tty;
        cfmakeraw(&raw);
        tty_saved = 1;
        if (tcsetattr(STDIN_FILENO, TCSADRAIN, &raw) < 0) die("set terminal raw");
      }
    }
  }

  if (o.netns) {
    int nsfd = open(o.netns, O_RDONLY | O_CLOEXEC);
    if (nsfd < 0) die("open network namespace %s", o.netns);
    CHECK(setns(nsfd, CLONE_NEWNET), "join network namespace %s", o.netns);
    close(nsfd);
  }
  CHECK(unshare(CLONE_NEWNS | CLONE_NEWPID | CLONE_NEWIPC | CLONE_NEWUTS), "unshare namespaces");
  sigset_t set;
  catch_forwarded(&set);
  pid_t c = fork();
  if (c < 0) die("fork");
  if (c == 0) sandbox_init(&o, slave, master);
  if (slave >= 0) close(slave);
  if (status_fd >= 0) close(status_fd);
  status_fd = -1;
  return supervise(c, master);
}
