// The datastore: a btrfs filesystem that holds repositories. Where the host has none,
// setup makes the embedded default (sparse pool file → mkfs.btrfs → loop mount), and every
// later command re-attaches it after a reboot.
import { existsSync, mkdirSync, openSync, closeSync, ftruncateSync, statSync, chmodSync, chownSync } from 'node:fs';
import { dirname } from 'node:path';
import { loadNative } from '../native/addon.js';
import { type LoadedHostConfig, reposDir } from './config.js';
import { run, mountPoints } from './system.js';
import { unsupported, TineError, EXIT } from '../errors.js';

export function fsTypeOf(path: string): string {
  return loadNative().fsType(path).type;
}

export function parseSize(size: string): number {
  const m = /^(\d+)([KMGT]?)$/.exec(size);
  if (!m) throw new TineError('INVALID_INPUT', EXIT.usage, `--size: "${size}" is not a size like 20G`, { field: 'size' });
  const mult = { '': 1, K: 1024, M: 1024 ** 2, G: 1024 ** 3, T: 1024 ** 4 }[m[2] as '' | 'K' | 'M' | 'G' | 'T'];
  return Number(m[1]) * mult;
}

/** Is the configured datastore a mounted, usable btrfs right now? */
export function datastoreReady(config: LoadedHostConfig): boolean {
  return existsSync(config.datastore) && fsTypeOf(config.datastore) === 'btrfs';
}

/** Make sure the datastore is there; re-attach the embedded pool if the host rebooted. */
export function attachDatastore(config: LoadedHostConfig): { attached: boolean } {
  if (datastoreReady(config)) {
    ensureLayout(config);
    return { attached: false };
  }
  if (config.pool && existsSync(config.pool.file)) {
    mountPool(config.pool.file, config.datastore);
    ensureLayout(config);
    return { attached: true };
  }
  throw new TineError('DATASTORE_MISSING', EXIT.unsupported, `no btrfs datastore at ${config.datastore}` +
    (config.pool ? ` and no pool file at ${config.pool.file}` : ' (it is configured as the operator\'s own btrfs: is it mounted?)'), {
    next: [{ description: 'Prepare the host (idempotent)', run: 'tine setup' }],
  });
}

export function mountPool(file: string, mountpoint: string): void {
  mkdirSync(mountpoint, { recursive: true, mode: 0o755 });
  const existing = mountPoints().get(mountpoint);
  if (existing && existing.fstype !== 'btrfs') {
    throw unsupported(`${mountpoint} is already a ${existing.fstype} mount; the pool cannot be mounted over it`);
  }
  // `-o loop` takes a free loop device and sets autoclear, so unmounting frees it.
  run('mount', ['-t', 'btrfs', '-o', 'loop', file, mountpoint]);
}

/** Create the sparse pool file and format it btrfs. */
export function createPool(file: string, size: string): void {
  const bytes = parseSize(size);
  if (bytes < 256 * 1024 ** 2) {
    throw new TineError('INVALID_INPUT', EXIT.usage, `--size: ${size} is too small; btrfs needs at least 256M`, { field: 'size' });
  }
  mkdirSync(dirname(file), { recursive: true, mode: 0o700 });
  const fd = openSync(file, 'wx', 0o600);
  try {
    ftruncateSync(fd, bytes); // sparse: blocks are allocated only as data is written
  } finally {
    closeSync(fd);
  }
  try {
    run('mkfs.btrfs', ['-q', '-L', 'tine', file]);
  } catch (err) {
    run('rm', ['-f', file]);
    throw err;
  }
}

/** The directories every command relies on inside the datastore and the run dir. */
export function ensureLayout(config: LoadedHostConfig): void {
  const repos = reposDir(config);
  if (!existsSync(repos)) mkdirSync(repos, { recursive: true, mode: 0o711 });
  // Traversable (so a sandbox can reach its own repo by its usual path), not listable.
  if ((statSync(repos).mode & 0o777) !== 0o711) chmodSync(repos, 0o711);
  if (!existsSync(config.runDir)) mkdirSync(config.runDir, { recursive: true, mode: 0o711 });
}

export function chownToSandbox(path: string, config: LoadedHostConfig): void {
  chownSync(path, config.sandboxUid, config.sandboxUid);
}
