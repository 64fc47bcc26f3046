// Secret operations: one function each, called by the CLI, RPC and MCP alike. Values go in,
// never out: results, errors and steps carry keys, modes, digests, times and actors only.
import { closeSync, fchownSync, fstatSync, openSync, readlinkSync, readSync, realpathSync, renameSync, unlinkSync, writeSync, fsyncSync, fchmodSync, constants as fsc } from 'node:fs';
import { basename, dirname, isAbsolute, join, sep } from 'node:path';
import { randomBytes } from 'node:crypto';
import type { OpContext, Actor } from '../ops/context.js';
import type { Db } from '../state/db.js';
import { type Ref, formatRef } from '../repo/ref.js';
import { requireRepo, type RepoRow } from '../repo/registry.js';
import { TineError, EXIT, invalidInput, notFound, type NextStep } from '../errors.js';
import { loadHostKeys, digestOf, sameValue, type SecretKeys } from './hostkey.js';
import { getRow, listRowsOf, upsertRow, deleteRow, sealRow, openRow, infoOf, type SecretInfo, type SecretMode, type SecretRow } from './store.js';
import { valueProblem, keyField, modeField } from './validate.js';
import { parseDotenv, removeEntries, DotenvError } from './dotenv.js';
import { appendAudit } from '../audit/log.js';

/**
 * A change made without knowing the old value is recorded before it is made (fail closed:
 * no audit entry, no rotation), for humans and agents alike. Key names only, never values.
 */
async function auditRotation(ctx: OpContext, command: string, ref: string): Promise<void> {
  try {
    await appendAudit({ stateDir: ctx.config.stateDir, rotateBytes: (ctx.config as { auditRotateBytes?: number }).auditRotateBytes ?? 8 * 1024 * 1024 }, {
      actor: ctx.actor.kind, reason: ctx.actor.reason, pid: process.pid, via: 'tine-host', command, ref, decision: 'allowed', code: 'SECRET_ROTATED',
    });
  } catch (err) {
    throw new TineError('AUDIT_FAILED', EXIT.failure, `a rotation is only made when it can be audited, and the audit log could not be written: ${err instanceof Error ? err.message : String(err)}; nothing was changed`, {
      next: [{ description: 'Check the audit log', run: 'tine audit verify' }],
    });
  }
}

/** How a change was allowed: the audit distinguishes a rotation without knowledge. */
export type SecretCheck = 'first-set' | 'current' | 'rotate-secret';

export interface SetSecretInput {
  ref: Ref;
  key: string;
  value: string;
  mode?: SecretMode;
  current?: string;
  rotateSecret?: boolean;
}

export interface SecretChange extends SecretInfo {
  ref: string;
  check: SecretCheck;
}

function preconditionFailed(ref: string, key: string, message: string, retry: string): TineError {
  const next: NextStep[] = [
    { description: 'Re-check the stored secret (digest, when and by whom it was set)', run: `tine repo secret get ${ref} --key ${key}` },
    { description: 'Or replace it without knowing the old value (audited as a rotation)', run: retry },
  ];
  return new TineError('PRECONDITION_FAILED', EXIT.precondition, `${message}; nothing was changed`, { next });
}

/** The --current / --rotate-secret rule for changing or removing an existing secret. */
function checkPrecondition(keys: SecretKeys, key: string, existing: SecretRow | undefined, input: { current?: string; rotateSecret?: boolean }, fail: (msg: string) => TineError): SecretCheck {
  if (!existing) {
    if (input.current !== undefined) throw fail(`--current was given but ${key} has no stored value`);
    return 'first-set';
  }
  if (input.rotateSecret) return 'rotate-secret';
  if (input.current === undefined) throw fail(`${existing.key} already has a value; changing it needs --current <old value> or --rotate-secret`);
  const stored = openRow(keys, existing);
  try {
    if (!sameValue(keys, stored, Buffer.from(input.current, 'utf8'))) throw fail(`--current does not match the stored value of ${existing.key}`);
  } finally {
    stored.fill(0);
  }
  return 'current';
}

