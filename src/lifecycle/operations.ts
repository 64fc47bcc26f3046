// Repository lifecycle: `repo up` / `repo down`, the quiesce hook before a fork's snapshot,
// `repo fork --up`, stop-before-delete, restore after a reboot, and the crash repair that
// leaves no orphan daemon. One function per operation; CLI, RPC and MCP call the same.
import { readFileSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { ownerAlive, ownStartTime } from '../repo/intents.js';
import { join } from 'node:path';
import type { OpContext } from '../ops/context.js';
import { UndoStack } from '../ops/timeline.js';
import { type Ref, formatRef } from '../repo/ref.js';
import { type RepoRecord, type RepoRow, toRecord, requireRepo, findByGuid } from '../repo/registry.js';
import { forkRepo } from '../repo/operations.js';
import { failpoint } from '../repo/intents.js';
import { deliverSecrets, withdrawSecrets, secretsDirOf } from '../secrets/delivery.js';
import { daemonPaths, daemonPid, proxyPid, startProxy, startDaemon, stopDaemon, ensureRootOwnedDataRoot, listContainers, startContainer, updateRestartPolicy, type DaemonPaths } from '../docker/daemon.js';
import { decideContainerStart } from '../docker/proxy-policy.js';
import { policyContext, rawLookups } from '../docker/proxy.js';
import { unmountPins } from '../docker/pins.js';
import { identityOf, readIdentity, rewriteContainers, writeIdentity } from '../docker/identity.js';
import { findTinefiles, runHook, hookFailed, hookError, type HookOutcome } from './tinefile.js';
import { TineError, EXIT, conflict, toTineError } from '../errors.js';

// ---- per-repository lifecycle lock: one lifecycle operation at a time, and the marker
// ---- that tells the repair whether a daemon without state 'up' is still being brought up.

interface LockOwner { pid: number; start: number }

const lockFile = (ctx: OpContext, networkId: number) => join(ctx.config.runDir, `lifecycle-${networkId}.lock`);

function readLock(file: string): LockOwner | null {
  try {
    const [pid, start] = readFileSync(file, 'utf8').trim().split(' ').map(Number);
    return pid && start !== undefined ? { pid, start } : null;
  } catch {
    return null;
  }
}

const lockOwnerAlive = (o: LockOwner | null) => o !== null && ownerAlive(o.pid, o.start);

function acquireLock(ctx: OpContext, row: RepoRow): () => void {
  const file = lockFile(ctx, row.network_id);
  const mine = `${process.pid} ${ownStartTime()}\n`;
  for (let attempt = 0; attempt < 3; attempt++) {
    try {
      writeFileSync(file, mine, { flag: 'wx', mode: 0o600 });
      return () => {
        if (readFileSync(file, 'utf8') === mine) rmSync(file, { force: true });
      };
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'EEXIST') throw err;
      const owner = readLock(file);
      if (lockOwnerAlive(owner)) {
        const ref = formatRef(row);
        throw conflict('BUSY', `repository ${ref} is being started or stopped by process ${owner!.pid}`, [
          { description: 'Wait for it, then look at its state', run: `tine repo info ${ref}` },
        ]);
      }
      rmSync(file, { force: true }); // its owner died: the repair below took care of its daemon
    }
  }
  throw conflict('BUSY', `repository ${formatRef(row)}: could not take its lifecycle lock`);
}

function setState(ctx: OpContext, guid: string, state: 'up' | 'down'): RepoRow {
  ctx.db.prepare('UPDATE repos SET state = ? WHERE guid = ?').run(state, guid);
  return findByGuid(ctx.db, guid)!;
}

const pathsOf = (ctx: OpContext, row: RepoRow) => daemonPaths(ctx.config, row.path, row.network_id);

function secretsEnv(delivered: { env: Record<string, string>; fileDir: string | null }): Record<string, string> {
  return { ...delivered.env, ...(delivered.fileDir ? { TINE_SECRETS_DIR: delivered.fileDir } : {}) };
}

// ---- up ----

export interface UpResult extends RepoRecord {
  /** false when it was already up with a live daemon (nothing done). */
  changed: boolean;
  containersStarted: number;
  /** Containers that were running but that the Docker endpoint's rules refuse to start. */
  containersRefused?: { id: string; message: string }[];
  /** Pinned bind sources that could not be made again (pins.ts): their containers fail to start. */
  pinsRefused?: { path: string; message: string }[];
  tinefiles: string[];
}

