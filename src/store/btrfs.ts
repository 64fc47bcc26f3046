// The default store: one btrfs subvolume per repository. A fork is a single
// BTRFS_IOC_SNAP_CREATE_V2: atomic and O(1) in the size of the repository.
import { execFile } from 'node:child_process';
import { promisify } from 'node:util';
import { readdirSync, lstatSync } from 'node:fs';
import { join } from 'node:path';
import { loadNative } from '../native/addon.js';
import type { StoreDriver } from './driver.js';
import { unsupported } from '../errors.js';

const execFileP = promisify(execFile);

export class BtrfsSubvolumeDriver implements StoreDriver {
  readonly name = 'btrfs-subvolume';
  readonly caps = {
    atomicSnapshot: true,
    readonlySnapshot: true,
    reflinkCopy: true,
    needsFreezeForConsistency: false,
    sendReceive: true,
  };

  check(dir: string): void {
    const { type } = loadNative().fsType(dir);
    if (type !== 'btrfs') {
      throw unsupported(`${dir} is on ${type}, not btrfs: repositories need btrfs subvolumes`, [
        { description: 'Use the embedded default datastore (a loop-mounted btrfs pool file)', run: 'tine setup' },
        { description: 'Or point setup at a btrfs filesystem', run: 'tine setup --datastore <btrfs mount>' },
      ]);
    }
  }

  createVolume(path: string): Promise<void> {
    return loadNative().subvolumeCreate(path);
  }

  snapshotVolume(src: string, dst: string, opts: { readonly?: boolean } = {}): Promise<void> {
    return loadNative().snapshot(src, dst, opts.readonly ?? false);
  }

  async destroyVolume(path: string): Promise<void> {
    const native = loadNative();
    try {
      await native.subvolumeDestroy(path);
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'ENOTEMPTY') throw err;
      // A repository may hold nested subvolumes (made by a tool inside it); a subvolume
      // with children cannot be destroyed, so children go first. Walk only when needed.
      for (const child of nestedSubvolumes(path)) await native.subvolumeDestroy(child);
      await native.subvolumeDestroy(path);
    }
  }

  volumeExists(path: string): boolean {
    return loadNative().isSubvolume(path);
  }

  async copyTreeIn(srcDir: string, volume: string): Promise<void> {
    // cp clones extents on the same btrfs (FICLONE) and falls back to a copy elsewhere;
    // it already handles every file type, sparse files, xattrs and hard links.
    await execFileP('cp', ['-a', '--reflink=auto', '--', `${srcDir}/.`, `${volume}/`]);
  }
}

/** Nested subvolumes below `root`, deepest first. Does not follow symlinks. */
function nestedSubvolumes(root: string): string[] {
  const native = loadNative();
  const found: string[] = [];
  const walk = (dir: string, depth: number) => {
    if (depth > 64) return;
    let entries;
    try {
      entries = readdirSync(dir, { withFileTypes: true });
    } catch {
      return;
    }
    for (const e of entries) {
      if (!e.isDirectory()) continue;
      const p = join(dir, e.name);
      const st = lstatSync(p);
      // Each subvolume root is inode 256 (and has its own st_dev, so no dev test here).
      if (st.ino === 256 && native.isSubvolume(p)) {
        walk(p, depth + 1);
        found.push(p);
      } else {
        walk(p, depth + 1);
      }
    }
  };
  walk(root, 0);
  return found;
}
