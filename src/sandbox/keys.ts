// Per-repository SSH access: `repo key add/list/remove`. A repo key is one authorized_keys
// line with `restrict` and a forced command (`tine-host sandbox-gateway <guid>`), so
// whatever the client asks for runs inside that repository's sandbox. The file in the host
// config (authorizedKeysFile) is the only record: nothing to keep in sync.
import { createHash } from 'node:crypto';
import { tineHostScript } from '../host/install.js';
import { readFileSync, writeFileSync, renameSync, mkdirSync, chmodSync } from 'node:fs';
import { dirname, join } from 'node:path';
import type { OpContext } from '../ops/context.js';
import type { Ref } from '../repo/ref.js';
import { formatRef } from '../repo/ref.js';
import { requireRepo } from '../repo/registry.js';
import { TineError, EXIT, invalidInput, conflict, notFound } from '../errors.js';

const KEY_TYPES = new Set([
  'ssh-ed25519', 'ssh-rsa', 'ecdsa-sha2-nistp256', 'ecdsa-sha2-nistp384', 'ecdsa-sha2-nistp521',
  'sk-ssh-ed25519@openssh.com', 'sk-ecdsa-sha2-nistp256@openssh.com',
]);

export interface PublicKey {
  type: string;
  blob: string;
  comment: string;
  fingerprint: string;
}

export interface RepoKey {
  fingerprint: string;
  type: string;
  comment: string;
  ref: string;
  guid: string;
}

/** `SHA256:…` as ssh-keygen -l prints it. */
const fingerprintOf = (blob: string) => 'SHA256:' + createHash('sha256').update(Buffer.from(blob, 'base64')).digest('base64').replace(/=+$/, '');

/** Parse `type base64 [comment]`; the blob's own type string must match (no options allowed). */
export function parsePublicKey(text: string, field = 'pubkey'): PublicKey {
  const line = text.split('\n').map((l) => l.trim()).find((l) => l && !l.startsWith('#'));
  if (!line) throw invalidInput(field, 'holds no public key');
  const [type, blob, ...rest] = line.split(/\s+/);
  if (!type || !KEY_TYPES.has(type)) throw invalidInput(field, `"${(type ?? '').slice(0, 40)}" is not an SSH public key type (give a plain key line, e.g. ssh-ed25519 AAAA… comment)`);
  if (!blob || !/^[A-Za-z0-9+/]+={0,2}$/.test(blob)) throw invalidInput(field, 'the key data is not base64');
  const raw = Buffer.from(blob, 'base64');
  const len = raw.length >= 4 ? raw.readUInt32BE(0) : -1;
  if (len < 0 || raw.length < 4 + len || raw.subarray(4, 4 + len).toString() !== type) throw invalidInput(field, `the key data is not a ${type} key`);
  const comment = rest.join(' ').replace(/[^\x20-\x7e]/g, '').slice(0, 200);
  return { type, blob, comment, fingerprint: fingerprintOf(blob) };
}

const hostBin = () => tineHostScript;