async function bringUp(ctx: OpContext, row: RepoRow): Promise<UpResult> {
  const release = acquireLock(ctx, row);
  try {
    const p = pathsOf(ctx, row);
    const ref = formatRef(row);
    const tinefiles = findTinefiles(row.path);
    if (row.state === 'up' && daemonPid(p) !== null) {
      if (proxyPid(p) === null) await ctx.timeline.step('docker_proxy', 'Docker endpoint restarted', () => startProxy(p));
      return { ...toRecord(row, ctx.config), changed: false, containersStarted: 0, tinefiles };
    }
    const retry = [
      { description: 'Fix the Tinefile, then start it again', run: `tine repo up ${ref}` },
      { description: 'Look at the repository', run: `tine repo info ${ref}` },
    ];
    const undo = new UndoStack();
    let containersStarted = 0;
    const containersRefused: { id: string; message: string }[] = [];
    let pinsRefused: { path: string; message: string }[] = [];
    try {
      const wereRunning = await ctx.timeline.step('docker_daemon', 'Docker daemon started', async () => {
        // A daemon left running while the repository is down is stopped first, so its
        // data-root is quiet while the identity is rewritten.
        if (daemonPid(p) !== null) await stopDaemon(p);
        ensureRootOwnedDataRoot(p);
        const own = identityOf(row.guid, row.path, p, secretsDirOf(ctx.config, row.network_id), ctx.config);
        const rewrite = rewriteContainers(p.dataRoot, readIdentity(row.path), own);
        writeIdentity(row.path, own);
        undo.push('stop daemon', async () => { await stopDaemon(p); });
        const started = await startDaemon(ctx.config, p);
        pinsRefused = started.pinsRefused.map(({ path, message }) => ({ path, message }));
        return rewrite;
      });
      failpoint('lifecycle:daemon_started');
      // Secrets before containers: a container that bind-mounts its secret files finds them.
      const record = toRecord(row, ctx.config);
      const delivered = await deliverSecrets(ctx, record);
      undo.push('withdraw secrets', () => withdrawSecrets(ctx, record));
      await ctx.timeline.step('containers', 'Containers started', async () => {
        // Inherited containers (made in the parent, possibly as root): their binds must be
        // pins before dockerd mounts them here, where the agent owns the files.
        const policy = { ...policyContext(ctx.config, row.path, p), pinnedOnly: Boolean(wereRunning.inherited) };
        // Restart policies set aside by the rewrite come back only for containers that pass.
        for (const { id, policy: restart } of wereRunning.suspendedRestarts) {
          const d = await decideContainerStart(id, policy, rawLookups(p.rawSocket));
          if (!d.allow) {
            containersRefused.push({ id, message: d.message });
            continue;
          }
          await updateRestartPolicy(p.rawSocket, id, restart);
        }
        if (!wereRunning.wereRunning.length) return;
        const now = new Map((await listContainers(p.rawSocket)).map((c) => [c.Id, c.State]));
        // Inherited containers get the filtering endpoint's rules too (a fork's were made in
        // its parent, possibly as root): one it would refuse stays stopped, and is reported.
        const refused = new Set(containersRefused.map((c) => c.id));
        for (const id of wereRunning.wereRunning) {
          if (refused.has(id)) continue;
          if (now.get(id) === 'running' || !now.has(id)) continue;
          const d = await decideContainerStart(id, policy, rawLookups(p.rawSocket));
          if (!d.allow) {
            containersRefused.push({ id, message: d.message });
            continue;
          }
          await startContainer(p.rawSocket, id);
          containersStarted++;
        }
      });
      await ctx.timeline.step('tinefile_up', `Tinefile up (${tinefiles.length})`, async () => {
        const done: string[] = [];
        for (const tf of tinefiles) {
          const o = await runHook(ctx.config, record, tf, 'up', secretsEnv(delivered));
          if (hookFailed(o)) {
            // Best effort: take down what already came up, then report the failing hook.
            for (const prev of done.reverse()) await runHook(ctx.config, record, prev, 'down', secretsEnv(delivered)).catch(() => undefined);
            throw hookError(record, o, retry);
          }
          done.push(tf);
        }
      });
      const upRow = setState(ctx, row.guid, 'up');
      undo.clear();
      return { ...toRecord(upRow, ctx.config), changed: true, containersStarted, ...(containersRefused.length ? { containersRefused } : {}), ...(pinsRefused.length ? { pinsRefused } : {}), tinefiles };
    } catch (err) {
      await undo.unwind();
      setState(ctx, row.guid, 'down');
      const e = toTineError(err);
      if (!e.next.length) e.next.push(...retry);
      throw e;
    }
  } finally {
    release();
  }
}

