// The filtering Docker endpoint of a repository, end to end: a grand and a fork that are up
// with real dockerds and an offline busybox image; every `docker` command runs inside
// `tine-host repo exec app:t1` (the sandbox), and what the fork's daemon holds is read
// through its raw socket as root.
import test from 'ava';
import { existsSync, mkdirSync, readFileSync, symlinkSync, writeFileSync, chownSync } from 'node:fs';
import { join } from 'node:path';
import { execFileSync, spawnSync } from 'node:child_process';
import { makeTestHost, type TestHost } from './helpers/host.js';
import { importBusyboxImage } from './helpers/busybox-image.js';
import { openTestHostForSandbox, teardownLifecycleHost } from './helpers/lifecycle-app.js';

let host: TestHost;
let grand: any;
let fork: any;
const rawOf = (rec: { networkId: number }) => join(host.runDir, 'docker-raw', `${rec.networkId}.sock`);

/** docker as root on the raw daemon socket of a repository. */
function raw(rec: { networkId: number }, args: string[]): string {
  return execFileSync('docker', ['-H', `unix://${rawOf(rec)}`, ...args], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'], timeout: 60_000 });
}
const rawCount = () => raw(fork, ['ps', '-aq']).split('\n').filter(Boolean).length;
const runningCount = () => raw(fork, ['ps', '-q']).split('\n').filter(Boolean).length;

/** A shell command in the fork's sandbox; DOCKER_HOST is the fork's endpoint. */
function inFork(script: string, timeoutMs = 120_000) {
  return host.run(['-o', 'json', 'repo', 'exec', 'app:t1', '--', 'sh', '-c', script], { timeoutMs });
}

test.before(() => {
  host = makeTestHost({ size: '4G' });
  openTestHostForSandbox(host);
  const r = host.run(['repo', 'create', 'app']);
  if (r.code !== 0) throw new Error(`create failed: ${r.stdout}${r.stderr}`);
  const up = host.run(['repo', 'up', 'app'], { timeoutMs: 240_000 });
  if (up.code !== 0) throw new Error(`up failed: ${up.stdout}${up.stderr}`);
  grand = host.run(['repo', 'info', 'app']).json.data;
  importBusyboxImage(`unix://${rawOf(grand)}`);
  // Made in the grand as root (through the raw socket): the fork inherits both.
  raw(grand, ['create', '--name', 'grandpriv', '--privileged', 'tine-busybox', 'sleep', '600']);
  raw(grand, ['create', '--name', 'grandbind', '-v', '/etc:/hostetc:ro', 'tine-busybox', 'sleep', '600']);
  raw(grand, ['volume', 'create', '--driver', 'local', '--opt', 'type=none', '--opt', 'o=bind', '--opt', 'device=/etc', 'rawetc']);
  // Running with a restart policy: the fork's dockerd would start them by itself.
  raw(grand, ['run', '-d', '--name', 'grandrestart', '-v', '/etc:/hostetc:ro', '--restart', 'always', 'tine-busybox', 'sleep', '600']);
  raw(grand, ['run', '-d', '--name', 'grandok', '--restart', 'always', 'tine-busybox', 'sleep', '600']);
  const f = host.run(['repo', 'fork', 'app', '--tag', 't1', '--up'], { timeoutMs: 240_000 });
  if (f.code !== 0) throw new Error(`fork failed: ${f.stdout}${f.stderr}`);
  fork = f.json.data;
  // Inside the fork: a data directory and a symlink that points out of the repository.
  mkdirSync(join(fork.path, 'data'), { recursive: true });
  chownSync(join(fork.path, 'data'), 7111, 7111);
  symlinkSync('/etc', join(fork.path, 'out'));
  symlinkSync('data/../../', join(fork.path, 'sneaky'));
});

test.after.always(async () => {
  if (!host) return;
  try {
    await teardownLifecycleHost(host);
  } finally {
    host.cleanup();
  }
});

test.serial('repo info shows the filtering endpoint; dockerd listens only on its root-only raw socket', (t) => {
  const info = host.run(['repo', 'info', 'app:t1']).json.data;
  t.deepEqual(info.confinement, { docker: 'filtered', network: 'isolated' });
  const cmd = readFileSync(`/proc/${readFileSync(join(host.runDir, `docker-${fork.networkId}.pid`), 'utf8').trim()}/cmdline`, 'utf8').split('\0');
  t.true(cmd.includes(`unix://${rawOf(fork)}`));
  t.false(cmd.includes(`unix://${join(host.runDir, `docker-${fork.networkId}.sock`)}`));
  t.is(execFileSync('stat', ['-c', '%a %u', join(host.runDir, 'docker-raw')], { encoding: 'utf8' }).trim(), '700 0');
});

/** A raw Engine API call through the repository's endpoint (what the CLI would not send). */
const API = 'curl -sS --fail-with-body --unix-socket "${DOCKER_HOST#unix://}" -X POST -H "Content-Type: application/json"';

const refusals: [string, string, RegExp][] = [
  ['--privileged', 'docker run --rm --privileged tine-busybox true', /tine: --privileged — /],
  ['--cap-add SYS_ADMIN', 'docker run --rm --cap-add SYS_ADMIN tine-busybox true', /tine: --cap-add (CAP_)?SYS_ADMIN — /],
  ['--device /dev/loop0', 'docker run --rm --device /dev/loop0 tine-busybox true', /tine: --device — /],
  ['--pid host', 'docker run --rm --pid host tine-busybox true', /tine: --pid host — /],
  ['--security-opt seccomp=unconfined', 'docker run --rm --security-opt seccomp=unconfined tine-busybox true', /tine: --security-opt seccomp=unconfined — /],
  ['-v /:/host', 'docker run --rm -v /:/host tine-busybox true', /outside the repository/],
  ['-v of the grand\'s path', 'docker run --rm -v GRAND:/x tine-busybox true', /outside the repository/],
  ['-v of a symlink in the repo pointing outside', 'docker run --rm -v "$TINE_REPO_PATH/out:/x" tine-busybox true', /resolves to \/etc\) is outside/],
  ['-v of a relative symlink climbing out of the repo', 'docker run --rm -v "$TINE_REPO_PATH/sneaky/x:/x" tine-busybox true', /is outside the repository/],
  ['-v of the repository root (it holds the daemon\'s data-root)', 'docker run --rm -v "$TINE_REPO_PATH:/x" tine-busybox true', /holds the Docker data-root/],
  ['a volume with o=bind to /etc', 'docker volume create --opt type=none --opt o=bind --opt device=/etc etcvol', /tine: volume etcvol \(o=bind, device=\/etc\) — /],
  ['using an inherited volume bound to /etc', 'docker run --rm -v rawetc:/x tine-busybox true', /tine: volume rawetc \(o=bind, device=\/etc\) — /],
  ['--mount of the inherited /etc volume', 'docker run --rm --mount type=volume,src=rawetc,dst=/x tine-busybox true', /device=\/etc/],
  ['mounting the Docker socket', 'docker run --rm -v "${DOCKER_HOST#unix://}:/var/run/docker.sock" tine-busybox true', /mounts a Docker socket/],
  ['mounting the host\'s Docker socket', 'docker run --rm -v /var/run/docker.sock:/var/run/docker.sock tine-busybox true', /mounts a Docker socket/],
  ['a tmpfs volume with o=bind to /etc', 'docker volume create --opt type=tmpfs --opt o=bind --opt device=/etc tv', /tine: volume tv with type=tmpfs o=bind device=\/etc — /],
  ['ReadonlyPaths without /proc/sys (raw API)', `${API} -d '{"Image":"tine-busybox","HostConfig":{"ReadonlyPaths":["/nonexistent"]}}' http://d/containers/create 1>&2`, /tine: a ReadonlyPaths without \/proc\/bus — /],
  ['MaskedPaths without the defaults (raw API)', `${API} -d '{"Image":"tine-busybox","HostConfig":{"MaskedPaths":["/proc/kcore"]}}' http://d/containers/create 1>&2`, /tine: a MaskedPaths without \/proc\/asound — /],
  ['a container reached by a name with a slash (a link alias)', `${API} -d '{}' http://d/v1.43/containers/web/al/start 1>&2`, /tine: the route \/containers\/web\/al\/start — /],
  ['API versions before 1.24', `${API} -d '{}' http://d/v1.23/containers/x/start 1>&2`, /tine: API version 1.23 — /],
  ['a log driver that connects out', 'docker run --rm --log-driver syslog --log-opt syslog-address=unix:///dev/log tine-busybox true', /tine: --log-driver syslog — /],
  ['a plugin endpoint', 'docker plugin ls', /tine: the plugins endpoint — /],
  ['a swarm endpoint', 'docker swarm init', /tine: the swarm endpoint — /],
];

