// Network isolation between repositories: one named network namespace per repository.
//
// Why a namespace (and not cgroup socket hooks or nftables by cgroup): this host family
// runs cgroup v1, where nft's `socket cgroupv2` match does not exist, and a fork inherits
// its parent's Docker networks (same bridge names), so any filter keyed on bridges or
// container addresses would see parent and fork as one. A namespace per repository is a
// boundary the kernel keeps for every process in it (dockerd, its host-network containers,
// the sandbox, the Tinefile hooks) whatever they do, and its only door is one veth pair
// whose host end the filter below names.
//
// Layout, per repository (network id N, install tag T = hash of the run dir, so a test host
// and a real install on one machine never share a name):
//   /run/netns/tine-T-N        the namespace (ip netns add)
//   tnTN  <-veth->  tine0      host end / namespace end
//   namespace: lo up, the repo's six service addresses (/32) on tine0, the gateway
//              (addressBlock + 1) on-link, default route via the gateway
//   host: gateway/32 on tnTN, route to the repo's /29 via tnTN (src = gateway)
// Filter: one nft table per install (`ip tine-T`): forwarded traffic between any two
// `tn*` interfaces is rejected (TCP reset / ICMP admin-prohibited: fast failure, never a
// hang), both directions, whichever install; new connections from a repository to the
// host itself are rejected (the host is not "the outside"); replies are allowed; traffic
// from the block to anything else is masqueraded (the repository reaches the outside).
// The host reaches every repository through its route (OUTPUT is not filtered).
import { spawnSync } from 'node:child_process';
import { existsSync, readFileSync, readdirSync, statSync, writeFileSync, rmSync, mkdirSync } from 'node:fs';
import { join } from 'node:path';
import { installTag, type HostConfig } from '../host/config.js';
import { repoAddresses, repoSubnet, gatewayAddress } from '../repo/network.js';
import { TineError, EXIT } from '../errors.js';

type NetConfig = Pick<HostConfig, 'runDir' | 'addressBlock'>;

/** Every host-side interface of every install starts with this (the filter's wildcard). */
export const HOST_IF_PREFIX = 'tn';
/** The namespace end of the veth (names are per namespace, so one name for all). */
export const NS_IF = 'tine0';
const NETNS_DIR = '/run/netns';
const TOOL_PATH = '/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin';

/** 4 hex digits from the run dir: unique per install, short enough for 15-char interface names. */
const tags = new Map<string, string>();
export function networkTag(config: Pick<HostConfig, 'runDir'>): string {
  let tag = tags.get(config.runDir);
  if (!tag) tags.set(config.runDir, (tag = installTag(config, 4)));
  return tag;
}

export interface RepoNetworkNames {
  netns: string;
  /** /run/netns/<netns>: what `nsenter --net=` and the sandbox's setns open. */
  netnsFile: string;
  hostInterface: string;
}

export function repoNetworkNames(config: Pick<HostConfig, 'runDir'>, networkId: number): RepoNetworkNames {
  const tag = networkTag(config);
  const netns = `tine-${tag}-${networkId}`;
  // tn + 4 + at most 5 digits = 11 <= IFNAMSIZ-1 (15).
  return { netns, netnsFile: join(NETNS_DIR, netns), hostInterface: `${HOST_IF_PREFIX}${tag}${networkId}` };
}

export const nftTableName = (config: Pick<HostConfig, 'runDir'>) => `tine-${networkTag(config)}`;
/** Written after the table was loaded in this boot: lets the fast path skip spawning nft. */
const tableMarker = (config: Pick<HostConfig, 'runDir'>) => join(config.runDir, `network-${networkTag(config)}.table`);
/** Written as the last step of building a repository's network: until then it is not ready. */
const readyMarker = (config: Pick<HostConfig, 'runDir'>, networkId: number) => join(config.runDir, `network-${networkTag(config)}-${networkId}.ready`);

