// Repository commands end to end, as real processes on a real loop-mounted btrfs.
import test from 'ava';
import { mkdirSync, writeFileSync, readFileSync, readdirSync, existsSync, statSync, symlinkSync } from 'node:fs';
import { join } from 'node:path';
import { spawn, execFileSync } from 'node:child_process';
import { makeTestHost, tineHostBin, type TestHost } from './helpers/host.js';

let host: TestHost;

test.before(() => {
  host = makeTestHost();
});
test.after.always(() => host?.cleanup());

/** Everything a command could write: registered repos and subvolumes on disk. */
function snapshotState() {
  const list = host.run(['repo', 'list']).json;
  const dirs = readdirSync(join(host.datastore, 'repos')).sort();
  return JSON.stringify({ repos: list?.data?.repos, dirs });
}

function makeTree(name: string): string {
  const dir = join(host.dir, name);
  mkdirSync(join(dir, 'sub'), { recursive: true });
  writeFileSync(join(dir, 'a.txt'), 'alpha\n');
  writeFileSync(join(dir, 'sub', 'b.bin'), Buffer.alloc(1 << 20, 7));
  symlinkSync('a.txt', join(dir, 'link'));
  return dir;
}

test.serial('repo create --from copies the tree into a grand whose files the sandbox user owns', (t) => {
  const src = makeTree('src-app');
  const r = host.run(['repo', 'create', 'app', '--from', src]);
  t.is(r.code, 0, r.stdout + r.stderr);
  const d = r.json.data;
  t.is(r.json.ok, true);
  t.is(r.json.command, 'repo create');
  for (const k of ['ref', 'name', 'tag', 'guid', 'parentGuid', 'grandGuid', 'networkId', 'path', 'dockerHost', 'ip', 'state', 'consistency', 'createdAt']) {
    t.true(k in d, `record has ${k}`);
  }
  t.is(d.ref, 'app');
  t.is(d.tag, null);
  t.is(d.parentGuid, null);
  t.is(d.grandGuid, d.guid);
  t.is(d.state, 'down');
  t.regex(d.dockerHost, new RegExp(`^unix://${host.runDir}/docker-${d.networkId}\\.sock$`));
  t.regex(d.ip, /^\d+\.\d+\.\d+\.\d+$/);
  t.false(d.ip.startsWith('127.'), 'a routable address: loopback cannot be routed into a repository namespace');
  t.is(readFileSync(join(d.path, 'a.txt'), 'utf8'), 'alpha\n');
  t.is(readFileSync(join(d.path, 'sub', 'b.bin')).length, 1 << 20);
  t.is(readFileSync(join(d.path, 'link'), 'utf8'), 'alpha\n');
  // The root is root's, group the sandbox user's, sticky (it cannot rename away tine's .tine);
  // everything in it is the sandbox user's.
  t.is(statSync(d.path).uid, 0);
  t.is(statSync(d.path).gid, 7111);
  t.is(statSync(d.path).mode & 0o7777, 0o1770);
  t.is(statSync(join(d.path, 'a.txt')).uid, 7111);
  // It is a real subvolume (inode 256 on btrfs).
  t.is(statSync(d.path).ino, 256);
  t.true(Array.isArray(r.json.steps) && r.json.steps.some((s: { step: string }) => s.step === 'subvolume'));
  t.is(typeof r.json.ms, 'number');
});

test.serial('repo create without --from makes an empty grand; info and list return the same record', (t) => {
  const r = host.run(['repo', 'create', 'empty']);
  t.is(r.code, 0);
  const info = host.run(['repo', 'info', 'empty']);
  t.is(info.code, 0);
  // info is the record plus what only info shows: the addresses and the confinement layers.
  const { addresses, confinement, ...record } = info.json.data;
  t.deepEqual(record, r.json.data);
  t.is(addresses[0], r.json.data.ip);
  t.is(confinement.docker, 'down');
  t.is(confinement.network, 'absent', 'no namespace until the repository is first used');
  const list = host.run(['repo', 'list']);
  t.truthy(list.json.data.repos.find((x: { ref: string }) => x.ref === 'empty'));
  t.deepEqual(readdirSync(r.json.data.path), []);
  t.is(host.run(['repo', 'delete', 'empty', '--yes']).code, 0);
});

test.serial('repo fork: new guid and network id, parent and grand recorded; fork of a fork keeps the grand', (t) => {
  const app = host.run(['repo', 'info', 'app']).json.data;
  const f1 = host.run(['repo', 'fork', 'app', '--tag', 't1']);
  t.is(f1.code, 0, f1.stdout);
  const d1 = f1.json.data;
  t.is(d1.ref, 'app:t1');
  t.is(d1.parentGuid, app.guid);
  t.is(d1.grandGuid, app.guid);
  t.not(d1.guid, app.guid);
  t.not(d1.networkId, app.networkId);
  t.not(d1.ip, app.ip);
  t.is(d1.consistency, 'crash');
  t.true(f1.json.steps.some((s: { step: string; label: string }) => s.step === 'cow_clone' && s.label === 'CoW clone complete'));
  t.is(readFileSync(join(d1.path, 'a.txt'), 'utf8'), 'alpha\n');

  const f2 = host.run(['repo', 'fork', 'app:t1', '--tag', 't2']);
  t.is(f2.code, 0);
  t.is(f2.json.data.ref, 'app:t2');
  t.is(f2.json.data.parentGuid, d1.guid);
  t.is(f2.json.data.grandGuid, app.guid);
  const ids = host.run(['repo', 'list']).json.data.repos.map((r: { networkId: number }) => r.networkId);
  t.is(new Set(ids).size, ids.length, 'network ids are unique');
});

