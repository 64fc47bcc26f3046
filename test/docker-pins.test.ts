// Pinned bind sources (src/docker/pins.ts), end to end: a grand (and a fork) up with real
// dockerds and an offline busybox image; `docker` runs inside `tine-host repo exec`, the
// sandbox user swaps checked directories for symlinks to /etc there, and every start after
// the swap must still see the directory that was checked (or fail), never /etc.
import test from 'ava';
import { existsSync, lstatSync, mkdirSync, readFileSync, writeFileSync, chownSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { execFileSync } from 'node:child_process';
import { makeTestHost, type TestHost } from './helpers/host.js';
import { importBusyboxImage } from './helpers/busybox-image.js';
import { openTestHostForSandbox, teardownLifecycleHost } from './helpers/lifecycle-app.js';

let host: TestHost;
let grand: any;
let fork: any;
const rawOf = (rec: { networkId: number }) => join(host.runDir, 'docker-raw', `${rec.networkId}.sock`);
const pinsOf = (rec: { networkId: number }) => join(host.runDir, 'docker-pins', String(rec.networkId));

function raw(rec: { networkId: number }, args: string[]): string {
  return execFileSync('docker', ['-H', `unix://${rawOf(rec)}`, ...args], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'], timeout: 60_000 });
}

/** A shell command in a repository's sandbox; DOCKER_HOST is its filtering endpoint. */
function inRepo(ref: string, script: string, timeoutMs = 120_000) {
  return host.run(['-o', 'json', 'repo', 'exec', ref, '--', 'sh', '-c', script], { timeoutMs });
}

/** Mount points at or below `dir` (this process's mount namespace: the host's). */
function mountsUnder(dir: string): string[] {
  return readFileSync('/proc/self/mountinfo', 'utf8').split('\n').map((l) => l.split(' ')[4] ?? '')
    .filter((m) => m === dir || m.startsWith(dir + '/'));
}

/** A directory of the repository with one marker file, owned by the sandbox user. */
function dataDir(repoPath: string, name: string, marker: string): void {
  const d = join(repoPath, 'data', name);
  mkdirSync(d, { recursive: true });
  writeFileSync(join(d, 'marker'), marker + '\n');
  for (const p of [join(repoPath, 'data'), d, join(d, 'marker')]) chownSync(p, 7111, 7111);
}

const sourceOf = (rec: { networkId: number }, name: string) => raw(rec, ['inspect', '--format', '{{range .Mounts}}{{.Source}}{{end}}', name]).trim();

test.before(() => {
  host = makeTestHost({ size: '4G' });
  openTestHostForSandbox(host);
  const r = host.run(['repo', 'create', 'app']);
  if (r.code !== 0) throw new Error(`create failed: ${r.stdout}${r.stderr}`);
  const up = host.run(['repo', 'up', 'app'], { timeoutMs: 240_000 });
  if (up.code !== 0) throw new Error(`up failed: ${up.stdout}${up.stderr}`);
  grand = host.run(['repo', 'info', 'app']).json.data;
  importBusyboxImage(`unix://${rawOf(grand)}`);
  for (const [name, marker] of [['x', 'grand'], ['y', 'orig-y'], ['z', 'orig-z']] as const) dataDir(grand.path, name, marker);
});

test.after.always(async () => {
  if (!host) return;
  try {
    await teardownLifecycleHost(host);
  } finally {
    host.cleanup();
  }
});

test.serial('a bind under the repository is rewritten to a pin in the root-only pins dir, recorded in a root-owned manifest', (t) => {
  const r = inRepo('app', 'docker create --name keep -v "$TINE_REPO_PATH/data/x:/m:ro" tine-busybox cat /m/marker >/dev/null && docker start -a keep');
  t.is(r.code, 0, r.stderr);
  t.is(r.stdout, 'grand\n');
  const source = sourceOf(grand, 'keep');
  t.regex(source, new RegExp(`^${pinsOf(grand)}/p-[0-9a-f]{16}$`));
  t.true(mountsUnder(pinsOf(grand)).includes(source), 'the pin is a mount');
  for (const d of [join(host.runDir, 'docker-pins'), pinsOf(grand)]) {
    const st = statSync(d);
    t.is(`${(st.mode & 0o7777).toString(8)} ${st.uid}`, '700 0', d);
  }
  const manifestFile = join(grand.path, '.tine', 'docker-pins.json');
  t.is(lstatSync(manifestFile).uid, 0);
  const manifest = JSON.parse(readFileSync(manifestFile, 'utf8'));
  t.is(manifest.pins[source.split('/').pop()!], 'data/x');
});

test.serial('docker start after the checked directory was swapped for a symlink to /etc still sees the directory, not /etc', (t) => {
  const r = inRepo('app', 'docker create --name swapstart -v "$TINE_REPO_PATH/data/y:/m:ro" tine-busybox ls /m >/dev/null && docker start -a swapstart');
  t.is(r.code, 0, r.stderr);
  t.is(r.stdout, 'marker\n');
  const swap = inRepo('app', 'cd "$TINE_REPO_PATH/data" && mv y y.old && ln -s /etc y && ls y/passwd');
  t.is(swap.code, 0, swap.stderr);
  t.true(lstatSync(join(grand.path, 'data', 'y')).isSymbolicLink(), 'the swap happened');
  const again = inRepo('app', 'docker start -a swapstart');
  t.is(again.code, 0, again.stderr);
  t.is(again.stdout, 'marker\n', 'the original directory (now y.old), not /etc');
  t.false(again.stdout.includes('passwd'));
});

test.serial('the reviewer\'s restart-policy swap: every restart sees the original directory, never /etc', async (t) => {
  const r = inRepo('app', 'docker run -d --name rp --restart on-failure:2 -v "$TINE_REPO_PATH/data/z:/m:ro" tine-busybox sh -c "ls /m; sleep 1; exit 1" >/dev/null && cd "$TINE_REPO_PATH/data" && mv z z.old && ln -s /etc z && echo swapped');
  t.is(r.code, 0, r.stderr);
  t.is(r.stdout, 'swapped\n');
  // Bounded wait for both restarts to have run (on-failure:2 then gives up).
  let state = '';
  for (let i = 0; i < 120; i++) {
    state = raw(grand, ['inspect', '--format', '{{.State.Status}} {{.RestartCount}}', 'rp']).trim();
    if (state === 'exited 2') break;
    await new Promise((res) => setTimeout(res, 500));
  }
  t.is(state, 'exited 2', 'the container was restarted twice after the swap');
  const logs = raw(grand, ['logs', 'rp']);
  t.deepEqual(logs.split('\n').filter(Boolean), ['marker', 'marker', 'marker'], logs);
});

test.serial('the repository root is root:7111 1770: the sandbox user cannot rename .tine away (nor plant its own)', (t) => {
  const st = statSync(grand.path);
  t.is(st.uid, 0);
  t.is(st.gid, 7111);
  t.is(st.mode & 0o7777, 0o1770);
  const r = inRepo('app', 'mv .tine tine-away; echo "mv=$?"; touch mine && mv mine mine2 && rm mine2 && echo own-ok');
  t.regex(r.stdout, /mv=1/, r.stdout + r.stderr);
  t.regex(r.stdout, /own-ok/, 'its own entries it still renames and removes');
  t.true(lstatSync(join(grand.path, '.tine')).isDirectory());
});

test.serial('a pin never takes the repository root or .tine, even when a checked path turns into a link to them', async (t) => {
  const { pinSource } = await import('../src/docker/pins.js');
  const { hostConfigSchema } = await import('../src/host/config.js');
  const config = hostConfigSchema.parse(JSON.parse(readFileSync(host.configPath, 'utf8')));
  // As if swapped in after the endpoint's check: the second resolution finds .tine / the root.
  execFileSync('ln', ['-sfn', '../.tine', join(grand.path, 'data', 'to-tine')]);
  execFileSync('ln', ['-sfn', '..', join(grand.path, 'data', 'to-root')]);
  for (const name of ['to-tine', 'to-root']) {
    const e = t.throws(() => pinSource(config, grand.path, grand.networkId, join(grand.path, 'data', name)));
    t.is((e as NodeJS.ErrnoException).code, 'EPERM', name);
  }
});

test.serial('one request may pin at most 32 bind sources', (t) => {
  const binds = Array.from({ length: 33 }, (_, i) => `-v "$TINE_REPO_PATH/data/x:/m${i}"`).join(' ');
  const r = inRepo('app', `docker create ${binds} tine-busybox true`);
  t.not(r.code, 0);
  t.regex(r.stderr, /more than 32 bind sources/);
});

test.serial('a volume with o=bind to a directory inside the repository binds a pin of it', (t) => {
  const r = inRepo('app', 'docker volume create --opt type=none --opt o=bind --opt device="$TINE_REPO_PATH/data/x" xvol >/dev/null && docker run --rm -v xvol:/v tine-busybox cat /v/marker');
  t.is(r.code, 0, r.stderr);
  t.is(r.stdout, 'grand\n');
  t.regex(raw(grand, ['volume', 'inspect', '--format', '{{.Options.device}}', 'xvol']).trim(), new RegExp(`^${pinsOf(grand)}/p-`));
});

test.serial('a fork\'s container with a bind works in the fork and binds the fork\'s files, not the parent\'s', (t) => {
  const f = host.run(['repo', 'fork', 'app', '--tag', 't1', '--up'], { timeoutMs: 240_000 });
  t.is(f.code, 0, f.stdout + f.stderr);
  fork = f.json.data;
  writeFileSync(join(fork.path, 'data', 'x', 'marker'), 'fork\n');
  const r = inRepo('app:t1', 'docker start -a keep');
  t.is(r.code, 0, r.stderr);
  t.is(r.stdout, 'fork\n');
  // Docker keeps an inherited bind volume's options in its own database, which still names
  // the parent's pin: refused (never the parent's files) until recreated in the fork.
  const v = inRepo('app:t1', 'docker run --rm -v xvol:/v tine-busybox cat /v/marker');
  t.not(v.code, 0);
  t.regex(v.stderr, /pinned bind source of another repository/);
  t.false(v.stdout.includes('grand'));
  const v2 = inRepo('app:t1', 'docker volume rm xvol >/dev/null && docker volume create --opt type=none --opt o=bind --opt device="$TINE_REPO_PATH/data/x" xvol >/dev/null && docker run --rm -v xvol:/v tine-busybox cat /v/marker');
  t.is(v2.code, 0, v2.stderr);
  t.is(v2.stdout, 'fork\n');
  t.true(sourceOf(fork, 'keep').startsWith(pinsOf(fork) + '/'), 'the fork\'s container binds the fork\'s pin');
  const g = inRepo('app', 'docker start -a keep');
  t.is(g.stdout, 'grand\n', 'the grand still binds its own files');
});

test.serial('pins are gone after repo down and made again by repo up: a bind still works; a swapped one is refused and reported (fail closed)', (t) => {
  const down = host.run(['repo', 'down', 'app'], { timeoutMs: 120_000 });
  t.is(down.code, 0, down.stderr);
  t.deepEqual(mountsUnder(pinsOf(grand)), []);
  const up = host.run(['-o', 'json', 'repo', 'up', 'app'], { timeoutMs: 240_000 });
  t.is(up.code, 0, up.stderr);
  const refused = (up.json.data.pinsRefused ?? []).map((p: { path: string }) => p.path).sort();
  t.deepEqual(refused, [join(grand.path, 'data', 'y'), join(grand.path, 'data', 'z')]);
  const r = inRepo('app', 'docker start -a keep');
  t.is(r.code, 0, r.stderr);
  t.is(r.stdout, 'grand\n');
  const s = inRepo('app', 'docker start -a swapstart');
  t.not(s.code, 0, 'no pin: the container does not start');
  t.false(s.stdout.includes('passwd'));
});

test.serial('repo delete of the fork and repo down of the grand leave no pin mounted; delete removes the pins dir', (t) => {
  const pins = pinsOf(fork);
  t.true(mountsUnder(pins).length > 0);
  const del = host.run(['repo', 'delete', 'app:t1', '--yes'], { timeoutMs: 120_000 });
  t.is(del.code, 0, del.stderr);
  t.deepEqual(mountsUnder(pins), []);
  t.false(existsSync(pins));
  const down = host.run(['repo', 'down', 'app'], { timeoutMs: 120_000 });
  t.is(down.code, 0, down.stderr);
  t.deepEqual(mountsUnder(pinsOf(grand)), []);
});