/** The forced command: finds this host config, whatever the account's environment. */
export function gatewayCommand(ctx: OpContext, guid: string): string {
  const parts = [process.execPath, hostBin(), ctx.config.configPath];
  for (const p of parts) {
    if (/['"\\\n]/.test(p)) throw new TineError('UNSAFE_PATH', EXIT.failure, `path ${p} cannot be quoted into an authorized_keys forced command`, { next: [{ description: 'Install tine and its host config under paths without quotes or backslashes' }] });
  }
  return `TINE_HOST_CONFIG='${ctx.config.configPath}' '${process.execPath}' '${hostBin()}' sandbox-gateway ${guid}`;
}

const GATEWAY_RE = /command="[^"]* sandbox-gateway ([0-9a-f-]{36})"/;

interface Line {
  text: string;
  key?: { type: string; blob: string; comment: string };
  gatewayGuid?: string;
}

function readLines(file: string): Line[] {
  let text = '';
  try {
    text = readFileSync(file, 'utf8');
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw err;
  }
  return text.split('\n').filter((l, i, a) => l !== '' || i < a.length - 1).map((textLine) => {
    const out: Line = { text: textLine };
    // The key is the first `type base64` pair on the line (options, if any, come before).
    const m = /(?:^|\s)((?:ssh|ecdsa|sk)-[^\s]+)\s+([A-Za-z0-9+/]+={0,2})(?:\s+(.*))?$/.exec(textLine);
    if (m && !textLine.trimStart().startsWith('#')) out.key = { type: m[1]!, blob: m[2]!, comment: m[3] ?? '' };
    const g = GATEWAY_RE.exec(textLine);
    if (g && /^restrict[,\s]/.test(textLine)) out.gatewayGuid = g[1];
    return out;
  });
}

function writeLines(file: string, lines: Line[]): void {
  mkdirSync(dirname(file), { recursive: true, mode: 0o700 });
  const tmp = `${file}.tine-${process.pid}`;
  writeFileSync(tmp, lines.map((l) => l.text + '\n').join(''), { mode: 0o600 });
  chmodSync(tmp, 0o600);
  renameSync(tmp, file);
}

/** Serialise writers of the file: the state database's write lock is host-wide. */
const locked = <T>(ctx: OpContext, fn: () => T): T => ctx.db.transaction(fn).immediate();

export function keyAdd(ctx: OpContext, input: { ref: Ref; pubkey: string }): RepoKey {
  const row = requireRepo(ctx.db, input.ref);
  let text: string;
  try {
    text = readFileSync(input.pubkey === '-' ? 0 : input.pubkey, 'utf8');
  } catch (err) {
    throw invalidInput('pubkey', `cannot read ${input.pubkey}: ${(err as Error).message}`);
  }
  const key = parsePublicKey(text);
  const ref = formatRef(row);
  const file = ctx.config.authorizedKeysFile;
  return locked(ctx, () => {
    const lines = readLines(file);
    for (const l of lines) {
      if (l.key?.blob !== key.blob) continue;
      if (l.gatewayGuid === row.guid) throw conflict('EXISTS', `key ${key.fingerprint} is already a key of ${ref}`, [{ description: 'List its keys', run: `tine repo key list ${ref}` }]);
      if (l.gatewayGuid) throw conflict('KEY_IN_USE', `key ${key.fingerprint} already opens another repository (${l.gatewayGuid}); sshd would use the first line only`, [{ description: 'Make a separate key pair for each repository', run: 'ssh-keygen -t ed25519 -f ~/.ssh/tine-<repo>' }]);
      // An unrestricted line for the same key would win over ours and give a full login.
      throw conflict('KEY_UNRESTRICTED', `key ${key.fingerprint} already has other access in ${file}; a sandboxed line for it would not take effect`, [{ description: `Use a key that is not yet in ${file}`, run: 'ssh-keygen -t ed25519 -f ~/.ssh/tine-<repo>' }]);
    }
    const comment = `tine:${ref}${key.comment ? ' ' + key.comment : ''}`;
    const text = `restrict,pty,command="${gatewayCommand(ctx, row.guid)}" ${key.type} ${key.blob} ${comment}`;
    writeLines(file, [...lines, { text }]);
    return { fingerprint: key.fingerprint, type: key.type, comment: key.comment, ref, guid: row.guid };
  });
}

export function keyList(ctx: OpContext, input: { ref: Ref }): { keys: RepoKey[]; file: string } {
  const row = requireRepo(ctx.db, input.ref);
  const ref = formatRef(row);
  const file = ctx.config.authorizedKeysFile;
  const keys = readLines(file)
    .filter((l) => l.key && l.gatewayGuid === row.guid)
    .map((l) => ({
      fingerprint: fingerprintOf(l.key!.blob),
      type: l.key!.type,
      comment: l.key!.comment.replace(/^tine:\S+\s?/, ''),
      ref,
      guid: row.guid,
    }));
  return { keys, file };
}

export function keyRemove(ctx: OpContext, input: { ref: Ref; fingerprint: string }): { removed: RepoKey } {
  const row = requireRepo(ctx.db, input.ref);
  const ref = formatRef(row);
  const file = ctx.config.authorizedKeysFile;
  return locked(ctx, () => {
    const lines = readLines(file);
    const idx = lines.findIndex((l) => l.key && l.gatewayGuid === row.guid && fingerprintOf(l.key.blob) === input.fingerprint);
    if (idx < 0) throw notFound(`${ref} has no key ${input.fingerprint}`, [{ description: 'List its keys', run: `tine repo key list ${ref}` }]);
    const l = lines[idx]!;
    writeLines(file, lines.filter((_, i) => i !== idx));
    return { removed: { fingerprint: input.fingerprint, type: l.key!.type, comment: l.key!.comment.replace(/^tine:\S+\s?/, ''), ref, guid: row.guid } };
  });
}


/** Remove every key line of a repository (its delete): a deleted repo leaves no way in. */
export function removeKeysOf(ctx: OpContext, guid: string): number {
  const file = ctx.config.authorizedKeysFile;
  return locked(ctx, () => {
    const lines = readLines(file);
    const keep = lines.filter((l) => l.gatewayGuid !== guid);
    if (keep.length !== lines.length) writeLines(file, keep);
    return lines.length - keep.length;
  });
}