test.serial('invariant 1: a fork never changes its parent; the parent never changes the fork', (t) => {
  const app = host.run(['repo', 'info', 'app']).json.data;
  const fork = host.run(['repo', 'fork', 'app', '--tag', 'iso']).json.data;
  writeFileSync(join(fork.path, 'a.txt'), 'changed in fork\n');
  writeFileSync(join(fork.path, 'fork-only'), 'x');
  execFileSync('rm', ['-rf', join(fork.path, 'sub')]);
  t.is(readFileSync(join(app.path, 'a.txt'), 'utf8'), 'alpha\n');
  t.false(existsSync(join(app.path, 'fork-only')));
  t.true(existsSync(join(app.path, 'sub', 'b.bin')));
  writeFileSync(join(app.path, 'parent-only'), 'y');
  writeFileSync(join(app.path, 'a.txt'), 'changed in parent\n');
  t.false(existsSync(join(fork.path, 'parent-only')));
  t.is(readFileSync(join(fork.path, 'a.txt'), 'utf8'), 'changed in fork\n');
  writeFileSync(join(app.path, 'a.txt'), 'alpha\n');
  execFileSync('rm', ['-f', join(app.path, 'parent-only')]);
  t.is(host.run(['repo', 'delete', 'app:iso', '--yes']).code, 0);
});

test.serial('fork while the source is being written: the snapshot is a consistent point in time', async (t) => {
  const app = host.run(['repo', 'info', 'app']).json.data;
  const log = join(app.path, 'log.txt');
  // A writer appending numbered lines as fast as it can, bounded to 8 s.
  const writer = spawn('bash', ['-c', `for i in $(seq 1 200000); do echo "line $i"; done > ${log}`]);
  try {
    await new Promise((r) => setTimeout(r, 150));
    const f = await host.runAsync(['repo', 'fork', 'app', '--tag', 'live']);
    t.is(f.code, 0, f.stdout + f.stderr);
    const forked = readFileSync(join(f.json.data.path, 'log.txt'), 'utf8').split('\n').filter(Boolean);
    // Every line present is whole and the sequence has no gap: a prefix of what was written.
    forked.forEach((line, i) => {
      if (line !== `line ${i + 1}`) t.fail(`line ${i} is "${line}"`);
    });
    t.pass();
  } finally {
    writer.kill('SIGKILL');
    await new Promise((r) => writer.once('close', r));
  }
  execFileSync('rm', ['-f', log]);
  t.is(host.run(['repo', 'delete', 'app:live', '--yes']).code, 0);
});

test.serial('delete: refused while forks exist, with the commands to delete them', (t) => {
  const before = snapshotState();
  const r = host.run(['repo', 'delete', 'app', '--yes']);
  t.is(r.code, 6);
  t.is(r.json.error.code, 'HAS_FORKS');
  t.true(r.json.error.next.some((n: { run?: string }) => n.run === 'tine repo delete app:t1 --yes'));
  t.is(snapshotState(), before);
});

test.serial('delete: without --yes and without a terminal it refuses and says how', (t) => {
  const before = snapshotState();
  const r = host.run(['repo', 'delete', 'app:t2']);
  t.is(r.code, 2);
  t.is(r.json.error.code, 'CONFIRMATION_REQUIRED');
  t.is(r.json.error.field, 'yes');
  t.deepEqual(r.json.error.next[0].run, 'tine repo delete app:t2 --yes');
  t.is(snapshotState(), before);
});

test.serial('delete: removes the subvolume and the row, frees the network id', (t) => {
  const f = host.run(['repo', 'info', 'app:t2']).json.data;
  const r = host.run(['repo', 'delete', 'app:t2', '--yes']);
  t.is(r.code, 0);
  t.deepEqual(r.json.data, { ref: 'app:t2', guid: f.guid, deleted: true });
  t.false(existsSync(f.path));
  t.is(host.run(['repo', 'info', 'app:t2']).code, 3);
  const again = host.run(['repo', 'fork', 'app:t1', '--tag', 't2']);
  t.is(again.json.data.networkId, f.networkId, 'a freed id is reused only after its holder is gone');
});

