// The repositories table: the only place that reads or writes repository rows.
import { join } from 'node:path';
import type { Db } from '../state/db.js';
import type { HostConfig } from '../host/config.js';
import { reposDir } from '../host/config.js';
import { type Ref, formatRef } from './ref.js';
import { firstServiceAddress, NETWORK_ID_MIN, NETWORK_ID_MAX } from './network.js';
import { TineError, EXIT, notFound } from '../errors.js';

export interface RepoRow {
  guid: string;
  name: string;
  tag: string | null;
  parent_guid: string | null;
  grand_guid: string;
  network_id: number;
  path: string;
  status: 'pending' | 'ready' | 'deleting';
  state: 'down' | 'up';
  consistency: 'crash' | 'quiesced' | null;
  created_at: string;
}

/** The repository record of the contract: create, fork, info and list all return it. */
export interface RepoRecord {
  ref: string;
  name: string;
  tag: string | null;
  guid: string;
  parentGuid: string | null;
  grandGuid: string;
  isGrand: boolean;
  networkId: number;
  path: string;
  dockerHost: string;
  ip: string;
  state: 'down' | 'up';
  consistency: 'crash' | 'quiesced' | null;
  createdAt: string;
}

export function toRecord(row: RepoRow, config: HostConfig): RepoRecord {
  return {
    ref: formatRef(row),
    name: row.name,
    tag: row.tag,
    guid: row.guid,
    parentGuid: row.parent_guid,
    grandGuid: row.grand_guid,
    isGrand: row.parent_guid === null,
    networkId: row.network_id,
    path: row.path,
    dockerHost: `unix://${join(config.runDir, `docker-${row.network_id}.sock`)}`,
    ip: firstServiceAddress(row.network_id, config),
    state: row.state,
    consistency: row.consistency,
    createdAt: row.created_at,
  };
}

export const repoPath = (config: HostConfig, guid: string) => join(reposDir(config), guid);

export function findByRef(db: Db, ref: Ref): RepoRow | undefined {
  return db
    .prepare("SELECT * FROM repos WHERE name = ? AND coalesce(tag, '') = ? AND status != 'pending'")
    .get(ref.name, ref.tag ?? '') as RepoRow | undefined;
}

/** Any row holding the ref, pending ones included (they reserve the name). */
export function refTaken(db: Db, ref: Ref): RepoRow | undefined {
  return db.prepare("SELECT * FROM repos WHERE name = ? AND coalesce(tag, '') = ?").get(ref.name, ref.tag ?? '') as RepoRow | undefined;
}

export function findByGuid(db: Db, guid: string): RepoRow | undefined {
  return db.prepare('SELECT * FROM repos WHERE guid = ?').get(guid) as RepoRow | undefined;
}

export function requireRepo(db: Db, ref: Ref): RepoRow {
  const row = findByRef(db, ref);
  if (!row) {
    throw notFound(`no repository ${formatRef(ref)} on this host`, [
      { description: 'List the repositories on this host', run: 'tine repo list' },
      ...(ref.tag === null ? [{ description: 'Create it as a grand', run: `tine repo create ${ref.name}` }] : []),
    ]);
  }
  return row;
}

export function listRows(db: Db): RepoRow[] {
  return db.prepare("SELECT * FROM repos WHERE status != 'pending' ORDER BY name, coalesce(tag, ''), created_at").all() as RepoRow[];
}

export function childrenOf(db: Db, guid: string): RepoRow[] {
  return db.prepare('SELECT * FROM repos WHERE parent_guid = ? ORDER BY tag').all(guid) as RepoRow[];
}

/** Smallest free network id; call inside the write transaction that inserts the row. */
export function allocateNetworkId(db: Db): number {
  const id = db
    .prepare(
      `SELECT CASE WHEN NOT EXISTS (SELECT 1 FROM repos WHERE network_id = :min) THEN :min
              ELSE (SELECT min(network_id) + 1 FROM repos r
                    WHERE network_id + 1 <= :max
                      AND NOT EXISTS (SELECT 1 FROM repos r2 WHERE r2.network_id = r.network_id + 1)) END`,
    )
    .pluck()
    .get({ min: NETWORK_ID_MIN, max: NETWORK_ID_MAX }) as number | null;
  if (id === null) {
    throw new TineError('NETWORK_IDS_EXHAUSTED', EXIT.conflict, `all network ids ${NETWORK_ID_MIN}–${NETWORK_ID_MAX} are in use`, {
      next: [{ description: 'Delete repositories you no longer need', run: 'tine repo list' }],
    });
  }
  return id;
}

export function insertPendingRow(db: Db, row: Omit<RepoRow, 'status' | 'state'>): void {
  db.prepare(
    `INSERT INTO repos (guid, name, tag, parent_guid, grand_guid, network_id, path, status, state, consistency, created_at)
     VALUES (@guid, @name, @tag, @parent_guid, @grand_guid, @network_id, @path, 'pending', 'down', @consistency, @created_at)`,
  ).run(row);
}
