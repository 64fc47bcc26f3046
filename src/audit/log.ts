// The audit log: JSON lines under <stateDir>/audit, outside every repository. Each entry
// carries the hash of the one before it, so editing, removing or reordering a line breaks
// the chain at that line. It rotates by size; a rotated file is named by its first entry's
// sequence number and the chain runs on across files. Never a secret value: refs, command
// names, decisions and codes only.
import { createHash } from 'node:crypto';
import { closeSync, existsSync, fsyncSync, mkdirSync, openSync, readdirSync, readFileSync, readSync, renameSync, statSync, writeSync, fstatSync } from 'node:fs';
import { join } from 'node:path';
import { TineError, EXIT } from '../errors.js';
import { withLock } from './lock.js';

export const ZERO_HASH = '0'.repeat(64);
const CURRENT = 'current.log';
const ROTATED = /^(\d{12})\.log$/;

export interface AuditRecord {
  actor: 'human' | 'agent';
  /** Why this actor: the signal and where it was found, or the role. */
  reason: string;
  pid: number;
  /** Which program decided: the thin client or tine-host. */
  via: 'tine' | 'tine-host';
  command: string;
  ref?: string;
  decision: 'allowed' | 'refused';
  code?: string;
  /** Secret names an operation touched (never values). */
  keys?: string[];
  /** The other host of a transfer (its identity). */
  peer?: string;
}

export interface AuditEntry extends AuditRecord {
  seq: number;
  time: string;
  prev: string;
  hash: string;
}

export interface AuditOptions {
  stateDir: string;
  rotateBytes: number;
}

export const auditDir = (stateDir: string) => join(stateDir, 'audit');

/** The hash of an entry: over the previous hash and the line's own fields, hash excluded. */
export function entryHash(fields: Record<string, unknown>): string {
  const { hash: _omit, ...rest } = fields;
  return createHash('sha256').update(JSON.stringify(rest)).digest('hex');
}

/** Log files, oldest first: the rotated ones by sequence, then the current one. */
export function logFiles(stateDir: string): string[] {
  const dir = auditDir(stateDir);
  if (!existsSync(dir)) return [];
  const names = readdirSync(dir);
  const rotated = names.filter((n) => ROTATED.test(n)).sort();
  return [...rotated, ...(names.includes(CURRENT) ? [CURRENT] : [])].map((n) => join(dir, n));
}

function lastLine(file: string): string | undefined {
  const fd = openSync(file, 'r');
  try {
    const size = fstatSync(fd).size;
    const len = Math.min(size, 256 * 1024);
    const buf = Buffer.alloc(len);
    readSync(fd, buf, 0, len, size - len);
    const lines = buf.toString('utf8').split('\n').filter((l) => l.length > 0);
    return lines.pop();
  } finally {
    closeSync(fd);
  }
}

function firstLine(file: string): string | undefined {
  const fd = openSync(file, 'r');
  try {
    const buf = Buffer.alloc(64 * 1024);
    const n = readSync(fd, buf, 0, buf.length, 0);
    return buf.subarray(0, n).toString('utf8').split('\n')[0] || undefined;
  } finally {
    closeSync(fd);
  }
}

function parseTail(file: string, line: string): { seq: number; hash: string } {
  try {
    const e = JSON.parse(line) as AuditEntry;
    if (Number.isInteger(e.seq) && typeof e.hash === 'string') return { seq: e.seq, hash: e.hash };
  } catch {
    /* below */
  }
  throw new TineError('AUDIT_BROKEN', EXIT.failure, `the last entry of the audit log (${file}) is damaged, so no entry can be chained to it`, {
    next: [{ description: 'Find the damage', run: 'tine audit verify' }],
  });
}

