// `tine setup` on the embedded default: a sparse pool file, formatted btrfs, loop-mounted;
// idempotent; re-attached by the next command after a "reboot" (unmount + detach).
import test from 'ava';
import { mkdtempSync, writeFileSync, statSync, rmSync, existsSync, readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { spawnSync, execFileSync } from 'node:child_process';
import { tineHostBin } from './helpers/host.js';
import { isMounted } from './helpers/loopfs.js';

const dir = mkdtempSync(join(tmpdir(), 'tine-setup-'));
const mnt = join(dir, 'mnt');
const pool = join(dir, 'state', 'pool.img');
const configPath = join(dir, 'host.json');
writeFileSync(configPath, JSON.stringify({ datastore: mnt, pool: { file: pool, size: '1G' }, stateDir: join(dir, 'state'), runDir: join(dir, 'run') }));
const env = { ...process.env, TINE_HOST_CONFIG: configPath };

const run = (args: string[]) => {
  const r = spawnSync(process.execPath, [tineHostBin, ...args, '-o', 'json'], { env, encoding: 'utf8', timeout: 120_000 });
  return { code: r.status, json: JSON.parse(r.stdout.trim().split('\n').pop() || 'null'), stderr: r.stderr };
};

function loopOf(file: string): string | undefined {
  const out = execFileSync('losetup', ['-j', file], { encoding: 'utf8' }).trim();
  return out ? out.split(':')[0] : undefined;
}

test.after.always(() => {
  for (let i = 0; i < 3 && isMounted(mnt); i++) spawnSync('umount', [mnt]);
  for (let i = 0; i < 3; i++) {
    const dev = loopOf(pool);
    if (!dev) break;
    spawnSync('losetup', ['-d', dev]);
  }
  rmSync(dir, { recursive: true, force: true });
});

test.serial('setup makes the embedded default: sparse pool, btrfs, loop mount, user, state db', (t) => {
  const r = run(['setup', '--size', '1G']);
  t.is(r.code, 0, JSON.stringify(r.json) + r.stderr);
  t.is(r.json.data.embedded, true);
  t.is(r.json.data.poolFile, pool);
  const st = statSync(pool);
  t.is(st.size, 1024 ** 3);
  t.true(st.blocks * 512 < st.size / 4, 'the pool file is sparse');
  t.is(st.mode & 0o777, 0o600);
  t.is(execFileSync('findmnt', ['-n', '-o', 'FSTYPE', mnt], { encoding: 'utf8' }).trim(), 'btrfs');
  t.regex(execFileSync('getent', ['passwd', 'tine'], { encoding: 'utf8' }), /^tine:x:7111:7111:.*:\/usr\/sbin\/nologin$/m);
  t.is(statSync(join(dir, 'state', 'state.db')).mode & 0o777, 0o600);
  t.is(statSync(join(dir, 'state')).mode & 0o777, 0o700);
  t.true(existsSync(join(dir, 'run')));
  t.deepEqual(r.json.data.changed.filter((c: string) => c.startsWith('pool')).length, 1);
});

test.serial('setup again changes nothing', (t) => {
  const r = run(['setup']);
  t.is(r.code, 0);
  t.deepEqual(r.json.data.changed, []);
  t.is(statSync(pool).size, 1024 ** 3);
});

test.serial('after a reboot (pool unmounted, loop detached) the next command re-attaches the pool', (t) => {
  t.is(run(['repo', 'create', 'keep']).code, 0);
  execFileSync('umount', [mnt]);
  t.false(isMounted(mnt));
  t.is(loopOf(pool), undefined, 'loop device released (autoclear)');
  const r = run(['repo', 'list']);
  t.is(r.code, 0, JSON.stringify(r.json));
  t.true(r.json.steps.some((s: { step: string }) => s.step === 'reattach'));
  t.deepEqual(r.json.data.repos.map((x: { ref: string }) => x.ref), ['keep']);
  t.true(isMounted(mnt));
  t.is(run(['repo', 'delete', 'keep', '--yes']).code, 0);
});

test.serial('a host config with a bad field is refused naming the field', (t) => {
  const bad = join(dir, 'bad.json');
  writeFileSync(bad, JSON.stringify({ datastore: 'relative/path' }));
  const r = spawnSync(process.execPath, [tineHostBin, 'repo', 'list', '-o', 'json'], { env: { ...env, TINE_HOST_CONFIG: bad }, encoding: 'utf8' });
  t.is(r.status, 1);
  const j = JSON.parse(r.stdout);
  t.is(j.error.code, 'HOST_CONFIG_INVALID');
  t.is(j.error.field, 'datastore');
  t.is(readFileSync(bad, 'utf8'), JSON.stringify({ datastore: 'relative/path' }));
});

test.serial('commands before setup say to run setup (exit 7)', (t) => {
  const fresh = join(dir, 'fresh.json');
  writeFileSync(fresh, JSON.stringify({ datastore: join(dir, 'nowhere'), pool: { file: join(dir, 'nopool.img'), size: '1G' }, stateDir: join(dir, 'nostate'), runDir: join(dir, 'norun') }));
  const r = spawnSync(process.execPath, [tineHostBin, 'repo', 'list', '-o', 'json'], { env: { ...env, TINE_HOST_CONFIG: fresh }, encoding: 'utf8' });
  t.is(r.status, 7);
  const j = JSON.parse(r.stdout);
  t.is(j.error.next[0].run, 'tine setup');
  t.false(existsSync(join(dir, 'nostate')), 'nothing written');
});
