// deliverSecrets / withdrawSecrets called directly (as the lifecycle does at repo up/down),
// against a real tmpfs mount: modes, owners, contents, who can read, and removal.
import test from 'ava';
import { randomBytes } from 'node:crypto';
import { spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, readdirSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { makeTestHost, type TestHost } from './helpers/host.js';
import { loadHostConfig, resetHostConfigCache } from '../src/host/config.js';
import { openDb, type Db } from '../src/state/db.js';
import { BtrfsSubvolumeDriver } from '../src/store/btrfs.js';
import { Timeline } from '../src/ops/timeline.js';
import { nonInteractive, type OpContext } from '../src/ops/context.js';
import { findByRef, toRecord, type RepoRecord } from '../src/repo/registry.js';
import { deliverSecrets, withdrawSecrets, isMountPoint, secretsDirOf } from '../src/secrets/delivery.js';

let host: TestHost | undefined;
let db: Db | undefined;
const mounts: string[] = [];

function ctx(): OpContext {
  const config = loadHostConfig();
  db ??= openDb(config);
  return { config, db, store: new BtrfsSubvolumeDriver(), timeline: new Timeline(), actor: { kind: 'human', reason: 'test' }, caller: nonInteractive };
}

function record(ref: string): RepoRecord {
  const [name, tag] = ref.split(':');
  const row = findByRef(ctx().db, { name: name!, tag: tag ?? null });
  if (!row) throw new Error(`no ${ref}`);
  return toRecord(row, ctx().config);
}

function tine(args: string[], input?: string) {
  const r = host!.run(args, { input });
  if (r.code !== 0) throw new Error(`${args.join(' ')}: ${r.stdout}${r.stderr}`);
  return r.json;
}

const envValue = `env-${randomBytes(12).toString('hex')}`;
const fileValue = `file-${randomBytes(12).toString('hex')}\nline two\n`;
const certValue = `cert-${randomBytes(12).toString('hex')}`;

test.before(() => {
  if (process.getuid?.() !== 0) throw new Error('secrets tests need root');
  host = makeTestHost();
  process.env.TINE_HOST_CONFIG = host.configPath;
  resetHostConfigCache();
  tine(['repo', 'create', 'shop']);
  tine(['repo', 'secret', 'set', 'shop', '--key', 'STRIPE_KEY', '--value', '-', '--mode', 'env'], envValue + '\n');
  tine(['repo', 'secret', 'set', 'shop', '--key', 'DB_PASSWORD', '--value', '-'], fileValue + '\n');
  tine(['repo', 'secret', 'set', 'shop', '--key', 'TLS_CERT', '--value', certValue, '--mode', 'file']);
  tine(['repo', 'fork', 'shop', '--tag', 'f1']);
  for (const ref of ['shop', 'shop:f1']) mounts.push(secretsDirOf(loadHostConfig(), record(ref).networkId));
});

test.after.always(() => {
  db?.close();
  for (const m of mounts) {
    for (let i = 0; i < 5 && existsSync(m) && isMountPoint(m); i++) spawnSync('umount', ['-l', m]);
  }
  host?.cleanup();
});

test.serial('env secrets come back as TINE_SECRET_<KEY>, file secrets on a read-only tmpfs; withdraw removes it', async (t) => {
  const repo = record('shop');
  const got = await deliverSecrets(ctx(), repo);
  t.deepEqual(got.env, { TINE_SECRET_STRIPE_KEY: envValue });
  const dir = secretsDirOf(ctx().config, repo.networkId);
  t.is(got.fileDir, dir);
  t.true(isMountPoint(dir));
  const fm = spawnSync('findmnt', ['-n', '-o', 'FSTYPE,OPTIONS', dir], { encoding: 'utf8' }).stdout.trim();
  t.regex(fm, /^tmpfs\s/);
  for (const opt of ['ro', 'nosuid', 'nodev', 'noexec', 'mode=700']) t.true(fm.split(/[\s,]/).includes(opt), `${opt} in ${fm}`);
  const st = statSync(dir);
  t.is(st.mode & 0o777, 0o700);
  t.is(st.uid, 0);
  t.is(st.gid, 0);
  t.is(statSync(join(ctx().config.runDir, 'secrets')).mode & 0o777, 0o700);
  t.deepEqual(readdirSync(dir).sort(), ['DB_PASSWORD', 'TLS_CERT']);
  t.is(readFileSync(join(dir, 'DB_PASSWORD'), 'utf8'), fileValue, 'exactly the value: one stdin newline dropped, inner ones kept');
  t.is(readFileSync(join(dir, 'TLS_CERT'), 'utf8'), certValue);
  for (const f of ['DB_PASSWORD', 'TLS_CERT']) {
    const fst = statSync(join(dir, f));
    t.is(fst.mode & 0o777, 0o444);
    t.is(fst.uid, 0);
  }
  // Read-only even for root.
  t.throws(() => writeFileSync(join(dir, 'TLS_CERT'), 'x'), { code: 'EROFS' });
  // The sandbox user (any repository's) cannot get in.
  const asSandbox = spawnSync('cat', [join(dir, 'DB_PASSWORD')], { uid: 7111, gid: 7111, encoding: 'utf8' });
  t.not(asSandbox.status, 0);
  t.false(asSandbox.stdout.includes('file-'));
  t.regex(asSandbox.stderr, /Permission denied/);
  const ls = spawnSync('ls', [dir], { uid: 7111, gid: 7111, encoding: 'utf8' });
  t.not(ls.status, 0);

  // A second delivery replaces the first (no stacked mounts).
  const again = await deliverSecrets(ctx(), repo);
  t.is(again.fileDir, dir);
  t.is(spawnSync('findmnt', ['-n', dir], { encoding: 'utf8' }).stdout.trim().split('\n').length, 1);

  await withdrawSecrets(ctx(), repo);
  t.false(isMountPoint(dir));
  t.false(existsSync(dir));
  await t.notThrowsAsync(withdrawSecrets(ctx(), repo), 'withdraw is idempotent');
});

test.serial('empty bind-source directories dockerd made before delivery do not block it', async (t) => {
  const repo = record('shop');
  const dir = secretsDirOf(ctx().config, repo.networkId);
  mkdirSync(join(dir, 'DB_PASSWORD'), { recursive: true });
  const got = await deliverSecrets(ctx(), repo);
  t.is(readFileSync(join(dir, 'DB_PASSWORD'), 'utf8'), fileValue);
  t.is(got.fileDir, dir);
  await withdrawSecrets(ctx(), repo);
  t.false(existsSync(dir));
  // A non-empty leftover is not deleted: withdraw says so instead.
  mkdirSync(join(dir, 'X'), { recursive: true });
  writeFileSync(join(dir, 'X', 'keep'), 'operator file');
  await t.throwsAsync(withdrawSecrets(ctx(), repo), { code: 'ENOTEMPTY' });
  t.true(existsSync(join(dir, 'X', 'keep')));
  rmSync(dir, { recursive: true });
});

test.serial('a fork gets nothing delivered', async (t) => {
  const fork = record('shop:f1');
  const got = await deliverSecrets(ctx(), fork);
  t.deepEqual(got, { env: {}, fileDir: null });
  t.false(existsSync(secretsDirOf(ctx().config, fork.networkId)));
});

test.serial('only env secrets: no tmpfs', async (t) => {
  tine(['repo', 'create', 'envonly']);
  tine(['repo', 'secret', 'set', 'envonly', '--key', 'ONLY', '--value', 'v-' + randomBytes(8).toString('hex'), '--mode', 'env']);
  const repo = record('envonly');
  mounts.push(secretsDirOf(ctx().config, repo.networkId));
  const got = await deliverSecrets(ctx(), repo);
  t.deepEqual(Object.keys(got.env), ['TINE_SECRET_ONLY']);
  t.is(got.fileDir, null);
  t.false(existsSync(secretsDirOf(ctx().config, repo.networkId)));
});

test.serial('deleting a repository with delivered secrets unmounts them', async (t) => {
  const repo = record('shop');
  const got = await deliverSecrets(ctx(), repo);
  t.truthy(got.fileDir);
  t.true(isMountPoint(got.fileDir!));
  tine(['repo', 'delete', 'shop:f1', '--yes']);
  tine(['repo', 'delete', 'shop', '--yes']);
  t.false(isMountPoint(got.fileDir!));
  t.false(existsSync(got.fileDir!));
  const rows = ctx().db.prepare('SELECT count(*) FROM secrets WHERE repo_guid = ?').pluck().get(repo.guid);
  t.is(rows, 0);
});