let bootIdCache: string | undefined;
function bootId(): string {
  if (bootIdCache) return bootIdCache;
  try {
    return (bootIdCache = readFileSync('/proc/sys/kernel/random/boot_id', 'utf8').trim());
  } catch {
    return 'unknown';
  }
}

function networkError(what: string, detail: string): TineError {
  return new TineError('NETWORK_SETUP_FAILED', EXIT.failure, `network isolation: ${what}: ${detail}`, {
    next: [
      { description: 'Check the kernel features the network layer needs (network namespaces, veth, nf_tables)', run: 'tine setup' },
    ],
  });
}

/** Run a tool; throw NETWORK_SETUP_FAILED with its stderr when it fails. */
function tool(what: string, cmd: string, args: string[], input?: string): string {
  const r = spawnSync(cmd, args, { encoding: 'utf8', input, env: { PATH: TOOL_PATH, LANG: 'C' }, timeout: 30_000 });
  if (r.error) throw networkError(what, `${cmd}: ${r.error.message}`);
  if (r.status !== 0) throw networkError(what, `${cmd} ${args.join(' ')} (exit ${r.status}): ${(r.stderr || r.stdout).trim().split('\n').slice(-3).join(' | ')}`);
  return r.stdout;
}

/** Run a tool, ignoring failure (teardown). Returns whether it succeeded. */
function tryTool(cmd: string, args: string[], input?: string): boolean {
  const r = spawnSync(cmd, args, { encoding: 'utf8', input, env: { PATH: TOOL_PATH, LANG: 'C' }, timeout: 30_000 });
  return !r.error && r.status === 0;
}

const linkExists = (name: string) => existsSync(`/sys/class/net/${name}`);

const LOCK_TIMEOUT_MS = 30_000;
const pause = (ms: number) => Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, ms);

/**
 * One builder or remover of this install's networks at a time (synchronous: the sandbox
 * spawn is). Without it, removing the last repository network could delete the filter
 * table just after another process loaded it for a new one. An O_EXCL file holding the
 * holder's pid; a dead holder's lock is taken over.
 */
function withNetworkLock<T>(config: Pick<HostConfig, 'runDir'>, fn: () => T): T {
  const file = join(config.runDir, `network-${networkTag(config)}.lock`);
  mkdirSync(config.runDir, { recursive: true, mode: 0o711 });
  const deadline = Date.now() + LOCK_TIMEOUT_MS;
  for (let i = 0; ; i++) {
    try {
      writeFileSync(file, String(process.pid), { flag: 'wx', mode: 0o600 });
      break;
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'EEXIST') throw err;
      let holder = 0;
      try { holder = Number.parseInt(readFileSync(file, 'utf8'), 10); } catch { /* being written or just released */ }
      let alive = true;
      if (holder > 0) { try { process.kill(holder, 0); } catch (e) { alive = (e as NodeJS.ErrnoException).code === 'EPERM'; } }
      if (!alive) { rmSync(file, { force: true }); continue; }
      if (Date.now() > deadline || i > 10_000) {
        throw new TineError('NETWORK_BUSY', EXIT.conflict, `network isolation: another process (pid ${holder}) has been changing repository networks for ${LOCK_TIMEOUT_MS / 1000}s`, {
          details: { lock: file },
          next: [{ description: 'Try again; if no tine process is running, remove the lock file', run: `rm ${file}` }],
        });
      }
      pause(Math.min(50, 2 + i));
    }
  }
  try {
    return fn();
  } finally {
    rmSync(file, { force: true });
  }
}

/**
 * Is the repository's network layer in place? Two stat calls and two small reads, no
 * process: this runs on every `repo exec`. (The namespace and the host end of its veth
 * exist, its build finished in this boot — not one still adding addresses in another
 * process — and the filter table was loaded in this boot.)
 */
