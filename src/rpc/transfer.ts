// Host side of `repo push` / `repo pull`: btrfs send/receive between two datastores.
// The sender snapshots the repository read-only under <datastore>/transfer/ and sends it,
// incrementally (-p) against a snapshot the receiver already holds; the receiver keeps the
// received read-only snapshot as the next base and registers a writable snapshot of it as
// the repository, with the sender's name, tag and guids. Secrets live in the state
// database, not in the subvolume, so they never travel with it.
import { spawn } from 'node:child_process';
import { existsSync, mkdirSync, readdirSync } from 'node:fs';
import { join } from 'node:path';
import { randomBytes } from 'node:crypto';
import type { Readable } from 'node:stream';
import { z } from 'zod/v3';
import { loadHostConfig, type LoadedHostConfig } from '../host/config.js';
import { attachDatastore } from '../host/datastore.js';
import { openDb, type Db } from '../state/db.js';
import { BtrfsSubvolumeDriver } from '../store/btrfs.js';
import type { Actor } from '../ops/context.js';
import { Timeline, UndoStack, type StepListener } from '../ops/timeline.js';
import { refField, labelField } from '../commands/spec.js';
import { formatRef } from '../repo/ref.js';
import { requireRepo, findByGuid, refTaken, allocateNetworkId, insertPendingRow, repoPath, toRecord, type RepoRow, type RepoRecord } from '../repo/registry.js';
import { writeIntent, clearIntent, repairDeadIntents } from '../repo/intents.js';
import { TineError, EXIT, conflict, notFound, unsupported } from '../errors.js';

export const TRANSFER_COMMANDS = new Set(['transfer bases', 'transfer send', 'transfer receive', 'transfer secrets open', 'transfer secrets seal']);

const guid = z.string().regex(/^[0-9a-f-]{36}$/, 'is not a guid');
const snapName = z.string().regex(/^[0-9a-f-]{36}@[0-9]+-[0-9a-f]{8}$/, 'is not a transfer snapshot name');

export const transferMetaSchema = z
  .object({
    // The same label rules as every ref: a received row must be one `repo create` could make.
    name: labelField,
    tag: labelField.nullable(),
    guid,
    parentGuid: guid.nullable(),
    grandGuid: guid,
    consistency: z.enum(['crash', 'quiesced']).nullable(),
    snapshot: snapName,
    base: snapName.nullable(),
  })
  .strict();
export type TransferMeta = z.infer<typeof transferMetaSchema>;

function parse<T>(schema: z.ZodType<T, z.ZodTypeDef, any>, raw: unknown): T {
  const r = schema.safeParse(raw);
  if (r.success) return r.data;
  const issue = r.error.issues[0]!;
  const field = issue.path.map(String).join('.') || 'input';
  throw new TineError('INVALID_INPUT', EXIT.usage, `${field}: ${issue.message}`, { field });
}

export interface Host {
  config: LoadedHostConfig;
  db: Db;
  store: BtrfsSubvolumeDriver;
  transferDir: string;
}

export async function openHost(): Promise<Host> {
  if (process.getuid?.() !== 0) throw unsupported('tine-host needs root (it manages subvolumes)');
  const config = loadHostConfig();
  attachDatastore(config);
  const db = openDb(config);
  const store = new BtrfsSubvolumeDriver();
  await repairDeadIntents(db, store, config);
  const transferDir = join(config.datastore, 'transfer');
  mkdirSync(transferDir, { recursive: true, mode: 0o700 });
  return { config, db, store, transferDir };
}

function refuseAgentOnGrand(actor: Actor, isGrand: boolean, ref: string, verb: string): void {
  if (actor.kind === 'agent' && isGrand) {
    throw new TineError('GRAND_GUARD', EXIT.refused, `an agent may not ${verb} the grand repository ${ref} (${actor.reason})`, {
      next: [
        { description: 'Fork it and move the fork', run: `tine repo fork ${ref} --tag <tag>` },
        { description: 'Or ask a human to move the grand' },
      ],
    });
  }
}