export async function setSecret(ctx: OpContext, input: SetSecretInput): Promise<SecretChange> {
  const repo = requireRepo(ctx.db, input.ref);
  const ref = formatRef(repo);
  const keys = loadHostKeys(ctx.config);
  const { db } = ctx;
  if (input.rotateSecret && getRow(db, repo.guid, input.key)) await auditRotation(ctx, 'repo secret set', ref);
  return db.transaction(() => {
    const existing = getRow(db, repo.guid, input.key);
    const mode: SecretMode = input.mode ?? existing?.mode ?? 'file';
    const problem = valueProblem(input.value, mode);
    if (problem) throw invalidInput('value', problem);
    const retry = `tine repo secret set ${ref} --key ${input.key} --value -${input.mode ? ` --mode ${input.mode}` : ''} --rotate-secret`;
    const check = checkPrecondition(keys, input.key, existing, input, (m) => preconditionFailed(ref, input.key, m, retry));
    const value = Buffer.from(input.value, 'utf8');
    const row: SecretRow = {
      repo_guid: repo.guid,
      key: input.key,
      mode,
      ...sealRow(keys, repo.guid, input.key, mode, value),
      digest: digestOf(keys, value),
      set_at: new Date().toISOString(),
      set_by: ctx.actor.kind,
    };
    value.fill(0);
    upsertRow(db, row);
    return { ref, ...infoOf(row), check };
  }).immediate();
}

export function getSecret(ctx: OpContext, input: { ref: Ref; key: string }): SecretInfo & { ref: string } {
  const repo = requireRepo(ctx.db, input.ref);
  const ref = formatRef(repo);
  const row = getRow(ctx.db, repo.guid, input.key);
  if (!row) {
    throw notFound(`${ref} has no secret ${input.key}`, [
      { description: 'List its secrets', run: `tine repo secret list ${ref}` },
      { description: 'Set it (reads the value from stdin)', run: `tine repo secret set ${ref} --key ${input.key} --value -` },
    ]);
  }
  return { ref, ...infoOf(row) };
}

export function listSecrets(ctx: OpContext, input: { ref: Ref }): { ref: string; secrets: SecretInfo[] } {
  const repo = requireRepo(ctx.db, input.ref);
  return { ref: formatRef(repo), secrets: listRowsOf(ctx.db, repo.guid).map(infoOf) };
}

export async function unsetSecret(ctx: OpContext, input: { ref: Ref; key: string; current?: string; rotateSecret?: boolean }): Promise<SecretChange & { unsetAt: string; removed: true }> {
  const repo = requireRepo(ctx.db, input.ref);
  const ref = formatRef(repo);
  const keys = loadHostKeys(ctx.config);
  const { db } = ctx;
  if (input.rotateSecret && getRow(db, repo.guid, input.key)) await auditRotation(ctx, 'repo secret unset', ref);
  return db.transaction(() => {
    const existing = getRow(db, repo.guid, input.key);
    if (!existing) {
      throw notFound(`${ref} has no secret ${input.key}; nothing to unset`, [{ description: 'List its secrets', run: `tine repo secret list ${ref}` }]);
    }
    const retry = `tine repo secret unset ${ref} --key ${input.key} --rotate-secret`;
    const check = checkPrecondition(keys, input.key, existing, input, (m) => preconditionFailed(ref, input.key, m, retry));
    deleteRow(db, repo.guid, input.key);
    return { ref, ...infoOf(existing), actor: ctx.actor.kind, check, unsetAt: new Date().toISOString(), removed: true as const };
  }).immediate();
}

// ---- lift ----------------------------------------------------------------------------

export interface LiftInput {
  ref: Ref;
  from: string;
  remove?: boolean;
  mode?: SecretMode;
  rotateSecret?: boolean;
}

export interface LiftResult {
  ref: string;
  from: string;
  mode: SecretMode;
  lifted: (SecretInfo & { check: SecretCheck })[];
  unchanged: string[];
  skipped: { key: string; reason: string }[];
  removed: boolean;
  notice: string;
}

const LIFT_MAX_BYTES = 1024 * 1024;

