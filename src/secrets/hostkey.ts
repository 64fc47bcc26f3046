// The host secret key and everything derived from it. One 32-byte random file,
// `<stateDir>/secret.key` (root, 0600, outside the datastore), made by `tine setup`.
// A copy of the state database without this file decrypts nothing and cannot be used to
// test guesses against the stored digests: both need keys derived from it.
import { createCipheriv, createDecipheriv, createHmac, hkdfSync, randomBytes, timingSafeEqual } from 'node:crypto';
import { closeSync, fstatSync, fsyncSync, linkSync, openSync, readSync, unlinkSync, writeSync, constants as fsc } from 'node:fs';
import { join } from 'node:path';
import type { HostConfig } from '../host/config.js';
import { TineError, EXIT } from '../errors.js';

export const HOST_KEY_BYTES = 32;
export const hostKeyPath = (c: Pick<HostConfig, 'stateDir'>) => join(c.stateDir, 'secret.key');

export interface SecretKeys {
  /** Short public fingerprint stored with each row, so a wrong key is named as such. */
  keyId: string;
  encryption: Buffer;
  digest: Buffer;
}

function derive(master: Buffer, info: string): Buffer {
  return Buffer.from(hkdfSync('sha256', master, Buffer.alloc(0), info, 32));
}

export function deriveKeys(master: Buffer): SecretKeys {
  return {
    keyId: derive(master, 'tine secret key id v1').subarray(0, 6).toString('hex'),
    encryption: derive(master, 'tine secret encryption v1'),
    digest: derive(master, 'tine secret digest v1'),
  };
}

/**
 * Create the host key if it is missing. Returns true when it made one. Uses link() of a
 * fully written temp file so two concurrent setups can never replace a key that rows were
 * already encrypted under (rename would).
 */
export function ensureHostKey(config: Pick<HostConfig, 'stateDir'>): boolean {
  const file = hostKeyPath(config);
  try {
    loadHostKeyFile(file);
    return false;
  } catch (err) {
    if (!(err instanceof TineError) || err.code !== 'SECRET_KEY_MISSING') throw err;
  }
  const tmp = `${file}.tmp-${process.pid}-${randomBytes(4).toString('hex')}`;
  const fd = openSync(tmp, fsc.O_WRONLY | fsc.O_CREAT | fsc.O_EXCL | fsc.O_NOFOLLOW, 0o600);
  try {
    writeSync(fd, randomBytes(HOST_KEY_BYTES));
    fsyncSync(fd);
  } finally {
    closeSync(fd);
  }
  try {
    linkSync(tmp, file);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'EEXIST') throw err;
    return false; // another setup won the race; its key stands
  } finally {
    unlinkSync(tmp);
  }
  return true;
}

function loadHostKeyFile(file: string): Buffer {
  let fd: number;
  try {
    fd = openSync(file, fsc.O_RDONLY | fsc.O_NOFOLLOW);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') {
      throw new TineError('SECRET_KEY_MISSING', EXIT.unsupported, `the host secret key ${file} does not exist`, {
        next: [{ description: 'Prepare the host (creates the key when no secret needs the old one)', run: 'tine setup' }],
      });
    }
    throw err;
  }
  try {
    const st = fstatSync(fd);
    // Fail closed: a key anyone else could read or replace protects nothing.
    if (!st.isFile() || st.uid !== 0 || (st.mode & 0o077) !== 0 || st.size !== HOST_KEY_BYTES) {
      throw new TineError('SECRET_KEY_UNSAFE', EXIT.failure,
        `the host secret key ${file} must be a ${HOST_KEY_BYTES}-byte regular file owned by root with mode 0600 (found uid ${st.uid}, mode ${(st.mode & 0o777).toString(8)}, ${st.size} bytes)`, {
          next: [{ description: 'Restore the key from your backup with owner root and mode 0600', run: `chown root:root ${file} && chmod 0600 ${file}` }],
        });
    }
    const buf = Buffer.alloc(HOST_KEY_BYTES);
    if (readSync(fd, buf, 0, HOST_KEY_BYTES, 0) !== HOST_KEY_BYTES) throw new TineError('SECRET_KEY_UNSAFE', EXIT.failure, `short read of ${file}`);
    return buf;
  } finally {
    closeSync(fd);
  }
}

export function loadHostKeys(config: Pick<HostConfig, 'stateDir'>): SecretKeys {
  const master = loadHostKeyFile(hostKeyPath(config));
  try {
    return deriveKeys(master);
  } finally {
    master.fill(0);
  }
}

/** AAD binds a ciphertext to its repository, key name and mode: rows cannot be swapped. */
export function aadFor(repoGuid: string, key: string, mode: string): Buffer {
  return Buffer.from(`tine-secret-v1\0${repoGuid}\0${key}\0${mode}`, 'utf8');
}

export interface Sealed {
  nonce: Buffer;
  /** ciphertext || 16-byte GCM tag */
  box: Buffer;
}

export function seal(keys: SecretKeys, plaintext: Buffer, aad: Buffer): Sealed {
  const nonce = randomBytes(12);
  const c = createCipheriv('aes-256-gcm', keys.encryption, nonce);
  c.setAAD(aad);
  const box = Buffer.concat([c.update(plaintext), c.final(), c.getAuthTag()]);
  return { nonce, box };
}

export function open(keys: SecretKeys, sealed: Sealed, aad: Buffer): Buffer {
  if (sealed.box.length < 16) throw new Error('ciphertext too short');
  const d = createDecipheriv('aes-256-gcm', keys.encryption, sealed.nonce);
  d.setAAD(aad);
  d.setAuthTag(sealed.box.subarray(sealed.box.length - 16));
  return Buffer.concat([d.update(sealed.box.subarray(0, sealed.box.length - 16)), d.final()]);
}

/**
 * The digest `get` shows: HMAC-SHA256 under a key derived from the host key, first 64 bits,
 * as `hmac-sha256:<16 hex>`. Why keyed: a plain hash of a short secret (a PIN, a short
 * password) can be brute-forced offline from the DB or from the command output; the HMAC
 * cannot be computed without the host key, so a digest alone tells nothing about a value.
 * The same value gives the same digest everywhere on this host, so a human can compare two
 * stored values (parent vs fork, before vs after a rotation) without seeing them. 64 bits
 * make an accidental match of different values negligible, and reveal nothing more.
 */
export function digestOf(keys: SecretKeys, value: Buffer): string {
  return `hmac-sha256:${fullMac(keys, value).subarray(0, 8).toString('hex')}`;
}

function fullMac(keys: SecretKeys, value: Buffer): Buffer {
  return createHmac('sha256', keys.digest).update('tine-secret-digest\0').update(value).digest();
}

/** Constant-time equality of two values of any lengths (compares their full MACs). */
export function sameValue(keys: SecretKeys, a: Buffer, b: Buffer): boolean {
  return timingSafeEqual(fullMac(keys, a), fullMac(keys, b));
}
