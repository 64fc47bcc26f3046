// What a repository's filtering Docker endpoint lets through. A Docker socket is root on the
// host, so the policy is default-deny where a request can leave the repository: every
// request is classified by (method, path), the few endpoints that can widen a container's
// reach have their JSON bodies checked, and anything unknown or unparseable on those
// endpoints is refused. Everything else (list, inspect, logs, attach, images, build
// context…) passes untouched: it stays inside the repository's own daemon.
//
// The decision is a function of the request and of what the raw daemon says about the
// objects it references (a container started, a named volume used); those lookups are
// injected, so the same rules serve the proxy, `repo up`'s start of inherited containers,
// and tests.
import { lstatSync, readlinkSync } from 'node:fs';
import { join } from 'node:path';

export interface PolicyContext {
  /** The repository's path on the host (the sandbox sees it at the same path). */
  repoPath: string;
  /** The repository's file-mode secrets directory (its containers may bind-mount it). */
  secretsDir: string;
  /** Host run dir: every Docker socket of tine lives below it. */
  runDir: string;
  /** The socket the sandbox sees (served by the proxy). */
  proxySocket: string;
  /** True only when the daemon runs in the repository's own network namespace. */
  hostNetworkIsRepoNetwork: boolean;
  /** This repository's pins (pins.ts): clones of bind sources the endpoint already checked. */
  pinsDir?: string;
  /** A mount is about to be made (start, restart, a restart policy given back): bind sources
   *  inside the repository must be pins, never paths dockerd would look up again. */
  pinnedOnly?: boolean;
}

/** What the raw daemon knows, looked up only when a rule needs it. null = does not exist. */
export interface DaemonLookups {
  volume(name: string): Promise<{ Driver?: string; Options?: Record<string, string> | null } | null>;
  /** GET /containers/{id}/json */
  container(id: string): Promise<ContainerInspect | null>;
}

export interface ContainerInspect {
  Id?: string;
  Name?: string;
  HostConfig?: Record<string, unknown>;
  Mounts?: { Type?: string; Source?: string; Name?: string; Driver?: string }[];
}

export type Decision = { allow: true } | { allow: false; status: number; message: string };

export interface ApiRequest {
  method: string;
  /** Decoded path, with or without the /vX.Y prefix, no query. */
  path: string;
  query: URLSearchParams;
  /** Parsed JSON body (only for endpoints where bodyNeeded() is true); undefined = empty. */
  body?: unknown;
}

const ALLOW: Decision = { allow: true };

class Refusal extends Error {
  constructor(readonly what: string, readonly why: string, readonly instead: string, readonly status = 403) {
    super(`tine: ${what} — ${why}; ${instead}`);
  }
}

const refuse = (what: string, why: string, instead: string, status = 403): never => {
  throw new Refusal(what, why, instead, status);
};

/** Strip the API version prefix: /v1.45/containers/create → /containers/create. */
export function stripVersion(path: string): string {
  const m = /^\/v[0-9][0-9.]*(\/.*)?$/.exec(path);
  return m ? m[1] ?? '/' : path;
}

const CONTAINER_ACTION = /^\/containers\/([^/]+)\/(start|restart|update|exec)$/;
/** Ways into a container that exists (a process in it, its files): it must pass the rules too,
 *  or a privileged container a fork inherited (or the daemon restarted) is a way out. */
const CONTAINER_ENTRY = /^\/containers\/([^/]+)\/(attach|attach\/ws|archive|export|unpause|copy)$/;

/** The oldest API version served: 1.23 and older still take a host config at start and
 *  have /copy; the docker CLI of any supported Docker speaks newer. */
const MIN_API = [1, 24];

function checkRoute(rawPath: string, path: string): void {
  const v = /^\/v([0-9]+)\.([0-9]+)(\/|$)/.exec(rawPath);
  if (v && (Number(v[1]) < MIN_API[0]! || (Number(v[1]) === MIN_API[0] && Number(v[2]) < MIN_API[1]!))) {
    refuse(`API version ${v[1]}.${v[2]}`, 'versions before 1.24 take settings that bypass the checks made at create', 'use a current docker client', 400);
  }
  // dockerd routes /containers/{name:.*}/…: a name with a slash (a link alias like web/db,
  // or %2F) would reach a container past the per-container rules. Names never hold one.
  const seg = path.split('/');
  if (seg[1] === 'containers' && seg.length >= 4) {
    let id = seg[2]!;
    try {
      id = decodeURIComponent(id);
    } catch {
      refuse('a malformed container name', 'it cannot be checked', 'use the container\'s id or name');
    }
    const known = seg.length === 4 || (seg.length === 5 && seg[3] === 'attach' && seg[4] === 'ws');
    if (id.includes('/') || !known) refuse(`the route ${path.slice(0, 80)}`, 'a container is named by its id or plain name; this path could reach another container past the checks', 'use the container\'s id or name');
  }
}

