// Loads the C++ addon (binding.gyp target `tine_native`). Only tine-host uses it; the thin
// client never imports this module, so it keeps running where the addon cannot be built.
import { existsSync } from 'node:fs';
import { createRequire } from 'node:module';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

/**
 * Shape of the addon's errors, as Node's SystemError: `code` is the errno name ('ENOENT'),
 * `errno` the NEGATIVE errno number (-2), as in Node's own fs errors; `syscall` names the
 * failing call ('open', 'ioctl(BTRFS_IOC_SNAP_CREATE_V2)'); `dest` is set for two-path calls.
 */
export interface SystemErrorLike {
  code: string;
  errno: number;
  syscall: string;
  path?: string;
  dest?: string;
}

export function isSystemError(e: unknown): e is Error & SystemErrorLike {
  if (!(e instanceof Error)) return false;
  const o = e as Partial<SystemErrorLike>;
  return typeof o.code === 'string' && typeof o.errno === 'number' && typeof o.syscall === 'string';
}

export interface ProcStat {
  pid: number;
  comm: string;
  /** One letter: R, S, D, Z, T, … */
  state: string;
  ppid: number;
  /** Field 22: start time after boot, in clock ticks. */
  starttime: number;
}

export interface FsTypeInfo {
  type: 'btrfs' | 'ext4' | 'xfs' | 'tmpfs' | 'overlayfs' | 'nfs' | 'zfs' | 'proc' | 'unknown';
  /** statfs f_type as an unsigned 32-bit number. */
  magic: number;
}

/**
 * The addon's functions. Promise-returning ones run on the libuv thread pool and reject with
 * a SystemError-like Error (bad argument types reject with a TypeError naming the argument);
 * the sync ones throw the same errors.
 */
export interface NativeAddon {
  readonly supported: true;
  /** BTRFS_IOC_SUBVOL_CREATE_V2 on the parent directory. */
  subvolumeCreate(path: string): Promise<void>;
  /** BTRFS_IOC_SNAP_CREATE_V2 of subvolume `src` as `dst` (read-only when `readonly`). */
  snapshot(src: string, dst: string, readonly: boolean): Promise<void>;
  /** BTRFS_IOC_SNAP_DESTROY_V2 (falls back to BTRFS_IOC_SNAP_DESTROY on old kernels). */
  subvolumeDestroy(path: string): Promise<void>;
  /** True for a subvolume root on btrfs; false for anything else or a missing path. */
  isSubvolume(path: string): boolean;
  /** FICLONE `src` to a new file `dst` (O_EXCL, same mode); `dst` is removed on failure. */
  cloneFile(src: string, dst: string): Promise<void>;
  /**
   * FIFREEZE the fs at `mountpoint`, FICLONE `src` to a new `dst`, FITHAW — the fs is thawed
   * on every path. `dst` must not be on the frozen fs (EDEADLK).
   */
  freezeClone(mountpoint: string, src: string, dst: string): Promise<void>;
  syncfs(path: string): Promise<void>;
  fsType(path: string): FsTypeInfo;
  /** Parses `<procRoot ?? '/proc'>/<pid>/stat`. */
  procStat(pid: number, procRoot?: string): ProcStat;
  /** Parses `<procRoot ?? '/proc'>/<pid>/environ`; the first of duplicate names wins. */
  procEnviron(pid: number, procRoot?: string): Record<string, string>;
  /** SO_PEERCRED of a connected unix socket fd (the peer as the kernel saw it at connect). */
  peerCredentials(fd: number): { pid: number; uid: number; gid: number };
  /** SO_PEERPIDFD: a pidfd of the very process that connected (-1: kernel < 6.5). The caller closes it. */
  peerPidfd(fd: number): number;
  /** pidfd_send_signal(pidfd, 0): does that process still live? */
  pidfdAlive(pidfd: number): boolean;
  /**
   * Open `root`, then each component of `relPath` with O_PATH|O_NOFOLLOW (a symlink: ELOOP,
   * `..`: EXDEV), clone that inode's mount tree (open_tree) and attach it (move_mount) on
   * `target`, which it creates: an empty 0700 directory, or an empty file for a non-directory.
   * With `create`, missing components are made (mkdirat) and chowned to uid:gid. Sync.
   */
  pinBeneath(root: string, relPath: string, target: string, create?: { uid: number; gid: number }): void;
}

/** The host cannot run tine-host (not Linux, or the addon is missing/broken). Exit code 7. */
export class NativeUnavailableError extends Error {
  readonly code = 'HOST_UNSUPPORTED';
  readonly exitCode = 7;
  constructor(message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = 'NativeUnavailableError';
  }
}

/** Nearest ancestor of this file's directory that holds a package.json. */
function packageRoot(): string {
  const start = dirname(fileURLToPath(import.meta.url));
  for (let dir = start; ; dir = dirname(dir)) {
    if (existsSync(join(dir, 'package.json'))) return dir;
    if (dirname(dir) === dir) return start;
  }
}

/** Where the addon is looked for, in order. */
export function nativeCandidates(): string[] {
  const root = packageRoot();
  const paths = [
    join(root, 'build', 'Release', 'tine_native.node'),
    join(root, 'build', 'Debug', 'tine_native.node'),
  ];
  const fromEnv = process.env.TINE_NATIVE_PATH;
  return fromEnv ? [fromEnv, ...paths] : paths;
}

let cached: NativeAddon | undefined;

export function loadNative(): NativeAddon {
  if (cached) return cached;
  if (process.platform !== 'linux') {
    throw new NativeUnavailableError(
      `tine-host needs Linux with btrfs; this platform is ${process.platform}. ` +
        'Run tine-host on a Linux machine and use the tine client from here (over ssh).',
    );
  }
  const require = createRequire(import.meta.url);
  const failures: string[] = [];
  for (const path of nativeCandidates()) {
    if (!existsSync(path)) {
      failures.push(`${path}: not found`);
      continue;
    }
    try {
      const mod = require(path) as Partial<NativeAddon> & { supported?: boolean };
      if (mod.supported !== true) {
        failures.push(`${path}: built without Linux support`);
        continue;
      }
      cached = mod as NativeAddon;
      return cached;
    } catch (err) {
      const reason = err instanceof Error ? err.message.split('\n')[0] : String(err);
      failures.push(`${path}: ${reason}`);
    }
  }
  throw new NativeUnavailableError(
    'The tine native addon could not be loaded. Tried:\n' +
      failures.map((f) => `  - ${f}`).join('\n') +
      '\nBuild it with `npm run build` (or `npx node-gyp rebuild`), or set TINE_NATIVE_PATH.',
  );
}
