// tine-launch: what `tine` and `tine-host` are on a host (installed as links to this file,
// named by argv[0]). Node takes ~110 ms to start on a small host before tine's code loads;
// two paths cannot pay that on every call, so they ask the long-lived `tine-host serve`
// (src/host/serve.ts) on its root-only socket instead:
//
//   tine repo exec|connect … (as root): serve runs the pipeline (validate, repair, the guard
//     on THIS process's tree via SO_PEERCRED, audit) and answers with the sandbox helper's
//     argv + env; this process runs the helper, forwards signals and returns its code.
//   tine-host rpc [--role agent] (the far end of `tine -m`, also an agent key's forced
//     command): the request line goes to serve, the event lines come back.
//
// Everything else, no daemon, or a FALLBACK answer: exec Node with the package's script,
// exactly as before. The daemon is an accelerator, never a second implementation; this file
// decides nothing about policy.
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#ifndef NSIG
#define NSIG 65
#endif

#define MAX_RESPONSE (16 << 20)
#define MAX_REQUEST_LINE (1 << 20)

static char package_root[PATH_MAX];

static void die(const char *msg) {
  fprintf(stderr, "tine: %s: %s\n", msg, strerror(errno));
  exit(1);
}

// <root>/build/Release/tine-launch -> <root>
static void find_package_root(void) {
  ssize_t n = readlink("/proc/self/exe", package_root, sizeof package_root - 1);
  if (n <= 0) die("cannot read /proc/self/exe");
  package_root[n] = 0;
  for (int i = 0; i < 3; i++) {
    char *slash = strrchr(package_root, '/');
    if (!slash || slash == package_root) {
      fprintf(stderr, "tine: %s is not inside a built package\n", package_root);
      exit(1);
    }
    *slash = 0;
  }
}

// The slow path: the package's own script under Node, with this process's arguments.
static void exec_node(const char *script, int argc, char **argv, const char *extra1, const char *extra2) {
  char path[PATH_MAX + 64];
  if ((size_t)snprintf(path, sizeof path, "%s/dist/src/bin/%s.js", package_root, script) >= sizeof path) {
    fprintf(stderr, "tine: package path too long\n");
    exit(1);
  }
  char **args = calloc((size_t)argc + 5, sizeof *args);
  if (!args) die("out of memory");
  int k = 0;
  args[k++] = "node";
  args[k++] = path;
  for (int i = 1; i < argc; i++) args[k++] = argv[i];
  if (extra1) args[k++] = (char *)extra1;
  if (extra2) args[k++] = (char *)extra2;
  args[k] = NULL;
  execvp("node", args);
  fprintf(stderr, "tine: cannot run node: %s\n", strerror(errno));
  exit(127);
}

// The host config this process uses (as tine-host would pick it).
static const char *config_path(void) {
  const char *cfg = getenv("TINE_HOST_CONFIG");
  return cfg && *cfg ? cfg : "/etc/tine/host.json";
}

// <runDir>/host.sock, runDir read from the host config (a plain "runDir": "…" string; a
// value with escapes is not ours to guess: then no fast path). Honoured only from a config
// that root owns and no one else may write: the socket's answer is executed as root.
static int socket_path(char *out, size_t size) {
  const char *cfg = config_path();
  const char *run_dir = "/run/tine";
  char buf[65536];
  char value[PATH_MAX];
  int fd = open(cfg, O_RDONLY | O_CLOEXEC);
  if (fd >= 0) {
    struct stat st;
    if (fstat(fd, &st) != 0 || st.st_uid != 0 || (st.st_mode & 022)) {
      close(fd);
      return -1;
    }
    ssize_t n = read(fd, buf, sizeof buf - 1);
    close(fd);
    if (n < 0) return -1;
    buf[n] = 0;
    char *key = strstr(buf, "\"runDir\"");
    if (key) {
      if (strstr(key + 1, "\"runDir\"")) return -1;  // two of them: JSON.parse would take the last
      char *p = key + 8;
      while (*p == ' ' || *p == '\t' || *p == '\n' || *p == '\r') p++;
      if (*p++ != ':') return -1;
      while (*p == ' ' || *p == '\t' || *p == '\n' || *p == '\r') p++;
      if (*p++ != '"') return -1;
      char *end = strchr(p, '"');
      if (!end || (size_t)(end - p) >= sizeof value || memchr(p, '\\', (size_t)(end - p))) return -1;
      memcpy(value, p, (size_t)(end - p));
      value[end - p] = 0;
      run_dir = value;
    }
  } else if (errno != ENOENT) {
    return -1;
  }
  if ((size_t)snprintf(out, size, "%s/host.sock", run_dir) >= size) return -1;
  return 0;
}