export function repoNetworkActive(config: NetConfig, networkId: number): boolean {
  const n = repoNetworkNames(config, networkId);
  if (!existsSync(n.netnsFile) || !linkExists(n.hostInterface)) return false;
  try {
    const boot = bootId();
    return readFileSync(readyMarker(config, networkId), 'utf8') === boot && readFileSync(tableMarker(config), 'utf8') === boot;
  } catch {
    return false;
  }
}

/** Does this pid (the repo's dockerd) run inside the repository's namespace? (For the Docker proxy.) */
export function hostNetworkIsRepoNetwork(config: NetConfig, networkId: number, pid: number): boolean {
  const n = repoNetworkNames(config, networkId);
  try {
    const a = statSync(`/proc/${pid}/ns/net`);
    const b = statSync(n.netnsFile);
    return a.ino === b.ino && a.dev === b.dev;
  } catch {
    return false;
  }
}

function tableScript(config: NetConfig): string {
  const table = nftTableName(config);
  const tn = `"${HOST_IF_PREFIX}*"`;
  // add + delete + define in one transaction: an atomic, idempotent replace.
  return `table ip ${table} {}
delete table ip ${table}
table ip ${table} {
  chain forward {
    type filter hook forward priority -10; policy accept;
    iifname ${tn} oifname ${tn} meta l4proto tcp reject with tcp reset
    iifname ${tn} oifname ${tn} reject with icmp type admin-prohibited
    # The host's own container networks (Docker's bridges and their veths) are the host's,
    # not the outside: a reverse proxy there reaches every repository and would relay.
    iifname ${tn} oifname { "docker0", "br-*", "veth*" } meta l4proto tcp reject with tcp reset
    iifname ${tn} oifname { "docker0", "br-*", "veth*" } reject with icmp type admin-prohibited
  }
  chain input {
    type filter hook input priority -10; policy accept;
    iifname ${tn} ct state established,related accept
    iifname ${tn} meta l4proto tcp reject with tcp reset
    iifname ${tn} reject with icmp type admin-prohibited
  }
  chain postrouting {
    type nat hook postrouting priority 100; policy accept;
    ip saddr ${config.addressBlock} oifname != ${tn} masquerade
  }
}
`;
}

const iptablesComment = (config: NetConfig) => `tine-${networkTag(config)}`;

/**
 * Docker on the host sets the FORWARD policy to DROP (iptables), and a packet must pass
 * every base chain on a hook: our nft accept cannot overrule it. So where iptables has a
 * DOCKER-USER chain or a DROP policy, repository traffic to and from the outside (never
 * between repositories) is accepted there too, tagged with a comment so teardown finds it.
 */
function iptablesForwardRules(config: NetConfig): string[][] {
  const c = ['-m', 'comment', '--comment', iptablesComment(config)];
  return [
    ['-i', `${HOST_IF_PREFIX}+`, '!', '-o', `${HOST_IF_PREFIX}+`, ...c, '-j', 'ACCEPT'],
    ['!', '-i', `${HOST_IF_PREFIX}+`, '-o', `${HOST_IF_PREFIX}+`, '-m', 'conntrack', '--ctstate', 'RELATED,ESTABLISHED', ...c, '-j', 'ACCEPT'],
  ];
}

function iptablesForwardChain(): string | null {
  const r = spawnSync('iptables', ['-S', 'FORWARD'], { encoding: 'utf8', env: { PATH: TOOL_PATH }, timeout: 10_000 });
  if (r.error || r.status !== 0) return null;
  if (tryTool('iptables', ['-n', '-L', 'DOCKER-USER'])) return 'DOCKER-USER';
  return /^-P FORWARD (DROP|REJECT)/m.test(r.stdout) ? 'FORWARD' : null;
}

