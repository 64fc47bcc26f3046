// Repository operations: one function each, called by the CLI, the RPC endpoint and the
// MCP server alike. Inputs arrive validated; these functions own the undo lists.
import { removeRepoNetwork, networkConfinement } from '../network/netns.js';
import { repoAddresses } from './network.js';
import { randomUUID } from 'node:crypto';
import { statSync, chownSync, chmodSync } from 'node:fs';
import { execFile } from 'node:child_process';
import { promisify } from 'node:util';
import type { OpContext } from '../ops/context.js';
import { UndoStack } from '../ops/timeline.js';
import { type Ref, formatRef } from './ref.js';
import {
  type RepoRecord, type RepoRow, toRecord, repoPath, requireRepo, refTaken, listRows, childrenOf,
  allocateNetworkId, insertPendingRow,
} from './registry.js';
import { writeIntent, clearIntent, failpoint } from './intents.js';
import { removeKeysOf } from '../sandbox/keys.js';
import { withdrawSecrets } from '../secrets/delivery.js';
import { beforeForkSnapshot, stopBeforeDelete } from '../lifecycle/operations.js';
import { TineError, EXIT, conflict, invalidInput } from '../errors.js';
import { dockerConfinement } from '../docker/daemon.js';

const execFileP = promisify(execFile);

function refuseTaken(ctx: OpContext, ref: Ref): void {
  const taken = refTaken(ctx.db, ref);
  if (!taken) return;
  const r = formatRef(ref);
  throw conflict('EXISTS', `repository ${r} already exists`, [
    { description: 'Look at the existing repository', run: `tine repo info ${r}` },
    ref.tag === null
      ? { description: 'Pick another name', run: `tine repo create <name>` }
      : { description: 'Pick another tag', run: `tine repo fork ${ref.name} --tag <tag>` },
  ]);
}

/** Reserve the row and write the intent in one transaction: nothing on disk yet. */
function reserve(ctx: OpContext, op: 'create' | 'fork', ref: Ref, parent: RepoRow | null, guid: string): number {
  const { db } = ctx;
  return db.transaction(() => {
    refuseTaken(ctx, ref);
    if (parent) {
      const fresh = db.prepare('SELECT status FROM repos WHERE guid = ?').get(parent.guid) as { status: string } | undefined;
      if (fresh?.status !== 'ready') {
        throw conflict('BUSY', `repository ${formatRef(parent)} is being ${fresh ? 'deleted' : 'removed'}`, [
          { description: 'List what is there now', run: 'tine repo list' },
        ]);
      }
    }
    const networkId = allocateNetworkId(db);
    const path = repoPath(ctx.config, guid);
    insertPendingRow(db, {
      guid,
      name: ref.name,
      tag: ref.tag,
      parent_guid: parent?.guid ?? null,
      grand_guid: parent?.grand_guid ?? guid,
      network_id: networkId,
      path,
      consistency: parent ? 'crash' : null,
      created_at: new Date().toISOString(),
    });
    return writeIntent(db, op, guid, path);
  }).immediate();
}

function commit(ctx: OpContext, guid: string, intentId: number): RepoRow {
  const { db } = ctx;
  return db.transaction(() => {
    db.prepare("UPDATE repos SET status = 'ready' WHERE guid = ?").run(guid);
    clearIntent(db, intentId);
    return db.prepare('SELECT * FROM repos WHERE guid = ?').get(guid) as RepoRow;
  }).immediate();
}

function dropReservation(ctx: OpContext, guid: string, intentId: number): void {
  ctx.db.transaction(() => {
    ctx.db.prepare('DELETE FROM repos WHERE guid = ?').run(guid);
    clearIntent(ctx.db, intentId);
  }).immediate();
}

export async function createRepo(ctx: OpContext, input: { ref: Ref; from?: string }): Promise<RepoRecord> {
  const { ref, from } = input;
  if (ref.tag !== null) {
    throw invalidInput('name', `"${formatRef(ref)}" has a tag; a created repository is a grand, forks get tags`, [
      { description: 'Create the grand, then fork it', run: `tine repo create ${ref.name} && tine repo fork ${ref.name} --tag ${ref.tag}` },
    ]);
  }
  if (from !== undefined) {
    let st;
    try {
      st = statSync(from);
    } catch {
      throw invalidInput('from', `${from} does not exist`);
    }
    if (!st.isDirectory()) throw invalidInput('from', `${from} is not a directory`);
  }
  const guid = randomUUID();
  const undo = new UndoStack();
  const intentId = await ctx.timeline.step('reserve', 'Name and network id reserved', () => reserve(ctx, 'create', ref, null, guid));
  undo.push('drop reservation', () => dropReservation(ctx, guid, intentId));
  const path = repoPath(ctx.config, guid);
  try {
    failpoint('create:reserved');
    await ctx.timeline.step('subvolume', 'Subvolume created', () => ctx.store.createVolume(path));
    undo.push('destroy subvolume', () => ctx.store.destroyVolume(path));
    failpoint('create:volume');
    if (from !== undefined) {
      await ctx.timeline.step('copy_in', `Copied ${from} in (reflinked where possible)`, async () => {
        await ctx.store.copyTreeIn(from, path);
        // The sandbox user works in the repository: it owns the files it works on.
        await execFileP('chown', ['-R', '--no-dereference', `${ctx.config.sandboxUid}:${ctx.config.sandboxUid}`, path]);
      });
      failpoint('create:copied');
    }
    // Root's, group the sandbox user's, sticky: it works in the root, but cannot rename away
    // what tine keeps there (.tine). See lockRepoRoot.
    chownSync(path, 0, ctx.config.sandboxUid);
    chmodSync(path, 0o1770);
    const row = commit(ctx, guid, intentId);
    undo.clear();
    return toRecord(row, ctx.config);
  } catch (err) {
    await undo.unwind();
    throw err;
  }
}