/** Snapshots this host holds in its transfer area (received ones or sent ones). */
export async function transferBases(_raw: unknown): Promise<{ snapshots: string[] }> {
  const h = await openHost();
  try {
    return { snapshots: readdirSync(h.transferDir).filter((n) => snapName.safeParse(n).success) };
  } finally {
    h.db.close();
  }
}

/** Pick the best base both sides hold: the repository's own last snapshot, then its parent's, then anything of its lineage. */
function chooseBase(h: Host, row: RepoRow, theirs: string[]): string | null {
  const mine = new Set(readdirSync(h.transferDir));
  const shared = theirs.filter((n) => mine.has(n));
  const latest = (g: string | null) => shared.filter((n) => g && n.startsWith(g + '@')).sort().pop();
  const lineage = shared.filter((n) => {
    const r = findByGuid(h.db, n.slice(0, 36));
    return r?.grand_guid === row.grand_guid;
  });
  return latest(row.guid) ?? latest(row.parent_guid) ?? latest(row.grand_guid) ?? lineage.sort().pop() ?? null;
}

/** Writes a header line {event:"send", meta} and then the raw btrfs stream to stdout. */
export async function transferSend(raw: unknown, actor: Actor): Promise<number> {
  const input = parse(z.object({ ref: refField, bases: z.array(snapName).max(10000).default([]) }).strict(), raw);
  const h = await openHost();
  try {
    const row = requireRepo(h.db, input.ref);
    refuseAgentOnGrand(actor, row.parent_guid === null, formatRef(row), 'send away');
    const base = chooseBase(h, row, input.bases);
    const snapshot = `${row.guid}@${Date.now()}-${randomBytes(4).toString('hex')}`;
    const snapPath = join(h.transferDir, snapshot);
    await h.store.snapshotVolume(row.path, snapPath, { readonly: true });
    // Older sent snapshots of this repository are no longer needed as bases, except the one in use.
    for (const n of readdirSync(h.transferDir)) {
      if (n.startsWith(row.guid + '@') && n !== snapshot && n !== base) await h.store.destroyVolume(join(h.transferDir, n)).catch(() => {});
    }
    const meta: TransferMeta = {
      name: row.name, tag: row.tag, guid: row.guid, parentGuid: row.parent_guid, grandGuid: row.grand_guid,
      consistency: row.consistency, snapshot, base,
    };
    process.stdout.write(JSON.stringify({ event: 'send', meta }) + '\n');
    const args = ['send', '-q', ...(base ? ['-p', join(h.transferDir, base)] : []), snapPath];
    return await new Promise<number>((resolve, reject) => {
      const child = spawn('btrfs', args, { stdio: ['ignore', 'pipe', 'pipe'] });
      let stderr = '';
      child.stderr.on('data', (d) => (stderr += d));
      child.stdout.pipe(process.stdout, { end: false });
      child.on('error', reject);
      child.on('close', (code) => {
        if (code === 0) resolve(0);
        else reject(new TineError('SEND_FAILED', EXIT.failure, `btrfs send failed (${code}): ${stderr.trim()}`));
      });
    });
  } finally {
    h.db.close();
  }
}