test.serial('delete asks on a terminal and deletes only when the ref is typed', (t) => {
  t.is(host.run(['repo', 'fork', 'app', '--tag', 'ask']).code, 0);
  // `script` gives tine-host a pty; the answer arrives on it a moment later.
  const run = (answer: string) =>
    execFileSync('bash', ['-c', `(sleep 1; printf '%s\\n' '${answer}'; sleep 2) | script -qec "${process.execPath} ${tineHostBin} repo delete app:ask -o text" /dev/null; true`], {
      env: host.env, encoding: 'utf8', timeout: 30_000,
    });
  const no = run('nope');
  t.regex(no, /Type "app:ask" to confirm/);
  t.is(host.run(['repo', 'info', 'app:ask']).code, 0, 'a wrong answer deletes nothing');
  const yes = run('app:ask');
  t.regex(yes, /Deleted app:ask/);
  t.is(host.run(['repo', 'info', 'app:ask']).code, 3);
});

test.serial('invariant 5: bad input → exit 2, the field named, nothing written', (t) => {
  const before = snapshotState();
  const cases: [string[], string][] = [
    [['repo', 'create', 'Bad_Name'], 'name'],
    [['repo', 'create', 'a'.repeat(64)], 'name'],
    [['repo', 'create', '-lead'], ''],
    [['repo', 'create', 'app:tag'], 'name'],
    [['repo', 'create', 'newone', '--from', '/nonexistent/dir'], 'from'],
    [['repo', 'create', 'newone', '--from', '/etc/hostname'], 'from'],
    [['repo', 'fork', 'app', '--tag', 'UPPER'], 'tag'],
    [['repo', 'fork', 'app', '--tag', 'trailing-'], 'tag'],
    [['repo', 'fork', 'app', '--tag', 'x'.repeat(64)], 'tag'],
    [['repo', 'fork', 'app', '--tag', ''], 'tag'],
    [['repo', 'fork', 'a:b:c', '--tag', 'ok'], 'ref'],
    [['repo', 'fork', 'app'], ''],
    [['repo', 'info', 'APP'], 'ref'],
    [['repo', 'delete', 'app:'], 'ref'],
    [['setup', '--size', 'lots'], 'size'],
    [['repo', 'list', '--bogus'], ''],
  ];
  for (const [args, field] of cases) {
    const r = host.run(args);
    t.is(r.code, 2, `${args.join(' ')} → exit 2 (${r.stdout}${r.stderr})`);
    t.is(r.json?.ok, false, args.join(' '));
    if (field) {
      t.is(r.json.error.field, field, `${args.join(' ')} names ${field}`);
      t.true(r.json.error.message.startsWith(field), `message names the field: ${r.json.error.message}`);
    }
  }
  t.is(snapshotState(), before);
});

test.serial('not found → exit 3; name taken → exit 6; both write nothing', (t) => {
  const before = snapshotState();
  const nf = host.run(['repo', 'fork', 'ghost', '--tag', 'x']);
  t.is(nf.code, 3);
  t.is(nf.json.error.code, 'NOT_FOUND');
  t.is(host.run(['repo', 'info', 'app:ghost']).code, 3);
  t.is(host.run(['repo', 'delete', 'ghost', '--yes']).code, 3);
  const taken = host.run(['repo', 'fork', 'app', '--tag', 't1']);
  t.is(taken.code, 6);
  t.is(taken.json.error.code, 'EXISTS');
  t.true(taken.json.error.next.length > 0);
  const takenGrand = host.run(['repo', 'create', 'app']);
  t.is(takenGrand.code, 6);
  t.is(snapshotState(), before);
});

test.serial('text output on request: a step timeline with times and a Total line', (t) => {
  const r = host.run(['repo', 'fork', 'app', '--tag', 'txt', '-o', 'text']);
  t.is(r.code, 0);
  t.regex(r.stdout, /✓ CoW clone complete\s+\d+\.\d ms/);
  t.regex(r.stdout, /Total\s+\d+\.\d ms/);
  t.regex(r.stdout, /ref\s+app:txt/);
  const err = host.run(['repo', 'fork', 'app', '--tag', 'txt', '-o', 'text']);
  t.is(err.code, 6);
  t.regex(err.stderr, /\[EXISTS\].*\n.*→ .*tine repo info app:txt/);
});

test.serial('the thin client `tine` runs the same commands locally with the same exit codes', (t) => {
  const ok = host.run(['repo', 'info', 'app'], { bin: 'tine' });
  t.is(ok.code, 0);
  t.is(ok.json.data.ref, 'app');
  t.is(host.run(['repo', 'info', 'nope'], { bin: 'tine' }).code, 3);
  t.is(host.run(['repo', 'fork', 'app', '--tag', 'BAD'], { bin: 'tine' }).code, 2);
});

test.serial('setup --datastore on a filesystem that is not btrfs → exit 7 with what to do', (t) => {
  const before = readFileSync(host.configPath, 'utf8');
  const r = host.run(['setup', '--datastore', '/dev/shm']);
  t.is(r.code, 7);
  t.is(r.json.error.code, 'HOST_UNSUPPORTED');
  t.regex(r.json.error.message, /not btrfs/);
  t.true(r.json.error.next.length >= 1);
  t.is(readFileSync(host.configPath, 'utf8'), before, 'host config unchanged');
});