export async function forkRepo(ctx: OpContext, input: { ref: Ref; tag: string }): Promise<RepoRecord> {
  const source = requireRepo(ctx.db, input.ref);
  const target: Ref = { name: source.name, tag: input.tag };
  const guid = randomUUID();
  const undo = new UndoStack();
  const intentId = await ctx.timeline.step('reserve', 'Name and network id reserved', () => reserve(ctx, 'fork', target, source, guid));
  undo.push('drop reservation', () => dropReservation(ctx, guid, intentId));
  const path = repoPath(ctx.config, guid);
  try {
    failpoint('fork:reserved');
    // A running source quiesces first (its Tinefile prefork), while it keeps running.
    const consistency = await beforeForkSnapshot(ctx, source);
    // One atomic snapshot of the live source: no pause, no copy loop.
    await ctx.timeline.step('cow_clone', 'CoW clone complete', () => ctx.store.snapshotVolume(source.path, path));
    undo.push('destroy snapshot', () => ctx.store.destroyVolume(path));
    failpoint('fork:cloned');
    if (consistency === 'quiesced') ctx.db.prepare('UPDATE repos SET consistency = ? WHERE guid = ?').run(consistency, guid);
    const row = commit(ctx, guid, intentId);
    undo.clear();
    failpoint('fork:committed');
    return toRecord(row, ctx.config);
  } catch (err) {
    await undo.unwind();
    throw err;
  }
}

export function listRepos(ctx: OpContext): { repos: RepoRecord[] } {
  return { repos: listRows(ctx.db).map((r) => toRecord(r, ctx.config)) };
}

export function repoInfo(ctx: OpContext, input: { ref: Ref }): RepoRecord & { addresses: string[]; confinement: Record<string, string> } {
  const row = requireRepo(ctx.db, input.ref);
  return {
    ...toRecord(row, ctx.config),
    addresses: repoAddresses(row.network_id, ctx.config),
    confinement: { ...dockerConfinement(ctx.config, row.network_id), ...networkConfinement(ctx.config, row.network_id) },
    ...(row.status === 'deleting' ? { status: 'deleting' } : {}),
  };
}

export async function deleteRepo(ctx: OpContext, input: { ref: Ref; yes: boolean }): Promise<{ ref: string; guid: string; deleted: true }> {
  const { db } = ctx;
  const row = requireRepo(db, input.ref);
  const ref = formatRef(row);
  const refuseIfForks = () => {
    const forks = childrenOf(db, row.guid);
    if (forks.length) {
      throw conflict('HAS_FORKS', `repository ${ref} has ${forks.length} fork(s): ${forks.map(formatRef).join(', ')}; a parent is deleted after its forks`, [
        ...forks.map((f) => ({ description: `Delete the fork ${formatRef(f)} first`, run: `tine repo delete ${formatRef(f)} --yes` })),
        { description: 'Or keep it and list what depends on it', run: 'tine repo list' },
      ]);
    }
  };
  refuseIfForks();
  if (!input.yes) {
    if (!ctx.caller.interactive) {
      throw new TineError('CONFIRMATION_REQUIRED', EXIT.usage, `yes: deleting ${ref} destroys its files; confirm with --yes`, {
        field: 'yes',
        next: [{ description: 'Delete it for good', run: `tine repo delete ${ref} --yes` }],
      });
    }
    const ok = await ctx.caller.confirm(`Delete ${ref} (${row.guid}) and all its files? Type "${ref}" to confirm: `);
    if (!ok) throw new TineError('CANCELLED', EXIT.failure, `not deleted: ${ref} was not confirmed`);
  }
  // A running repository is stopped first (hooks best effort, daemon always).
  await stopBeforeDelete(ctx, row);
  // Decide: mark deleting and write the intent atomically; from here a crash finishes the delete.
  const intentId = db.transaction(() => {
    refuseIfForks();
    const fresh = db.prepare('SELECT status FROM repos WHERE guid = ?').get(row.guid) as { status: string } | undefined;
    if (fresh?.status !== 'ready') throw conflict('BUSY', `repository ${ref} is already being deleted`);
    db.prepare("UPDATE repos SET status = 'deleting' WHERE guid = ?").run(row.guid);
    return writeIntent(db, 'delete', row.guid, row.path);
  }).immediate();
  failpoint('delete:decided');
  // Delivered secret files go with it (its rows go by cascade with the repos row).
  await withdrawSecrets(ctx, toRecord(row, ctx.config));
  await ctx.timeline.step('destroy', 'Subvolume destroyed', async () => {
    if (ctx.store.volumeExists(row.path)) await ctx.store.destroyVolume(row.path);
  });
  failpoint('delete:destroyed');
  await ctx.timeline.step('network', 'Network namespace removed', () => {
    removeRepoNetwork(ctx.config, row.network_id);
  });
  const keysRemoved = removeKeysOf(ctx, row.guid);
  if (keysRemoved) ctx.timeline.record('keys', `Removed ${keysRemoved} SSH key(s) of ${ref}`, 0);
  db.transaction(() => {
    db.prepare('DELETE FROM repos WHERE guid = ?').run(row.guid);
    clearIntent(db, intentId);
  }).immediate();
  return { ref, guid: row.guid, deleted: true };
}