function openIptablesForward(config: NetConfig): void {
  const chain = iptablesForwardChain();
  if (!chain) return;
  for (const rule of iptablesForwardRules(config).reverse()) {
    if (!tryTool('iptables', ['-C', chain, ...rule])) tool('allow repository traffic through iptables FORWARD', 'iptables', ['-I', chain, '1', ...rule]);
  }
}

function closeIptablesForward(config: NetConfig): void {
  for (const chain of ['DOCKER-USER', 'FORWARD']) {
    for (const rule of iptablesForwardRules(config)) {
      for (let i = 0; i < 5 && tryTool('iptables', ['-D', chain, ...rule]); i++) { /* every copy */ }
    }
  }
}

/** Load (or reload) the install's filter table and mark it loaded for this boot. */
export function ensureFilter(config: NetConfig): void {
  tool('load the nftables filter', 'nft', ['-f', '-'], tableScript(config));
  openIptablesForward(config);
  mkdirSync(config.runDir, { recursive: true, mode: 0o711 });
  writeFileSync(tableMarker(config), bootId(), { mode: 0o644 });
}

function enableForwarding(): void {
  const f = '/proc/sys/net/ipv4/ip_forward';
  try {
    if (readFileSync(f, 'utf8').trim() !== '1') writeFileSync(f, '1');
  } catch (err) {
    throw networkError('enable IPv4 forwarding', (err as Error).message);
  }
}

export interface EnsureResult extends RepoNetworkNames {
  created: boolean;
  addresses: string[];
}

/**
 * Make the repository's namespace, veth, addresses, routes and the install's filter, or
 * find them in place (fast: see repoNetworkActive). Idempotent, and repairs any part that
 * is missing (after a reboot the namespace is gone; it is made again here, lazily). On a
 * failure, what this call made is removed and NETWORK_SETUP_FAILED is thrown: the caller
 * must then not run anything on the host's network instead.
 */
export function ensureRepoNetwork(config: NetConfig, networkId: number, opts: { reloadFilter?: boolean } = {}): EnsureResult {
  const n = repoNetworkNames(config, networkId);
  const addresses = repoAddresses(networkId, config);
  if (repoNetworkActive(config, networkId)) {
    // Starting a daemon is slow anyway: there the filter is reloaded (a table flushed by hand comes back).
    if (opts.reloadFilter) withNetworkLock(config, () => ensureFilter(config));
    return { ...n, created: false, addresses };
  }
  return withNetworkLock(config, () => {
    // Another process may have finished it while we waited.
    if (repoNetworkActive(config, networkId)) return { ...n, created: false, addresses };
    try {
      buildRepoNetwork(config, networkId, n, addresses);
    } catch (err) {
      removeRepoNetworkUnlocked(config, networkId, { keepFilter: true });
      throw err;
    }
    return { ...n, created: true, addresses };
  });
}