/** Does this request's body have to be read and checked before it is forwarded? */
export function bodyNeeded(method: string, rawPath: string): boolean {
  if (method !== 'POST') return false;
  const path = stripVersion(rawPath);
  return path === '/containers/create' || path === '/volumes/create' || path === '/networks/create' || CONTAINER_ACTION.test(path);
}

/** Endpoints that hand the connection over to a raw stream (101 Upgrade or the older 200 hijack). */
export function isHijackEndpoint(method: string, rawPath: string): boolean {
  const path = stripVersion(rawPath);
  return method === 'POST' && (/^\/containers\/[^/]+\/attach$/.test(path) || /^\/exec\/[^/]+\/start$/.test(path) || path === '/session');
}

// Docker's default masked and read-only paths (moby/oci/defaults.go, as of 20.10).
const DEFAULT_MASKED = ['/proc/asound', '/proc/acpi', '/proc/kcore', '/proc/keys', '/proc/latency_stats', '/proc/timer_list', '/proc/timer_stats', '/proc/sched_debug', '/proc/scsi', '/sys/firmware'];
const DEFAULT_READONLY = ['/proc/bus', '/proc/fs', '/proc/irq', '/proc/sys', '/proc/sysrq-trigger'];

// Docker's default capability set (moby/oci/caps/defaults.go).
const DEFAULT_CAPS = new Set(['CHOWN', 'DAC_OVERRIDE', 'FSETID', 'FOWNER', 'MKNOD', 'NET_RAW', 'SETGID', 'SETUID', 'SETFCAP', 'SETPCAP', 'NET_BIND_SERVICE', 'SYS_CHROOT', 'KILL', 'AUDIT_WRITE']);

const CLUSTER = /^\/(plugins|swarm|services|nodes|tasks|secrets|configs|distribution)(\/|$)/;

/** Decide one request. Never throws: a refusal is a Decision. */
export async function decide(req: ApiRequest, ctx: PolicyContext, lookups: DaemonLookups): Promise<Decision> {
  try {
    await check(req, ctx, lookups);
    return ALLOW;
  } catch (err) {
    if (err instanceof Refusal) return { allow: false, status: err.status, message: err.message };
    return { allow: false, status: 403, message: `tine: request refused — it could not be checked (${(err as Error).message}); send a well-formed Docker API request` };
  }
}

// Go's encoding/json matches struct fields case-insensitively (with Unicode folding: ſ = s,
// K = k), so {"hostconfig":{"privileged":true}} is a privileged container to dockerd.
// Every key this policy reads is brought to its canonical spelling first, and an object
// with two keys that fold to the same field is refused (which one Go keeps is not ours to guess).
const FIELDS = ['HostConfig', 'Name', 'Driver', 'DriverOpts', 'ConfigFrom', 'Ingress', 'Scope', 'Options', 'Privileged',
  'Devices', 'DeviceRequests', 'DeviceCgroupRules', 'CgroupParent', 'CapAdd', 'PidMode', 'IpcMode', 'UTSMode', 'UsernsMode',
  'NetworkMode', 'Runtime', 'SecurityOpt', 'MaskedPaths', 'ReadonlyPaths', 'VolumeDriver', 'Binds', 'Mounts', 'Type',
  'Source', 'VolumeOptions', 'DriverConfig', 'VolumesFrom', 'LogConfig', 'RestartPolicy'];
const fold = (k: string) => k.replace(/\u017f/g, 's').replace(/\u212a/g, 'k').toLowerCase();
const CANONICAL = new Map(FIELDS.map((f) => [fold(f), f]));
const GO_MAPS = new Set(['DriverOpts', 'Options', 'Labels', 'Sysctls', 'StorageOpt', 'Annotations', 'Config']);

/** Canonical keys of the top level, and all the way down inside the fields that are checked
 *  (labels and other user maps elsewhere may hold keys that differ only in case). */
