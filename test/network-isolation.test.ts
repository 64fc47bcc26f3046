// Network isolation between repositories (issue 6): each repository's dockerd, containers,
// shell and hooks live in its own network namespace. A fork cannot connect to its parent's
// service (nor the parent to the fork's), each reaches its own, the host reaches both, and
// a repository reaches the outside (a namespace this test makes, through masquerade).
import test from 'ava';
import { existsSync, writeFileSync, mkdirSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { execFileSync, spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { makeTestHost, tineHostBin, type TestHost } from './helpers/host.js';
import { writeCounterApp, openTestHostForSandbox, getCounter, teardownLifecycleHost } from './helpers/lifecycle-app.js';
import { repoNetworkNames, networkTag, nftTableName, hostNetworkIsRepoNetwork } from '../src/network/netns.js';
import { helperPath } from '../src/sandbox/helper.js';

let host: TestHost;
let parent: any;
let fork: any;
// "The outside": a namespace of this test, behind a veth whose host end is not a repository's.
const OUT_NS = `tinetest-out-${process.pid}`;
const OUT_IF = `tx${process.pid % 100000}`;
const OUT_HOST_IP = '198.18.77.1';
const OUT_NS_IP = '198.18.77.2';
let outsideServer: ChildProcess | undefined;

const cfg = () => ({ runDir: host.runDir, addressBlock: host.addressBlock });
// The system's nft, not node_modules/.bin/nft (npx puts that first on PATH).
const nftTables = () => execFileSync('/usr/sbin/nft', ['list', 'tables'], { encoding: 'utf8' });
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** curl inside the repository's sandbox; returns curl's exit code and output (bounded: 2 s). */
function curlFrom(ref: string, url: string) {
  const r = host.run(['repo', 'exec', ref, '--', 'sh', '-c', `curl -s --max-time 2 ${url}; echo " curl-rc=$?"`], { timeoutMs: 60_000 });
  const m = / curl-rc=(\d+)/.exec(r.stdout);
  return { code: m ? Number(m[1]) : -1, out: r.stdout, all: r.stdout + r.stderr };
}

/** busybox nc from a container of the repository (host networking = the repo's namespace). */
function ncFromContainer(ref: string, ip: string, port: number) {
  const r = host.run(['repo', 'exec', ref, '--', 'sh', '-c',
    `printf 'GET /cgi-bin/n HTTP/1.0\\r\\n\\r\\n' | docker run --rm -i --network host tine-busybox nc -w 2 ${ip} ${port}; echo " nc-rc=$?"`], { timeoutMs: 90_000 });
  const m = / nc-rc=(\d+)/.exec(r.stdout);
  return { code: m ? Number(m[1]) : -1, out: r.stdout, all: r.stdout + r.stderr };
}

test.before(async () => {
  host = makeTestHost({ size: '4G' });
  openTestHostForSandbox(host);
  const src = join(host.dir, 'src');
  writeCounterApp(src);
  const must = (args: string[]) => {
    const r = host.run(args, { timeoutMs: 180_000 });
    if (r.code !== 0) throw new Error(`${args.join(' ')}: ${r.stdout}${r.stderr}`);
    return r.json.data;
  };
  must(['repo', 'create', 'app', '--from', src]);
  parent = must(['repo', 'up', 'app']);
  fork = must(['repo', 'fork', 'app', '--tag', 't', '--up']);
  // The outside namespace, with a tiny HTTP server on OUT_NS_IP:9000.
  execFileSync('ip', ['netns', 'add', OUT_NS]);
  execFileSync('ip', ['link', 'add', OUT_IF, 'type', 'veth', 'peer', 'name', 'eth0', 'netns', OUT_NS]);
  execFileSync('ip', ['addr', 'add', `${OUT_HOST_IP}/30`, 'dev', OUT_IF]);
  execFileSync('ip', ['link', 'set', OUT_IF, 'up']);
  execFileSync('ip', ['-n', OUT_NS, 'addr', 'add', `${OUT_NS_IP}/30`, 'dev', 'eth0']);
  execFileSync('ip', ['-n', OUT_NS, 'link', 'set', 'eth0', 'up']);
  execFileSync('ip', ['-n', OUT_NS, 'link', 'set', 'lo', 'up']);
  const www = join(host.dir, 'outside-www');
  mkdirSync(www, { recursive: true });
  writeFileSync(join(www, 'index.html'), 'outside-ok\n');
  // No route back to the repositories' block in there: an answer proves the masquerade.
  outsideServer = spawn('nsenter', [`--net=/run/netns/${OUT_NS}`, 'busybox', 'httpd', '-f', '-p', `${OUT_NS_IP}:9000`, '-h', www], { stdio: 'ignore' });
  for (let i = 0; i < 50; i++) {
    if (spawnSync('curl', ['-s', '--max-time', '1', `http://${OUT_NS_IP}:9000/`], { encoding: 'utf8' }).stdout.includes('outside-ok')) break;
    await sleep(100);
  }
});

test.after.always(async () => {
  if (outsideServer?.pid) { try { process.kill(outsideServer.pid, 'SIGKILL'); } catch { /* gone */ } }
  spawnSync('ip', ['link', 'del', OUT_IF]);
  spawnSync('ip', ['netns', 'del', OUT_NS]);
  if (!host) return;
  try {
    await teardownLifecycleHost(host);
  } finally {
    host.cleanup();
  }
});

test.serial('each repository runs in its own namespace; info shows its addresses and the active layer', (t) => {
  const setup = host.run(['setup']);
  t.is(setup.code, 0, setup.stdout);
  t.true(setup.json.steps.some((s: { step: string }) => s.step === 'network'), 'setup checked the kernel network features');
  t.false(nftTables().includes(`${nftTableName(cfg())}-check`), 'its scratch table is gone');
  t.not(parent.ip, fork.ip);
  // The daemon itself runs in the repository's namespace.
  const pid = Number(execFileSync('cat', [join(host.runDir, `docker-${fork.networkId}.pid`)], { encoding: 'utf8' }).trim());
  t.true(hostNetworkIsRepoNetwork(cfg(), fork.networkId, pid), 'the fork\'s dockerd is in the fork\'s namespace');
  t.false(hostNetworkIsRepoNetwork(cfg(), parent.networkId, pid));
  for (const rec of [parent, fork]) {
    const n = repoNetworkNames(cfg(), rec.networkId);
    t.true(existsSync(n.netnsFile), `${n.netnsFile} exists`);
    t.true(existsSync(`/sys/class/net/${n.hostInterface}`), `${n.hostInterface} exists`);
    const info = host.run(['repo', 'info', rec.ref]).json.data;
    t.deepEqual(info.confinement.network, 'isolated');
    t.is(info.addresses.length, 6);
    t.is(info.addresses[0], rec.ip);
    // The daemon is in the namespace: its own view of addresses is the repo's.
    const own = host.run(['repo', 'exec', rec.ref, '--', 'sh', '-c', 'cat /proc/net/fib_trie']);
    t.true(own.stdout.includes(rec.ip), 'the sandbox sees its own address');
    t.false(own.stdout.includes(rec === parent ? fork.ip : parent.ip), 'and not the other repo\'s');
  }
});

test.serial('3: the fork\'s shell cannot connect to the parent\'s service (refused, fast); it reaches its own', (t) => {
  const started = Date.now();
  const toParent = curlFrom('app:t', `http://${parent.ip}:8080/cgi-bin/n`);
  t.is(toParent.code, 7, `curl: connection refused (reject, not a hang): ${toParent.all}`);
  t.true(Date.now() - started < 30_000);
  const own = curlFrom('app:t', `http://${fork.ip}:8080/cgi-bin/n`);
  t.is(own.code, 0, own.all);
  t.regex(own.out, /^\d+/);
});

test.serial('3: the fork\'s container cannot connect to the parent\'s service; it reaches its own', (t) => {
  const toParent = ncFromContainer('app:t', parent.ip, 8080);
  t.false(/HTTP\/1\.\d 200/.test(toParent.out), `no answer from the parent: ${toParent.all}`);
  t.not(toParent.code, 0, toParent.all);
  const own = ncFromContainer('app:t', fork.ip, 8080);
  t.regex(own.out, /HTTP\/1\.\d 200/, own.all);
});

test.serial('3: the parent cannot connect to the fork\'s service (shell and container); the host reaches both', (t) => {
  const shell = curlFrom('app', `http://${fork.ip}:8080/cgi-bin/n`);
  t.is(shell.code, 7, shell.all);
  const container = ncFromContainer('app', fork.ip, 8080);
  t.false(/HTTP\/1\.\d 200/.test(container.out), container.all);
  t.not(getCounter(parent.ip, 2), null, 'host → parent');
  t.not(getCounter(fork.ip, 2), null, 'host → fork');
  // The parent reaches its own service.
  t.is(curlFrom('app', `http://${parent.ip}:8080/cgi-bin/n`).code, 0);
});

test.serial('a repository reaches the outside through the masquerade; not the host itself', (t) => {
  const out = curlFrom('app:t', `http://${OUT_NS_IP}:9000/`);
  t.is(out.code, 0, out.all);
  t.regex(out.out, /outside-ok/);
  // A service of the host (a listener on the host's side of the outside veth) is refused.
  const toHost = curlFrom('app:t', `http://${OUT_HOST_IP}:9/`);
  t.is(toHost.code, 7, toHost.all);
});

const IPT = '/usr/sbin/iptables';
let hadIpFilterTable = true;
let forwardPolicyChanged = false;
function restoreForwardPolicy(): void {
  if (!forwardPolicyChanged) return;
  spawnSync(IPT, ['-P', 'FORWARD', 'ACCEPT']);
  // iptables-nft made `table ip filter` for our policy: leave the host as we found it.
  if (!hadIpFilterTable) spawnSync('/usr/sbin/nft', ['delete', 'table', 'ip', 'filter']);
  forwardPolicyChanged = false;
}
test.after.always(restoreForwardPolicy);

test.serial('a host FORWARD DROP policy (as Docker sets it) does not cut a repository off the outside', (t) => {
  if (!existsSync(IPT)) return t.pass('no iptables on this host');
  hadIpFilterTable = /table ip filter\b/.test(nftTables());
  const before = execFileSync(IPT, ['-S', 'FORWARD'], { encoding: 'utf8' });
  t.regex(before, /^-P FORWARD ACCEPT/m, 'starts from an ACCEPT policy');
  forwardPolicyChanged = true;
  execFileSync(IPT, ['-P', 'FORWARD', 'DROP']);
  try {
    const r = host.run(['repo', 'create', 'fw']);
    t.is(r.code, 0, r.stdout);
    const out = curlFrom('fw', `http://${OUT_NS_IP}:9000/`);
    t.is(out.code, 0, `outside reachable under FORWARD DROP: ${out.all}`);
    t.regex(execFileSync(IPT, ['-S', 'FORWARD'], { encoding: 'utf8' }), new RegExp(`tine-${networkTag(cfg())}`), 'our tagged ACCEPT rules are there');
    t.is(curlFrom('fw', `http://${parent.ip}:8080/cgi-bin/n`).code, 7, 'still no way into another repository');
    t.is(host.run(['repo', 'delete', 'fw', '--yes']).code, 0);
  } finally {
    restoreForwardPolicy();
  }
});

test.serial('repo exec works for a repository that is down (its namespace is made on first use)', (t) => {
  const r = host.run(['repo', 'create', 'quiet']);
  t.is(r.code, 0, r.stdout);
  const n = repoNetworkNames(cfg(), r.json.data.networkId);
  t.false(existsSync(n.netnsFile), 'no namespace before first use');
  const ex = host.run(['repo', 'exec', 'quiet', '--', 'sh', '-c', 'cat /proc/net/fib_trie']);
  t.is(ex.code, 0, ex.stdout + ex.stderr);
  t.true(ex.stdout.includes(r.json.data.ip));
  t.true(existsSync(n.netnsFile));
  t.is(host.run(['repo', 'info', 'quiet']).json.data.state, 'down');
  // After the namespace vanished (as after a reboot), the next exec makes it again.
  execFileSync('ip', ['link', 'del', n.hostInterface]);
  execFileSync('ip', ['netns', 'del', n.netns]);
  t.is(host.run(['repo', 'info', 'quiet']).json.data.confinement.network, 'absent');
  t.is(host.run(['repo', 'exec', 'quiet', '--', 'true']).code, 0);
  t.is(host.run(['repo', 'info', 'quiet']).json.data.confinement.network, 'isolated');
});

test.serial('first use from four processes at once: every one runs, in one namespace', async (t) => {
  const r = host.run(['repo', 'create', 'race']);
  t.is(r.code, 0, r.stdout);
  const runs = await Promise.all(Array.from({ length: 4 }, () => host.runAsync(['repo', 'exec', 'race', '--', 'sh', '-c', 'cat /proc/net/fib_trie'], { timeoutMs: 60_000 })));
  for (const x of runs) {
    t.is(x.code, 0, x.stdout + x.stderr);
    t.true(x.stdout.includes(r.json.data.ip));
  }
  t.true(existsSync(repoNetworkNames(cfg(), r.json.data.networkId).netnsFile));
  t.is(host.run(['repo', 'delete', 'race', '--yes']).code, 0);
});

test.serial('fail closed: when the namespace cannot be made, exec is refused and nothing runs', (t) => {
  const r = host.run(['repo', 'create', 'broken']);
  t.is(r.code, 0, r.stdout);
  const n = repoNetworkNames(cfg(), r.json.data.networkId);
  // A plain file where the namespace should be: `ip link … netns` cannot use it.
  mkdirSync('/run/netns', { recursive: true });
  writeFileSync(n.netnsFile, '');
  const marker = join(r.json.data.path, 'ran');
  const ex = host.run(['repo', 'exec', 'broken', '--', 'sh', '-c', `touch ${marker}`]);
  t.is(ex.code, 1, ex.stdout + ex.stderr);
  t.is(ex.json?.error?.code, 'NETWORK_SETUP_FAILED', ex.stdout);
  t.true(ex.json.error.next.length > 0);
  t.false(existsSync(marker), 'the command did not run');
  t.false(existsSync(`/sys/class/net/${n.hostInterface}`), 'no half-made veth left');
  // The helper itself refuses a --netns that is not a namespace (exit 125, nothing runs).
  writeFileSync(n.netnsFile, '');
  const h = spawnSync(helperPath(), ['--uid', '7111', '--gid', '7111', '--hostname', 'x', '--repo', r.json.data.path, '--netns', n.netnsFile, '--landlock', 'off', '--', 'sh', '-c', `touch ${marker}`], { encoding: 'utf8' });
  t.is(h.status, 125, h.stderr);
  t.regex(h.stderr, /network namespace/);
  t.false(existsSync(marker));
  spawnSync('rm', ['-f', n.netnsFile]);
  const fixed = host.run(['repo', 'exec', 'broken', '--', 'true']);
  t.is(fixed.code, 0, 'repaired on the next use once the obstacle is gone');
});

test.serial('delete removes the namespace, the veth and (with the last repo network) the filter table', (t) => {
  const n = repoNetworkNames(cfg(), fork.networkId);
  t.true(existsSync(n.netnsFile));
  const del = host.run(['repo', 'delete', 'app:t', '--yes'], { timeoutMs: 120_000 });
  t.is(del.code, 0, del.stdout + del.stderr);
  t.false(existsSync(n.netnsFile), 'namespace gone');
  t.false(existsSync(`/sys/class/net/${n.hostInterface}`), 'host veth gone');
  t.false(execFileSync('ip', ['route'], { encoding: 'utf8' }).includes(n.hostInterface), 'its route gone');
  t.true(nftTables().includes(nftTableName(cfg())), 'the filter stays while other repos have networks');
  // A delete killed after its decision is finished by the next command, network included.
  const c = host.run(['repo', 'create', 'crashy']);
  t.is(c.code, 0, c.stdout);
  t.is(host.run(['repo', 'exec', 'crashy', '--', 'true']).code, 0);
  const cn = repoNetworkNames(cfg(), c.json.data.networkId);
  t.true(existsSync(cn.netnsFile));
  const killed = host.run(['repo', 'delete', 'crashy', '--yes'], { env: { TINE_FAILPOINT: 'delete:decided' } });
  t.is(killed.signal, 'SIGKILL');
  t.true(existsSync(cn.netnsFile), 'killed before the network was removed');
  const list = host.run(['repo', 'list']);
  t.is(list.code, 0, list.stdout);
  t.false(list.json.data.repos.some((x: { ref: string }) => x.ref === 'crashy'));
  t.false(existsSync(cn.netnsFile), 'the repair removed the namespace');
  t.false(existsSync(`/sys/class/net/${cn.hostInterface}`), 'and the veth');
  for (const ref of ['app', 'quiet', 'broken']) {
    const d = host.run(['repo', 'delete', ref, '--yes'], { timeoutMs: 120_000 });
    t.is(d.code, 0, d.stdout + d.stderr);
  }
  t.false(nftTables().includes(nftTableName(cfg())), 'the last one took the table');
  t.false(execFileSync('ip', ['-o', 'link'], { encoding: 'utf8' }).includes(`tn${networkTag(cfg())}`));
});

test('a host config whose addressBlock is loopback, too small or not a CIDR is refused naming the field', (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'tine-netcfg-'));
  try {
    for (const [block, why] of [['127.64.0.0/10', /loopback/], ['10.0.0.0/16', /\/13 or larger/], ['10.64.0.1/13', /not aligned/], ['nope', /CIDR/]] as const) {
      const file = join(dir, `host-${block.replace(/\W/g, '_')}.json`);
      writeFileSync(file, JSON.stringify({ addressBlock: block, stateDir: join(dir, 'state'), runDir: join(dir, 'run') }));
      const r = spawnSync(process.execPath, [tineHostBin, 'repo', 'list', '-o', 'json'], { env: { ...process.env, TINE_HOST_CONFIG: file }, encoding: 'utf8' });
      const env = JSON.parse(r.stdout.trim().split('\n').pop()!);
      t.is(r.status, 1, r.stdout);
      t.is(env.error.code, 'HOST_CONFIG_INVALID');
      t.regex(env.error.message, /field addressBlock/);
      t.regex(env.error.message, why);
      t.false(existsSync(join(dir, 'state')), 'nothing written');
    }
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});
