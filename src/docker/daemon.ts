// One dockerd per repository. Its data-root lives inside the repository subvolume, so a
// snapshot forks images, containers and volumes with the files; everything that must not
// be shared (exec-root, pidfile, socket, containerd namespace, cgroup parent) is keyed by
// the repository's network id.
import { spawn } from 'node:child_process';
import { existsSync, lstatSync, mkdirSync, openSync, closeSync, readFileSync, readdirSync, rmSync, rmdirSync, chmodSync, chownSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { request } from 'node:http';
import type { HostConfig } from '../host/config.js';
import { mountPoints, run } from '../host/system.js';
import { TineError, EXIT } from '../errors.js';
import { hostConfigPath, installTag } from '../host/config.js';
import { tineHostScript } from '../host/install.js';
import { ensureRepoNetwork } from '../network/netns.js';
import { pinsDirOf, remakePins, unmountPins, type PinFailure } from './pins.js';

export interface DaemonPaths {
  networkId: number;
  /** cgroup parent of its containers (one directory name, in every hierarchy). */
  cgroupParent: string;
  dataRoot: string;
  execRoot: string;
  pidFile: string;
  /** The socket the sandbox and the Tinefile see (DOCKER_HOST): served by the filtering proxy. */
  socket: string;
  /** dockerd's own socket, in a root-only directory: only tine's root code talks to it. */
  rawSocket: string;
  logFile: string;
  proxyPidFile: string;
  proxyLogFile: string;
  /** Root-only directory of the repository's pinned bind sources (pins.ts). */
  pinsDir: string;
  repoPath: string;
}

export function daemonPaths(config: HostConfig, repoPath: string, networkId: number): DaemonPaths {
  return {
    networkId,
    cgroupParent: `${cgroupPrefix(config)}${networkId}`,
    dataRoot: join(repoPath, '.tine', 'docker'),
    execRoot: join(config.runDir, `docker-exec-${networkId}`),
    pidFile: join(config.runDir, `docker-${networkId}.pid`),
    socket: join(config.runDir, `docker-${networkId}.sock`),
    rawSocket: join(rawSocketDir(config), `${networkId}.sock`),
    logFile: join(config.runDir, `docker-${networkId}.log`),
    proxyPidFile: join(config.runDir, `docker-proxy-${networkId}.pid`),
    proxyLogFile: join(config.runDir, `docker-proxy-${networkId}.log`),
    pinsDir: pinsDirOf(config, networkId),
    repoPath,
  };
}

/** Root-only (0700) directory of the raw dockerd sockets: the sandbox user can never reach one. */
export const rawSocketDir = (config: Pick<HostConfig, 'runDir'>) => join(config.runDir, 'docker-raw');

/**
 * Network ids are unique per install, not per machine: a second install (a test host)
 * gets its own cgroup names, so a forced stop never kills another install's containers.
 */
export function cgroupPrefix(config: HostConfig): string {
  return config.runDir === '/run/tine' ? 'tine-' : `tine-${installTag(config, 8)}-`;
}

/** How long dockerd may take to answer /_ping after it was spawned. */
const START_TIMEOUT_MS = 60_000;
/** How long a graceful stop may take before the daemon and its containerd are killed. */
const STOP_TIMEOUT_MS = 30_000;

/**
 * The daemon's flags, and why each:
 * - overlay2 forced: the btrfs graph driver makes nested subvolumes, which a snapshot of the
 *   repository leaves empty; overlay2 keeps layers as plain directories (checked on btrfs).
 * - no bridge, no iptables/ip6tables, no masquerade, no userland proxy: nothing is shared
 *   with other daemons (no docker0, no DOCKER chains). Containers use host networking and
 *   bind to the repository's own addresses (TINE_IP…); a fork binds to its own
 *   block, so parent and forks run the same port at once. The command runs under
 *   `nsenter --net=…` in the repository's own network namespace (issue 6).
 * - containerd namespace and cgroup parent per network id: a fork's containers keep their
 *   parent's container ids, which must not collide in a shared containerd or cgroup tree.
 * - socket: the raw one, root:root in a 0700 directory. The sandbox user reaches the daemon
 *   only through the repository's filtering proxy (proxy.ts), which serves `socket`.
 */
export function daemonArgs(config: HostConfig, p: DaemonPaths): string[] {
  return [
    '--data-root', p.dataRoot,
    '--exec-root', p.execRoot,
    '--pidfile', p.pidFile,
    '--host', `unix://${p.rawSocket}`,
    '--group', '0',
    '--storage-driver', 'overlay2',
    '--bridge', 'none',
    '--iptables=false',
    '--ip6tables=false',
    '--ip-masq=false',
    '--userland-proxy=false',
    '--containerd-namespace', `tine-${p.networkId}`,
    '--containerd-plugins-namespace', `tine-${p.networkId}-plugins`,
    '--exec-opt', 'native.cgroupdriver=cgroupfs',
    '--cgroup-parent', p.cgroupParent,
    '--shutdown-timeout', '10',
  ];
}

function readPid(file: string): number | null {
  try {
    const pid = Number.parseInt(readFileSync(file, 'utf8').trim(), 10);
    return Number.isInteger(pid) && pid > 0 ? pid : null;
  } catch {
    return null;
  }
}

function cmdline(pid: number): string[] {
  try {
    return readFileSync(`/proc/${pid}/cmdline`, 'utf8').split('\0').filter(Boolean);
  } catch {
    return [];
  }
}

/** Is this pid a living dockerd serving exactly this socket? (Guards against pid reuse.) */
function isOurDockerd(pid: number, p: DaemonPaths): boolean {
  const argv = cmdline(pid);
  if (!argv.length || !argv[0]!.endsWith('dockerd')) return false;
  try {
    if (readFileSync(`/proc/${pid}/stat`, 'utf8').split(') ')[1]?.startsWith('Z')) return false;
  } catch {
    return false;
  }
  return argv.includes(`unix://${p.rawSocket}`);
}

/** The pid of this repository's running dockerd, or null. */
export function daemonPid(p: DaemonPaths): number | null {
  const pid = readPid(p.pidFile);
  return pid !== null && isOurDockerd(pid, p) ? pid : null;
}

/** Processes (containerd, shims) that belong to this daemon's exec-root. */
function helperPids(p: DaemonPaths): number[] {
  const out: number[] = [];
  for (const name of readdirSync('/proc')) {
    if (!/^\d+$/.test(name)) continue;
    const argv = cmdline(Number(name));
    if (argv.some((a) => a.startsWith(p.execRoot + '/'))) out.push(Number(name));
  }
  return out;
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/**
 * One Docker Engine API call over a daemon socket (tine's own calls, and the endpoint's
 * lookups): an optional JSON body, a bounded answer.
 */
export function dockerApi(socket: string, method: string, path: string, timeoutMs = 10_000, opts: { body?: unknown; maxBytes?: number } = {}): Promise<{ status: number; body: string }> {
  const payload = opts.body === undefined ? undefined : JSON.stringify(opts.body);
  const maxBytes = opts.maxBytes ?? 64 << 20;
  return new Promise((resolve, reject) => {
    const headers: Record<string, string | number> = { 'content-type': 'application/json' };
    if (payload !== undefined) headers['content-length'] = Buffer.byteLength(payload);
    const req = request({ socketPath: socket, method, path, headers, timeout: timeoutMs }, (res) => {
      const chunks: Buffer[] = [];
      let size = 0;
      res.on('data', (d: Buffer) => {
        size += d.length;
        if (size > maxBytes) req.destroy(new Error(`docker API ${method} ${path}: answer larger than ${maxBytes} bytes`));
        else chunks.push(d);
      });
      res.on('end', () => resolve({ status: res.statusCode ?? 0, body: Buffer.concat(chunks).toString('utf8') }));
    });
    req.on('timeout', () => req.destroy(new Error(`docker API ${method} ${path}: timed out`)));
    req.on('error', reject);
    req.end(payload);
  });
}

function logTail(p: DaemonPaths, lines = 8): string {
  try {
    return readFileSync(p.logFile, 'utf8').trim().split('\n').slice(-lines).join('\n');
  } catch {
    return '';
  }
}

/**
 * The data-root decides what dockerd runs as root (privileged containers, host binds), and
 * the sandbox user owns the repository root: a `.tine` it made or swapped in is refused.
 * `.tine` and `.tine/docker` must be real directories, owned by root, not group/other
 * writable. (A layout with the data-root outside the user's tree would remove the race
 * between this check and dockerd's start; see the lifecycle report.)
 */
export function ensureRootOwnedDataRoot(p: DaemonPaths): void {
  lockRepoRoot(p.repoPath);
  const tineDir = dirname(p.dataRoot);
  for (const [dir, mode] of [[tineDir, 0o755], [p.dataRoot, 0o710]] as const) {
    let st;
    try {
      st = lstatSync(dir);
    } catch {
      mkdirSync(dir, { mode });
      chmodSync(dir, mode);
      continue;
    }
    if (!st.isDirectory() || st.uid !== 0 || (st.mode & 0o022) !== 0) {
      throw new TineError('REPO_TAMPERED', EXIT.failure, `${dir} is not a root-owned directory (uid ${st.uid}, mode ${(st.mode & 0o7777).toString(8)}): the Docker data-root of a repository is the host's, not the sandbox user's; refusing to start a daemon on it`, {
        details: { path: dir },
        next: [{ description: `Inspect it as root; if nothing in it is needed, remove it and start again`, run: `rm -rf ${dir} && tine repo up <ref>` }],
      });
    }
  }
}

/**
 * The repository root: root-owned, group = the sandbox user's, mode 1770 (sticky). The sandbox
 * user creates, renames and deletes its own entries there, but not root's `.tine`: renaming it
 * away and planting a directory or symlink of its own in its place would redirect root's
 * writes (identity, pins manifest) and pins (a renamed data-root). Repositories made before
 * this are brought to it here, before anything of `.tine` is trusted.
 */
export function lockRepoRoot(repoPath: string): void {
  const st = lstatSync(repoPath);
  if (!st.isDirectory()) throw new TineError('REPO_TAMPERED', EXIT.failure, `${repoPath} is not a directory`);
  if (st.uid !== 0) chownSync(repoPath, 0, st.gid);
  if ((st.mode & 0o7777) !== 0o1770) chmodSync(repoPath, 0o1770);
}

/** Start the repository's dockerd (no-op if it already runs) and wait until it answers. */
export async function startDaemon(config: HostConfig, p: DaemonPaths): Promise<{ pid: number; started: boolean; pinsRefused: PinFailure[] }> {
  const running = daemonPid(p);
  if (running !== null) {
    // A proxy that crashed (or was killed) is replaced; its socket answered nothing meanwhile.
    if (proxyPid(p) === null) await startProxy(p);
    return { pid: running, started: false, pinsRefused: [] };
  }
  ensureRootOwnedDataRoot(p);
  ensureRawSocketDir(config);
  // Leftovers of a daemon that died hard (crash, SIGKILL): its containerd and shims, their
  // mounts, and an exec-root whose containerd.pid may name a reused pid, which dockerd
  // would take for its containerd and wait on. A reboot clears /run; a crash does not.
  await stopDaemon(p);
  try {
    rmSync(p.execRoot, { recursive: true, force: true });
  } catch {
    /* a mount that would not go; dockerd reports what it cannot use */
  }
  mkdirSync(p.execRoot, { recursive: true, mode: 0o700 });
  // Pins exist whenever dockerd may mount them: before it starts (restart policies).
  const pinsRefused = remakePins(config, p.repoPath, p.networkId);
  const log = openSync(p.logFile, 'a', 0o600);
  const status: { exited: { code: number | null; signal: NodeJS.Signals | null } | null } = { exited: null };
  let child;
  try {
    // The daemon (and its host-network containers) live in the repository's own network
    // namespace (src/network/netns.ts). nsenter, not `ip netns exec`: that remounts /sys
    // and dockerd then fails. No namespace → no daemon (ensureRepoNetwork throws).
    const net = ensureRepoNetwork(config, p.networkId, { reloadFilter: true });
    child = spawn('nsenter', [`--net=${net.netnsFile}`, 'dockerd', ...daemonArgs(config, p)], {
      detached: true,
      stdio: ['ignore', log, log],
      // A clean environment: nothing of the caller's (DOCKER_HOST, agent signals) leaks in.
      env: { PATH: '/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin', LANG: 'C.UTF-8' },
    });
  } finally {
    closeSync(log);
  }
  const spawnError = new Promise<Error>((resolve) => child.once('error', resolve));
  child.once('exit', (code, signal) => (status.exited = { code, signal }));
  child.unref();
  const deadline = Date.now() + START_TIMEOUT_MS;
  for (let i = 0; Date.now() < deadline && i < 10_000; i++) {
    const failed = await Promise.race([spawnError, sleep(i < 20 ? 25 : 100).then(() => null)]);
    if (failed) throw new TineError('DOCKER_START_FAILED', EXIT.failure, `dockerd could not be started: ${failed.message}`, {
      next: [{ description: 'Install Docker (setup does it)', run: 'tine setup' }],
    });
    if (status.exited) break;
    if (!existsSync(p.rawSocket)) continue;
    let answered = false;
    try {
      answered = (await dockerApi(p.rawSocket, 'GET', '/_ping', 2_000)).status === 200;
    } catch {
      /* not listening yet */
    }
    if (answered) {
      try {
        await startProxy(p);
      } catch (err) {
        await stopDaemon(p).catch(() => undefined);
        throw err;
      }
      return { pid: child.pid!, started: true, pinsRefused };
    }
  }
  const why = status.exited ? `exited (${status.exited.code ?? status.exited.signal})` : `did not answer within ${START_TIMEOUT_MS / 1000}s`;
  await stopDaemon(p).catch(() => undefined);
  throw new TineError('DOCKER_START_FAILED', EXIT.failure, `dockerd for network id ${p.networkId} ${why}: ${logTail(p)}`, {
    details: { log: p.logFile },
    next: [{ description: 'Read the daemon log', run: `tail -50 ${p.logFile}` }],
  });
}

/**
 * Stop the repository's dockerd: SIGTERM (it stops its containers and its containerd),
 * then SIGKILL for whatever is left of it, its containerd and shims, and unmount what it
 * left mounted under its data-root and exec-root. Always leaves nothing running.
 */
export async function stopDaemon(p: DaemonPaths): Promise<{ stopped: boolean; forced: boolean }> {
  // The endpoint first: nothing reaches the daemon while it stops.
  await stopProxy(p);
  const pid = daemonPid(p);
  let forced = false;
  if (pid !== null) {
    try { process.kill(pid, 'SIGTERM'); } catch { /* gone */ }
    const deadline = Date.now() + STOP_TIMEOUT_MS;
    while (Date.now() < deadline && isOurDockerd(pid, p)) await sleep(50);
    if (isOurDockerd(pid, p)) {
      forced = true;
      try { process.kill(pid, 'SIGKILL'); } catch { /* gone */ }
    }
  }
  // Its containerd and shims (also those of a daemon that was SIGKILLed or died).
  const helpers = helperPids(p);
  if (helpers.length) {
    forced = true;
    for (const h of helpers) { try { process.kill(h, 'SIGKILL'); } catch { /* gone */ } }
    for (let i = 0; i < 100 && helperPids(p).length; i++) await sleep(20);
  }
  // Container processes outlive a killed shim: everything in the daemon's cgroup parent goes.
  if (forced) await killCgroupTree(p.cgroupParent);
  await removeCgroupTree(p.cgroupParent);
  unmountUnder([p.dataRoot, p.execRoot]);
  // After the containers: their mounts are copies, but nothing may mount a pin any more.
  unmountPins(p.pinsDir);
  rmSync(p.pidFile, { force: true });
  rmSync(p.socket, { force: true });
  rmSync(p.rawSocket, { force: true });
  return { stopped: pid !== null, forced };
}

// ---- the filtering endpoint (proxy.ts), one process per repository ----

/** The raw sockets' directory: root-owned 0700, whatever was there before. */
function ensureRawSocketDir(config: HostConfig): void {
  const dir = rawSocketDir(config);
  mkdirSync(dir, { recursive: true, mode: 0o700 });
  const st = lstatSync(dir);
  if (!st.isDirectory() || st.uid !== 0) {
    throw new TineError('HOST_TAMPERED', EXIT.failure, `${dir} is not a root-owned directory: the raw Docker sockets must be reachable by root only`, {
      next: [{ description: 'Inspect and remove it as root, then start again', run: `rm -rf ${dir}` }],
    });
  }
  chmodSync(dir, 0o700);
}

/** Is this pid a living `tine-host docker-proxy` serving exactly this socket? */
function isOurProxy(pid: number, p: DaemonPaths): boolean {
  const argv = cmdline(pid);
  const i = argv.indexOf('docker-proxy');
  if (i < 0 || argv[i + 1] !== '--network-id' || argv[i + 2] !== String(p.networkId) || argv[i + 3] !== '--listen' || argv[i + 4] !== p.socket) return false;
  try {
    return !readFileSync(`/proc/${pid}/stat`, 'utf8').split(') ')[1]?.startsWith('Z');
  } catch {
    return false;
  }
}

export function proxyPid(p: DaemonPaths): number | null {
  const pid = readPid(p.proxyPidFile);
  return pid !== null && isOurProxy(pid, p) ? pid : null;
}

/** What the repository's DOCKER_HOST is: served by the filtering proxy, or answering nothing. */
export function dockerConfinement(config: HostConfig, networkId: number): { docker: 'filtered' | 'down' } {
  return { docker: proxyPid(daemonPaths(config, '/nonexistent', networkId)) !== null ? 'filtered' : 'down' };
}

const PROXY_START_TIMEOUT_MS = 15_000;

/** Start the repository's filtering proxy (replacing a dead one) and wait until it answers. */
export async function startProxy(p: DaemonPaths): Promise<number> {
  await stopProxy(p);
  const log = openSync(p.proxyLogFile, 'a', 0o600);
  let child;
  try {
    child = spawn(process.execPath, [tineHostScript, 'docker-proxy', '--network-id', String(p.networkId), '--listen', p.socket], {
      detached: true,
      stdio: ['ignore', log, log],
      env: { PATH: '/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin', LANG: 'C.UTF-8', TINE_HOST_CONFIG: hostConfigPath() },
    });
  } finally {
    closeSync(log);
  }
  let exited: string | null = null;
  child.once('error', (e) => (exited = e.message));
  child.once('exit', (code, signal) => (exited = `exited (${code ?? signal})`));
  child.unref();
  const deadline = Date.now() + PROXY_START_TIMEOUT_MS;
  for (let i = 0; Date.now() < deadline && i < 1000 && !exited; i++) {
    await sleep(i < 40 ? 10 : 50);
    if (readPid(p.proxyPidFile) !== child.pid) continue;
    try {
      if ((await dockerApi(p.socket, 'GET', '/_ping', 2_000)).status === 200) return child.pid!;
    } catch {
      /* not yet */
    }
  }
  try { child.kill('SIGKILL'); } catch { /* gone */ }
  let tail = '';
  try { tail = readFileSync(p.proxyLogFile, 'utf8').trim().split('\n').slice(-5).join('\n'); } catch { /* none */ }
  throw new TineError('DOCKER_PROXY_FAILED', EXIT.failure, `the filtering Docker endpoint of network id ${p.networkId} ${exited ?? 'did not answer'}: ${tail}`, {
    details: { log: p.proxyLogFile },
    next: [{ description: 'Read the endpoint\'s log', run: `tail -50 ${p.proxyLogFile}` }],
  });
}

export async function stopProxy(p: DaemonPaths): Promise<void> {
  const pid = proxyPid(p);
  if (pid !== null) {
    try { process.kill(pid, 'SIGTERM'); } catch { /* gone */ }
    for (let i = 0; i < 100 && isOurProxy(pid, p); i++) await sleep(20);
    if (isOurProxy(pid, p)) { try { process.kill(pid, 'SIGKILL'); } catch { /* gone */ } }
    for (let i = 0; i < 50 && isOurProxy(pid, p); i++) await sleep(20);
  }
  rmSync(p.proxyPidFile, { force: true });
  // The socket stays absent until a new proxy listens: it never falls through to the daemon.
  rmSync(p.socket, { force: true });
}

/** The daemon's cgroup parent in every mounted hierarchy (v1: one per controller; v2: one). */
export function cgroupDirs(name: string): string[] {
  const root = '/sys/fs/cgroup';
  const out: string[] = [];
  if (existsSync(join(root, name))) out.push(join(root, name));
  try {
    for (const c of readdirSync(root)) if (existsSync(join(root, c, name))) out.push(join(root, c, name));
  } catch {
    /* no cgroup fs */
  }
  return out;
}

function walkCgroups(dir: string): string[] {
  const out = [dir];
  try {
    for (const e of readdirSync(dir, { withFileTypes: true })) if (e.isDirectory()) out.push(...walkCgroups(join(dir, e.name)));
  } catch {
    /* gone */
  }
  return out;
}

export function cgroupPids(name: string): number[] {
  const pids = new Set<number>();
  for (const d of cgroupDirs(name)) {
    for (const g of walkCgroups(d)) {
      try {
        for (const l of readFileSync(join(g, 'cgroup.procs'), 'utf8').split('\n')) if (l) pids.add(Number(l));
      } catch {
        /* gone */
      }
    }
  }
  return [...pids];
}

export async function killCgroupTree(name: string): Promise<void> {
  for (let i = 0; i < 50; i++) {
    const pids = cgroupPids(name);
    if (!pids.length) return;
    for (const pid of pids) { try { process.kill(pid, 'SIGKILL'); } catch { /* gone */ } }
    await sleep(20);
  }
}

/** Remove the (now empty) cgroup parent directories, deepest first; best effort. */
export async function removeCgroupTree(name: string): Promise<void> {
  // A cgroup stays busy for a moment after its last task exited: retry, bounded.
  for (let i = 0; i < 20; i++) {
    const dirs = cgroupDirs(name);
    if (!dirs.length) return;
    for (const d of dirs) {
      for (const g of walkCgroups(d).reverse()) {
        try { rmdirSync(g); } catch { /* busy or gone */ }
      }
    }
    if (!cgroupDirs(name).length) return;
    await sleep(50);
  }
}

/** Unmount every mount below these directories, deepest first. */
export function unmountUnder(dirs: string[]): void {
  const below = [...mountPoints().keys()].filter((m) => dirs.some((d) => m === d || m.startsWith(d + '/')));
  below.sort((a, b) => b.length - a.length);
  for (const m of below) {
    try { run('umount', [m]); } catch { try { run('umount', ['-l', m]); } catch { /* report below */ } }
  }
}

export interface ContainerSummary {
  Id: string;
  Names: string[];
  State: string;
}

export async function listContainers(socket: string): Promise<ContainerSummary[]> {
  const r = await dockerApi(socket, 'GET', '/containers/json?all=1');
  if (r.status !== 200) throw new TineError('DOCKER_API_FAILED', EXIT.failure, `docker: list containers: ${r.status} ${r.body.trim()}`);
  return JSON.parse(r.body) as ContainerSummary[];
}

/** POST /containers/{id}/update with a restart policy (given back after the policy check). */
export async function updateRestartPolicy(socket: string, id: string, policy: { Name: string; MaximumRetryCount?: number }): Promise<void> {
  const r = await dockerApi(socket, 'POST', `/containers/${encodeURIComponent(id)}/update`, 10_000, { body: { RestartPolicy: policy } });
  if (r.status !== 200) throw new TineError('DOCKER_API_FAILED', EXIT.failure, `docker: restore the restart policy of ${id.slice(0, 12)}: ${r.status} ${r.body.trim()}`);
}

export async function startContainer(socket: string, id: string): Promise<void> {
  const r = await dockerApi(socket, 'POST', `/containers/${encodeURIComponent(id)}/start`, 60_000);
  // 304: already running (a restart policy started it first).
  if (r.status !== 204 && r.status !== 304) {
    // A restart policy may have been starting it at the same moment: running is running.
    const again = await dockerApi(socket, 'GET', `/containers/${encodeURIComponent(id)}/json`);
    if (again.status === 200 && (JSON.parse(again.body) as { State?: { Running?: boolean } }).State?.Running) return;
    throw new TineError('DOCKER_API_FAILED', EXIT.failure, `docker: start container ${id.slice(0, 12)}: ${r.status} ${r.body.trim()}`);
  }
}