export function canonicalKeys(v: unknown): unknown {
  const top = canonicalDeep(v, 0, false);
  if (!isObject(top)) return top;
  for (const k of ['HostConfig', 'Mounts']) if (k in top) top[k] = canonicalDeep(top[k], 1, true);
  return top;
}

function canonicalDeep(v: unknown, depth: number, deep: boolean): unknown {
  if (depth > 64) throw new Refusal('a request nested this deep', 'tine cannot check it', 'send the request as the docker CLI does');
  if (Array.isArray(v)) return deep ? v.map((x) => canonicalDeep(x, depth + 1, deep)) : v;
  if (!isObject(v)) return v;
  const out: Record<string, unknown> = {};
  const seen = new Set<string>();
  for (const [k, x] of Object.entries(v)) {
    const f = fold(k);
    if (seen.has(f)) refuse(`a body with both ${JSON.stringify(k)} and another spelling of it`, 'Docker reads field names case-insensitively, so tine cannot tell which one it would use', 'send each field once');
    seen.add(f);
    const key = CANONICAL.get(f) ?? k;
    // Go maps (driver options, labels…) keep their exact keys, as dockerd reads them.
    out[key] = deep && !GO_MAPS.has(key) ? canonicalDeep(x, depth + 1, deep) : x;
  }
  return out;
}

async function check(req: ApiRequest, ctx: PolicyContext, lookups: DaemonLookups): Promise<void> {
  if (req.body !== undefined) req = { ...req, body: canonicalKeys(req.body) };
  const path = stripVersion(req.path);
  const m = req.method;
  checkRoute(req.path, path);
  if (CLUSTER.test(path)) {
    const what = path.split('/')[1];
    refuse(`the ${what} endpoint`, 'plugins and swarm reach beyond this repository\'s daemon (a plugin runs as root on the host)', 'run the service as a container of this repository instead');
  }
  if (path === '/grpc') {
    refuse('BuildKit over /grpc', 'its entitlements (security.insecure, network.host) cannot be checked by tine', 'build with the classic builder: DOCKER_BUILDKIT=0 docker build …');
  }
  if (m === 'POST' && path === '/build') return checkBuild(req.query, ctx);
  if (m === 'POST' && path === '/containers/create') {
    const body = objectBody(req.body, 'container create');
    await checkHostConfig(objectOr(body.HostConfig, 'HostConfig'), ctx, lookups);
    return;
  }
  if (m === 'POST' && path === '/volumes/create') {
    const body = objectBody(req.body, 'volume create');
    const name = typeof body.Name === 'string' ? body.Name : '';
    checkVolumeDriver(name, body.Driver, body.DriverOpts, ctx);
    return;
  }
  if (m === 'POST' && path === '/networks/create') {
    const body = objectBody(req.body, 'network create');
    const driver = body.Driver ?? '';
    if (driver !== '' && driver !== 'bridge') refuse(`network driver ${JSON.stringify(driver)}`, 'only bridge networks stay inside this repository\'s daemon', 'create a bridge network: docker network create NAME');
    if (body.ConfigFrom || body.Ingress || (body.Scope && body.Scope !== 'local')) refuse('a swarm-scoped network', 'swarm reaches beyond this repository', 'create a local bridge network');
    const opts = objectOr(body.Options, 'Options');
    if (opts['com.docker.network.bridge.name'] !== undefined) refuse('a network on a named host bridge', 'it could join a bridge of the host or of another repository', 'let Docker name the bridge (drop com.docker.network.bridge.name)');
    return;
  }
  const entry = CONTAINER_ENTRY.exec(path);
  if (entry) {
    await checkExistingContainer(decodeURIComponent(entry[1]!), ctx, lookups);
    return;
  }
  const action = CONTAINER_ACTION.exec(path);
  if (action && m === 'POST') {
    const id = decodeURIComponent(action[1]!);
    const verb = action[2]!;
    if (verb === 'exec') {
      const body = objectBody(req.body, 'exec create');
      if (body.Privileged === true) refuse('exec --privileged', 'a privileged process gets every capability and every device of the host', 'exec without --privileged');
      await checkExistingContainer(id, ctx, lookups);
      return;
    }
    if (verb === 'update') {
      const body = req.body === undefined ? {} : objectBody(req.body, 'container update');
      checkResources(body);
      // A restart policy lets dockerd mount again by itself: only pinned binds may have one.
      const restart = str(objectOr(body.RestartPolicy, 'RestartPolicy').Name);
      if (restart && restart !== 'no' && ctx.pinsDir) await checkExistingContainer(id, { ...ctx, pinnedOnly: true }, lookups);
      return;
    }
    // start / restart: a container's config is otherwise only checked at create, and a fork
    // inherits its parent's containers (made through the parent's endpoint, or as root).
    if (req.body !== undefined && req.body !== null && !(isObject(req.body) && Object.keys(req.body).length === 0)) {
      refuse('a host config at start', 'settings at start bypass the checks made at create', 'give every setting to docker create / docker run');
    }
    await checkExistingContainer(id, ctx.pinsDir ? { ...ctx, pinnedOnly: true } : ctx, lookups);
  }
}

