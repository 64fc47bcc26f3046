// A real btrfs on a loop device, made for one test file and removed afterwards
// (also when the test fails: ava's teardown runs after failures too).
import { execFileSync } from 'node:child_process';
import { mkdtempSync, rmSync, existsSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

export interface LoopFs {
  /** Directory holding the image and the mount point. */
  dir: string;
  image: string;
  mountpoint: string;
  loopDevice: string;
  cleanup(): void;
}

function run(cmd: string, args: string[]): string {
  return execFileSync(cmd, args, { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] });
}

/** Make a sparse image, format it (btrfs by default) and loop-mount it. */
export function makeLoopFs(opts: { size?: string; fstype?: 'btrfs' | 'ext4' } = {}): LoopFs {
  const dir = mkdtempSync(join(tmpdir(), 'tine-test-'));
  const image = join(dir, 'pool.img');
  const mountpoint = join(dir, 'mnt');
  run('truncate', ['-s', opts.size ?? '2G', image]);
  if ((opts.fstype ?? 'btrfs') === 'btrfs') run('mkfs.btrfs', ['-q', '-f', image]);
  else run('mkfs.ext4', ['-q', '-F', image]);
  run('mkdir', ['-p', mountpoint]);
  const loopDevice = run('losetup', ['--find', '--show', image]).trim();
  try {
    run('mount', [loopDevice, mountpoint]);
  } catch (err) {
    run('losetup', ['-d', loopDevice]);
    rmSync(dir, { recursive: true, force: true });
    throw err;
  }
  const cleanup = () => cleanupLoopFs({ dir, mountpoint, loopDevice });
  return { dir, image, mountpoint, loopDevice, cleanup };
}

export function cleanupLoopFs(fs: { dir: string; mountpoint: string; loopDevice: string }): void {
  // Anything mounted below the mount point first (lazy as a last resort), then the loop device.
  for (let i = 0; i < 5 && isMounted(fs.mountpoint); i++) {
    try { run('umount', ['-R', fs.mountpoint]); } catch { try { run('umount', ['-l', fs.mountpoint]); } catch { /* retry */ } }
  }
  try { run('losetup', ['-d', fs.loopDevice]); } catch { /* already detached (autoclear) */ }
  if (existsSync(fs.dir)) rmSync(fs.dir, { recursive: true, force: true });
}

export function isMounted(path: string): boolean {
  try {
    run('findmnt', ['-n', path]);
    return true;
  } catch {
    return false;
  }
}