export function upRepo(ctx: OpContext, input: { ref: Ref }): Promise<UpResult> {
  return bringUp(ctx, requireRepo(ctx.db, input.ref));
}

// ---- down ----

export interface DownResult extends RepoRecord {
  changed: boolean;
  daemonStopped: boolean;
}

async function bringDown(ctx: OpContext, row: RepoRow, opts: { ignoreHookFailures?: boolean } = {}): Promise<DownResult> {
  const release = acquireLock(ctx, row);
  try {
    const p = pathsOf(ctx, row);
    const record = toRecord(row, ctx.config);
    const running = daemonPid(p) !== null;
    if (row.state === 'down' && !running) return { ...record, changed: false, daemonStopped: false };
    const failures: HookOutcome[] = [];
    await ctx.timeline.step('tinefile_down', 'Tinefile down', async () => {
      if (!running) return; // nothing of it runs: its hooks would only fail on a dead socket
      for (const tf of findTinefiles(row.path).reverse()) {
        try {
          const o = await runHook(ctx.config, record, tf, 'down', {});
          if (hookFailed(o)) failures.push(o);
        } catch (err) {
          failures.push({ tinefile: tf, fn: 'down', ran: false, exitCode: null, signal: null, timedOut: false, output: String(err) });
        }
      }
    });
    // Whatever the hooks did, the daemon stops.
    const stopped = await ctx.timeline.step('docker_daemon', 'Docker daemon stopped', () => stopDaemon(p));
    await withdrawSecrets(ctx, record);
    const downRow = setState(ctx, row.guid, 'down');
    if (failures.length && !opts.ignoreHookFailures) {
      const ref = formatRef(row);
      const e = hookError(record, failures[0]!, [
        { description: 'The repository is down; fix the Tinefile\'s down before the next stop', run: `tine repo info ${ref}` },
      ]);
      throw new TineError(e.code, e.exitCode, `${e.message}\n(the Docker daemon was stopped anyway; ${ref} is down)`, { details: e.details, next: e.next });
    }
    return { ...toRecord(downRow, ctx.config), changed: true, daemonStopped: stopped.stopped };
  } finally {
    release();
  }
}

export function downRepo(ctx: OpContext, input: { ref: Ref }): Promise<DownResult> {
  return bringDown(ctx, requireRepo(ctx.db, input.ref));
}

/** `repo delete` stops a running repository first (its hooks' failures do not block it). */
export async function stopBeforeDelete(ctx: OpContext, row: RepoRow): Promise<void> {
  if (row.state === 'up' || daemonPid(pathsOf(ctx, row)) !== null) await bringDown(ctx, row, { ignoreHookFailures: true });
  unmountPins(pathsOf(ctx, row).pinsDir, { removeDir: true });
}

// ---- fork ----

/**
 * Run the source's `prefork` hooks before its snapshot (only while it is up: they quiesce
 * running services). Returns the consistency the fork will record.
 */
export async function beforeForkSnapshot(ctx: OpContext, source: RepoRow): Promise<'quiesced' | 'crash'> {
  if (source.state !== 'up' || daemonPid(pathsOf(ctx, source)) === null) return 'crash';
  // prefork runs code in the source. Forking is open to agents, but making a production
  // (grand) repository quiesce on demand is not: an agent's fork of a grand is crash-consistent.
  if (ctx.actor.kind === 'agent' && source.parent_guid === null) {
    ctx.timeline.record('prefork_skipped', 'prefork not run: an agent forks a grand crash-consistently', 0);
    return 'crash';
  }
  const tinefiles = findTinefiles(source.path);
  if (!tinefiles.length) return 'crash';
  return ctx.timeline.step('prefork', 'Source quiesced (prefork)', async () => {
    const record = toRecord(source, ctx.config);
    let ran = false;
    for (const tf of tinefiles) {
      const o = await runHook(ctx.config, record, tf, 'prefork', {});
      if (hookFailed(o)) {
        throw hookError(record, o, [
          { description: 'Fix the source\'s prefork hook, then fork again', run: `tine repo fork ${formatRef(source)} --tag <tag>` },
        ]);
      }
      ran ||= o.ran;
    }
    return ran ? 'quiesced' : 'crash';
  });
}

