// Pinned bind sources. The Docker endpoint checks a bind source by resolving it inside the
// repository, but dockerd/runc mount the source BY PATH later, at every start (restart
// policies included), and the sandbox user owns the repository tree: a checked directory
// swapped for a symlink to /etc would be followed at the next start. Re-checking cannot
// close that race; so the endpoint rewrites every bind source inside the repository to a
// pin: a detached clone of the very inode it resolved (native pinBeneath: O_NOFOLLOW walk,
// open_tree, move_mount) in a root-only directory, `<runDir>/docker-pins/<networkId>/`.
// dockerd only ever mounts pins, which the sandbox user cannot reach or change.
//
// Pins are mounts, gone with the daemon (stopDaemon) or a reboot, so each is recorded in a
// root-owned manifest in the repository's `.tine` (name → repo-relative path) and made again
// before dockerd starts. A path that now crosses a symlink is not pinned again: the
// container that uses it then fails to start (fail closed), and `repo up` reports it.
// A fork's snapshot carries the manifest; its own `up` pins the fork's files.
import { chmodSync, lstatSync, mkdirSync, readFileSync, readdirSync, renameSync, rmdirSync, unlinkSync, writeFileSync } from 'node:fs';
import { randomBytes } from 'node:crypto';
import { join, relative } from 'node:path';
import type { HostConfig } from '../host/config.js';
import { mountPoints, run } from '../host/system.js';
import { loadNative } from '../native/addon.js';
import { resolveInside } from './proxy-policy.js';

export const pinsRoot = (config: Pick<HostConfig, 'runDir'>) => join(config.runDir, 'docker-pins');
export const pinsDirOf = (config: Pick<HostConfig, 'runDir'>, networkId: number) => join(pinsRoot(config), String(networkId));
const manifestFile = (repoPath: string) => join(repoPath, '.tine', 'docker-pins.json');

/** A pin's file name: nothing a path could smuggle in. */
export const PIN_NAME = /^p-[0-9a-f]{16}$/;

export interface PinFailure { name: string; path: string; message: string }

/** name → path relative to the repository root. */
export function readPinManifest(repoPath: string): Record<string, string> {
  let text: string;
  try {
    // The manifest is root's: one the sandbox user swapped in (or a link) is not read.
    const st = lstatSync(manifestFile(repoPath));
    if (!st.isFile() || st.uid !== 0 || (st.mode & 0o022) !== 0) return {};
    text = readFileSync(manifestFile(repoPath), 'utf8');
  } catch {
    return {};
  }
  try {
    const pins = (JSON.parse(text) as { pins?: unknown }).pins;
    if (typeof pins !== 'object' || pins === null) return {};
    const out: Record<string, string> = {};
    for (const [name, rel] of Object.entries(pins)) if (PIN_NAME.test(name) && typeof rel === 'string') out[name] = rel;
    return out;
  } catch {
    return {};
  }
}

function writePinManifest(repoPath: string, pins: Record<string, string>): void {
  const file = manifestFile(repoPath);
  const tmp = `${file}.tine-tmp`;
  writeFileSync(tmp, JSON.stringify({ version: 1, pins }, null, 2) + '\n', { mode: 0o600 });
  renameSync(tmp, file);
}

/** `<runDir>/docker-pins/<id>/`, 0700 root, parent 0700 root; refuses anything else there. */
function ensurePinsDir(config: Pick<HostConfig, 'runDir'>, networkId: number): string {
  for (const dir of [pinsRoot(config), pinsDirOf(config, networkId)]) {
    try {
      mkdirSync(dir, { mode: 0o700 });
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'EEXIST') throw err;
    }
    const st = lstatSync(dir);
    if (!st.isDirectory() || st.uid !== 0) throw Object.assign(new Error(`${dir} is not a root-owned directory`), { code: 'EPERM', path: dir });
    chmodSync(dir, 0o700);
  }
  return pinsDirOf(config, networkId);
}

/**
 * Pin `source` (a bind source the endpoint allowed) and return the pin's path, or null when
 * it does not resolve inside the repository (the secrets dir: root's, nothing to pin).
 * A missing source is made (as dockerd does for -v), owned like the repository root.
 */
export function pinSource(config: Pick<HostConfig, 'runDir'>, repoPath: string, networkId: number, source: string): string | null {
  const r = resolveInside(source, [repoPath]);
  if (!r.inside) return null;
  // This second resolution may follow a symlink swapped in since the check: what it found
  // must pass the check's rules again (never the root, never .tine), and pinBeneath then
  // walks exactly this path with O_NOFOLLOW.
  const rel = relative(repoPath, r.path);
  refusePinPath(rel);
  const manifest = readPinManifest(repoPath);
  if (Object.keys(manifest).length >= MAX_PINS) {
    throw Object.assign(new Error(`this repository already has ${MAX_PINS} pinned bind sources; stop and start it (repo down, repo up) to drop the unused ones`), { code: 'EMFILE' });
  }
  const dir = ensurePinsDir(config, networkId);
  const name = `p-${randomBytes(8).toString('hex')}`;
  const owner = lstatSync(repoPath);
  loadNative().pinBeneath(repoPath, rel, join(dir, name), { uid: owner.uid, gid: owner.gid });
  writePinManifest(repoPath, { ...manifest, [name]: rel });
  return join(dir, name);
}

/** Pins per repository at most: each is a mount in the host's mount namespace. */
export const MAX_PINS = 512;
/** Bind sources per request at most. */
export const MAX_PINS_PER_REQUEST = 32;

