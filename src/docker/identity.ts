// A repository's containers carry its identity in their on-disk config: bind-mount sources
// and the log path under the repository path, its addresses in env and command lines, its
// exec-root in the sandbox key. A snapshot copies the parent's identity into the fork, so
// before the fork's daemon first reads its data-root, every container config is rewritten
// from the identity recorded at the last `up` (`.tine/identity.json`) to the repository's
// own. This keeps each container's writable layer, name and id (a fork is the same app),
// and makes sure a fork's container never writes into its parent's files.
import { existsSync, readFileSync, readdirSync, writeFileSync, renameSync, mkdirSync, rmSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { repoAddresses } from '../repo/network.js';
import type { DaemonPaths } from './daemon.js';

export interface RepoIdentity {
  guid: string;
  path: string;
  networkId: number;
  addresses: string[];
  execRoot: string;
  socket: string;
  /** Where its file-mode secrets are delivered: a fork's containers must never mount the parent's. */
  secretsDir?: string;
}

export function identityOf(guid: string, path: string, p: DaemonPaths, secretsDir: string, config: { addressBlock: string }): RepoIdentity {
  return { guid, path, networkId: p.networkId, addresses: repoAddresses(p.networkId, config), execRoot: p.execRoot, socket: p.socket, secretsDir };
}

const identityFile = (repoPath: string) => join(repoPath, '.tine', 'identity.json');

export function readIdentity(repoPath: string): RepoIdentity | null {
  try {
    return JSON.parse(readFileSync(identityFile(repoPath), 'utf8')) as RepoIdentity;
  } catch {
    return null;
  }
}

function writeAtomic(file: string, text: string): void {
  const tmp = `${file}.tine-tmp`;
  writeFileSync(tmp, text, { mode: 0o600 });
  renameSync(tmp, file);
}

export function writeIdentity(repoPath: string, id: RepoIdentity): void {
  mkdirSync(join(repoPath, '.tine'), { recursive: true, mode: 0o755 });
  writeAtomic(identityFile(repoPath), JSON.stringify(id, null, 2) + '\n');
}

const escapeRe = (s: string) => s.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');

/** The substitutions from one identity to another; longest (most specific) first. */
export function identityReplacements(from: RepoIdentity, to: RepoIdentity): [RegExp, string][] {
  const pairs: [RegExp, string][] = [];
  // Paths: only whole path components (followed by /, quote or end).
  // An identity recorded before secrets had a directory still had one: <runDir>/secrets/<id>.
  const secretsOf = (i: RepoIdentity) => i.secretsDir ?? join(dirname(i.execRoot), 'secrets', String(i.networkId));
  // Pins (pins.ts): a fork's containers bind the fork's pins, made from its own files.
  const pinsOf = (i: RepoIdentity) => join(dirname(i.execRoot), 'docker-pins', String(i.networkId));
  for (const [a, b] of [[from.path, to.path], [from.execRoot, to.execRoot], [from.socket, to.socket], [secretsOf(from), secretsOf(to)], [pinsOf(from), pinsOf(to)]] as const) {
    if (a && b && a !== b) pairs.push([new RegExp(escapeRe(a) + '(?=[/"\\\\:]|$)', 'g'), b]);
  }
  // Addresses: whole dotted quads only (127.64.31.6 must not match inside 127.64.31.65).
  from.addresses.forEach((a, i) => {
    const b = to.addresses[i];
    if (b && a !== b) pairs.push([new RegExp('(?<![\\d.])' + escapeRe(a) + '(?![\\d])', 'g'), b]);
  });
  if (from.guid !== to.guid) pairs.push([new RegExp(escapeRe(from.guid), 'g'), to.guid]);
  return pairs;
}

export function rewriteText(text: string, pairs: [RegExp, string][]): string {
  let out = text;
  for (const [re, to] of pairs) out = out.replace(re, to);
  return out;
}

export interface RewriteResult {
  /** Containers whose config was rewritten. */
  rewritten: number;
  /** Containers that were running when the data-root was last written (e.g. at the snapshot). */
  wereRunning: string[];
  /** The network store was dropped (only host/none networking: nothing in it to keep). */
  networkStoreReset?: boolean;
  /** Restart policies set aside until the container passed the endpoint's rules (a new
   *  identity: containers inherited from elsewhere, which dockerd would start by itself). */
  suspendedRestarts: { id: string; policy: { Name: string; MaximumRetryCount?: number } }[];
  /** The containers come from another identity (a fork's first up). */
  inherited?: boolean;
}

/**
 * Rewrite every container's config.v2.json and hostconfig.json from `from` to `to`, and
 * report which were running. Call only while no daemon uses this data-root.
 */
export function rewriteContainers(dataRoot: string, from: RepoIdentity | null, to: RepoIdentity): RewriteResult {
  const dir = join(dataRoot, 'containers');
  const result: RewriteResult = { rewritten: 0, wereRunning: [], suspendedRestarts: [] };
  if (!existsSync(dir)) return result;
  const pairs = from ? identityReplacements(from, to) : [];
  // dockerd starts containers with a restart policy by itself, before tine can check them
  // against the Docker endpoint's rules: for containers that come from another identity (a
  // fork's, made in its parent, possibly as root) the policy waits until they passed.
  const inherited = !from || from.guid !== to.guid;
  if (inherited) result.inherited = true;
  let onlyHostNetworking = true;
  for (const id of readdirSync(dir)) {
    const configFile = join(dir, id, 'config.v2.json');
    if (!existsSync(configFile)) continue;
    const text = readFileSync(configFile, 'utf8');
    let config: { State?: { Running?: boolean; Paused?: boolean; Restarting?: boolean; Pid?: number } };
    try {
      config = JSON.parse(text);
    } catch {
      continue; // not a container config we understand; leave it to dockerd
    }
    const state = config.State;
    // No daemon uses this data-root now, so "running" is stale (a snapshot of a live
    // daemon, or a crash). Recording it as stopped spares dockerd its slow cleanup of a
    // container it cannot find; the caller starts these again itself.
    let stateText = text;
    if (state && (state.Running || state.Paused || state.Restarting)) {
      result.wereRunning.push(id);
      Object.assign(state, { Running: false, Paused: false, Restarting: false, Pid: 0 });
      stateText = JSON.stringify(config);
    }
    let changed = stateText !== text;
    for (const file of [configFile, join(dir, id, 'hostconfig.json')]) {
      if (!existsSync(file)) continue;
      let before = file === configFile ? stateText : readFileSync(file, 'utf8');
      if (file !== configFile && inherited) {
        try {
          const hc = JSON.parse(before) as { RestartPolicy?: { Name?: string; MaximumRetryCount?: number } };
          const name = hc.RestartPolicy?.Name ?? '';
          if (name !== '' && name !== 'no') {
            result.suspendedRestarts.push({ id, policy: { Name: name, MaximumRetryCount: hc.RestartPolicy?.MaximumRetryCount ?? 0 } });
            hc.RestartPolicy = { Name: 'no', MaximumRetryCount: 0 };
            const suspended = JSON.stringify(hc);
            writeAtomic(file, suspended);
            before = suspended;
            changed = true;
          }
        } catch {
          /* not JSON: dockerd will not load it either */
        }
      }
      if (file !== configFile) {
        try {
          const mode = (JSON.parse(before) as { NetworkMode?: string }).NetworkMode;
          if (mode !== 'host' && mode !== 'none') onlyHostNetworking = false;
        } catch {
          onlyHostNetworking = false;
        }
      }
      const after = rewriteText(before, pairs);
      if (file === configFile && after === text) continue;
      if (after !== before || (file === configFile && changed)) {
        writeAtomic(file, after);
        changed = true;
      }
    }
    if (changed) result.rewritten++;
  }
  // Local volumes bound to a directory (o=bind, device=…: the repository's path or a pin)
  // keep their options in volumes/<name>/opts.json: the fork's bind the fork's files.
  const volumes = join(dataRoot, 'volumes');
  if (pairs.length && existsSync(volumes)) {
    for (const name of readdirSync(volumes)) {
      const file = join(volumes, name, 'opts.json');
      if (!existsSync(file)) continue;
      const before = readFileSync(file, 'utf8');
      const after = rewriteText(before, pairs);
      if (after !== before) writeAtomic(file, after);
    }
  }
  // The network store still holds the source's sandboxes and endpoints; dockerd then spends
  // most of its start cleaning them up one by one. With only host/none networking there is
  // nothing in it worth keeping (dockerd recreates the predefined networks), so a new
  // identity starts with a fresh store. User-defined networks keep theirs (issue 6: netns).
  if (pairs.length && onlyHostNetworking) {
    rmSync(join(dataRoot, 'network', 'files', 'local-kv.db'), { force: true });
    result.networkStoreReset = true;
  }
  return result;
}
