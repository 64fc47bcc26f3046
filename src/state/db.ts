// Host state in SQLite. Schema changes are numbered migrations, applied in order, each in
// its own transaction; later features (audit, secrets) add theirs to `migrations`.
import Database from 'better-sqlite3';
import { chmodSync, existsSync, mkdirSync } from 'node:fs';
import { type HostConfig, stateDbPath } from '../host/config.js';
import { TineError, EXIT } from '../errors.js';

export type Db = Database.Database;

export interface Migration {
  version: number;
  name: string;
  sql: string;
}

export const migrations: Migration[] = [
  {
    version: 1,
    name: 'repositories and intents',
    sql: `
      CREATE TABLE repos (
        guid        TEXT PRIMARY KEY,
        name        TEXT NOT NULL,
        tag         TEXT,
        parent_guid TEXT REFERENCES repos(guid),
        grand_guid  TEXT NOT NULL,
        network_id  INTEGER NOT NULL UNIQUE,
        path        TEXT NOT NULL UNIQUE,
        -- 'pending' while an operation builds it, 'deleting' while one removes it
        status      TEXT NOT NULL CHECK (status IN ('pending', 'ready', 'deleting')),
        state       TEXT NOT NULL DEFAULT 'down' CHECK (state IN ('down', 'up')),
        consistency TEXT CHECK (consistency IN ('crash', 'quiesced')),
        created_at  TEXT NOT NULL
      );
      CREATE UNIQUE INDEX repos_ref ON repos(name, coalesce(tag, ''));
      CREATE INDEX repos_parent ON repos(parent_guid);
      -- An operation writes its intent before it acts; a dead owner's intent is
      -- repaired by the next command (rolled back or finished).
      CREATE TABLE intents (
        id          INTEGER PRIMARY KEY AUTOINCREMENT,
        op          TEXT NOT NULL,
        repo_guid   TEXT NOT NULL,
        path        TEXT NOT NULL,
        owner_pid   INTEGER NOT NULL,
        owner_start INTEGER NOT NULL,
        created_at  TEXT NOT NULL
      );
    `,
  },
  {
    version: 3,
    name: 'secrets',
    sql: `
      -- Per-repository secrets (src/secrets/). Rows belong to one repository's guid: a fork
      -- (a new guid) starts with none; deleting a repository deletes its secrets.
      CREATE TABLE secrets (
        repo_guid TEXT NOT NULL REFERENCES repos(guid) ON DELETE CASCADE,
        key       TEXT NOT NULL,
        mode      TEXT NOT NULL CHECK (mode IN ('env', 'file')),
        nonce     BLOB NOT NULL,
        box       BLOB NOT NULL,   -- AES-256-GCM ciphertext || tag; AAD = repo guid, key, mode
        key_id    TEXT NOT NULL,   -- fingerprint of the host key it was sealed under
        digest    TEXT NOT NULL,   -- keyed HMAC (src/secrets/hostkey.ts), never a plain hash
        set_at    TEXT NOT NULL,
        set_by    TEXT NOT NULL,
        PRIMARY KEY (repo_guid, key)
      );
    `,
  },
];

export function openDb(config: HostConfig, opts: { create?: boolean } = {}): Db {
  const file = stateDbPath(config);
  if (!existsSync(file)) {
    if (!opts.create) {
      throw new TineError('NOT_SET_UP', EXIT.unsupported, `this host is not set up: no state database at ${file}`, {
        next: [{ description: 'Prepare the host (idempotent)', run: 'tine setup' }],
      });
    }
    mkdirSync(config.stateDir, { recursive: true, mode: 0o700 });
  }
  const db = new Database(file);
  // The state holds secrets' ciphertexts and the audit chain: root only.
  chmodSync(file, 0o600);
  db.pragma('journal_mode = WAL');
  db.pragma('synchronous = NORMAL');
  db.pragma('busy_timeout = 10000');
  db.pragma('foreign_keys = ON');
  migrate(db);
  return db;
}

export function migrate(db: Db): void {
  db.exec('CREATE TABLE IF NOT EXISTS schema_migrations (version INTEGER PRIMARY KEY, name TEXT NOT NULL, applied_at TEXT NOT NULL)');
  const applied = new Set(db.prepare('SELECT version FROM schema_migrations').pluck().all() as number[]);
  for (const m of [...migrations].sort((a, b) => a.version - b.version)) {
    if (applied.has(m.version)) continue;
    db.transaction(() => {
      // Another process may have migrated meanwhile; the check runs inside the write lock.
      const done = db.prepare('SELECT 1 FROM schema_migrations WHERE version = ?').get(m.version);
      if (done) return;
      db.exec(m.sql);
      db.prepare('INSERT INTO schema_migrations (version, name, applied_at) VALUES (?, ?, ?)').run(m.version, m.name, new Date().toISOString());
    }).immediate();
  }
}