function buildRepoNetwork(config: NetConfig, networkId: number, n: RepoNetworkNames, addresses: string[]): void {
  const gw = gatewayAddress(config);
  // The filter first: no repository interface is ever up without it.
  ensureFilter(config);
  enableForwarding();
  if (!existsSync(n.netnsFile)) {
    const r = spawnSync('ip', ['netns', 'add', n.netns], { encoding: 'utf8', env: { PATH: TOOL_PATH }, timeout: 10_000 });
    // A concurrent first use made it a moment ago: fine.
    if (r.status !== 0 && !existsSync(n.netnsFile)) throw networkError(`create namespace ${n.netns}`, (r.stderr || String(r.error)).trim());
  }
  if (!linkExists(n.hostInterface)) {
    const add = ['link', 'add', n.hostInterface, 'type', 'veth', 'peer', 'name', NS_IF, 'netns', n.netns];
    if (!tryTool('ip', add) && !linkExists(n.hostInterface)) {
      // A namespace end left over (its host end was deleted by hand): remove it, once.
      tryTool('ip', ['-n', n.netns, 'link', 'del', NS_IF]);
      tool(`create veth ${n.hostInterface}`, 'ip', add);
    }
  }
  try {
    writeFileSync(`/proc/sys/net/ipv6/conf/${n.hostInterface}/disable_ipv6`, '1');
  } catch {
    /* no IPv6 on this host: nothing to disable */
  }
  tool(`configure ${n.hostInterface}`, 'ip', ['-batch', '-'], [
    `addr replace ${gw}/32 dev ${n.hostInterface}`,
    `link set ${n.hostInterface} up`,
    `route replace ${repoSubnet(networkId, config)} dev ${n.hostInterface} scope link src ${gw}`,
  ].join('\n') + '\n');
  tool(`configure namespace ${n.netns}`, 'ip', ['-n', n.netns, '-batch', '-'], [
    'link set lo up',
    ...addresses.map((a) => `addr replace ${a}/32 dev ${NS_IF}`),
    `link set ${NS_IF} up`,
    `route replace ${gw}/32 dev ${NS_IF} scope link`,
    `route replace default via ${gw} dev ${NS_IF} src ${addresses[0]}`,
  ].join('\n') + '\n');
  // IPv4 only: no IPv6 link-local path between the repository and the host.
  tryTool('nsenter', [`--net=${n.netnsFile}`, 'sysctl', '-qw', `net.ipv6.conf.${NS_IF}.disable_ipv6=1`]);
  writeFileSync(readyMarker(config, networkId), bootId(), { mode: 0o644 });
}

/** Host-side interfaces of this install that still exist. */
function installInterfaces(config: Pick<HostConfig, 'runDir'>): string[] {
  const prefix = `${HOST_IF_PREFIX}${networkTag(config)}`;
  try {
    return readdirSync('/sys/class/net').filter((i) => i.startsWith(prefix) && /^\d+$/.test(i.slice(prefix.length)));
  } catch {
    return [];
  }
}

/** Remove the install's filter table and iptables exceptions (the last repository network went). */
export function removeFilter(config: NetConfig): void {
  tryTool('nft', ['delete', 'table', 'ip', nftTableName(config)]);
  closeIptablesForward(config);
  rmSync(tableMarker(config), { force: true });
}

/**
 * Remove the repository's veth (both ends go together) and namespace; idempotent. When no
 * repository network of this install is left, the filter table goes too.
 */
export function removeRepoNetwork(config: NetConfig, networkId: number, opts: { keepFilter?: boolean } = {}): { removed: boolean } {
  return withNetworkLock(config, () => removeRepoNetworkUnlocked(config, networkId, opts));
}

function removeRepoNetworkUnlocked(config: NetConfig, networkId: number, opts: { keepFilter?: boolean } = {}): { removed: boolean } {
  const n = repoNetworkNames(config, networkId);
  let removed = false;
  rmSync(readyMarker(config, networkId), { force: true });
  if (linkExists(n.hostInterface)) {
    if (!tryTool('ip', ['link', 'del', n.hostInterface]) && linkExists(n.hostInterface)) throw networkError(`remove ${n.hostInterface}`, 'ip link del failed');
    removed = true;
  }
  if (existsSync(n.netnsFile)) {
    if (!tryTool('ip', ['netns', 'del', n.netns]) && existsSync(n.netnsFile)) throw networkError(`remove namespace ${n.netns}`, 'ip netns del failed');
    removed = true;
  }
  if (!opts.keepFilter && installInterfaces(config).length === 0) removeFilter(config);
  return { removed };
}

/** Every repository network of this install, and its filter (test teardown, uninstall). */
export function removeInstallNetwork(config: NetConfig): void {
  const prefix = `tine-${networkTag(config)}-`;
  let names: string[] = [];
  try {
    names = readdirSync(NETNS_DIR).filter((x) => x.startsWith(prefix));
  } catch {
    /* none */
  }
  const ids = new Set<number>(names.map((x) => Number(x.slice(prefix.length))).filter(Number.isInteger));
  const ifPrefix = `${HOST_IF_PREFIX}${networkTag(config)}`;
  for (const i of installInterfaces(config)) ids.add(Number(i.slice(ifPrefix.length)));
  withNetworkLock(config, () => {
    for (const id of ids) removeRepoNetworkUnlocked(config, id, { keepFilter: true });
    removeFilter(config);
  });
}

