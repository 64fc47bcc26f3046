// Tinefile hooks without containers: order (root first, subdirectories A→Z; down in
// reverse), the sandbox user, missing functions skipped, and the failure cases: a failing
// `up`, a syntax error, a failing `down` (the daemon stops anyway), bad input.
import test from 'ava';
import { existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { makeTestHost, type TestHost } from './helpers/host.js';
import { openTestHostForSandbox, dockerdFor, teardownLifecycleHost } from './helpers/lifecycle-app.js';

let host: TestHost;
const sockOf = (rec: { dockerHost: string }) => rec.dockerHost.replace(/^unix:\/\//, '');
const info = (ref: string) => host.run(['repo', 'info', ref]).json.data;

function makeRepo(name: string, files: Record<string, string>): void {
  const src = join(host.dir, `src-${name}`);
  for (const [rel, text] of Object.entries(files)) {
    mkdirSync(join(src, rel, '..'), { recursive: true });
    writeFileSync(join(src, rel), text);
  }
  const r = host.run(['repo', 'create', name, '--from', src]);
  if (r.code !== 0) throw new Error(`create ${name}: ${r.stdout}${r.stderr}`);
}

const logLine = (what: string, label = '${PWD##*/}') => `${what}() { echo "${label} ${what}" >> "$TINE_REPO_PATH/order.log"; }\n`;

test.before(() => {
  host = makeTestHost({ size: '3G' });
  openTestHostForSandbox(host);
  makeRepo('order', {
    Tinefile: logLine('down', 'root') +
      'up() { echo "$(id -u) $(id -g) $(id -G) $PWD" > "$TINE_REPO_PATH/whoami"; echo "root up" >> "$TINE_REPO_PATH/order.log"; docker version --format "{{.Server.Version}}" > "$TINE_REPO_PATH/docker-ok" 2>&1; }\n',
    'b/Tinefile': logLine('up') + logLine('down'),
    'a/Tinefile': logLine('up') + logLine('down'),
    'c/Tinefile': logLine('up'), // no down: skipped
    'a/deeper/Tinefile': logLine('up'), // not first-level: never run
  });
  makeRepo('bad', {
    Tinefile: logLine('up', 'root') + logLine('down', 'root'),
    'a/Tinefile': logLine('up') + logLine('down'),
    'b/Tinefile': 'up() { echo "boom: the database did not start" >&2; return 3; }\n',
  });
  makeRepo('syntax', { Tinefile: 'up() {\n  echo unterminated\n' });
  // A Docker data-root planted by whoever owns the tree (here: copied in, so uid 7111).
  makeRepo('tamper', { Tinefile: 'up() { :; }\n', '.tine/docker/containers/planted/hostconfig.json': '{"Privileged":true,"Binds":["/:/host"]}' });
  makeRepo('downfail', { Tinefile: 'up() { :; }\ndown() { echo "down broke" >&2; return 4; }\n' });
});

test.after.always(async () => {
  if (!host) return;
  await teardownLifecycleHost(host);
  host.cleanup();
});

test.serial('hooks run root first then subdirectories A→Z, down in reverse, as the sandbox user', (t) => {
  const up = host.run(['repo', 'up', 'order'], { timeoutMs: 120_000 });
  t.is(up.code, 0, up.stdout + up.stderr);
  const rec = up.json.data;
  t.is(rec.state, 'up');
  const [uid, gid, groups, cwd] = readFileSync(join(rec.path, 'whoami'), 'utf8').trim().split(' ');
  t.is(uid, '7111');
  t.is(gid, '7111');
  t.is(groups, '7111', 'no supplementary groups');
  t.is(cwd, rec.path, 'cwd is the Tinefile\'s directory');
  t.regex(readFileSync(join(rec.path, 'docker-ok'), 'utf8'), /^\d+\.\d+/, 'the sandbox user can use its repo\'s Docker socket');
  t.deepEqual(readFileSync(join(rec.path, 'order.log'), 'utf8').trim().split('\n'), ['root up', 'a up', 'b up', 'c up']);
  const down = host.run(['repo', 'down', 'order'], { timeoutMs: 120_000 });
  t.is(down.code, 0, down.stdout + down.stderr);
  t.deepEqual(readFileSync(join(rec.path, 'order.log'), 'utf8').trim().split('\n').slice(4), ['b down', 'a down', 'root down']);
  t.is(dockerdFor(sockOf(rec)), null);
});

test.serial('a failing up: exit code, its output and exit status in the error, repo registered and down', (t) => {
  const r = host.run(['repo', 'up', 'bad'], { timeoutMs: 120_000 });
  t.is(r.code, 1);
  t.is(r.json.error.code, 'TINEFILE_HOOK_FAILED');
  t.regex(r.json.error.message, /b\/Tinefile: up exited 3/);
  t.regex(r.json.error.message, /boom: the database did not start/);
  t.is(r.json.error.details.exitCode, 3);
  t.true(r.json.error.next.some((n: { run?: string }) => n.run === 'tine repo up bad'));
  const rec = info('bad');
  t.is(rec.state, 'down');
  t.is(dockerdFor(sockOf(rec)), null, 'its daemon was stopped');
  // What came up before the failure was taken down again, best effort.
  t.deepEqual(readFileSync(join(rec.path, 'order.log'), 'utf8').trim().split('\n'), ['root up', 'a up', 'a down', 'root down']);
});

test.serial('a Tinefile syntax error: exit 1, the shell\'s message, repo down', (t) => {
  const r = host.run(['repo', 'up', 'syntax'], { timeoutMs: 120_000 });
  t.is(r.code, 1);
  t.is(r.json.error.code, 'TINEFILE_HOOK_FAILED');
  t.regex(r.json.error.message, /syntax error/);
  t.true(r.json.error.next.some((n: { run?: string }) => n.run === 'tine repo up syntax'));
  const rec = info('syntax');
  t.is(rec.state, 'down');
  t.is(dockerdFor(sockOf(rec)), null);
  t.true(host.run(['repo', 'list']).json.data.repos.some((x: { ref: string }) => x.ref === 'syntax'), 'still registered');
});

test.serial('a failing down still stops the daemon and leaves the repo down', (t) => {
  t.is(host.run(['repo', 'up', 'downfail'], { timeoutMs: 120_000 }).code, 0);
  const rec = info('downfail');
  t.not(dockerdFor(sockOf(rec)), null);
  const r = host.run(['repo', 'down', 'downfail'], { timeoutMs: 120_000 });
  t.truthy(r.json, `${r.code} ${r.signal} ${r.stdout} ${r.stderr}`);
  t.is(r.code, 1);
  t.is(r.json.error.code, 'TINEFILE_HOOK_FAILED');
  t.regex(r.json.error.message, /down broke/);
  t.regex(r.json.error.message, /daemon was stopped anyway/);
  t.is(dockerdFor(sockOf(rec)), null);
  t.is(info('downfail').state, 'down');
});

test.serial('a .tine the sandbox user owns is refused: no daemon runs on a planted data-root', (t) => {
  const r = host.run(['repo', 'up', 'tamper'], { timeoutMs: 120_000 });
  t.is(r.code, 1);
  t.is(r.json.error.code, 'REPO_TAMPERED');
  t.truthy(r.json.error.next?.length);
  const rec = info('tamper');
  t.is(rec.state, 'down');
  t.is(dockerdFor(sockOf(rec)), null);
  t.false(existsSync(sockOf(rec)));
});

test.serial('a lifecycle operation in progress (a live owner) makes up/down BUSY; a dead owner\'s lock is repaired', (t) => {
  const rec = info('order');
  const lock = join(host.runDir, `lifecycle-${rec.networkId}.lock`);
  // This test process stands in for another tine in the middle of `repo up`.
  const start = readFileSync('/proc/self/stat', 'utf8').split(') ')[1]!.split(' ')[19];
  writeFileSync(lock, `${process.pid} ${start}\n`);
  try {
    const r = host.run(['repo', 'up', 'order']);
    t.is(r.code, 6);
    t.is(r.json.error.code, 'BUSY');
    t.truthy(r.json.error.next?.length);
    t.is(info('order').state, 'down');
    t.is(dockerdFor(sockOf(rec)), null, 'nothing started');
    t.true(existsSync(lock), 'a live owner\'s lock is left alone');
  } finally {
    // A dead owner (pid 1's start time never matches this pid): the next command drops it.
    writeFileSync(lock, `${process.pid} 1\n`);
  }
  const next = host.run(['repo', 'list']);
  t.is(next.code, 0);
  t.false(existsSync(lock));
  t.true((next.json.warnings ?? []).some((w: string) => w.includes('stale lock removed')));
});

test.serial('bad input: exit 2 naming the field; unknown repo: exit 3; nothing started', (t) => {
  const before = host.run(['repo', 'list']).json.data.repos;
  const bad = host.run(['repo', 'up', 'Not_A_Ref']);
  t.is(bad.code, 2);
  t.is(bad.json.error.code, 'INVALID_INPUT');
  t.is(bad.json.error.field, 'ref');
  const missing = host.run(['repo', 'down', 'nosuch']);
  t.is(missing.code, 3);
  t.is(missing.json.error.code, 'NOT_FOUND');
  t.deepEqual(host.run(['repo', 'list']).json.data.repos, before);
  t.false(existsSync(join(host.runDir, 'docker-exec-nosuch')));
});
