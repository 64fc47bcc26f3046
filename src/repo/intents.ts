// Crash safety. A multi-step operation writes its intent (in the same transaction that
// reserves its row) before touching the disk, and removes it in the transaction that
// commits. If its process dies in between, the next command finds an intent whose owner
// is gone and repairs it: create/fork roll back to nothing; delete rolls forward.
import { removeRepoNetwork } from '../network/netns.js';
import type { HostConfig } from '../host/config.js';
import type { Db } from '../state/db.js';
import type { StoreDriver } from '../store/driver.js';
import { loadNative } from '../native/addon.js';

export type IntentOp = 'create' | 'fork' | 'delete';

interface IntentRow {
  id: number;
  op: IntentOp;
  repo_guid: string;
  path: string;
  owner_pid: number;
  owner_start: number;
}

let selfStart: number | undefined;
/** This process's identity: pid + start time (a pid alone may be reused). */
export function ownStartTime(): number {
  selfStart ??= loadNative().procStat(process.pid).starttime;
  return selfStart;
}

/** Is the process (pid + start time) that wrote an intent or a lock still the same living process? */
export function ownerAlive(pid: number, start: number): boolean {
  try {
    return loadNative().procStat(pid).starttime === start;
  } catch {
    return false;
  }
}

/** Write an intent; call inside the transaction that reserves the repository row. */
export function writeIntent(db: Db, op: IntentOp, repoGuid: string, path: string): number {
  const info = db
    .prepare('INSERT INTO intents (op, repo_guid, path, owner_pid, owner_start, created_at) VALUES (?, ?, ?, ?, ?, ?)')
    .run(op, repoGuid, path, process.pid, ownStartTime(), new Date().toISOString());
  return Number(info.lastInsertRowid);
}

export function clearIntent(db: Db, id: number): void {
  db.prepare('DELETE FROM intents WHERE id = ?').run(id);
}

/** Test hook: `TINE_FAILPOINT=<name>` kills this process with SIGKILL at that point. */
export function failpoint(name: string): void {
  if (process.env.TINE_FAILPOINT === name) process.kill(process.pid, 'SIGKILL');
}

export interface Repair {
  op: IntentOp;
  repoGuid: string;
  outcome: 'rolled_back' | 'completed' | 'finished_already';
}

/** Repair every intent whose owner died. Safe to run concurrently: each intent is claimed first. */
export async function repairDeadIntents(db: Db, store: StoreDriver, config?: Pick<HostConfig, 'runDir' | 'addressBlock'>): Promise<Repair[]> {
  const repairs: Repair[] = [];
  const rows = db.prepare('SELECT * FROM intents ORDER BY id').all() as IntentRow[];
  for (const intent of rows) {
    if (ownerAlive(intent.owner_pid, intent.owner_start)) continue;
    // Claim it: only one repairer wins the update; a repairer that dies is itself repaired.
    const claimed = db
      .prepare('UPDATE intents SET owner_pid = ?, owner_start = ? WHERE id = ? AND owner_pid = ? AND owner_start = ?')
      .run(process.pid, ownStartTime(), intent.id, intent.owner_pid, intent.owner_start).changes;
    if (claimed !== 1) continue;
    const row = db.prepare('SELECT status, network_id FROM repos WHERE guid = ?').get(intent.repo_guid) as { status: string; network_id: number } | undefined;
    if ((intent.op === 'create' || intent.op === 'fork') && row?.status === 'ready') {
      clearIntent(db, intent.id);
      repairs.push({ op: intent.op, repoGuid: intent.repo_guid, outcome: 'finished_already' });
      continue;
    }
    // Roll back a half-made repository, or finish a delete that was decided.
    if (store.volumeExists(intent.path)) await store.destroyVolume(intent.path);
    // Its network namespace, veth and (if it was the last) filter go with it.
    if (config && row) removeRepoNetwork(config, row.network_id);
    db.transaction(() => {
      db.prepare('DELETE FROM repos WHERE guid = ?').run(intent.repo_guid);
      clearIntent(db, intent.id);
    }).immediate();
    repairs.push({ op: intent.op, repoGuid: intent.repo_guid, outcome: intent.op === 'delete' ? 'completed' : 'rolled_back' });
  }
  return repairs;
}
