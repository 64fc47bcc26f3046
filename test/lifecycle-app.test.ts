// Repository lifecycle with real per-repository dockerds and a busybox image made offline:
// up/down, fork --up of a running app under continuous polling, parallel forks on the same
// port, the Tinefile environment, prefork, orphan-daemon repair, delete and restore.
import test from 'ava';
import { existsSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { execFileSync } from 'node:child_process';
import { makeTestHost, type TestHost } from './helpers/host.js';
import type { HostConfig } from '../src/host/config.js';
import { cgroupPrefix, cgroupPids, cgroupDirs, killCgroupTree } from '../src/docker/daemon.js';
import {
  writeCounterApp, openTestHostForSandbox, getCounter, dockerdFor, teardownLifecycleHost,
} from './helpers/lifecycle-app.js';

let host: TestHost;
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
const sockOf = (rec: { dockerHost: string }) => rec.dockerHost.replace(/^unix:\/\//, '');
const info = (ref: string) => host.run(['repo', 'info', ref]).json.data;

test.before(() => {
  host = makeTestHost({ size: '4G' });
  openTestHostForSandbox(host);
  const src = join(host.dir, 'src');
  writeCounterApp(src);
  const r = host.run(['repo', 'create', 'app', '--from', src]);
  if (r.code !== 0) throw new Error(`create failed: ${r.stdout}${r.stderr}`);
});

test.after.always(async () => {
  if (!host) return;
  await teardownLifecycleHost(host);
  host.cleanup();
});

test.serial('1: repo up serves the counter on its own address; repo down stops it and its daemon', async (t) => {
  const up = host.run(['repo', 'up', 'app'], { timeoutMs: 120_000 });
  t.is(up.code, 0, up.stdout + up.stderr);
  const rec = up.json.data;
  t.is(rec.state, 'up');
  t.false(rec.ip.startsWith('127.'), 'a routable address (the repo runs in its own network namespace)');
  t.is(rec.ip.split('.').slice(0, 2).join('.'), host.addressBlock.split('.').slice(0, 2).join('.'), 'inside the host address block');
  t.deepEqual(up.json.steps.map((s: { step: string }) => s.step).filter((s: string) => ['docker_daemon', 'containers', 'tinefile_up'].includes(s)), ['docker_daemon', 'containers', 'tinefile_up']);
  t.true(existsSync(join(rec.path, '.tine', 'docker', 'overlay2')), 'data-root lives inside the repository');
  t.not(dockerdFor(sockOf(rec)), null);
  const a = getCounter(rec.ip);
  await sleep(300);
  const b = getCounter(rec.ip);
  t.true(a !== null && b !== null && b > a, `counter advances (${a} → ${b})`);
  t.is(getCounter('127.0.0.1'), null, 'it serves on its own address, not on 127.0.0.1');

  t.log(up.json.steps.map((s: { step: string; ms: number }) => `${s.step} ${s.ms}`).join(', '));
  const down = host.run(['repo', 'down', 'app'], { timeoutMs: 120_000 });
  t.log(down.json.steps.map((s: { step: string; ms: number }) => `${s.step} ${s.ms}`).join(', '));
  t.is(down.code, 0, down.stdout + down.stderr);
  t.is(down.json.data.state, 'down');
  t.is(info('app').state, 'down');
  t.is(dockerdFor(sockOf(rec)), null, 'daemon stopped');
  t.false(existsSync(sockOf(rec)), 'socket removed');
  t.deepEqual(cgroupDirs(`${cgroupPrefix({ runDir: host.runDir } as HostConfig)}${rec.networkId}`), [], 'its cgroup parent is gone');
  t.false(readFileSync('/proc/self/mountinfo', 'utf8').includes(join(rec.path, '.tine')), 'no overlay mount left in the repository');
  t.is(getCounter(rec.ip), null, 'nothing serves any more');
  // Down again is a no-op; up again resumes from the persisted counter.
  t.is(host.run(['repo', 'down', 'app']).json.data.changed, false);
  const again = host.run(['repo', 'up', 'app'], { timeoutMs: 120_000 });
  t.is(again.code, 0, again.stdout);
  const c = getCounter(rec.ip);
  t.true(c !== null && c >= b!, `resumed from the persisted value (${b} → ${c})`);
});

test.serial('2+5: fork --up of the running app while the parent is polled every 50 ms: no failed poll; prefork → quiesced; independent', async (t) => {
  const parent = info('app');
  const before = getCounter(parent.ip);
  t.not(before, null);
  const forking = host.runAsync(['repo', 'fork', 'app', '--tag', 't', '--up'], { timeoutMs: 120_000 });
  let finished = false;
  void forking.then(() => (finished = true));
  const polls: (number | null)[] = [];
  const deadline = Date.now() + 120_000;
  for (let i = 0; i < 3000 && Date.now() < deadline; i++) {
    polls.push(getCounter(parent.ip, 1));
    if (finished && polls.length > 10) break;
    await sleep(50);
  }
  const fork = await forking;
  t.is(fork.code, 0, fork.stdout + fork.stderr);
  t.true(polls.length > 10, `polled ${polls.length} times`);
  t.deepEqual(polls.filter((p) => p === null).length, 0, 'no failed poll of the parent');
  for (let i = 1; i < polls.length; i++) t.true(polls[i]! >= polls[i - 1]!, 'parent counter never went back');
  const rec = fork.json.data;
  t.log(fork.json.steps.map((s: { step: string; ms: number }) => `${s.step} ${s.ms}`).join(', '));
  t.is(rec.ref, 'app:t');
  t.is(rec.state, 'up');
  t.is(rec.parentGuid, parent.guid);
  t.not(rec.ip, parent.ip);
  // 5: prefork ran in the source before the snapshot: its marker is in the fork's tree.
  t.is(rec.consistency, 'quiesced');
  const steps = fork.json.steps.map((s: { step: string }) => s.step);
  for (const s of ['prefork', 'cow_clone', 'docker_daemon', 'containers', 'tinefile_up', 'total']) t.true(steps.includes(s), `step ${s}`);
  t.true(steps.indexOf('prefork') < steps.indexOf('cow_clone'));
  t.true(existsSync(join(rec.path, 'prefork-ran')), 'prefork marker is in the snapshot');
  const atPrefork = Number(readFileSync(join(rec.path, 'prefork-ran'), 'utf8'));
  // The fork serves its own counter, started from the parent's value at the snapshot.
  const f = getCounter(rec.ip);
  t.not(f, null);
  t.true(f! >= before!, `fork started from the parent's value (${before} ≤ ${f})`);
  t.true(f! >= atPrefork);
  const p = getCounter(parent.ip)!;
  t.true(f! < p, `the fork restarted from the snapshot, behind the parent (${f} < ${p})`);
  // The fork's container writes into the fork, not the parent (bind mount rewritten).
  const mounts = JSON.parse(execFileSync('docker', ['-H', rec.dockerHost, 'inspect', '-f', '{{json .Mounts}}', 'counter'], { encoding: 'utf8' }));
  // Made through the endpoint, the source is a pin (docker/pins.ts): the fork's own.
  const source: string = mounts[0].Source;
  t.true(source.startsWith(rec.path + '/') || source.startsWith(join(host.runDir, 'docker-pins', String(rec.networkId)) + '/'), `fork bind source ${source}`);
  // Writes in either never show in the other.
  writeFileSync(join(parent.path, 'data', 'parent-only'), 'p');
  writeFileSync(join(rec.path, 'data', 'fork-only'), 'f');
  t.false(existsSync(join(rec.path, 'data', 'parent-only')));
  t.false(existsSync(join(parent.path, 'data', 'fork-only')));
  await sleep(300);
  const pn = Number(readFileSync(join(parent.path, 'data', 'n'), 'utf8'));
  const fn = Number(readFileSync(join(rec.path, 'data', 'n'), 'utf8'));
  t.true(pn > fn + 5, `counters diverge (parent ${pn}, fork ${fn})`);
});

test.serial('3: parent and two forks up at once on the same port, no conflict', async (t) => {
  const r = host.run(['repo', 'fork', 'app', '--tag', 't2', '--up'], { timeoutMs: 120_000 });
  t.is(r.code, 0, r.stdout + r.stderr);
  t.log(r.json.steps.map((s: { step: string; ms: number }) => `${s.step} ${s.ms}`).join(', '));
  const recs = ['app', 'app:t', 'app:t2'].map(info);
  t.deepEqual(recs.map((x) => x.state), ['up', 'up', 'up']);
  t.is(new Set(recs.map((x) => x.ip)).size, 3);
  for (const x of recs) t.not(getCounter(x.ip), null, `${x.ref} answers on ${x.ip}:8080`);
});

test.serial('4: Tinefile env: a fork sees TINE_IS_FORK=1 and its parent; the grand sees 0', (t) => {
  const parse = (path: string) => Object.fromEntries(readFileSync(join(path, '.hook-env'), 'utf8').trim().split('\n').map((l) => [l.slice(0, l.indexOf('=')), l.slice(l.indexOf('=') + 1)]));
  const g = info('app');
  const f = info('app:t');
  const ge = parse(g.path);
  const fe = parse(f.path);
  t.is(ge.TINE_IS_FORK, '0');
  t.is(ge.TINE_REPO, 'app');
  t.is(ge.TINE_PARENT_GUID, '');
  t.is(ge.TINE_IP, g.ip);
  t.is(ge.DOCKER_HOST, g.dockerHost);
  t.is(fe.TINE_IS_FORK, '1');
  t.is(fe.TINE_REPO, 'app:t');
  t.is(fe.TINE_REPO_NAME, 'app');
  t.is(fe.TINE_REPO_TAG, 't');
  t.is(fe.TINE_PARENT_GUID, g.guid);
  t.is(fe.TINE_GRAND_GUID, g.guid);
  t.is(fe.TINE_REPO_GUID, f.guid);
  t.is(fe.TINE_NETWORK_ID, String(f.networkId));
  t.is(fe.TINE_REPO_PATH, f.path);
  t.is(fe.TINE_IP, f.ip);
  t.is(fe.DOCKER_HOST, f.dockerHost);
});

test.serial('7: tine killed during fork --up leaves no orphan daemon once the next command ran', async (t) => {
  const before = new Set(dockerdsUnder(host.runDir));
  const killed = host.run(['repo', 'fork', 'app', '--tag', 'k', '--up'], { env: { TINE_FAILPOINT: 'lifecycle:daemon_started' }, timeoutMs: 120_000 });
  t.is(killed.signal, 'SIGKILL');
  // Looked at without running a command (any command repairs first).
  const leftover = dockerdsUnder(host.runDir).filter((p) => !before.has(p));
  t.is(leftover.length, 1, 'the killed command left its daemon running (precondition)');
  const next = host.run(['repo', 'list']);
  t.is(next.code, 0);
  t.true((next.json.warnings ?? []).some((w: string) => w.includes('app:k') && w.includes('orphan daemon stopped')), JSON.stringify(next.json.warnings));
  const k = info('app:k');
  t.is(k.state, 'down');
  t.is(dockerdFor(sockOf(k)), null, 'no orphan daemon');
  t.deepEqual(dockerdsUnder(host.runDir).filter((p) => !before.has(p)), []);
  // The parent kept running; the fork is registered, down, and can be started.
  t.not(getCounter(info('app').ip), null);
  const up = host.run(['repo', 'up', 'app:k'], { timeoutMs: 120_000 });
  t.is(up.code, 0, up.stdout);
  t.not(getCounter(k.ip), null);
});

test.serial('delete stops a running repo first; restore-all brings back repos that were up', async (t) => {
  const k = info('app:k');
  const del = host.run(['repo', 'delete', 'app:k', '--yes'], { timeoutMs: 120_000 });
  t.is(del.code, 0, del.stdout + del.stderr);
  t.is(dockerdFor(sockOf(k)), null);
  t.false(existsSync(k.path));
  t.is(getCounter(k.ip), null);

  // A "reboot": app:t2's daemon, containerd and container die hard; its state still says up.
  const t2 = info('app:t2');
  const pid = dockerdFor(sockOf(t2))!;
  t.truthy(pid);
  const exec = join(host.runDir, `docker-exec-${t2.networkId}`);
  for (const p of [pid, ...processesOf(exec)]) { try { process.kill(p, 'SIGKILL'); } catch { /* gone */ } }
  const cgroup = `${cgroupPrefix({ runDir: host.runDir } as HostConfig)}${t2.networkId}`;
  t.true(cgroupPids(cgroup).length > 0, 'its container processes are in its cgroup parent');
  await killCgroupTree(cgroup);
  for (let i = 0; i < 50 && (dockerdFor(sockOf(t2)) !== null || getCounter(t2.ip) !== null); i++) await sleep(100);
  t.is(getCounter(t2.ip), null, 'down after the crash');
  t.is(info('app:t2').state, 'up');
  const restore = host.run(['repo', 'restore-all'], { timeoutMs: 120_000 });
  t.is(restore.code, 0, restore.stdout + restore.stderr);
  t.deepEqual(restore.json.data.restored, ['app:t2']);
  t.deepEqual(restore.json.data.alreadyRunning.sort(), ['app', 'app:t']);
  t.not(getCounter(t2.ip), null, 'restored and serving');
});

function dockerdsUnder(runDir: string): number[] {
  return execFileSync('ps', ['-eo', 'pid=,args='], { encoding: 'utf8' }).split('\n')
    .filter((l) => / dockerd /.test(` ${l.trim().split(/\s+/).slice(1, 2).map((a) => a.split('/').pop()).join('')} `) && l.includes(runDir + '/'))
    .map((l) => Number.parseInt(l.trim(), 10));
}

function processesOf(dir: string): number[] {
  return execFileSync('ps', ['-eo', 'pid=,args='], { encoding: 'utf8' }).split('\n')
    .filter((l) => l.includes(dir + '/')).map((l) => Number.parseInt(l.trim(), 10)).filter((n) => n > 0 && n !== process.pid);
}
