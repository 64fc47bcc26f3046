// `repo push/pull --with-secrets`: secret values travel from one host's secret store to
// another's without ever being in clear outside those two tine-host processes.
//
//   client ──open {ref}──► sink      sink: ephemeral X25519 key pair for this one transfer,
//          ◄──offer──────            kept in this process's memory only; offer = its public key
//   client ──seal {ref, offer}──► source
//          ◄──sealed──────────   source: its own ephemeral pair, ECDH with the offer, HKDF,
//                                AES-256-GCM over {key, mode, value}… of the repo's OWN rows
//   client ──sealed──► sink      sink: ECDH with its private key, opens, stores through the
//          ◄──result (keys)──    secret store (same validation as `secret set`), drops the key
//
// The associated data binds the repository guid, both hosts' identities and both public
// keys: a blob made for another repository, another sink or another transfer does not open.
// The client relays ciphertext only; it could drop or replay it, never read or alter it.
import { createCipheriv, createDecipheriv, createHash, createPublicKey, diffieHellman, generateKeyPairSync, hkdfSync, randomBytes, type KeyObject } from 'node:crypto';
import { hostname } from 'node:os';
import type { Readable } from 'node:stream';
import { z } from 'zod/v3';
import type { Actor } from '../ops/context.js';
import { refField } from '../commands/spec.js';
import { formatRef } from '../repo/ref.js';
import { requireRepo } from '../repo/registry.js';
import { appendAudit, type AuditRecord } from '../audit/log.js';
import { TineError, EXIT, conflict, invalidInput } from '../errors.js';
import { openHost, type Host } from '../rpc/transfer.js';
import { readNextLine } from '../rpc/lines.js';
import { loadHostKeys, type SecretKeys } from './hostkey.js';
import { listRowsOf, openRow, deleteRow, type SecretMode } from './store.js';
import { importSecrets, type ImportResult } from './operations.js';
import { keyField, modeField } from './validate.js';

