// `tine setup`: idempotent host preparation. Each step checks before it acts, so a second
// run changes nothing and a run after a partial failure finishes the job.
import { existsSync, mkdirSync, chmodSync } from 'node:fs';
import { resolve } from 'node:path';
import { type LoadedHostConfig, saveHostConfig, reposDir } from './config.js';
import { createPool, mountPool, ensureLayout, fsTypeOf, datastoreReady, parseSize } from './datastore.js';
import { ensureCommands, run, which } from './system.js';
import { openDb } from '../state/db.js';
import { ensureLifecycleHost } from '../lifecycle/host.js';
import { ensureSecretKeyForSetup } from '../secrets/store.js';
import type { Timeline } from '../ops/timeline.js';
import { unsupported, invalidInput, TineError, EXIT } from '../errors.js';
import { missingNetworkFeatures } from '../network/netns.js';

export interface SetupInput {
  datastore?: string;
  size?: string;
}

export interface SetupResult {
  datastore: string;
  embedded: boolean;
  poolFile: string | null;
  sandboxUser: string;
  sandboxUid: number;
  stateDb: string;
  runDir: string;
  configPath: string;
  changed: string[];
}

export async function setupHost(config: LoadedHostConfig, timeline: Timeline, input: SetupInput): Promise<SetupResult> {
  if (process.platform !== 'linux') throw unsupported(`tine-host needs Linux with btrfs; this is ${process.platform}`);
  if (process.getuid?.() !== 0) {
    throw unsupported('setup needs root (it mounts filesystems and creates the sandbox user)', [
      { description: 'Run it as root', run: 'sudo tine setup' },
    ]);
  }
  if (input.size !== undefined) parseSize(input.size);
  const changed: string[] = [];
  let next: LoadedHostConfig = { ...config };

  await timeline.step('packages', 'Host tools present', () => {
    const installed = ensureCommands([
      { command: 'mkfs.btrfs', pkg: 'btrfs-progs' },
      { command: 'losetup', pkg: 'mount' },
    ]);
    if (installed.length) changed.push(`installed ${installed.join(', ')}`);
  });

  await timeline.step('docker', 'Docker present; boot restore unit where systemd runs', () => {
    changed.push(...ensureLifecycleHost(next));
  });

  await timeline.step('network', 'Kernel network features present (netns, veth, nf_tables)', () => {
    // Repositories are isolated from one another by the network layer (src/network/):
    // a host that lacks a piece of it is refused here, not discovered at the first exec.
    const missing = missingNetworkFeatures(next);
    if (missing.length) {
      throw new TineError('HOST_UNSUPPORTED', EXIT.unsupported, `the network isolation between repositories needs, and this host lacks: ${missing.join('; ')}`, {
        details: { missing },
        next: [{ description: 'Install iproute2, nftables and util-linux, or use a kernel with these features, then run setup again', run: 'tine setup' }],
      });
    }
  });

  await timeline.step('datastore', 'Datastore ready', () => {
    if (input.datastore !== undefined) {
      const dir = resolve(input.datastore);
      if (!existsSync(dir)) throw invalidInput('datastore', `${dir} does not exist`);
      const type = fsTypeOf(dir);
      if (type !== 'btrfs') {
        throw unsupported(`--datastore ${dir} is on ${type}, not btrfs; forks are btrfs snapshots and need a btrfs filesystem`, [
          { description: 'Use the embedded default (a sparse btrfs pool file, loop-mounted)', run: 'tine setup' },
          { description: 'Or format a spare disk as btrfs, mount it and use it', run: `mkfs.btrfs /dev/<disk> && mount /dev/<disk> ${dir} && tine setup --datastore ${dir}` },
        ]);
      }
      if (next.datastore !== dir || next.pool !== null) changed.push(`datastore ${dir}`);
      next = { ...next, datastore: dir, pool: null };
      return;
    }
    if (datastoreReady(next)) return;
    const pool = { file: next.pool?.file ?? `${next.stateDir}/pool.img`, size: input.size ?? next.pool?.size ?? '20G' };
    if (existsSync(next.datastore) && fsTypeOf(next.datastore) !== 'btrfs' && !existsSync(pool.file)) {
      // An empty directory is fine to mount over; anything else is the operator's data.
      const entries = run('ls', ['-A', next.datastore]).trim();
      if (entries) {
        throw new TineError('DATASTORE_NOT_EMPTY', EXIT.conflict, `${next.datastore} is a non-empty ${fsTypeOf(next.datastore)} directory; the pool will not be mounted over it`, {
          next: [{ description: 'Use a btrfs filesystem you already have', run: 'tine setup --datastore <btrfs mount>' }],
        });
      }
    }
    if (!existsSync(pool.file)) {
      createPool(pool.file, pool.size);
      changed.push(`pool ${pool.file} (${pool.size}, sparse)`);
    }
    mountPool(pool.file, next.datastore);
    changed.push(`mounted ${next.datastore}`);
    next = { ...next, pool };
  });

  await timeline.step('layout', 'Directories in place', () => {
    for (const [dir, mode] of [[next.stateDir, 0o700], [next.runDir, 0o711]] as const) {
      if (!existsSync(dir)) {
        mkdirSync(dir, { recursive: true, mode });
        changed.push(`created ${dir}`);
      }
      chmodSync(dir, mode);
    }
    if (!existsSync(reposDir(next))) changed.push(`created ${reposDir(next)}`);
    ensureLayout(next);
  });

  await timeline.step('sandbox_user', `Sandbox user ${next.sandboxUser} (${next.sandboxUid})`, () => {
    if (ensureSandboxUser(next.sandboxUser, next.sandboxUid)) changed.push(`user ${next.sandboxUser}`);
  });

  await timeline.step('state', 'State database migrated', () => {
    openDb(next, { create: true }).close();
  });

  await timeline.step('secret_key', 'Host secret key present', () => {
    if (ensureSecretKeyForSetup(next)) changed.push(`created ${next.stateDir}/secret.key`);
  });

  await timeline.step('config', 'Host config written', () => {
    const saved = saveHostConfig(next);
    next = saved;
  });

  return {
    datastore: next.datastore,
    embedded: next.pool !== null,
    poolFile: next.pool?.file ?? null,
    sandboxUser: next.sandboxUser,
    sandboxUid: next.sandboxUid,
    stateDb: `${next.stateDir}/state.db`,
    runDir: next.runDir,
    configPath: next.configPath,
    changed,
  };
}