// A connection to root's tine-host serve, or -1. Whoever listens must be root: its answer
// is run as root.
static int connect_daemon(void) {
  struct sockaddr_un addr = {.sun_family = AF_UNIX};
  if (socket_path(addr.sun_path, sizeof addr.sun_path) != 0) return -1;
  int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return -1;
  struct ucred cred;
  socklen_t len = sizeof cred;
  if (connect(fd, (struct sockaddr *)&addr, sizeof addr) != 0 || getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cred, &len) != 0 || cred.uid != 0) {
    close(fd);
    return -1;
  }
  return fd;
}

// To the daemon: never SIGPIPE (a daemon that went away means "fall back", not death).
static int send_all(int fd, const void *data, size_t len) {
  const char *p = data;
  while (len > 0) {
    ssize_t n = send(fd, p, len, MSG_NOSIGNAL);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return -1;
    p += n;
    len -= (size_t)n;
  }
  return 0;
}

static int write_all(int fd, const void *data, size_t len) {
  const char *p = data;
  while (len > 0) {
    ssize_t n = write(fd, p, len);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return -1;
    p += n;
    len -= (size_t)n;
  }
  return 0;
}

// The whole answer (serve closes after it); NULL when the daemon said nothing.
static char *read_all(int fd, size_t *len) {
  size_t cap = 65536, n = 0;
  char *buf = malloc(cap + 1);
  if (!buf) return NULL;
  for (;;) {
    if (n == cap) {
      if (cap >= MAX_RESPONSE) break;
      cap *= 2;
      char *bigger = realloc(buf, cap + 1);
      if (!bigger) break;
      buf = bigger;
    }
    ssize_t r = read(fd, buf + n, cap - n);
    if (r < 0 && errno == EINTR) continue;
    if (r <= 0) break;
    n += (size_t)r;
  }
  buf[n] = 0;
  *len = n;
  if (n == 0) {
    free(buf);
    return NULL;
  }
  return buf;
}

// Splits `count` NUL-terminated strings starting at *p (bounded by end) into a NULL-ended array.
static char **take_strings(char **p, char *end, int count) {
  char **out = calloc((size_t)count + 1, sizeof *out);
  if (!out) return NULL;
  for (int i = 0; i < count; i++) {
    char *z = memchr(*p, 0, (size_t)(end - *p));
    if (!z) return NULL;
    out[i] = *p;
    *p = z + 1;
  }
  return out;
}

static volatile pid_t child_pid;

static void forward_signal(int sig) {
  if (child_pid > 0) kill(child_pid, sig);
}

// Write a failure template with the helper's status where \x01 (text) or \u0001 (JSON) is.
static void write_template(int fd, const char *tpl, const char *status) {
  for (const char *p = tpl; *p;) {
    if (*p == 1) {
      write_all(fd, status, strlen(status));
      p++;
    } else if (!strncmp(p, "\\u0001", 6)) {
      for (const char *c = status; *c; c++) {
        unsigned char ch = (unsigned char)*c;
        char esc[8];
        if (ch == '"' || ch == '\\') snprintf(esc, sizeof esc, "\\%c", ch);
        else if (ch == '\n') snprintf(esc, sizeof esc, "\\n");
        else if (ch < 0x20) snprintf(esc, sizeof esc, "\\u%04x", ch);
        else esc[0] = (char)ch, esc[1] = 0;
        write_all(fd, esc, strlen(esc));
      }
      p += 6;
    } else {
      const char *next = p + 1;
      while (*next && *next != 1 && *next != '\\') next++;
      write_all(fd, p, (size_t)(next - p));
      p = next;
    }
  }
}

