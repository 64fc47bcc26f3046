// The endpoint's rules as a function, on a real directory tree (symlinks resolved by the
// kernel's lstat/readlink): the cases the CLI cannot send (API spellings, raw bodies).
import test from 'ava';
import { mkdtempSync, mkdirSync, rmSync, symlinkSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { decide, resolveInside, stripVersion, type DaemonLookups, type PolicyContext } from '../src/docker/proxy-policy.js';

const dir = mkdtempSync(join(tmpdir(), 'tine-policy-'));
const repo = join(dir, 'repo');
mkdirSync(join(repo, 'data', 'sub'), { recursive: true });
symlinkSync('/etc', join(repo, 'abs-out'));
symlinkSync('../../..', join(repo, 'data', 'sub', 'climb'));
symlinkSync('sub', join(repo, 'data', 'in'));
symlinkSync(join(repo, 'data'), join(repo, 'abs-in'));
test.after.always(() => rmSync(dir, { recursive: true, force: true }));

const ctx: PolicyContext = { repoPath: repo, secretsDir: join(dir, 'run', 'secrets', '5'), runDir: join(dir, 'run'), proxySocket: join(dir, 'run', 'docker-5.sock'), hostNetworkIsRepoNetwork: false };
const none: DaemonLookups = { volume: async () => null, container: async () => null };
const create = (HostConfig: unknown) => decide({ method: 'POST', path: '/v1.50/containers/create', query: new URLSearchParams(), body: { Image: 'x', HostConfig } }, ctx, none);

test('resolveInside: links and .. are resolved inside the repository only', (t) => {
  t.deepEqual(resolveInside(join(repo, 'data/in/x'), [repo]), { inside: true, path: join(repo, 'data/sub/x') });
  t.deepEqual(resolveInside(join(repo, 'abs-in/new/tail'), [repo]), { inside: true, path: join(repo, 'data/new/tail') });
  t.false(resolveInside(join(repo, 'abs-out/passwd'), [repo]).inside);
  t.false(resolveInside(join(repo, 'data/sub/climb'), [repo]).inside);
  t.false(resolveInside(join(repo, 'missing/../../x'), [repo]).inside);
  t.false(resolveInside(`${repo}-other/x`, [repo]).inside);
  t.true(resolveInside(join(repo, 'data/../data/f'), [repo]).inside);
});

test('field names are matched as dockerd matches them (case-insensitive, Unicode folding)', async (t) => {
  for (const hc of [{ privileged: true }, { PRIVILEGED: true }, { Privileged: true }]) {
    const d = await create(hc);
    t.false(d.allow, JSON.stringify(hc));
  }
  const folded = await decide({ method: 'POST', path: '/containers/create', query: new URLSearchParams(), body: { hostconfig: { ['\u017fecurityOpt']: ['seccomp=unconfined'] } } }, ctx, none);
  t.false(folded.allow);
  const dup = await create({ Privileged: true, privileged: false });
  t.false(dup.allow);
  t.regex((dup as { message: string }).message, /another spelling/);
  t.true((await create({ Binds: [`${repo}/data:/d`], CapAdd: ['CAP_CHOWN', 'net_raw'] })).allow);
});

test('refusals of what the CLI cannot send: non-object bodies, start with a host config, unknown mount types', async (t) => {
  const q = new URLSearchParams();
  t.false((await decide({ method: 'POST', path: '/containers/create', query: q, body: [] }, ctx, none)).allow);
  t.false((await decide({ method: 'POST', path: '/containers/create', query: q }, ctx, none)).allow);
  t.false((await decide({ method: 'POST', path: '/containers/x/start', query: q, body: { Privileged: true } }, ctx, none)).allow);
  t.false((await create({ Mounts: [{ Type: 'cluster', Source: 'x', Target: '/x' }] })).allow);
  t.false((await create({ MaskedPaths: [] })).allow);
  t.false((await create({ SecurityOpt: ['label=disable'] })).allow);
  t.false((await create({ CapAdd: ['ALL'] })).allow);
  t.false((await create({ Binds: [`${ctx.secretsDir}/../../docker-5.sock:/s`] })).allow);
  t.true((await create({ Binds: [`${ctx.secretsDir}/KEY:/run/secrets/KEY:ro`] })).allow);
  t.false((await decide({ method: 'GET', path: '/v1.41/plugins', query: q }, ctx, none)).allow);
  t.false((await decide({ method: 'POST', path: '/containers/x/update', query: q, body: { Devices: [{ PathOnHost: '/dev/sda' }] } }, ctx, none)).allow);
  t.true((await decide({ method: 'POST', path: '/containers/x/start', query: q }, ctx, none)).allow, 'unknown container: the daemon answers 404');
  t.is(stripVersion('/v1.50/containers/json'), '/containers/json');
});
