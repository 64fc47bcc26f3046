// Helpers for the secrets tests: read the state the way an attacker with a copy would, and
// look for values in bytes.
import { readdirSync, readFileSync, statSync } from 'node:fs';
import { join } from 'node:path';
import Database from 'better-sqlite3';
import { deriveKeys, open as openBox, aadFor } from '../../src/secrets/hostkey.js';

export interface RawSecretRow {
  repo_guid: string;
  key: string;
  mode: string;
  nonce: Buffer;
  box: Buffer;
}

export function readSecretRows(dbFile: string): RawSecretRow[] {
  const db = new Database(dbFile, { readonly: true, fileMustExist: true });
  try {
    return db.prepare('SELECT * FROM secrets ORDER BY repo_guid, key').all() as RawSecretRow[];
  } finally {
    db.close();
  }
}

/** Decrypt with a given master key (32 bytes); throws when the key is wrong. */
export function decryptWith(master: Buffer, row: RawSecretRow): string {
  return openBox(deriveKeys(master), { nonce: row.nonce, box: row.box }, aadFor(row.repo_guid, row.key, row.mode)).toString('utf8');
}

/** Every file under dir (recursively), as bytes. */
export function allFiles(dir: string): { path: string; bytes: Buffer }[] {
  const out: { path: string; bytes: Buffer }[] = [];
  const walk = (d: string) => {
    for (const name of readdirSync(d)) {
      const p = join(d, name);
      const st = statSync(p);
      if (st.isDirectory()) walk(p);
      else if (st.isFile()) out.push({ path: p, bytes: readFileSync(p) });
    }
  };
  walk(dir);
  return out;
}

/** Needles in a haystack of bytes: plain utf8, and utf16le / base64 / hex just in case. */
export function findValues(hay: Buffer | string, values: string[]): string[] {
  const buf = typeof hay === 'string' ? Buffer.from(hay, 'utf8') : hay;
  const hits: string[] = [];
  for (const v of values) {
    const forms = [Buffer.from(v, 'utf8'), Buffer.from(v, 'utf16le'), Buffer.from(Buffer.from(v).toString('base64').replace(/=+$/, '')), Buffer.from(Buffer.from(v).toString('hex'))];
    if (forms.some((f) => buf.includes(f))) hits.push(v);
  }
  return hits;
}