// Run the sandbox helper as serve planned it: status on fd 3, signals forwarded, its code out.
static int run_planned(char **argv, char **envp, const char *fail_out, const char *fail_err) {
  int status_pipe[2];
  if (pipe2(status_pipe, O_CLOEXEC) != 0) die("pipe");
  const int sigs[] = {SIGINT, SIGTERM, SIGHUP, SIGQUIT};
  sigset_t forwarded, old;
  sigemptyset(&forwarded);
  for (size_t i = 0; i < sizeof sigs / sizeof *sigs; i++) sigaddset(&forwarded, sigs[i]);
  struct sigaction sa = {.sa_handler = forward_signal};
  sigemptyset(&sa.sa_mask);
  sa.sa_flags = SA_RESTART;
  for (size_t i = 0; i < sizeof sigs / sizeof *sigs; i++) sigaction(sigs[i], &sa, NULL);
  // Held until the child's pid is known, so none is lost between fork and child_pid.
  sigprocmask(SIG_BLOCK, &forwarded, &old);
  pid_t pid = fork();
  if (pid < 0) die("fork");
  if (pid == 0) {
    // The helper starts as Node would start it: every signal default, nothing blocked.
    struct sigaction dfl = {.sa_handler = SIG_DFL};
    for (int sig = 1; sig < NSIG; sig++) sigaction(sig, &dfl, NULL);
    sigset_t none;
    sigemptyset(&none);
    sigprocmask(SIG_SETMASK, &none, NULL);
    if (status_pipe[1] == 3) {
      fcntl(3, F_SETFD, 0);
    } else if (dup2(status_pipe[1], 3) != 3) {
      _exit(125);
    }
    execve(argv[0], argv, envp);
    dprintf(3, "cannot execute the sandbox helper %s: %s\n", argv[0], strerror(errno));
    _exit(125);
  }
  child_pid = pid;
  sigprocmask(SIG_SETMASK, &old, NULL);
  close(status_pipe[1]);
  int wstatus = 0;
  while (waitpid(pid, &wstatus, 0) < 0) {
    if (errno != EINTR) die("waitpid");
  }
  // The helper wrote its status before it exited; a descendant may still hold the pipe open.
  fcntl(status_pipe[0], F_SETFL, O_NONBLOCK);
  char status[4097];
  ssize_t n = read(status_pipe[0], status, sizeof status - 1);
  if (n > 0) {
    status[n] = 0;
    while (n > 0 && (status[n - 1] == '\n' || status[n - 1] == ' ')) status[--n] = 0;
    write_template(1, fail_out, status);
    write_template(2, fail_err, status);
    return 1;
  }
  if (WIFEXITED(wstatus)) return WEXITSTATUS(wstatus);
  if (WIFSIGNALED(wstatus)) return 128 + WTERMSIG(wstatus);
  return 1;
}

// `tine repo exec|connect …` as root. Returns only to fall back to Node.
static void fast_exec(int argc, char **argv) {
  int fd = connect_daemon();
  if (fd < 0) return;
  const char *names[] = {"TERM", "LANG", "LC_ALL", "COLORTERM", "TZ"};
  int envc = 0;
  for (size_t i = 0; i < sizeof names / sizeof *names; i++) envc += getenv(names[i]) != NULL;
  int mask = (isatty(0) ? 1 : 0) | (isatty(1) ? 2 : 0) | (isatty(2) ? 4 : 0);
  char header[64];
  int hl = snprintf(header, sizeof header, "EXEC %d %d %d\n", argc - 1, envc, mask);
  if (send_all(fd, header, (size_t)hl) != 0) goto fallback;
  if (send_all(fd, config_path(), strlen(config_path()) + 1) != 0) goto fallback;
  for (int i = 1; i < argc; i++)
    if (send_all(fd, argv[i], strlen(argv[i]) + 1) != 0) goto fallback;
  for (size_t i = 0; i < sizeof names / sizeof *names; i++) {
    const char *v = getenv(names[i]);
    if (!v) continue;
    char kv[4096];
    int n = snprintf(kv, sizeof kv, "%s=%s", names[i], v);
    if (n < 0 || (size_t)n >= sizeof kv) kv[0] = 0, n = 0;
    if (send_all(fd, kv, (size_t)n + 1) != 0) goto fallback;
  }
  size_t len = 0;
  char *resp = read_all(fd, &len);
  close(fd);
  if (!resp) return;
  char *end = resp + len;
  char *nl = memchr(resp, '\n', len);
  if (!nl) return;
  *nl = 0;
  char *body = nl + 1;
  int code, a, b;
  char mode[8];
  if (sscanf(resp, "EXIT %d %d %d", &code, &a, &b) == 3) {
    if (a < 0 || b < 0 || body + a + b > end) return;
    fflush(stdout);
    write_all(1, body, (size_t)a);
    write_all(2, body + a, (size_t)b);
    exit(code);
  }
  if (sscanf(resp, "RUN %d %d %7s", &a, &b, mode) == 3 && a > 0) {
    char *p = body;
    char **args = take_strings(&p, end, a);
    char **envp = take_strings(&p, end, b);
    char **tail = take_strings(&p, end, 2);
    if (!args || !envp || !tail) {
      fprintf(stderr, "tine: a malformed answer from tine-host serve\n");
      exit(1);
    }
    exit(run_planned(args, envp, tail[0], tail[1]));
  }
  return;  // FALLBACK, or an answer this launcher does not know
fallback:
  close(fd);
}