/** Create the sandbox user and group (no home, no login shell). Returns true if created. */
export function ensureSandboxUser(name: string, uid: number): boolean {
  const byUid = lookup('passwd', String(uid));
  const byName = lookup('passwd', name);
  if (byUid && byUid.split(':')[0] !== name) {
    throw new TineError('UID_TAKEN', EXIT.conflict, `uid ${uid} belongs to "${byUid.split(':')[0]}", not ${name}`, {
      next: [{ description: 'Set another sandboxUid (and sandboxUser) in the host config, then run setup again' }],
    });
  }
  if (byName && byName.split(':')[2] !== String(uid)) {
    throw new TineError('UID_TAKEN', EXIT.conflict, `user ${name} exists with uid ${byName.split(':')[2]}, not ${uid}`, {
      next: [{ description: 'Remove that user or set another sandboxUser in the host config' }],
    });
  }
  if (byUid) return false;
  if (!lookup('group', String(uid))) run(which('groupadd') ?? '/usr/sbin/groupadd', ['-g', String(uid), name]);
  run(which('useradd') ?? '/usr/sbin/useradd', ['-u', String(uid), '-g', String(uid), '-M', '-d', '/nonexistent', '-s', '/usr/sbin/nologin', '-c', 'tine sandbox', name]);
  return true;
}

function lookup(db: 'passwd' | 'group', key: string): string | undefined {
  try {
    return run('getent', [db, key]).trim() || undefined;
  } catch {
    return undefined;
  }
}