function isInside(root: string, p: string): boolean {
  return p.startsWith(root.endsWith(sep) ? root : root + sep);
}

interface OpenedFile {
  /** Where the opened file really is (from the fd, not from the path we were given). */
  path: string;
  /** Its directory, held open: the rewrite happens in exactly this directory. */
  dirFd: number;
  text: string;
  mode: number;
  uid: number;
  gid: number;
}

const fdPath = (fd: number) => readlinkSync(`/proc/self/fd/${fd}`);

/**
 * Open a file of the repository for lift. The repository's contents are whatever an agent
 * left there, and this runs as root: so the check is made on what was OPENED (its
 * /proc/self/fd link), not on the path, and the directory is pinned by an fd so a symlink
 * swapped in later cannot redirect the rewrite.
 */
function readInside(repo: RepoRow, from: string): OpenedFile {
  const bad = (m: string) => invalidInput('from', m, [{ description: 'Give a path relative to the repository root, e.g. .env', run: `tine repo secret lift ${formatRef(repo)} --from .env` }]);
  if (isAbsolute(from)) throw bad('must be a path relative to the repository root (e.g. .env)');
  if (from.split('/').includes('..')) throw bad(`${from} climbs out with ".."; give a path inside the repository`);
  const root = realpathSync(repo.path);
  let real: string;
  try {
    real = realpathSync(join(root, from));
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    throw bad(code === 'ENOENT' ? `${from} does not exist in the repository` : `${from} cannot be resolved (${code})`);
  }
  if (!isInside(root, real)) throw bad(`${from} resolves outside the repository`);
  let fd: number;
  try {
    fd = openSync(real, fsc.O_RDONLY | fsc.O_NOFOLLOW | fsc.O_NONBLOCK | fsc.O_NOCTTY);
  } catch (err) {
    throw bad(`${from} cannot be opened (${(err as NodeJS.ErrnoException).code})`);
  }
  let dirFd = -1;
  try {
    const opened = fdPath(fd);
    if (!isInside(root, opened)) throw bad(`${from} resolves outside the repository`);
    const st = fstatSync(fd);
    if (!st.isFile()) throw bad(`${from} is not a regular file`);
    if (st.nlink !== 1) throw bad(`${from} has ${st.nlink} hard links; lift reads only a file that has one`);
    if (st.size > LIFT_MAX_BYTES) throw bad(`${from} is larger than ${LIFT_MAX_BYTES / 1024} KiB`);
    dirFd = openSync(dirname(opened), fsc.O_RDONLY | fsc.O_DIRECTORY | fsc.O_NOFOLLOW);
    if (fdPath(dirFd) !== dirname(opened)) throw bad(`${from} moved while it was read; try again`);
    const buf = Buffer.alloc(st.size);
    let off = 0;
    while (off < st.size) {
      const n = readSync(fd, buf, off, st.size - off, off);
      if (n === 0) break;
      off += n;
    }
    const out = { path: opened, dirFd, text: buf.subarray(0, off).toString('utf8'), mode: st.mode & 0o7777, uid: st.uid, gid: st.gid };
    dirFd = -1;
    return out;
  } finally {
    closeSync(fd);
    if (dirFd >= 0) closeSync(dirFd);
  }
}

/** Atomic rewrite in the pinned directory: temp file, same owner and mode, fsync, rename over. */
function rewriteAtomically(file: OpenedFile, text: string): void {
  const dir = `/proc/self/fd/${file.dirFd}`;
  const tmp = join(dir, `.${basename(file.path)}.tine-${randomBytes(4).toString('hex')}`);
  const fd = openSync(tmp, fsc.O_WRONLY | fsc.O_CREAT | fsc.O_EXCL | fsc.O_NOFOLLOW, 0o600);
  try {
    try {
      writeSync(fd, text);
      fchownSync(fd, file.uid, file.gid);
      fchmodSync(fd, file.mode);
      fsyncSync(fd);
    } finally {
      closeSync(fd);
    }
    // rename never follows the last component: a symlink put there is replaced, not followed.
    renameSync(tmp, join(dir, basename(file.path)));
  } catch (err) {
    try { unlinkSync(tmp); } catch { /* never made it or already renamed */ }
    throw err;
  }
}

