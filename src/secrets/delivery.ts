// Secret delivery at `repo up` / `repo down` (the lifecycle calls these).
//  - env mode: TINE_SECRET_<KEY> in the returned env, for the Tinefile's environment only
//    (never argv, so never in `ps`; never into `repo exec`/`repo connect` sessions).
//  - file mode: one file per key on a tmpfs of its own at <runDir>/secrets/<networkId>/.
//    Who reads them: the repository's own dockerd (root) bind-mounts them read-only into its
//    containers at /run/secrets/<KEY>. So the tmpfs root is root:root 0700 — no other user on
//    the host, the sandbox uid 7111 of any repository included, can even traverse it — and the
//    files are 0444 so that a container process of any uid can read its bind-mounted copy.
//    The tmpfs is remounted read-only once written, is never on disk, and is unmounted at
//    `repo down` (and when the repository is deleted).
import { mkdirSync, chmodSync, writeFileSync, readFileSync, readdirSync, rmdirSync, existsSync, lstatSync } from 'node:fs';
import { join } from 'node:path';
import type { OpContext } from '../ops/context.js';
import type { RepoRecord } from '../repo/registry.js';
import type { HostConfig } from '../host/config.js';
import { run } from '../host/system.js';
import { UndoStack } from '../ops/timeline.js';
import { TineError, EXIT } from '../errors.js';
import { loadHostKeys } from './hostkey.js';
import { listRowsOf, openRow } from './store.js';

export interface DeliveredSecrets {
  /** env-mode secrets as TINE_SECRET_<KEY> for the Tinefile environment (never argv). */
  env: Record<string, string>;
  /** Directory on a tmpfs holding file-mode secrets (one file per key), or null. */
  fileDir: string | null;
}

export const secretsRoot = (config: Pick<HostConfig, 'runDir'>) => join(config.runDir, 'secrets');
export const secretsDirOf = (config: Pick<HostConfig, 'runDir'>, networkId: number) => join(secretsRoot(config), String(networkId));

/** Mount points from /proc/self/mountinfo (field 5, octal escapes decoded). */
export function isMountPoint(path: string): boolean {
  const text = readFileSync('/proc/self/mountinfo', 'utf8');
  for (const line of text.split('\n')) {
    const mp = line.split(' ')[4];
    if (mp && mp.replace(/\\([0-7]{3})/g, (_, o: string) => String.fromCharCode(parseInt(o, 8))) === path) return true;
  }
  return false;
}

function unmountAll(dir: string): void {
  // Stacked mounts (a crash between two deliveries) are peeled one by one, bounded.
  for (let i = 0; i < 8 && isMountPoint(dir); i++) {
    try {
      run('umount', [dir]);
    } catch {
      // Busy: a container still holds a bind mount of a file. Detach it now; the kernel
      // frees the tmpfs when the last user goes.
      run('umount', ['-l', dir]);
    }
  }
  if (isMountPoint(dir)) throw new TineError('SECRETS_UNMOUNT_FAILED', EXIT.failure, `could not unmount the secrets tmpfs ${dir}`);
}

export async function deliverSecrets(ctx: OpContext, repo: RepoRecord): Promise<DeliveredSecrets> {
  const rows = listRowsOf(ctx.db, repo.guid);
  const dir = secretsDirOf(ctx.config, repo.networkId);
  // A delivery replaces any earlier one: never leave a previous value in place.
  await withdrawSecrets(ctx, repo);
  if (!rows.length) return { env: {}, fileDir: null };
  const keys = loadHostKeys(ctx.config);
  const env: Record<string, string> = {};
  const files: { key: string; value: Buffer }[] = [];
  for (const row of rows) {
    const value = openRow(keys, row);
    if (row.mode === 'env') {
      env[`TINE_SECRET_${row.key}`] = value.toString('utf8');
      value.fill(0);
    } else {
      files.push({ key: row.key, value });
    }
  }
  if (!files.length) return { env, fileDir: null };

  const undo = new UndoStack();
  try {
    await ctx.timeline.step('secrets_tmpfs', `Secrets tmpfs for ${files.length} file secret(s)`, () => {
      const root = secretsRoot(ctx.config);
      mkdirSync(root, { recursive: true, mode: 0o700 });
      chmodSync(root, 0o700);
      if (!existsSync(dir)) {
        mkdirSync(dir, { mode: 0o700 });
        undo.push('remove secrets dir', () => rmdirSync(dir));
      } else if (!lstatSync(dir).isDirectory()) {
        throw new TineError('SECRETS_DIR_INVALID', EXIT.failure, `${dir} exists and is not a directory`);
      }
      const pages = files.reduce((n, f) => n + Math.max(1, Math.ceil(f.value.length / 4096)), 0);
      const size = (pages + 16) * 4096;
      run('mount', ['-t', 'tmpfs', '-o', `mode=0700,uid=0,gid=0,size=${size},nr_inodes=${files.length + 16},nosuid,nodev,noexec`, 'tine-secrets', dir]);
      undo.push('unmount secrets tmpfs', () => unmountAll(dir));
      for (const f of files) {
        writeFileSync(join(dir, f.key), f.value, { mode: 0o444, flag: 'wx' });
        chmodSync(join(dir, f.key), 0o444);
      }
      // Written once; read-only from here on, even for root processes that do not remount.
      run('mount', ['-o', 'remount,ro,nosuid,nodev,noexec', dir]);
    });
    undo.clear();
  } catch (err) {
    await undo.unwind();
    throw err;
  } finally {
    for (const f of files) f.value.fill(0);
  }
  return { env, fileDir: dir };
}

export async function withdrawSecrets(ctx: OpContext, repo: RepoRecord): Promise<void> {
  const dir = secretsDirOf(ctx.config, repo.networkId);
  if (!existsSync(dir)) return;
  unmountAll(dir);
  // A container started before delivery makes dockerd create its missing bind sources as
  // empty directories here; those (and only empty ones) go too.
  for (const name of readdirSync(dir)) {
    try {
      if (lstatSync(join(dir, name)).isDirectory()) rmdirSync(join(dir, name));
    } catch { /* not empty: rmdir below reports it */ }
  }
  try {
    rmdirSync(dir);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw err;
  }
}