const guid = z.string().regex(/^[0-9a-f-]{36}$/, 'is not a guid');
const hostId = z.string().regex(/^[A-Za-z0-9._-]{1,64}#[0-9a-f]{12}$/, 'is not a tine host identity');
const b64url = (bytes: number) => z.string().regex(/^[A-Za-z0-9_-]+$/, 'is not base64url').length(Math.ceil((bytes * 4) / 3), `is not ${bytes} bytes`);
/** The sealed box: at most this many bytes of base64 (values are ≤ 256 KiB each). */
const SEALED_MAX = 48 * 1024 * 1024;

export const offerSchema = z.object({ v: z.literal(1), host: hostId, guid, publicKey: b64url(32) }).strict();
export type SecretsOffer = z.infer<typeof offerSchema>;

export const sealedSchema = z
  .object({
    v: z.literal(1),
    guid,
    sourceHost: hostId,
    sinkHost: hostId,
    publicKey: b64url(32),
    nonce: b64url(12),
    box: z.string().regex(/^[A-Za-z0-9_-]*$/, 'is not base64url').min(22, 'is too short').max(SEALED_MAX, 'is too large'),
  })
  .strict();
export type SealedSecrets = z.infer<typeof sealedSchema>;

const plaintextSchema = z
  .object({
    secrets: z
      .array(z.object({ key: keyField, mode: modeField, value: z.string().regex(/^[A-Za-z0-9+/]*={0,2}$/, 'is not base64') }).strict())
      .max(10_000, 'holds more than 10000 secrets'),
  })
  .strict();

function parse<T>(schema: z.ZodType<T, z.ZodTypeDef, any>, raw: unknown): T {
  const r = schema.safeParse(raw);
  if (r.success) return r.data;
  const issue = r.error.issues[0]!;
  const field = issue.path.map(String).join('.') || 'input';
  throw invalidInput(field, issue.message);
}

/** Who this host is, for the peer: its name and the public id of its secret key (differs between hosts). */
export function hostIdentity(keys: SecretKeys): string {
  const name = hostname().replace(/[^A-Za-z0-9._-]/g, '-').slice(0, 64) || 'host';
  return `${name}#${keys.keyId}`;
}

const rawPublic = (k: KeyObject): string => (k.export({ format: 'jwk' }) as { x: string }).x;
const importPublic = (x: string): KeyObject => createPublicKey({ key: { kty: 'OKP', crv: 'X25519', x }, format: 'jwk' });

function associatedData(s: { guid: string; sourceHost: string; sinkHost: string; sinkPublicKey: string; sourcePublicKey: string }): Buffer {
  return Buffer.from(['tine-secret-transfer-v1', s.guid, s.sourceHost, s.sinkHost, s.sinkPublicKey, s.sourcePublicKey].join('\0'), 'utf8');
}

/** ECDH, then HKDF-SHA256 salted with the hash of the associated data: one key per transfer and per binding. */
function transferKey(privateKey: KeyObject, peerPublic: string, aad: Buffer): Buffer {
  const shared = diffieHellman({ privateKey, publicKey: importPublic(peerPublic) });
  try {
    return Buffer.from(hkdfSync('sha256', shared, createHash('sha256').update(aad).digest(), 'tine secret transfer key v1', 32));
  } finally {
    shared.fill(0);
  }
}

async function audit(h: Host, record: Omit<AuditRecord, 'pid' | 'via' | 'decision'>): Promise<void> {
  try {
    await appendAudit({ stateDir: h.config.stateDir, rotateBytes: h.config.auditRotateBytes }, { ...record, pid: process.pid, via: 'tine-host', decision: 'allowed' });
  } catch (err) {
    throw new TineError('AUDIT_FAILED', EXIT.failure, `secrets leave or enter a host only when it can be audited, and the audit log could not be written: ${err instanceof Error ? err.message : String(err)}`, {
      next: [{ description: 'Check the audit log', run: 'tine audit verify' }],
    });
  }
}

/** Source: seal the repository's own secrets to the sink's one-transfer public key. */
export async function sealSecrets(raw: unknown, actor: Actor): Promise<{ sealed: SealedSecrets; count: number }> {
  const input = parse(z.object({ ref: refField, offer: offerSchema }).strict(), raw);
  const h = await openHost();
  try {
    const row = requireRepo(h.db, input.ref);
    const ref = formatRef(row);
    if (row.guid !== input.offer.guid) {
      throw conflict('GUID_MISMATCH', `${ref} on the other host is another repository (guid ${input.offer.guid}, here ${row.guid}); its secrets are not copied there`, [
        { description: 'Compare the two', run: `tine repo info ${ref}` },
      ]);
    }
    const keys = loadHostKeys(h.config);
    const sourceHost = hostIdentity(keys);
    if (input.offer.host === sourceHost) throw invalidInput('offer.host', 'is this host: secrets are copied between two hosts');
    // Only the repository's own rows: a fork's parent's secrets are never among them (invariant 2).
    const rows = listRowsOf(h.db, row.guid);
    await audit(h, { actor: actor.kind, reason: actor.reason, command: 'transfer secrets seal', ref, code: 'SECRETS_SEALED', keys: rows.map((r) => r.key), peer: input.offer.host });
    const values = rows.map((r) => openRow(keys, r));
    const plaintext = Buffer.from(JSON.stringify({ secrets: rows.map((r, i) => ({ key: r.key, mode: r.mode, value: values[i]!.toString('base64') })) }), 'utf8');
    for (const v of values) v.fill(0);
    const mine = generateKeyPairSync('x25519');
    const sourcePublicKey = rawPublic(mine.publicKey);
    const aad = associatedData({ guid: row.guid, sourceHost, sinkHost: input.offer.host, sinkPublicKey: input.offer.publicKey, sourcePublicKey });
    const key = transferKey(mine.privateKey, input.offer.publicKey, aad);
    try {
      const nonce = randomBytes(12);
      const c = createCipheriv('aes-256-gcm', key, nonce);
      c.setAAD(aad);
      const box = Buffer.concat([c.update(plaintext), c.final(), c.getAuthTag()]);
      return {
        sealed: { v: 1, guid: row.guid, sourceHost, sinkHost: input.offer.host, publicKey: sourcePublicKey, nonce: nonce.toString('base64url'), box: box.toString('base64url') },
        count: rows.length,
      };
    } finally {
      key.fill(0);
      plaintext.fill(0);
    }
  } finally {
    h.db.close();
  }
}

export interface OpenedSecrets extends ImportResult {
  ref: string;
  guid: string;
  from: string;
}

/**
 * Sink: make the one-transfer key pair, hand out the public half (onOffer), read the sealed
 * secrets as the next line of the request stream, open them and store them. The private key
 * lives only in this call; nothing is stored unless every secret opens and validates.
 */
export async function openSecrets(raw: unknown, actor: Actor, rest: Buffer, stream: Readable, onOffer: (offer: SecretsOffer) => void, timeoutMs = 300_000): Promise<OpenedSecrets> {
  const input = parse(z.object({ ref: refField, machine: z.string().max(100).regex(/^[A-Za-z0-9._-]*$/).optional() }).strict(), raw);
  const h = await openHost();
  try {
    const row = requireRepo(h.db, input.ref);
    const ref = formatRef(row);
    const keys = loadHostKeys(h.config);
    const sinkHost = hostIdentity(keys);
    let pair: { privateKey: KeyObject; publicKey: KeyObject } | undefined = generateKeyPairSync('x25519');
    const sinkPublicKey = rawPublic(pair.publicKey);
    onOffer({ v: 1, host: sinkHost, guid: row.guid, publicKey: sinkPublicKey });
    let line: string | null;
    try {
      line = await readNextLine(rest, stream, SEALED_MAX + 4096, timeoutMs);
    } catch (err) {
      throw new TineError('SECRETS_NOT_RECEIVED', EXIT.failure, `the sealed secrets did not arrive (${(err as Error).message}); nothing was stored`);
    }
    if (line === null || !line.trim()) throw new TineError('SECRETS_NOT_RECEIVED', EXIT.failure, 'the client ended before relaying the sealed secrets; nothing was stored');
    let msg: unknown;
    try {
      msg = JSON.parse(line);
    } catch {
      throw invalidInput('sealed', 'is not JSON');
    }
    const sealed = parse(z.object({ sealed: sealedSchema }).strict(), msg).sealed;
    const notAuthentic = (why: string) =>
      new TineError('SECRETS_NOT_AUTHENTIC', EXIT.failure, `the sealed secrets for ${ref} were refused: ${why}; nothing was stored`, {
        next: [{ description: 'Copy them again (a new key pair is made for every transfer)', run: `tine repo push ${ref} --to ${input.machine || '<machine>'} --secrets-only` }],
      });
    if (sealed.guid !== row.guid) throw notAuthentic(`they were sealed for repository ${sealed.guid}, not ${row.guid}`);
    if (sealed.sinkHost !== sinkHost) throw notAuthentic(`they were sealed for host ${sealed.sinkHost}, not this one (${sinkHost})`);
    const aad = associatedData({ guid: row.guid, sourceHost: sealed.sourceHost, sinkHost, sinkPublicKey, sourcePublicKey: sealed.publicKey });
    let plaintext: Buffer;
    try {
      const key = transferKey(pair.privateKey, sealed.publicKey, aad);
      try {
        const box = Buffer.from(sealed.box, 'base64url');
        if (box.length < 16) throw new Error('short');
        const d = createDecipheriv('aes-256-gcm', key, Buffer.from(sealed.nonce, 'base64url'));
        d.setAAD(aad);
        d.setAuthTag(box.subarray(box.length - 16));
        plaintext = Buffer.concat([d.update(box.subarray(0, box.length - 16)), d.final()]);
      } finally {
        key.fill(0);
      }
    } catch {
      throw notAuthentic('they do not authenticate (altered in transit, or sealed to another transfer\'s key)');
    } finally {
      pair = undefined; // this transfer's private key: dropped, whatever happens next
    }
    let content: z.infer<typeof plaintextSchema>;
    try {
      content = parse(plaintextSchema, JSON.parse(plaintext.toString('utf8')));
    } catch (err) {
      throw err instanceof TineError ? err : invalidInput('secrets', 'is not a list of secrets');
    } finally {
      plaintext.fill(0);
    }
    const entries = content.secrets.map((s) => ({ key: s.key, mode: s.mode as SecretMode, value: Buffer.from(s.value, 'base64') }));
    const result = importSecrets(h.db, keys, row, entries, actor.kind, input.machine || undefined);
    try {
      await audit(h, { actor: actor.kind, reason: actor.reason, command: 'transfer secrets open', ref, code: 'SECRETS_RECEIVED', keys: [...result.copied.map((c) => c.key), ...result.unchanged], peer: sealed.sourceHost });
    } catch (err) {
      // Fail closed: what cannot be recorded is not kept.
      h.db.transaction(() => { for (const c of result.copied) deleteRow(h.db, row.guid, c.key); }).immediate();
      throw err;
    }
    return { ref, guid: row.guid, from: sealed.sourceHost, ...result };
  } finally {
    h.db.close();
  }
}
