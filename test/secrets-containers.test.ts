// Secrets end to end with a real per-repository dockerd: `repo up` of a repository with an
// env and a file secret — its container reads both; `ps` during the up never shows a value;
// its fork, brought up, reads neither and lists none; a `repo exec` session holds none.
import test from 'ava';
import { createHash, randomBytes } from 'node:crypto';
import { readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { makeTestHost, type TestHost } from './helpers/host.js';
import { writeCounterApp, openTestHostForSandbox, teardownLifecycleHost } from './helpers/lifecycle-app.js';
import { findValues } from './helpers/secrets.js';

// The container prints hashes of what it got, never the values (the output lands in the
// repository, and so in its forks).
const READER_TINEFILE = String.raw`# secrets reader (tine secrets tests)
up() {
  docker image inspect tine-busybox >/dev/null 2>&1 || docker import busybox.tar tine-busybox >/dev/null || return 1
  docker rm -f reader >/dev/null 2>&1
  set --
  if [ -n "$TINE_SECRETS_DIR" ]; then set -- -v "$TINE_SECRETS_DIR/DB_PASSWORD:/run/secrets/DB_PASSWORD:ro"; fi
  # -e NAME without =value: docker takes the value from this environment, never from argv.
  docker run --name reader -e TINE_SECRET_STRIPE_KEY "$@" tine-busybox sh -c '
    echo "env=$(printf %s "$TINE_SECRET_STRIPE_KEY" | sha256sum | cut -d" " -f1)"
    if [ -r /run/secrets/DB_PASSWORD ]; then echo "file=$(sha256sum < /run/secrets/DB_PASSWORD | cut -d" " -f1)"; else echo "file=none"; fi
  ' > "$TINE_REPO_PATH/reader.out" 2>&1 || return 1
}
down() {
  docker rm -f reader >/dev/null 2>&1 || true
}
`;

let host: TestHost;
const sha = (s: string) => createHash('sha256').update(s).digest('hex');
const envValue = `sk_live_${randomBytes(16).toString('hex')}`;
const fileValue = `pw-${randomBytes(16).toString('hex')}`;
const outputs: string[] = [];

function tine(args: string[], input?: string) {
  const r = host.run(args, { input, timeoutMs: 180_000 });
  outputs.push(r.stdout, r.stderr);
  return r;
}

function cmdlines(): string[] {
  const out: string[] = [];
  for (const n of readdirSync('/proc')) {
    if (!/^\d+$/.test(n)) continue;
    try {
      out.push(readFileSync(`/proc/${n}/cmdline`, 'utf8'));
    } catch { /* gone */ }
  }
  return out;
}

test.before(() => {
  host = makeTestHost({ size: '4G' });
  openTestHostForSandbox(host);
  const src = join(host.dir, 'src');
  writeCounterApp(src, READER_TINEFILE);
  const r = tine(['repo', 'create', 'app', '--from', src]);
  if (r.code !== 0) throw new Error(`create failed: ${r.stdout}${r.stderr}`);
  for (const [args, input] of [
    [['repo', 'secret', 'set', 'app', '--key', 'STRIPE_KEY', '--value', '-', '--mode', 'env'], envValue + '\n'],
    [['repo', 'secret', 'set', 'app', '--key', 'DB_PASSWORD', '--value', '-', '--mode', 'file'], fileValue + '\n'],
  ] as const) {
    const s = tine([...args], input);
    if (s.code !== 0) throw new Error(`secret set failed: ${s.stdout}${s.stderr}`);
  }
});

test.after.always(async () => {
  if (!host) return;
  await teardownLifecycleHost(host);
  host.cleanup();
});

test.serial('repo up: the container reads the env and the file secret; ps never shows a value', async (t) => {
  let polls = 0;
  let seen: string[] = [];
  let done = false;
  const up = host.runAsync(['repo', 'up', 'app'], { timeoutMs: 180_000 }).then((r) => {
    done = true;
    return r;
  });
  // Bounded: at most 180 s of 25 ms polls.
  for (let i = 0; i < 7200 && !done; i++) {
    polls++;
    const hits = findValues(cmdlines().join('\n'), [envValue, fileValue]);
    if (hits.length) seen = hits;
    await new Promise((r) => setTimeout(r, 25));
  }
  const r = await up;
  outputs.push(r.stdout, r.stderr);
  t.is(r.code, 0, r.stdout + r.stderr);
  t.true(polls > 5, `ps was sampled ${polls} times`);
  t.deepEqual(seen, [], 'a value appeared in some process argv');
  const path = tine(['repo', 'info', 'app']).json.data.path;
  const out = readFileSync(join(path, 'reader.out'), 'utf8');
  t.true(out.includes(`env=${sha(envValue)}`), out);
  t.true(out.includes(`file=${sha(fileValue)}`), out);
});

test.serial('its fork, brought up, reads neither and lists none', (t) => {
  const f = tine(['repo', 'fork', 'app', '--tag', 'f1']);
  t.is(f.code, 0, f.stdout);
  const l = tine(['repo', 'secret', 'list', 'app:f1']);
  t.deepEqual(l.json.data.secrets, []);
  const up = tine(['repo', 'up', 'app:f1']);
  t.is(up.code, 0, up.stdout + up.stderr);
  const out = readFileSync(join(f.json.data.path, 'reader.out'), 'utf8');
  t.true(out.includes(`env=${sha('')}`), out);
  t.true(out.includes('file=none'), out);
  t.is(tine(['repo', 'down', 'app:f1']).code, 0);
});

test.serial('a repo exec session holds no secret, not even one in the caller\'s environment', (t) => {
  const r = host.run(['-o', 'json', 'repo', 'exec', 'app', '--', 'sh', '-c', `env; ls ${join(host.runDir, 'secrets')} 2>&1; cat /run/secrets/DB_PASSWORD 2>&1; true`], {
    env: { TINE_SECRET_STRIPE_KEY: 'caller-' + envValue.slice(-8) },
  });
  outputs.push(r.stdout, r.stderr);
  t.is(r.code, 0, r.stdout + r.stderr);
  t.true(r.stdout.includes('PATH='), 'the env was printed');
  t.false(r.stdout.includes('TINE_SECRET_'));
  t.deepEqual(findValues(r.stdout + r.stderr, [envValue, fileValue, envValue.slice(-8)]), []);
});

test.serial('repo down removes the delivered files; no value in any output', (t) => {
  const rec = tine(['repo', 'info', 'app']).json.data;
  const dir = join(host.runDir, 'secrets', String(rec.networkId));
  t.true(readFileSync('/proc/self/mountinfo', 'utf8').includes(` ${dir} `), 'delivered while up');
  t.is(tine(['repo', 'down', 'app']).code, 0);
  t.false(readFileSync('/proc/self/mountinfo', 'utf8').includes(` ${dir} `));
  t.deepEqual(findValues(outputs.join('\n'), [envValue, fileValue]), []);
});
