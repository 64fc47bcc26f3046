// The secrets table: the only code that reads or writes secret rows. Rows hold ciphertext
// only; plaintext exists in memory for the length of one operation.
import type { Db } from '../state/db.js';
import type { HostConfig } from '../host/config.js';
import { openDb } from '../state/db.js';
import { type SecretKeys, aadFor, seal, open, ensureHostKey, hostKeyPath } from './hostkey.js';
import { TineError, EXIT } from '../errors.js';
import { existsSync } from 'node:fs';
import { stateDbPath } from '../host/config.js';

export type SecretMode = 'env' | 'file';

export interface SecretRow {
  repo_guid: string;
  key: string;
  mode: SecretMode;
  nonce: Buffer;
  box: Buffer;
  key_id: string;
  digest: string;
  set_at: string;
  set_by: string;
}

/** What may be shown about a secret: never its value. */
export interface SecretInfo {
  key: string;
  mode: SecretMode;
  digest: string;
  setAt: string;
  actor: string;
}

export const infoOf = (r: SecretRow): SecretInfo => ({ key: r.key, mode: r.mode, digest: r.digest, setAt: r.set_at, actor: r.set_by });

// Schema: migration 3 in src/state/db.ts (table `secrets`, cascade on repository delete).

export function getRow(db: Db, repoGuid: string, key: string): SecretRow | undefined {
  return db.prepare('SELECT * FROM secrets WHERE repo_guid = ? AND key = ?').get(repoGuid, key) as SecretRow | undefined;
}

export function listRowsOf(db: Db, repoGuid: string): SecretRow[] {
  return db.prepare('SELECT * FROM secrets WHERE repo_guid = ? ORDER BY key').all(repoGuid) as SecretRow[];
}

export function upsertRow(db: Db, row: SecretRow): void {
  db.prepare(
    `INSERT INTO secrets (repo_guid, key, mode, nonce, box, key_id, digest, set_at, set_by)
     VALUES (@repo_guid, @key, @mode, @nonce, @box, @key_id, @digest, @set_at, @set_by)
     ON CONFLICT (repo_guid, key) DO UPDATE SET mode = excluded.mode, nonce = excluded.nonce, box = excluded.box,
       key_id = excluded.key_id, digest = excluded.digest, set_at = excluded.set_at, set_by = excluded.set_by`,
  ).run(row);
}

export function deleteRow(db: Db, repoGuid: string, key: string): void {
  db.prepare('DELETE FROM secrets WHERE repo_guid = ? AND key = ?').run(repoGuid, key);
}

export function sealRow(keys: SecretKeys, repoGuid: string, key: string, mode: SecretMode, value: Buffer): Pick<SecretRow, 'nonce' | 'box' | 'key_id'> {
  const { nonce, box } = seal(keys, value, aadFor(repoGuid, key, mode));
  return { nonce, box, key_id: keys.keyId };
}

/** Decrypt one row. A row sealed under another key or tampered with fails closed. */
export function openRow(keys: SecretKeys, row: SecretRow): Buffer {
  if (row.key_id !== keys.keyId) {
    throw new TineError('SECRET_KEY_MISMATCH', EXIT.failure,
      `secret ${row.key} was sealed under host key ${row.key_id}, but this host's key is ${keys.keyId}`, {
        next: [{ description: 'Restore the host secret key that the state database was written with (a backup of secret.key)' }],
      });
  }
  try {
    return open(keys, { nonce: row.nonce, box: row.box }, aadFor(row.repo_guid, row.key, row.mode));
  } catch {
    throw new TineError('SECRET_CORRUPT', EXIT.failure, `secret ${row.key} does not authenticate: it was altered or moved in the state database`, {
      next: [{ description: 'Set it again', run: `tine repo secret set <ref> --key ${row.key} --value - --rotate-secret` }],
    });
  }
}

/**
 * Setup's step: make the host key, unless secrets already exist without one (a new key
 * would orphan them silently; the operator must restore the old key instead).
 */
export function ensureSecretKeyForSetup(config: HostConfig): boolean {
  if (existsSync(hostKeyPath(config))) return ensureHostKey(config);
  if (existsSync(stateDbPath(config))) {
    const db = openDb(config);
    try {
      const n = db.prepare('SELECT count(*) FROM secrets').pluck().get() as number;
      if (n > 0) {
        throw new TineError('SECRET_KEY_MISSING', EXIT.failure,
          `the host secret key ${hostKeyPath(config)} is missing but ${n} secret(s) were sealed under it; a new key would make them unreadable`, {
            next: [{ description: 'Restore secret.key from your backup (root, 0600), then run setup again', run: 'tine setup' }],
          });
      }
    } finally {
      db.close();
    }
  }
  return ensureHostKey(config);
}