export async function transferReceive(raw: unknown, actor: Actor, head: Buffer, stream: Readable, onStep: StepListener): Promise<RepoRecord & { base: string | null }> {
  const meta = parse(z.object({ meta: transferMetaSchema }).strict(), raw).meta;
  const ref = formatRef(meta);
  refuseAgentOnGrand(actor, meta.parentGuid === null, ref, 'receive');
  const h = await openHost();
  const timeline = new Timeline(onStep);
  const undo = new UndoStack();
  try {
    if (refTaken(h.db, meta)) {
      throw conflict('EXISTS', `repository ${ref} already exists on this host`, [
        { description: 'Look at it', run: `tine repo info ${ref}` },
        { description: 'Delete it here first if it should be replaced', run: `tine repo delete ${ref} --yes` },
      ]);
    }
    if (findByGuid(h.db, meta.guid)) throw conflict('EXISTS', `a repository with guid ${meta.guid} already exists on this host`, [{ description: 'List the repositories', run: 'tine repo list' }]);
    const parent = meta.parentGuid ? findByGuid(h.db, meta.parentGuid) : undefined;
    if (meta.parentGuid && !parent) {
      throw notFound(`the parent (${meta.parentGuid}) of ${ref} is not on this host; a fork travels after its parent`, [
        { description: 'Move the parent first, then the fork', run: `tine repo push ${meta.name} --to <machine>` },
      ]);
    }
    if (meta.base && !existsSync(join(h.transferDir, meta.base))) {
      throw notFound(`the base snapshot ${meta.base} is not on this host`, [{ description: 'Send again without a base (a full send)' }]);
    }
    const snapPath = join(h.transferDir, meta.snapshot);
    await timeline.step('receive', meta.base ? 'Incremental stream received' : 'Full stream received', async () => {
      undo.push('destroy received snapshot', () => (existsSync(snapPath) ? h.store.destroyVolume(snapPath) : undefined));
      await new Promise<void>((resolve, reject) => {
        const child = spawn('btrfs', ['receive', '-e', h.transferDir], { stdio: ['pipe', 'ignore', 'pipe'] });
        let stderr = '';
        child.stderr.on('data', (d) => (stderr += d));
        child.on('error', reject);
        child.on('close', (code) => {
          if (code === 0) resolve();
          else reject(new TineError('RECEIVE_FAILED', EXIT.failure, `btrfs receive failed (${code}): ${stderr.trim()}`));
        });
        child.stdin.on('error', () => {});
        child.stdin.write(head);
        stream.pipe(child.stdin);
        stream.resume();
      });
      if (!existsSync(snapPath)) throw new TineError('RECEIVE_FAILED', EXIT.failure, `the stream did not hold ${meta.snapshot}`);
    });
    const path = repoPath(h.config, meta.guid);
    const intentId = h.db.transaction(() => {
      if (refTaken(h.db, meta)) throw conflict('EXISTS', `repository ${ref} already exists on this host`);
      insertPendingRow(h.db, {
        guid: meta.guid, name: meta.name, tag: meta.tag, parent_guid: meta.parentGuid, grand_guid: meta.grandGuid,
        network_id: allocateNetworkId(h.db), path, consistency: meta.consistency, created_at: new Date().toISOString(),
      });
      // 'fork' rolls back like a fork: destroy the volume, drop the row.
      return writeIntent(h.db, 'fork', meta.guid, path);
    }).immediate();
    undo.push('drop reservation', () => {
      h.db.prepare('DELETE FROM repos WHERE guid = ?').run(meta.guid);
      clearIntent(h.db, intentId);
    });
    await timeline.step('register', 'Writable repository registered', async () => {
      await h.store.snapshotVolume(snapPath, path);
      undo.push('destroy repository volume', () => h.store.destroyVolume(path));
    });
    const row = h.db.transaction(() => {
      h.db.prepare("UPDATE repos SET status = 'ready' WHERE guid = ?").run(meta.guid);
      clearIntent(h.db, intentId);
      return findByGuid(h.db, meta.guid)!;
    }).immediate();
    undo.clear();
    // Older received snapshots of this repository are superseded by this one.
    for (const n of readdirSync(h.transferDir)) {
      if (n.startsWith(meta.guid + '@') && n !== meta.snapshot) await h.store.destroyVolume(join(h.transferDir, n)).catch(() => {});
    }
    return { ...toRecord(row, h.config), base: meta.base };
  } catch (err) {
    await undo.unwind();
    throw err;
  } finally {
    h.db.close();
  }
}