/** A pinned path is never the repository root or anything of its root-owned `.tine`. */
function refusePinPath(rel: string): void {
  if (rel === '' || rel === '.' || rel.startsWith('/') || rel.split('/').some((c) => c === '..') || rel === '.tine' || rel.startsWith('.tine/')) {
    throw Object.assign(new Error(`bind source ${rel || '(the repository root)'} is the repository root, .tine or outside it`), { code: 'EPERM' });
  }
}

/** Unmount every pin of this repository and remove the empty targets (never recursively:
 *  a pin still mounted is the repository's files). */
export function unmountPins(dir: string, opts: { removeDir?: boolean } = {}): void {
  for (let pass = 0; pass < 4; pass++) {
    const below = [...mountPoints().keys()].filter((m) => m.startsWith(dir + '/'));
    if (!below.length) break;
    below.sort((a, b) => b.length - a.length);
    for (const m of below) {
      try { run('umount', [m]); } catch { try { run('umount', ['-l', m]); } catch { /* next pass, then left */ } }
    }
  }
  let entries: string[] = [];
  try { entries = readdirSync(dir); } catch { return; }
  const mounted = new Set(mountPoints().keys());
  for (const e of entries) {
    const p = join(dir, e);
    if (mounted.has(p)) continue;
    try {
      if (lstatSync(p).isDirectory()) rmdirSync(p);
      else unlinkSync(p);
    } catch { /* left: not empty, or busy */ }
  }
  if (opts.removeDir) { try { rmdirSync(dir); } catch { /* something was left */ } }
}

/** Make every pin of the manifest again (before dockerd starts). Returns the ones refused. */
export function remakePins(config: Pick<HostConfig, 'runDir'>, repoPath: string, networkId: number): PinFailure[] {
  unmountPins(pinsDirOf(config, networkId));
  const pins = readPinManifest(repoPath);
  const failures: PinFailure[] = [];
  if (!Object.keys(pins).length) return failures;
  const dir = ensurePinsDir(config, networkId);
  const native = loadNative();
  for (const [name, rel] of Object.entries(pins)) {
    try {
      refusePinPath(rel);
      native.pinBeneath(repoPath, rel, join(dir, name));
    } catch (err) {
      const e = err as NodeJS.ErrnoException;
      const why = e.code === 'ELOOP' ? 'it now crosses a symbolic link' : e.code === 'ENOENT' ? 'it no longer exists' : e.message;
      // An empty 0000 file holds the pin's place: dockerd would otherwise create a missing
      // -v source itself (an empty directory) and start the container; a file there makes
      // the bind of a directory fail, so the container does not start.
      try { writeFileSync(join(dir, name), '', { mode: 0, flag: 'wx' }); } catch { /* a leftover is there */ }
      failures.push({ name, path: join(repoPath, rel), message: `bind source ${join(repoPath, rel)} not pinned: ${why}; the containers that bind it fail to start until it is a real directory again` });
    }
  }
  return failures;
}

// ---- the endpoint's rewrite of an allowed request ----

const isObject = (v: unknown): v is Record<string, any> => typeof v === 'object' && v !== null && !Array.isArray(v);

/** Rewrite local-driver options `o=bind,device=<inside repo>` to a pin of the device. */
function pinVolumeOptions(opts: unknown, pin: (s: string) => string | null): void {
  if (!isObject(opts)) return;
  const flags = String(opts.o ?? '').split(',').map((s) => s.trim());
  if (!(flags.includes('bind') || flags.includes('rbind')) || typeof opts.device !== 'string') return;
  const p = pin(opts.device);
  if (p) opts.device = p;
}

/**
 * The body of an allowed POST /containers/create or /volumes/create with every bind source
 * inside the repository replaced by a pin. `body` has canonical keys (canonicalKeys), as the
 * policy read it. Returns true when something was rewritten.
 */
export function pinRequestBody(path: string, body: Record<string, any>, pin: (source: string) => string | null): boolean {
  let changed = false;
  let count = 0;
  const pinOnce = (s: string) => {
    if (++count > MAX_PINS_PER_REQUEST) throw Object.assign(new Error(`more than ${MAX_PINS_PER_REQUEST} bind sources in one request`), { code: 'E2BIG' });
    const p = pin(s);
    if (p) changed = true;
    return p;
  };
  if (path === '/volumes/create') {
    pinVolumeOptions(body.DriverOpts, pinOnce);
    return changed;
  }
  const h = body.HostConfig;
  if (!isObject(h)) return false;
  if (Array.isArray(h.Binds)) {
    h.Binds = h.Binds.map((b: unknown) => {
      if (typeof b !== 'string') return b;
      const i = b.indexOf(':');
      // One part ("/data") is an anonymous volume at that container path, not a bind.
      if (i < 0) return b;
      const source = b.slice(0, i);
      if (!source.startsWith('/')) return b;
      const p = pinOnce(source);
      return p ? p + (i < 0 ? '' : b.slice(i)) : b;
    });
  }
  if (Array.isArray(h.Mounts)) {
    for (const mt of h.Mounts) {
      if (!isObject(mt)) continue;
      const type = String(mt.Type || 'volume');
      if (type === 'bind' && typeof mt.Source === 'string' && mt.Source.startsWith('/')) {
        const p = pinOnce(mt.Source);
        if (p) mt.Source = p;
      } else if (type === 'volume' && isObject(mt.VolumeOptions) && isObject(mt.VolumeOptions.DriverConfig)) {
        pinVolumeOptions(mt.VolumeOptions.DriverConfig.Options, pinOnce);
      }
    }
  }
  return changed;
}