/** `repo fork REF --tag T --up`: fork (prefork → snapshot), then bring the fork up. */
export async function forkAndUp(ctx: OpContext, input: { ref: Ref; tag: string }): Promise<UpResult> {
  const fork = await forkRepo(ctx, input);
  const row = findByGuid(ctx.db, fork.guid)!;
  try {
    const up = await bringUp(ctx, row);
    ctx.timeline.record('total', 'Total', ctx.timeline.elapsed());
    return up;
  } catch (err) {
    const e = toTineError(err);
    throw new TineError(e.code, e.exitCode, `forked ${fork.ref}, but it did not come up: ${e.message}`, {
      details: { ...(e.details ?? {}), fork: fork.ref, forkGuid: fork.guid },
      next: [{ description: 'Start the fork again once fixed', run: `tine repo up ${fork.ref}` }, ...e.next.filter((n) => !n.run?.startsWith('tine repo up'))],
    });
  }
}

// ---- restore after a reboot ----

export interface RestoreResult {
  restored: string[];
  alreadyRunning: string[];
  failed: { ref: string; code: string; message: string }[];
}

export async function restoreAll(ctx: OpContext): Promise<RestoreResult> {
  const rows = ctx.db.prepare("SELECT * FROM repos WHERE state = 'up' AND status = 'ready' ORDER BY created_at").all() as RepoRow[];
  const out: RestoreResult = { restored: [], alreadyRunning: [], failed: [] };
  for (const row of rows) {
    const ref = formatRef(row);
    if (daemonPid(pathsOf(ctx, row)) !== null) {
      out.alreadyRunning.push(ref);
      continue;
    }
    try {
      await bringUp(ctx, row);
      out.restored.push(ref);
    } catch (err) {
      const e = toTineError(err);
      out.failed.push({ ref, code: e.code, message: e.message });
    }
  }
  if (out.failed.length) {
    throw new TineError('RESTORE_INCOMPLETE', EXIT.failure, `${out.failed.length} repositor${out.failed.length === 1 ? 'y' : 'ies'} did not come back: ${out.failed.map((f) => `${f.ref} (${f.message.split('\n')[0]})`).join('; ')}`, {
      details: { ...out },
      next: out.failed.map((f) => ({ description: `Start ${f.ref} again once fixed`, run: `tine repo up ${f.ref}` })),
    });
  }
  return out;
}

// ---- crash repair (called by the command pipeline before anything else) ----

export interface LifecycleRepair {
  networkId: number;
  ref: string | null;
  outcome: 'orphan_daemon_stopped' | 'stale_lock_removed';
}

/**
 * Stop every daemon whose repository is not up and whose lifecycle operation's process is
 * gone (e.g. `tine` killed during `fork --up`), and drop stale locks.
 */
export async function repairLifecycle(ctx: OpContext): Promise<LifecycleRepair[]> {
  const repairs: LifecycleRepair[] = [];
  let names: string[];
  try {
    names = readdirSync(ctx.config.runDir);
  } catch {
    return repairs;
  }
  const ids = new Set<number>();
  for (const n of names) {
    const m = /^(?:docker-(\d+)\.pid|docker-proxy-(\d+)\.pid|lifecycle-(\d+)\.lock)$/.exec(n);
    if (m) ids.add(Number(m[1] ?? m[2] ?? m[3]));
  }
  for (const networkId of ids) {
    const file = lockFile(ctx, networkId);
    const owner = readLock(file);
    if (owner && lockOwnerAlive(owner)) continue;
    const row = ctx.db.prepare('SELECT * FROM repos WHERE network_id = ?').get(networkId) as RepoRow | undefined;
    const ref = row ? formatRef(row) : null;
    const p: DaemonPaths = row ? pathsOf(ctx, row) : orphanPaths(ctx, networkId);
    if ((daemonPid(p) !== null || proxyPid(p) !== null) && row?.state !== 'up') {
      await stopDaemon(p);
      repairs.push({ networkId, ref, outcome: 'orphan_daemon_stopped' });
    }
    if (owner) {
      rmSync(file, { force: true });
      if (!repairs.some((r) => r.networkId === networkId)) repairs.push({ networkId, ref, outcome: 'stale_lock_removed' });
    }
  }
  return repairs;
}

/** Paths of a daemon whose repository row is gone: the data-root is read from its argv. */
function orphanPaths(ctx: OpContext, networkId: number): DaemonPaths {
  const p = daemonPaths(ctx.config, '/nonexistent', networkId);
  const pid = daemonPid(p);
  if (pid !== null) {
    try {
      const argv = readFileSync(`/proc/${pid}/cmdline`, 'utf8').split('\0');
      const i = argv.indexOf('--data-root');
      if (i >= 0 && argv[i + 1]) return { ...p, dataRoot: argv[i + 1]! };
    } catch {
      /* gone meanwhile */
    }
  }
  return p;
}