// `tine-host rpc [--role agent]`: relay one request to serve. Returns only to fall back.
static void relay_rpc(int argc, char **argv, const char *role) {
  const char *orig = getenv("SSH_ORIGINAL_COMMAND");
  if (orig && strstr(orig, "--request")) return;  // exec/connect: their own path
  // The request line first (the daemon drops a connection that sends nothing for 10 s),
  // byte by byte: what follows it on stdin (a transfer's stream) is not ours.
  char *line = malloc(MAX_REQUEST_LINE);
  if (!line) die("out of memory");
  size_t n = 0;
  for (;;) {
    char c;
    ssize_t r = read(0, &c, 1);
    if (r < 0 && errno == EINTR) continue;
    if (r <= 0 || c == '\n') break;
    if (n == MAX_REQUEST_LINE) break;
    line[n++] = c;
  }
  int fd = connect_daemon();
  char header[64];
  int hl = snprintf(header, sizeof header, "RPC %s %zu\n", role ? "agent" : "-", n);
  char answer[16];
  size_t an = 0;
  if (fd >= 0 && send_all(fd, header, (size_t)hl) == 0 && send_all(fd, config_path(), strlen(config_path()) + 1) == 0 && send_all(fd, line, n) == 0) {
    while (an < sizeof answer - 1) {
      ssize_t r = read(fd, answer + an, 1);
      if (r < 0 && errno == EINTR) continue;
      if (r <= 0 || answer[an] == '\n') break;
      an++;
    }
  }
  answer[an] = 0;
  if (strcmp(answer, "STREAM") != 0) {
    // FALLBACK (a transfer verb, a long command), no daemon, or it went away: Node gets
    // the line on an inherited memfd (not on argv, where ps would show it) and stdin as is.
    if (fd >= 0) close(fd);
    int mfd = memfd_create("tine-rpc-request", 0);
    if (mfd < 0 || write_all(mfd, line, n) != 0 || lseek(mfd, 0, SEEK_SET) != 0) die("memfd");
    char fdarg[16];
    snprintf(fdarg, sizeof fdarg, "%d", mfd);
    exec_node("tine-host", argc, argv, "--request-fd", fdarg);
  }
  free(line);
  // Event lines to stdout as they come; the last line, "\0EXIT <code>", is the exit code.
  char buf[65536];
  char pending[65536];
  size_t pn = 0;
  for (;;) {
    ssize_t r = read(fd, buf, sizeof buf);
    if (r < 0 && errno == EINTR) continue;
    if (r <= 0) break;
    for (ssize_t i = 0; i < r; i++) {
      if (pn == sizeof pending) {
        write_all(1, pending, pn);
        pn = 0;
      }
      pending[pn++] = buf[i];
      if (buf[i] != '\n') continue;
      if (pending[0] == 0) {
        int code = 1;
        pending[pn - 1] = 0;
        if (pn > 6 && sscanf(pending + 1, "EXIT %d", &code) == 1) exit(code);
        exit(1);
      }
      write_all(1, pending, pn);
      pn = 0;
    }
  }
  if (pn) write_all(1, pending, pn);
  fprintf(stderr, "tine-host: the host daemon closed the connection mid-answer\n");
  exit(255);
}

int main(int argc, char **argv) {
  const char *name = strrchr(argv[0], '/');
  name = name ? name + 1 : argv[0];
  find_package_root();
  if (!strncmp(name, "tine-host", 9)) {
    if (argc >= 2 && !strcmp(argv[1], "rpc")) {
      if (argc == 2) relay_rpc(argc, argv, NULL);
      else if (argc == 4 && !strcmp(argv[2], "--role") && !strcmp(argv[3], "agent")) relay_rpc(argc, argv, "agent");
      else if (argc == 3 && !strcmp(argv[2], "--role=agent")) relay_rpc(argc, argv, "agent");
    }
    exec_node("tine-host", argc, argv, NULL, NULL);
  }
  // tine: only root reaches the daemon, and only exec/connect are planned there.
  if (geteuid() == 0) {
    for (int i = 1; i + 1 < argc && i <= 4; i++) {
      if (!strcmp(argv[i], "repo") && (!strcmp(argv[i + 1], "exec") || !strcmp(argv[i + 1], "connect"))) {
        fast_exec(argc, argv);
        break;
      }
    }
  }
  exec_node("tine", argc, argv, NULL, NULL);
  return 127;
}
