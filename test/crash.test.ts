// Invariant 4: an operation killed (SIGKILL) at any step leaves, once the next command has
// run, either the finished result or nothing: no orphan subvolume, no row without a
// subvolume, no leaked network id.
import test from 'ava';
import { mkdirSync, writeFileSync, readdirSync, existsSync } from 'node:fs';
import { join } from 'node:path';
import { spawn } from 'node:child_process';
import { makeTestHost, tineHostBin, type TestHost } from './helpers/host.js';

let host: TestHost;
let src: string;

test.before(() => {
  host = makeTestHost();
  src = join(host.dir, 'tree');
  mkdirSync(src);
  for (let i = 0; i < 50; i++) writeFileSync(join(src, `f${i}`), `file ${i}\n`);
  if (host.run(['repo', 'create', 'base', '--from', src]).code !== 0) throw new Error('base');
});
test.after.always(() => host?.cleanup());

/** Rows and subvolumes agree, and no id is held by something that does not exist. */
function consistent(t: import('ava').ExecutionContext) {
  const list = host.run(['repo', 'list']);
  t.is(list.code, 0, list.stdout + list.stderr);
  const repos: { guid: string; path: string; networkId: number }[] = list.json.data.repos;
  const dirs = readdirSync(join(host.datastore, 'repos')).sort();
  t.deepEqual(dirs, repos.map((r) => r.guid).sort(), 'every subvolume is a registered repository and vice versa');
  for (const r of repos) t.true(existsSync(r.path));
  return { repos, list };
}

const cases: { failpoint: string; args: string[]; ref: string; expect: 'nothing' | 'finished' | 'gone' }[] = [
  { failpoint: 'create:reserved', args: ['repo', 'create', 'c1', '--from'], ref: 'c1', expect: 'nothing' },
  { failpoint: 'create:volume', args: ['repo', 'create', 'c2', '--from'], ref: 'c2', expect: 'nothing' },
  { failpoint: 'create:copied', args: ['repo', 'create', 'c3', '--from'], ref: 'c3', expect: 'nothing' },
  { failpoint: 'fork:reserved', args: ['repo', 'fork', 'base', '--tag', 'f1'], ref: 'base:f1', expect: 'nothing' },
  { failpoint: 'fork:cloned', args: ['repo', 'fork', 'base', '--tag', 'f2'], ref: 'base:f2', expect: 'nothing' },
  { failpoint: 'fork:committed', args: ['repo', 'fork', 'base', '--tag', 'f3'], ref: 'base:f3', expect: 'finished' },
];

for (const c of cases) {
  test.serial(`SIGKILL at ${c.failpoint}: the next command leaves ${c.expect === 'nothing' ? 'nothing behind' : 'the finished result'}`, (t) => {
    const args = c.args[c.args.length - 1] === '--from' ? [...c.args, src] : c.args;
    const idsBefore = consistent(t).repos.map((r) => r.networkId);
    const r = host.run(args, { env: { TINE_FAILPOINT: c.failpoint } });
    t.is(r.signal, 'SIGKILL', `killed at ${c.failpoint}`);
    consistent(t);
    const info = host.run(['repo', 'info', c.ref]);
    if (c.expect === 'nothing') {
      t.is(info.code, 3);
      // No leaked id: the next repository gets the smallest free id, as if nothing happened.
      const next = host.run(['repo', 'fork', 'base', '--tag', 'probe']);
      const expected = [...Array(100).keys()].map((i) => 1000 + i).find((id) => !idsBefore.includes(id));
      t.is(next.json.data.networkId, expected);
      t.is(host.run(['repo', 'delete', 'base:probe', '--yes']).code, 0);
    } else {
      t.is(info.code, 0);
      t.is(host.run(['repo', 'delete', c.ref, '--yes']).code, 0);
    }
    consistent(t);
  });
}

for (const failpoint of ['delete:decided', 'delete:destroyed']) {
  test.serial(`SIGKILL at ${failpoint}: the next command finishes the delete`, (t) => {
    const f = host.run(['repo', 'fork', 'base', '--tag', 'doomed']);
    t.is(f.code, 0);
    const r = host.run(['repo', 'delete', 'base:doomed', '--yes'], { env: { TINE_FAILPOINT: failpoint } });
    t.is(r.signal, 'SIGKILL');
    const next = host.run(['repo', 'list']);
    t.true((next.json.warnings ?? []).some((w: string) => /repaired an interrupted delete/.test(w)));
    consistent(t);
    t.is(host.run(['repo', 'info', 'base:doomed']).code, 3);
    t.false(existsSync(f.json.data.path));
  });
}

test.serial('SIGKILL from outside at random moments of a large create --from: never half a repository', async (t) => {
  const big = join(host.dir, 'big');
  mkdirSync(big);
  for (let i = 0; i < 2000; i++) writeFileSync(join(big, `f${i}`), Buffer.alloc(4096, i % 251));
  for (const delay of [30, 80, 150, 250, 400]) {
    const child = spawn(process.execPath, [tineHostBin, 'repo', 'create', `big${delay}`, '--from', big, '-o', 'json'], { env: host.env, stdio: 'ignore' });
    await new Promise((r) => setTimeout(r, delay));
    child.kill('SIGKILL');
    await new Promise((r) => child.once('close', r));
    consistent(t);
    const made = host.run(['repo', 'info', `big${delay}`]);
    if (made.code === 0) t.is(readdirSync(made.json.data.path).length, 2000, 'a finished repository is complete');
    else t.is(made.code, 3);
  }
});

test.serial('a live operation is not "repaired" by a concurrent command', async (t) => {
  // Repairs only touch intents whose owner process is dead: run forks and lists in parallel.
  const jobs = [];
  for (let i = 0; i < 6; i++) {
    jobs.push(host.runAsync(['repo', 'fork', 'base', '--tag', `par${i}`]));
    jobs.push(host.runAsync(['repo', 'list']));
  }
  const results = await Promise.all(jobs);
  for (const r of results) t.is(r.code, 0, r.stdout + r.stderr);
  const { repos } = consistent(t);
  const ids = repos.map((r) => r.networkId);
  t.is(new Set(ids).size, ids.length);
  for (let i = 0; i < 6; i++) t.is(host.run(['repo', 'info', `base:par${i}`]).code, 0);
});
