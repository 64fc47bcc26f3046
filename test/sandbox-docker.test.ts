// `docker` inside the sandbox of a repository that is up: it talks to that repository's
// own daemon only (its socket is the only one mounted), and the parent's is absent.
import test from 'ava';
import { join } from 'node:path';
import { execFileSync } from 'node:child_process';
import { makeTestHost, type TestHost } from './helpers/host.js';
import { writeCounterApp, openTestHostForSandbox, teardownLifecycleHost } from './helpers/lifecycle-app.js';

let host: TestHost;
const sockOf = (rec: { dockerHost: string }) => rec.dockerHost.replace(/^unix:\/\//, '');

test.before(() => {
  host = makeTestHost({ size: '4G' });
  openTestHostForSandbox(host);
  const src = join(host.dir, 'src');
  // A container that needs nothing from the (loaded) machine's timing to be "up".
  writeCounterApp(src, `up() {
  docker image inspect tine-busybox >/dev/null 2>&1 || docker import busybox.tar tine-busybox >/dev/null || return 1
  docker container inspect sleeper >/dev/null 2>&1 || docker create --name sleeper --network none tine-busybox sleep 600 >/dev/null || return 1
  docker start sleeper >/dev/null
}
down() {
  docker stop -t 1 sleeper >/dev/null
}
`);
  const r = host.run(['repo', 'create', 'app', '--from', src]);
  if (r.code !== 0) throw new Error(`create failed: ${r.stdout}${r.stderr}`);
});

test.after.always(async () => {
  if (!host) return;
  await teardownLifecycleHost(host);
  host.cleanup();
});

test.serial('docker ps in a fork that is up shows only that fork\'s daemon and containers', (t) => {
  const up = host.run(['repo', 'up', 'app'], { timeoutMs: 240_000 });
  t.is(up.code, 0, up.stdout + up.stderr);
  const fork = host.run(['repo', 'fork', 'app', '--tag', 't1', '--up'], { timeoutMs: 240_000 });
  t.is(fork.code, 0, fork.stdout + fork.stderr);
  const grand = host.run(['repo', 'info', 'app']).json.data;
  const f = fork.json.data;
  // A container that exists only in the grand's daemon, made after the fork.
  execFileSync('docker', ['-H', grand.dockerHost, 'create', '--name', 'grand-only', 'tine-busybox', 'true']);
  const r = host.run(['-o', 'json', 'repo', 'exec', 'app:t1', '--', 'sh', '-c',
    `docker ps -a --format '{{.Names}} {{.State}}'; docker info --format 'root={{.DockerRootDir}}'; ` +
    `docker -H unix://${sockOf(grand)} ps; echo parent-rc=$?; ls ${host.runDir}`], { timeoutMs: 60_000 });
  t.is(r.code, 0, r.stderr);
  t.regex(r.stdout, /^sleeper running$/m, r.stdout + r.stderr);
  t.notRegex(r.stdout, /grand-only/);
  t.regex(execFileSync('docker', ['-H', grand.dockerHost, 'ps', '-a', '--format', '{{.Names}}'], { encoding: 'utf8' }), /grand-only/, 'the grand has it');
  t.log(r.stdout.split('\n')[0]);
  t.regex(r.stdout, new RegExp(`^root=${f.path}/`, 'm'), 'the daemon answering is the fork\'s own');
  t.regex(r.stdout, /parent-rc=1/);
  t.deepEqual(r.stdout.split('\n').filter((l) => l.startsWith('docker-')), [`docker-${f.networkId}.sock`]);
});