export async function liftSecrets(ctx: OpContext, input: LiftInput): Promise<LiftResult> {
  const repo = requireRepo(ctx.db, input.ref);
  const ref = formatRef(repo);
  const mode: SecretMode = input.mode ?? 'env';
  const keys = loadHostKeys(ctx.config);

  const file = await ctx.timeline.step('read', `Read ${input.from}`, () => readInside(repo, input.from));
  try {
    return await liftFrom(ctx, input, repo, keys, mode, file);
  } finally {
    closeSync(file.dirFd);
  }
}

async function liftFrom(ctx: OpContext, input: LiftInput, repo: RepoRow, keys: SecretKeys, mode: SecretMode, file: OpenedFile): Promise<LiftResult> {
  const ref = formatRef(repo);
  let entries;
  try {
    entries = parseDotenv(file.text);
  } catch (err) {
    if (err instanceof DotenvError) throw invalidInput('from', `${input.from}: ${err.message}`);
    throw err;
  }
  const skipped: { key: string; reason: string }[] = [];
  const usable = entries.filter((e) => {
    const p = valueProblem(e.value, mode);
    if (p) skipped.push({ key: e.key, reason: `value ${p}` });
    return !p;
  });
  if (!usable.length) {
    throw invalidInput('from', `${input.from} has no KEY=VALUE line with a usable value${skipped.length ? ` (skipped: ${skipped.map((s) => s.key).join(', ')})` : ''}`);
  }

  const { db } = ctx;
  if (input.rotateSecret && usable.some((e) => getRow(db, repo.guid, e.key))) await auditRotation(ctx, 'repo secret lift', ref);
  const previous: SecretRow[] = [];
  const stored = await ctx.timeline.step('store', `Stored ${usable.length} secret(s)`, () =>
    db.transaction(() => {
      const lifted: (SecretInfo & { check: SecretCheck })[] = [];
      const unchanged: string[] = [];
      const conflicts: string[] = [];
      const plan: { e: (typeof usable)[number]; existing?: SecretRow }[] = [];
      for (const e of usable) {
        const existing = getRow(db, repo.guid, e.key);
        if (existing && existing.mode === mode) {
          const old = openRow(keys, existing);
          const same = sameValue(keys, old, Buffer.from(e.value, 'utf8'));
          old.fill(0);
          if (same) {
            unchanged.push(e.key);
            continue;
          }
        }
        if (existing && !input.rotateSecret) conflicts.push(e.key);
        plan.push({ e, existing });
      }
      if (conflicts.length) {
        throw new TineError('PRECONDITION_FAILED', EXIT.precondition,
          `${ref} already has other values for ${conflicts.join(', ')}; nothing was changed`, {
            next: [
              { description: 'Re-check the stored secrets', run: `tine repo secret list ${ref}` },
              { description: 'Or replace them without knowing the old values (audited as a rotation)', run: `tine repo secret lift ${ref} --from ${input.from}${input.remove ? ' --remove' : ''}${input.mode ? ` --mode ${input.mode}` : ''} --rotate-secret` },
            ],
          });
      }
      for (const { e, existing } of plan) {
        if (existing) previous.push(existing);
        const value = Buffer.from(e.value, 'utf8');
        const row: SecretRow = {
          repo_guid: repo.guid, key: e.key, mode, ...sealRow(keys, repo.guid, e.key, mode, value),
          digest: digestOf(keys, value), set_at: new Date().toISOString(), set_by: ctx.actor.kind,
        };
        value.fill(0);
        upsertRow(db, row);
        lifted.push({ ...infoOf(row), check: existing ? 'rotate-secret' : 'first-set' });
      }
      return { lifted, unchanged };
    }).immediate(),
  );

  if (input.remove) {
    const liftedKeys = new Set([...stored.lifted.map((l) => l.key), ...stored.unchanged]);
    const text = removeEntries(file.text, entries.filter((e) => liftedKeys.has(e.key)), (k) => `# ${k}: moved to tine secrets (tine repo secret get ${ref} --key ${k})`);
    try {
      await ctx.timeline.step('rewrite', `Rewrote ${input.from} without the lifted values`, () => rewriteAtomically(file, text));
    } catch (err) {
      // Undo the store: the file still holds the values, the table is as before.
      db.transaction(() => {
        for (const l of stored.lifted) deleteRow(db, repo.guid, l.key);
        for (const p of previous) upsertRow(db, p);
      }).immediate();
      throw err;
    }
  }
  return {
    ref,
    from: input.from,
    mode,
    lifted: stored.lifted,
    unchanged: stored.unchanged,
    skipped,
    removed: Boolean(input.remove),
    notice: `Existing forks and snapshots of ${ref} still hold the old ${input.from} with its values; rotate those credentials if forks are not trusted.`,
  };
}