/** Append one entry (under the cross-process lock); returns it. */
export async function appendAudit(opts: AuditOptions, record: AuditRecord): Promise<AuditEntry> {
  const dir = auditDir(opts.stateDir);
  mkdirSync(dir, { recursive: true, mode: 0o700 });
  return withLock(dir, () => {
    const current = join(dir, CURRENT);
    let size = existsSync(current) ? statSync(current).size : 0;
    let head = { seq: 0, hash: ZERO_HASH };
    const files = logFiles(opts.stateDir);
    for (let i = files.length - 1; i >= 0; i--) {
      const line = lastLine(files[i]!);
      if (line !== undefined) {
        head = parseTail(files[i]!, line);
        break;
      }
    }
    if (size > 0 && size >= opts.rotateBytes) {
      const first = parseTail(current, firstLine(current) ?? '');
      renameSync(current, join(dir, `${String(first.seq).padStart(12, '0')}.log`));
      size = 0;
    }
    const body: Record<string, unknown> = {
      seq: head.seq + 1,
      time: new Date().toISOString(),
      actor: record.actor,
      reason: record.reason,
      pid: record.pid,
      via: record.via,
      command: record.command,
      ...(record.ref !== undefined ? { ref: record.ref } : {}),
      decision: record.decision,
      ...(record.code !== undefined ? { code: record.code } : {}),
      ...(record.keys !== undefined ? { keys: record.keys } : {}),
      ...(record.peer !== undefined ? { peer: record.peer } : {}),
      prev: head.hash,
    };
    const entry = { ...body, hash: entryHash(body) } as unknown as AuditEntry;
    const fd = openSync(current, 'a', 0o600);
    try {
      writeSync(fd, JSON.stringify(entry) + '\n');
      fsyncSync(fd);
    } finally {
      closeSync(fd);
    }
    return entry;
  });
}

export interface LocatedEntry {
  file: string;
  line: number;
  text: string;
}

function* lines(stateDir: string): Generator<LocatedEntry> {
  for (const file of logFiles(stateDir)) {
    const text = readFileSync(file, 'utf8');
    const all = text.split('\n');
    if (all[all.length - 1] === '') all.pop();
    for (let i = 0; i < all.length; i++) yield { file, line: i + 1, text: all[i]! };
  }
}

export interface VerifyResult {
  entries: number;
  files: number;
  /** The first sequence number present (older rotated files may have been removed). */
  firstSeq: number | null;
  head: string;
}

/** Check the whole chain; throws AUDIT_TAMPERED naming the first broken line. */
export function verifyAudit(stateDir: string): VerifyResult {
  let prev: { seq: number; hash: string } | undefined;
  let firstSeq: number | null = null;
  let count = 0;
  const broken = (at: LocatedEntry, problem: string) =>
    new TineError('AUDIT_TAMPERED', EXIT.failure, `the audit log is broken at ${at.file} line ${at.line}: ${problem}`, {
      details: { file: at.file, line: at.line },
      next: [{ description: 'Inspect that line and the one before it', run: `sed -n '${Math.max(1, at.line - 1)},${at.line}p' ${at.file}` }],
    });
  for (const at of lines(stateDir)) {
    let e: Record<string, unknown>;
    try {
      e = JSON.parse(at.text) as Record<string, unknown>;
      if (!e || typeof e !== 'object' || Array.isArray(e)) throw new Error('not an object');
    } catch {
      throw broken(at, 'the line is not a JSON entry');
    }
    const seq = e.seq;
    if (typeof seq !== 'number' || typeof e.hash !== 'string' || typeof e.prev !== 'string') throw broken(at, 'the entry lacks seq, prev or hash');
    if (entryHash(e) !== e.hash) throw broken(at, `entry ${seq} was changed (its hash does not match its content)`);
    if (prev) {
      if (e.prev !== prev.hash) throw broken(at, `entry ${seq} does not follow entry ${prev.seq} (an entry was removed, inserted or reordered)`);
      if (seq !== prev.seq + 1) throw broken(at, `entry ${seq} follows entry ${prev.seq} (sequence gap)`);
    } else {
      firstSeq = seq;
      if (seq === 1 && e.prev !== ZERO_HASH) throw broken(at, 'the first entry does not start the chain');
    }
    prev = { seq, hash: e.hash };
    count++;
  }
  return { entries: count, files: logFiles(stateDir).length, firstSeq, head: prev?.hash ?? ZERO_HASH };
}

export interface ReadFilter {
  actor?: 'human' | 'agent';
  since?: Date;
  limit?: number;
}

/** Entries matching the filter, oldest first (the last `limit` of them). */
export function readAudit(stateDir: string, filter: ReadFilter = {}): AuditEntry[] {
  const out: AuditEntry[] = [];
  for (const at of lines(stateDir)) {
    let e: AuditEntry;
    try {
      e = JSON.parse(at.text) as AuditEntry;
    } catch {
      continue; // verify reports damage; the reader shows what it can
    }
    if (filter.actor && e.actor !== filter.actor) continue;
    if (filter.since && !(new Date(e.time) >= filter.since)) continue;
    out.push(e);
  }
  return filter.limit !== undefined ? out.slice(-filter.limit) : out;
}