export interface RepoNetworkStatus {
  network: 'isolated' | 'absent';
  netns: string;
  hostInterface: string;
  addresses: string[];
}

/** What `repo info` shows: `isolated` when the namespace, veth and filter are in place. */
export function repoNetworkStatus(config: NetConfig, networkId: number): RepoNetworkStatus {
  const n = repoNetworkNames(config, networkId);
  return {
    network: repoNetworkActive(config, networkId) ? 'isolated' : 'absent',
    netns: n.netns,
    hostInterface: n.hostInterface,
    addresses: repoAddresses(networkId, config),
  };
}

/** The record's confinement entry for the network layer (the Docker layer adds `docker`). */
export function networkConfinement(config: NetConfig, networkId: number): { network: 'isolated' | 'absent' } {
  return { network: repoNetworkStatus(config, networkId).network };
}

/**
 * The kernel features this layer needs, tried for real with scratch objects that are removed
 * again: network namespaces, veth, nf_tables with reject and masquerade, IPv4 forwarding.
 * Returns the missing ones, named (empty = all there).
 */
export function missingNetworkFeatures(config: NetConfig): string[] {
  const missing: string[] = [];
  const tag = networkTag(config);
  if (!existsSync('/proc/self/ns/net')) missing.push('network namespaces (CONFIG_NET_NS)');
  for (const cmd of ['ip', 'nft', 'nsenter']) {
    if (spawnSync(cmd, ['--version'], { env: { PATH: TOOL_PATH }, stdio: 'ignore' }).error) missing.push(`the ${cmd} command (${cmd === 'nft' ? 'nftables' : cmd === 'ip' ? 'iproute2' : 'util-linux'} package)`);
  }
  if (missing.length) return missing;
  const a = `${HOST_IF_PREFIX}${tag}c0`;
  const b = `${HOST_IF_PREFIX}${tag}c1`;
  if (!tryTool('ip', ['link', 'add', a, 'type', 'veth', 'peer', 'name', b])) missing.push('veth (CONFIG_VETH)');
  tryTool('ip', ['link', 'del', a]);
  const scratch = `tine-${tag}-check`;
  const probe = (rule: string, chain: string) => tryTool('nft', ['-f', '-'], `table ip ${scratch} {\n ${chain}\n}\ndelete table ip ${scratch}\n`.replace('RULE', rule ? `${rule};` : ''));
  if (!probe('', 'chain f { type filter hook forward priority 0; RULE }')) missing.push('nf_tables (CONFIG_NF_TABLES)');
  else {
    if (!probe('meta l4proto tcp reject with tcp reset; reject with icmp type admin-prohibited', 'chain f { type filter hook forward priority 0; RULE }')) missing.push('nftables reject (CONFIG_NFT_REJECT)');
    if (!probe('ct state established accept', 'chain f { type filter hook input priority 0; RULE }')) missing.push('nftables conntrack (CONFIG_NFT_CT)');
    if (!probe('masquerade', 'chain p { type nat hook postrouting priority 100; RULE }')) missing.push('nftables masquerade (CONFIG_NFT_MASQ, CONFIG_NFT_NAT)');
  }
  tryTool('nft', ['delete', 'table', 'ip', scratch]);
  try {
    const f = '/proc/sys/net/ipv4/ip_forward';
    writeFileSync(f, readFileSync(f, 'utf8').trim());
  } catch {
    missing.push('IPv4 forwarding (/proc/sys/net/ipv4/ip_forward not writable)');
  }
  return missing;
}