// ---- import (the sink end of `repo push/pull --with-secrets`) -------------------------

export interface ImportedSecret {
  key: string;
  mode: SecretMode;
  /** The value, in memory only; zeroed by importSecrets. */
  value: Buffer;
}

export interface ImportResult {
  copied: (SecretInfo & { check: SecretCheck })[];
  /** Keys that already held the same value in the same mode: a re-run changes nothing. */
  unchanged: string[];
}

/**
 * Store secrets that arrived from another host for a repository of this one: the same
 * validation as `secret set` (key, mode, value limits), all or nothing. A key that already
 * holds the same value and mode is left alone (so a retry is idempotent); one that holds
 * another value is a precondition failure and nothing is stored.
 */
export function importSecrets(db: Db, keys: SecretKeys, repo: RepoRow, entries: ImportedSecret[], actor: Actor['kind'], sinkMachine = '<machine>'): ImportResult {
  const ref = formatRef(repo);
  try {
    entries.forEach((e, i) => {
      const k = keyField.safeParse(e.key);
      if (!k.success) throw invalidInput(`secrets.${i}.key`, k.error.issues[0]!.message);
      if (!modeField.safeParse(e.mode).success) throw invalidInput(`secrets.${i}.mode`, 'must be env or file');
      const p = valueProblem(e.value.toString('utf8'), e.mode);
      if (p) throw invalidInput(`secrets.${i}.value`, `(${e.key}) ${p}`);
    });
    if (new Set(entries.map((e) => e.key)).size !== entries.length) throw invalidInput('secrets', 'names a key twice');
    return db.transaction(() => {
      const copied: ImportResult['copied'] = [];
      const unchanged: string[] = [];
      const conflicts: string[] = [];
      for (const e of entries) {
        const existing = getRow(db, repo.guid, e.key);
        if (existing) {
          const old = openRow(keys, existing);
          const same = existing.mode === e.mode && sameValue(keys, old, e.value);
          old.fill(0);
          if (same) unchanged.push(e.key);
          else conflicts.push(e.key);
          continue;
        }
        const row: SecretRow = {
          repo_guid: repo.guid, key: e.key, mode: e.mode, ...sealRow(keys, repo.guid, e.key, e.mode, e.value),
          digest: digestOf(keys, e.value), set_at: new Date().toISOString(), set_by: actor,
        };
        upsertRow(db, row);
        copied.push({ ...infoOf(row), check: 'first-set' });
      }
      if (conflicts.length) {
        throw new TineError('PRECONDITION_FAILED', EXIT.precondition,
          `${ref} on this host already has other values for ${conflicts.join(', ')}; no secret was copied`, {
            next: [
              { description: 'Compare the digests here', run: `tine -m ${sinkMachine} repo secret list ${ref}` },
              ...conflicts.map((k) => ({ description: `Remove ${k} here if the copy should replace it (audited)`, run: `tine -m ${sinkMachine} repo secret unset ${ref} --key ${k} --rotate-secret` })),
              { description: 'Then copy the secrets again', run: `tine repo push ${ref} --to ${sinkMachine} --secrets-only` },
            ],
          });
      }
      return { copied, unchanged };
    }).immediate();
  } finally {
    for (const e of entries) e.value.fill(0);
  }
}