/** The same rules for a container that already exists (start, restart, `repo up`). */
export async function checkExistingContainer(id: string, ctx: PolicyContext, lookups: DaemonLookups): Promise<void> {
  const found = await lookups.container(id);
  if (!found) return; // the daemon answers 404 itself
  const c = canonicalKeys(found) as ContainerInspect;
  const name = typeof c.Name === 'string' ? c.Name.replace(/^\//, '') : id;
  try {
    await checkHostConfig(objectOr(c.HostConfig, 'HostConfig'), ctx, lookups);
    await checkResolvedMounts(c.Mounts ?? [], ctx, lookups, 'its mounts');
  } catch (err) {
    if (err instanceof Refusal) throw new Refusal(`container ${name}: ${err.what}`, err.why, `${err.instead}; recreate the container without it (docker rm ${name})`);
    throw err;
  }
}

/** The decision for an existing container (used by `repo up` for inherited containers). */
export async function decideContainerStart(id: string, ctx: PolicyContext, lookups: DaemonLookups): Promise<Decision> {
  try {
    await checkExistingContainer(id, ctx, lookups);
    return ALLOW;
  } catch (err) {
    if (err instanceof Refusal) return { allow: false, status: err.status, message: err.message };
    return { allow: false, status: 403, message: `tine: container ${id} refused — it could not be checked (${(err as Error).message})` };
  }
}

function isObject(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

function objectBody(body: unknown, what: string): Record<string, any> {
  if (!isObject(body)) refuse(`a ${what} request without a JSON object body`, 'tine checks what every such request asks for and cannot check this one', 'send the request as the docker CLI does');
  return body as Record<string, any>;
}

function objectOr(v: unknown, field: string): Record<string, any> {
  if (v === undefined || v === null) return {};
  if (!isObject(v)) refuse(`${field} that is not an object`, 'tine cannot check it', 'send a well-formed request');
  return v as Record<string, any>;
}

function list(v: unknown, field: string): unknown[] {
  if (v === undefined || v === null) return [];
  if (!Array.isArray(v)) refuse(`${field} that is not a list`, 'tine cannot check it', 'send a well-formed request');
  return v as unknown[];
}

function str(v: unknown): string {
  return typeof v === 'string' ? v : v === undefined || v === null ? '' : String(v);
}

const networkHostWhy = 'the daemon shares the host\'s network, so the container would reach every repository\'s services';
const networkHostInstead = 'use a bridge network of this repository (docker network create NAME; --network NAME)';

function checkBuild(q: URLSearchParams, ctx: PolicyContext): void {
  if (q.get('networkmode') === 'host' && !ctx.hostNetworkIsRepoNetwork) refuse('docker build --network host', networkHostWhy, 'build without --network host');
  if (q.get('cgroupparent')) refuse('docker build --cgroup-parent', 'it would place build containers outside this repository\'s cgroup', 'build without --cgroup-parent');
  for (const [k, v] of q) {
    if (/entitlement|^allow$/i.test(k) || /security\.insecure/.test(v)) refuse('a BuildKit entitlement', 'security.insecure runs build steps privileged', 'build without --allow');
  }
}

function checkResources(r: Record<string, any>): void {
  if (list(r.Devices, 'Devices').length) refuse('--device', 'a host device gives direct access to the host\'s hardware or disks', 'keep the data inside the repository');
  if (list(r.DeviceRequests, 'DeviceRequests').length) refuse('--gpus / device requests', 'host devices are outside the repository', 'run without device requests');
  if (list(r.DeviceCgroupRules, 'DeviceCgroupRules').length) refuse('--device-cgroup-rule', 'it opens host devices to the container', 'run without device cgroup rules');
  if (str(r.CgroupParent)) refuse('--cgroup-parent', 'the container would run outside this repository\'s cgroup', 'drop --cgroup-parent');
}

async function checkHostConfig(h: Record<string, any>, ctx: PolicyContext, lookups: DaemonLookups): Promise<void> {
  if (h.Privileged === true) refuse('--privileged', 'a privileged container gets every capability and device: it is root on the host', 'run without --privileged; add only the capability you need from Docker\'s default set');
  for (const c of list(h.CapAdd, 'CapAdd')) {
    const cap = str(c).toUpperCase().replace(/^CAP_/, '');
    if (!DEFAULT_CAPS.has(cap)) refuse(`--cap-add ${str(c)}`, 'capabilities beyond Docker\'s default set can reach the host', 'run without it');
  }
  checkResources(h);
  for (const [field, flag] of [['PidMode', '--pid'], ['IpcMode', '--ipc'], ['UTSMode', '--uts'], ['UsernsMode', '--userns']] as const) {
    if (str(h[field]) === 'host') refuse(`${flag} host`, 'the host\'s namespace is shared with every repository', `drop ${flag} host`);
  }
  if (str(h.NetworkMode) === 'host' && !ctx.hostNetworkIsRepoNetwork) refuse('--network host', networkHostWhy, networkHostInstead);
  const runtime = str(h.Runtime);
  if (runtime !== '' && runtime !== 'runc' && runtime !== 'io.containerd.runc.v2') refuse(`--runtime ${runtime}`, 'only Docker\'s default runtime is allowed', 'drop --runtime');
  for (const o of list(h.SecurityOpt, 'SecurityOpt')) {
    const opt = str(o);
    if (/^no-new-privileges([:=](true|false))?$/.test(opt) || opt === 'apparmor=docker-default' || opt === 'apparmor:docker-default') continue;
    refuse(`--security-opt ${opt.length > 60 ? opt.slice(0, 60) + '…' : opt}`, 'only no-new-privileges may be set: seccomp, AppArmor, SELinux labels and system paths stay Docker\'s defaults', 'drop this --security-opt');
  }
  // Docker replaces its default lists with any list given: one without /proc/sys leaves the
  // host's kernel settings writable. A list must keep every default (more is fine).
  for (const [field, defaults] of [['MaskedPaths', DEFAULT_MASKED], ['ReadonlyPaths', DEFAULT_READONLY]] as const) {
    if (h[field] === undefined || h[field] === null) continue;
    const given = new Set(list(h[field], field).map(str));
    const dropped = defaults.filter((d) => !given.has(d));
    if (dropped.length) refuse(`a ${field} without ${dropped[0]}`, 'it unmasks /proc and /sys paths of the host (a writable /proc/sys is root on the host)', `leave ${field} to Docker`);
  }
  const log = objectOr(h.LogConfig, 'LogConfig');
  const logType = str(log.Type);
  // Other drivers (syslog, fluentd, gelf…) make the root daemon connect wherever they say.
  if (logType && !['json-file', 'local', 'none'].includes(logType)) refuse(`--log-driver ${logType}`, 'a log driver other than json-file, local or none makes the daemon connect outside the repository', 'use the default json-file driver');
  const vd = str(h.VolumeDriver);
  if (vd && vd !== 'local') refuse(`--volume-driver ${vd}`, 'only the local driver keeps volumes inside this repository\'s daemon', 'drop --volume-driver');
  for (const b of list(h.Binds, 'Binds')) {
    const spec = str(b);
    // One part ("/data") is an anonymous volume at that container path, not a bind.
    if (!spec.includes(':')) continue;
    const source = spec.split(':')[0]!;
    if (source.startsWith('/')) checkBindSource(source, ctx, `-v ${spec}`);
    else if (source) await checkNamedVolume(source, ctx, lookups);
  }
  for (const raw of list(h.Mounts, 'Mounts')) {
    const mt = objectOr(raw, 'Mounts[]');
    const type = str(mt.Type) || 'volume';
    if (type === 'bind') checkBindSource(str(mt.Source), ctx, `--mount type=bind,source=${str(mt.Source)}`);
    else if (type === 'volume') {
      const dc = objectOr(objectOr(mt.VolumeOptions, 'VolumeOptions').DriverConfig, 'DriverConfig');
      if (dc.Name !== undefined || dc.Options !== undefined) checkVolumeDriver(str(mt.Source), dc.Name, dc.Options, ctx);
      if (str(mt.Source)) await checkNamedVolume(str(mt.Source), ctx, lookups);
    } else if (type !== 'tmpfs' && type !== 'image') {
      refuse(`a mount of type ${type}`, 'only bind (inside the repository), volume, tmpfs and image mounts are allowed', 'use a named volume or a bind under the repository');
    }
  }
  for (const from of list(h.VolumesFrom, 'VolumesFrom')) {
    const id = str(from).split(':')[0]!;
    const other = canonicalKeys(await lookups.container(id)) as ContainerInspect | null;
    if (other) await checkResolvedMounts(other.Mounts ?? [], ctx, lookups, `--volumes-from ${id}`);
  }
}

/** Mounts the daemon resolved for an existing container (binds, volumes, volumes-from). */
async function checkResolvedMounts(mounts: NonNullable<ContainerInspect['Mounts']>, ctx: PolicyContext, lookups: DaemonLookups, what: string): Promise<void> {
  for (const mt of mounts) {
    if (mt.Type === 'bind' && mt.Source) checkBindSource(mt.Source, ctx, `${what}: bind of ${mt.Source}`);
    else if (mt.Type === 'volume' && mt.Name) {
      if (mt.Driver && mt.Driver !== 'local') refuse(`${what}: volume driver ${mt.Driver}`, 'only the local driver keeps volumes inside this repository\'s daemon', 'use a local volume');
      await checkNamedVolume(mt.Name, ctx, lookups);
    }
  }
}

async function checkNamedVolume(name: string, ctx: PolicyContext, lookups: DaemonLookups): Promise<void> {
  const v = canonicalKeys(await lookups.volume(name)) as { Driver?: string; Options?: Record<string, string> } | null;
  if (v) checkVolumeDriver(name, v.Driver, v.Options, ctx);
}

/** A volume's driver and options: local only, and a bind only to a directory inside the repository. */
function checkVolumeDriver(name: string, driver: unknown, options: unknown, ctx: PolicyContext): void {
  const d = str(driver);
  const label = name ? `volume ${name}` : 'a volume';
  if (d && d !== 'local') refuse(`${label} with driver ${d}`, 'only the local driver keeps volumes inside this repository\'s daemon', 'use the local driver');
  const o = objectOr(options, 'DriverOpts') as Record<string, unknown>;
  // The local driver's options (a Go map: exact keys); anything else is not checked here.
  for (const k of Object.keys(o)) if (!['type', 'o', 'device', 'size'].includes(k)) refuse(`${label} with option ${JSON.stringify(k)}`, 'only the local driver\'s type, o, device and size are allowed', 'drop that option');
  const type = str(o.type);
  const flags = str(o.o).split(',').map((s) => s.trim()).filter(Boolean);
  const device = str(o.device);
  // mount(2) ignores the filesystem type when a bind/move/remount flag is given: o=bind with
  // type=tmpfs is a bind of any host path. Those flags are refused here, for every type.
  if (flags.some((f) => ['move', 'remount'].includes(f))) refuse(`${label} with o=${str(o.o)}`, 'move and remount change mounts of the host', 'use a plain named volume');
  if (type === 'tmpfs') {
    const bad = flags.find((f) => !/^(size|mode|uid|gid|nr_inodes|nr_blocks)=[0-9a-zA-Z%]+$/.test(f));
    if (bad !== undefined || (device && device !== 'tmpfs')) refuse(`${label} with type=tmpfs o=${str(o.o)} device=${device || '(none)'}`, 'a tmpfs volume takes only size, mode, uid, gid and nr_inodes (a bind flag would mount a host path)', 'drop the other options');
    return;
  }
  if (flags.includes('bind') || flags.includes('rbind')) {
    if (!device.startsWith('/')) refuse(`${label} binding ${JSON.stringify(device)}`, 'a bind volume needs an absolute device path inside the repository', 'bind a directory under the repository');
    checkBindSource(device, ctx, `${label} (o=bind, device=${device})`);
    return;
  }
  if (device || (type && type !== 'none')) refuse(`${label} with type=${type || '(none)'} device=${device || '(none)'}`, 'a volume may only be plain, tmpfs, or a bind to a directory inside the repository (a device or network mount reaches outside it)', 'use a plain named volume or a bind under the repository');
}

// ---- bind sources ----

const DOCKER_SOCKETS = ['/var/run/docker.sock', '/run/docker.sock'];

function under(path: string, dir: string): boolean {
  return path === dir || path.startsWith(dir.endsWith('/') ? dir : dir + '/');
}

function checkBindSource(source: string, ctx: PolicyContext, what: string): void {
  // A pin of this repository (a root-only directory): what the endpoint made from a checked source.
  if (ctx.pinsDir && source.startsWith(ctx.pinsDir + '/') && /^p-[0-9a-f]{16}$/.test(source.slice(ctx.pinsDir.length + 1))) return;
  if (under(source, join(ctx.runDir, 'docker-pins'))) refuse(what, 'it names a pinned bind source of another repository (a volume a fork inherited keeps its parent\'s)', 'recreate the volume or container in this repository (docker volume rm / docker rm, then create it again)');
  const r = resolveInside(source, [ctx.repoPath, ctx.secretsDir]);
  const isSocket = (p: string) => DOCKER_SOCKETS.includes(p) || p === ctx.proxySocket || (under(p, ctx.runDir) && !under(p, ctx.secretsDir)) || /docker\.sock$/.test(p);
  if (isSocket(r.path) || isSocket(source)) refuse(`${what} mounts a Docker socket`, 'a Docker socket in a container is root on the host', 'talk to Docker from the sandbox (DOCKER_HOST), not from a container');
  if (!r.inside) refuse(what, `its source ${r.path === source ? source : `${source} (resolves to ${r.path})`} is outside the repository ${ctx.repoPath}`, `bind a directory under ${ctx.repoPath}, or use a named volume`);
  if (r.path === ctx.repoPath || under(r.path, join(ctx.repoPath, '.tine'))) {
    refuse(what, 'the repository root holds the Docker data-root (.tine), which the daemon runs as root', `bind a subdirectory of ${ctx.repoPath} instead (e.g. ${ctx.repoPath}/app)`);
  }
  if (ctx.pinnedOnly && under(r.path, ctx.repoPath)) {
    refuse(what, 'its source is a path inside the repository, not a pin: the container was made past this endpoint (as root, or before pins), and dockerd would look the path up again at the mount, where a symlink may now stand', 'recreate the container through this endpoint (docker rm, then docker run) so its bind is pinned');
  }
}

/**
 * Resolve `source` component by component (lstat/readlink, `..` and symlinks), refusing as
 * soon as it leaves every root (never following a link out and back in). A nonexistent
 * tail is fine once its existing prefix is inside. Components above a root are compared
 * by name only: the roots are host paths, not the sandbox user's.
 */
export function resolveInside(source: string, roots: string[], maxLinks = 40): { inside: boolean; path: string } {
  if (!source.startsWith('/')) return { inside: false, path: source };
  const rootParts = roots.map((r) => r.split('/').filter(Boolean));
  let pending = source.split('/').filter(Boolean);
  const cur: string[] = [];
  let links = 0;
  let missing = false;
  const state = () => {
    // inside: at or below a root; above: a prefix of some root (may still enter it).
    for (const rp of rootParts) if (cur.length >= rp.length && rp.every((c, i) => cur[i] === c)) return 'inside';
    for (const rp of rootParts) if (cur.length < rp.length && cur.every((c, i) => rp[i] === c)) return 'above';
    return 'outside';
  };
  while (pending.length) {
    const c = pending.shift()!;
    if (c === '.') continue;
    if (c === '..') {
      const was = state();
      cur.pop();
      if (was === 'inside' && state() !== 'inside') return { inside: false, path: '/' + [...cur, ...pending].join('/') };
      continue;
    }
    cur.push(c);
    const s = state();
    if (s === 'outside') return { inside: false, path: '/' + [...cur, ...pending].join('/') };
    if (s === 'above' || missing) continue;
    const p = '/' + cur.join('/');
    let st;
    try {
      st = lstatSync(p);
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ENOENT' || (err as NodeJS.ErrnoException).code === 'ENOTDIR') { missing = true; continue; }
      throw err;
    }
    if (st.isSymbolicLink()) {
      if (++links > maxLinks) return { inside: false, path: p };
      const target = readlinkSync(p);
      cur.pop();
      const t = target.split('/').filter(Boolean);
      if (target.startsWith('/')) cur.length = 0;
      pending = [...t, ...pending];
      // Following an absolute link restarts from /: it is inside only if it lands inside.
    }
  }
  return { inside: state() === 'inside', path: '/' + cur.join('/') };
}