for (const [name, script, message] of refusals) {
  test.serial(`refused: ${name}; nothing created`, (t) => {
    const before = rawCount();
    const volumes = raw(fork, ['volume', 'ls', '-q']);
    const r = inFork(script.replace('GRAND', grand.path));
    t.not(r.code, 0, r.stdout + r.stderr);
    t.regex(r.stderr, message);
    t.regex(r.stderr, /; /, 'says what to do instead');
    t.is(rawCount(), before, 'no container was created');
    t.is(raw(fork, ['volume', 'ls', '-q']), volumes, 'no volume was created');
  });
}

test.serial('allowed: --network host stays inside the repository\'s own network namespace', (t) => {
  // dockerd runs in the repository's namespace: "host" there is the repository's network,
  // its six addresses, not the host's interfaces.
  const r = inFork('docker run --rm --network host tine-busybox busybox ip -4 -o addr show');
  t.is(r.code, 0, r.stderr);
  t.true(r.stdout.includes(` ${fork.ip}/`), r.stdout);
  const hostAddrs = execFileSync('ip', ['-4', '-o', 'addr', 'show'], { encoding: 'utf8' });
  t.false(hostAddrs.includes(` ${fork.ip}/`), 'the repository address is not on the host');
  for (const [, addr] of hostAddrs.matchAll(/inet (\d+\.\d+\.\d+\.\d+)\//g)) {
    if (!addr!.startsWith('127.')) t.false(r.stdout.includes(` ${addr}/`), `host address ${addr} is not inside`);
  }
});

test.serial('dockerd gets the body the endpoint checked: a repeated HostConfig cannot smuggle settings past it', (t) => {
  // Go's decoder merges the two objects (Privileged stays true); JSON.parse keeps the last.
  const r = inFork(`${API} -d '{"Image":"tine-busybox","Cmd":["true"],"HostConfig":{"Privileged":true},"HostConfig":{}}' "http://d/containers/create?name=smuggle"`);
  t.is(r.code, 0, r.stdout + r.stderr);
  t.is(raw(fork, ['inspect', '--format', '{{.HostConfig.Privileged}}', 'smuggle']).trim(), 'false');
  raw(fork, ['rm', 'smuggle']);
});

test.serial('refused: docker update --restart of an inherited container whose bind is a path, not a pin', (t) => {
  const r = inFork('docker update --restart always grandbind');
  t.not(r.code, 0);
  t.regex(r.stderr, /tine: container grandbind: /);
  t.is(raw(fork, ['inspect', '--format', '{{.HostConfig.RestartPolicy.Name}}', 'grandbind']).trim(), 'no');
});

test.serial('refused: exec --privileged on a running container; nothing runs', (t) => {
  const r0 = inFork('docker run -d --name sleeper tine-busybox sleep 600');
  t.is(r0.code, 0, r0.stderr);
  const r = inFork('docker exec --privileged sleeper true');
  t.not(r.code, 0);
  t.regex(r.stderr, /tine: exec --privileged — /);
  t.deepEqual(JSON.parse(raw(fork, ['inspect', '--format', '{{json .ExecIDs}}', 'sleeper'])), null, 'no exec instance was made');
});

test.serial('refused: starting an inherited privileged container (created in the grand as root)', (t) => {
  t.regex(raw(fork, ['ps', '-a', '--format', '{{.Names}}']), /grandpriv/, 'the fork inherited it');
  const before = runningCount();
  const r = inFork('docker start grandpriv');
  t.not(r.code, 0);
  t.regex(r.stderr, /tine: container grandpriv: --privileged — .*docker rm grandpriv/);
  t.is(runningCount(), before);
  t.is(raw(fork, ['inspect', '--format', '{{.State.Running}}', 'grandpriv']).trim(), 'false');
});

test.serial('an inherited container with a host bind and a restart policy is not started by the fork\'s dockerd; a harmless one keeps its policy', (t) => {
  const state = (name: string) => raw(fork, ['inspect', '--format', '{{.State.Running}} {{.HostConfig.RestartPolicy.Name}}', name]).trim();
  t.is(state('grandrestart'), 'false no');
  t.is(state('grandok'), 'true always');
  t.is(raw(grand, ['inspect', '--format', '{{.State.Running}} {{.HostConfig.RestartPolicy.Name}}', 'grandrestart']).trim(), 'true always', 'the grand is untouched');
});

test.serial('refused: exec, attach and cp into an inherited container with a host bind that runs (as a restart policy would start it)', (t) => {
  raw(fork, ['start', 'grandbind']);
  try {
    for (const cmd of ['docker exec grandbind cat /hostetc/hostname', 'docker cp grandbind:/hostetc/hostname -', 'timeout 20 docker attach --no-stdin grandbind']) {
      const r = inFork(cmd);
      t.not(r.code, 0, cmd);
      // The CLI prints a refused upgrade (attach) as its status only; the others show the message.
      t.regex(r.stderr, cmd.includes('attach') ? /received 403/ : /tine: container grandbind: -v \/etc:\/hostetc:ro — its source \/etc is outside the repository/, cmd);
    }
    t.deepEqual(JSON.parse(raw(fork, ['inspect', '--format', '{{json .ExecIDs}}', 'grandbind'])), null, 'no exec instance was made');
  } finally {
    raw(fork, ['kill', 'grandbind']);
  }
});

test.serial('allowed: docker run with a bind mount under the repository writes into the repo', (t) => {
  const r = inFork('docker run --rm -v "$TINE_REPO_PATH/data:/d" tine-busybox sh -c "echo from-container > /d/f"');
  t.is(r.code, 0, r.stderr);
  t.is(readFileSync(join(fork.path, 'data', 'f'), 'utf8'), 'from-container\n');
  // A nonexistent tail under the repository is fine (dockerd makes it).
  const r2 = inFork('docker run --rm -v "$TINE_REPO_PATH/data/new/dir:/d" tine-busybox true');
  t.is(r2.code, 0, r2.stderr);
});

test.serial('allowed: an anonymous volume (-v /path) is a volume, not a bind', (t) => {
  const r = inFork('docker run --rm -v /anon tine-busybox sh -c "echo ok > /anon/f && cat /anon/f"');
  t.is(r.code, 0, r.stderr);
  t.is(r.stdout, 'ok\n');
});

test.serial('allowed: a named volume keeps data between containers', (t) => {
  const r = inFork('docker run --rm -v vol1:/v tine-busybox sh -c "echo kept > /v/x" && docker run --rm --mount type=volume,src=vol1,dst=/v tine-busybox cat /v/x');
  t.is(r.code, 0, r.stderr);
  t.is(r.stdout.trim(), 'kept');
});

test.serial('allowed: docker logs -f streams until the container exits', (t) => {
  const r = inFork('docker run -d --name talker tine-busybox sh -c "for i in 1 2 3; do echo line\\$i; sleep 0.3; done" >/dev/null && timeout 30 docker logs -f talker');
  t.is(r.code, 0, r.stderr);
  t.deepEqual(r.stdout.trim().split('\n'), ['line1', 'line2', 'line3']);
});

test.serial('allowed: docker exec (hijacked stream, stdin and stdout)', (t) => {
  const r = inFork('echo piped-in | docker exec -i sleeper cat && docker exec sleeper echo hello-exec');
  t.is(r.code, 0, r.stderr);
  t.is(r.stdout, 'piped-in\nhello-exec\n');
});

test.serial('allowed: docker build of a small context FROM the imported image', (t) => {
  mkdirSync(join(fork.path, 'ctx'));
  writeFileSync(join(fork.path, 'ctx', 'Dockerfile'), 'FROM tine-busybox\nCOPY hello.txt /hello.txt\nRUN cat /hello.txt > /built\n');
  writeFileSync(join(fork.path, 'ctx', 'hello.txt'), 'built-here\n');
  const r = inFork('DOCKER_BUILDKIT=0 docker build --network none -q -t mine "$TINE_REPO_PATH/ctx" >/dev/null && docker run --rm mine cat /built', 180_000);
  t.is(r.code, 0, r.stderr);
  t.is(r.stdout, 'built-here\n');
  // --network host of a build is the repository's own network namespace too.
  const hostNet = inFork('DOCKER_BUILDKIT=0 docker build --network host -q -t mine2 "$TINE_REPO_PATH/ctx" >/dev/null && echo built');
  t.is(hostNet.code, 0, hostNet.stderr);
});

test.serial('allowed: two containers on a bridge network of the repository talk to each other', (t) => {
  const r = inFork([
    'docker network create appnet >/dev/null',
    'docker run -d --name srv --network appnet tine-busybox sh -c "echo pong | nc -l -p 7000" >/dev/null',
    'ip=$(docker inspect --format "{{(index .NetworkSettings.Networks \\"appnet\\").IPAddress}}" srv)',
    'for i in $(seq 1 50); do out=$(docker run --rm --network appnet tine-busybox nc -w 2 $ip 7000) && [ -n "$out" ] && echo "$out" && exit 0; sleep 0.2; done; exit 1',
  ].join(' && '), 180_000);
  t.is(r.code, 0, r.stdout + r.stderr);
  t.is(r.stdout.trim(), 'pong');
});

test.serial('the raw socket and other repositories\' endpoints are out of the sandbox\'s reach', (t) => {
  const r = inFork(`ls ${host.runDir}; test -e ${join(host.runDir, 'docker-raw')} && echo raw-dir-visible; docker -H unix://${rawOf(fork)} version >/dev/null 2>&1; echo raw-rc=$?; docker -H unix://${join(host.runDir, `docker-${grand.networkId}.sock`)} version >/dev/null 2>&1; echo grand-rc=$?`);
  t.is(r.code, 0, r.stderr);
  t.deepEqual(r.stdout.split('\n').filter((l) => l.startsWith('docker')), [`docker-${fork.networkId}.sock`]);
  t.notRegex(r.stdout, /raw-dir-visible/);
  t.regex(r.stdout, /raw-rc=1/);
  t.regex(r.stdout, /grand-rc=1/);
  // By permissions alone, outside any sandbox: the sandbox user cannot connect to a raw socket.
  const direct = spawnSync('setpriv', ['--reuid', '7111', '--regid', '7111', '--clear-groups', 'docker', '-H', `unix://${rawOf(fork)}`, 'version'], { encoding: 'utf8', timeout: 30_000 });
  t.not(direct.status, 0);
  t.regex(direct.stderr, /permission denied/i);
});

test.serial('fail closed: a dead endpoint answers nothing; repo up replaces it', (t) => {
  const pidFile = join(host.runDir, `docker-proxy-${fork.networkId}.pid`);
  const pid = Number(readFileSync(pidFile, 'utf8'));
  process.kill(pid, 'SIGKILL');
  for (let i = 0; i < 100; i++) { try { process.kill(pid, 0); } catch { break; } execFileSync('sleep', ['0.05']); }
  const r = inFork('docker version >/dev/null 2>&1; echo rc=$?');
  t.regex(r.stdout, /rc=1/);
  t.deepEqual(host.run(['repo', 'info', 'app:t1']).json.data.confinement, { docker: 'down', network: 'isolated' });
  const up = host.run(['repo', 'up', 'app:t1'], { timeoutMs: 240_000 });
  t.is(up.code, 0, up.stdout + up.stderr);
  t.deepEqual(host.run(['repo', 'info', 'app:t1']).json.data.confinement, { docker: 'filtered', network: 'isolated' });
  t.is(inFork('docker version >/dev/null').code, 0);
  t.true(existsSync(pidFile));
});
