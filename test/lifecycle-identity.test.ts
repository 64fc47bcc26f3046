// The identity rewrite that makes a fork's containers its own: whole addresses and whole
// path components only, state reset to stopped, the running ones reported.
import test from 'ava';
import { mkdtempSync, mkdirSync, writeFileSync, readFileSync, rmSync, existsSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { identityReplacements, rewriteText, rewriteContainers, type RepoIdentity } from '../src/docker/identity.js';
import { repoAddresses } from '../src/repo/network.js';

const ident = (guid: string, networkId: number): RepoIdentity => ({
  guid,
  path: `/mnt/tine/repos/${guid}`,
  networkId,
  addresses: repoAddresses(networkId, { addressBlock: '100.64.0.0/10' }),
  execRoot: `/run/tine/docker-exec-${networkId}`,
  socket: `/run/tine/docker-${networkId}.sock`,
  secretsDir: `/run/tine/secrets/${networkId}`,
});

const parent = ident('aaaa1111-0000-4000-8000-000000000001', 1000);
const fork = ident('bbbb2222-0000-4000-8000-000000000002', 1001);

test('addresses: whole dotted quads only; paths: whole components only', (t) => {
  const pairs = identityReplacements(parent, fork);
  const pIp = parent.addresses[0]!;
  const fIp = fork.addresses[0]!;
  t.is(rewriteText(`ADDR=${pIp}`, pairs), `ADDR=${fIp}`);
  t.is(rewriteText(`-p ${pIp}:8080`, pairs), `-p ${fIp}:8080`);
  // A longer address that merely starts with the parent's is someone else's.
  t.is(rewriteText(`${pIp}5`, pairs), `${pIp}5`);
  t.is(rewriteText(`1${pIp}`, pairs), `1${pIp}`);
  t.is(rewriteText(`"${parent.path}/data:/data"`, pairs), `"${fork.path}/data:/data"`);
  t.is(rewriteText(`"${parent.execRoot}1/netns"`, pairs), `"${parent.execRoot}1/netns"`, 'docker-exec-10001 is another repo\'s, not docker-exec-1000\'s');
  t.is(rewriteText(`"${parent.execRoot}/netns/default"`, pairs), `"${fork.execRoot}/netns/default"`);
  // A fork's container never mounts its parent's secrets (invariant 2).
  t.is(rewriteText(`"/run/tine/secrets/1000/DB_PASSWORD:/run/secrets/DB_PASSWORD:ro"`, pairs), `"/run/tine/secrets/1001/DB_PASSWORD:/run/secrets/DB_PASSWORD:ro"`);
  t.deepEqual(identityReplacements(parent, parent), [], 'own identity: nothing to rewrite');
});

test('rewriteContainers rewrites configs, reports and resets running containers', (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'tine-ident-'));
  try {
    const c1 = join(dir, 'containers', 'c1');
    const c2 = join(dir, 'containers', 'c2');
    mkdirSync(c1, { recursive: true });
    mkdirSync(c2, { recursive: true });
    writeFileSync(join(c1, 'config.v2.json'), JSON.stringify({ State: { Running: true, Pid: 42 }, Config: { Env: [`ADDR=${parent.addresses[0]}`] }, LogPath: `${parent.path}/.tine/docker/containers/c1/c1-json.log` }));
    writeFileSync(join(c1, 'hostconfig.json'), JSON.stringify({ NetworkMode: 'host', Binds: [`${parent.path}/data:/data`], RestartPolicy: { Name: 'always', MaximumRetryCount: 0 } }));
    writeFileSync(join(c2, 'config.v2.json'), JSON.stringify({ State: { Running: false, Pid: 0 }, Config: { Env: [] } }));
    writeFileSync(join(dir, 'containers', 'not-json'), 'x');
    mkdirSync(join(dir, 'network', 'files'), { recursive: true });
    writeFileSync(join(dir, 'network', 'files', 'local-kv.db'), 'store');
    const r = rewriteContainers(dir, parent, fork);
    t.deepEqual(r.wereRunning, ['c1']);
    t.true(r.networkStoreReset, 'host networking only: the source\'s network store is dropped');
    t.false(existsSync(join(dir, 'network', 'files', 'local-kv.db')));
    const cfg = JSON.parse(readFileSync(join(c1, 'config.v2.json'), 'utf8'));
    t.false(cfg.State.Running);
    t.is(cfg.State.Pid, 0);
    t.deepEqual(cfg.Config.Env, [`ADDR=${fork.addresses[0]}`]);
    t.true(cfg.LogPath.startsWith(fork.path + '/'));
    t.deepEqual(JSON.parse(readFileSync(join(c1, 'hostconfig.json'), 'utf8')).Binds, [`${fork.path}/data:/data`]);
    // Inherited from another identity: dockerd must not start it by itself before tine checked it.
    t.deepEqual(r.suspendedRestarts, [{ id: 'c1', policy: { Name: 'always', MaximumRetryCount: 0 } }]);
    t.deepEqual(JSON.parse(readFileSync(join(c1, 'hostconfig.json'), 'utf8')).RestartPolicy, { Name: 'no', MaximumRetryCount: 0 });
    t.deepEqual(JSON.parse(readFileSync(join(c2, 'config.v2.json'), 'utf8')), { State: { Running: false, Pid: 0 }, Config: { Env: [] } });
    // A user-defined network anywhere: the store is kept.
    writeFileSync(join(dir, 'network', 'files', 'local-kv.db'), 'store');
    writeFileSync(join(c2, 'hostconfig.json'), JSON.stringify({ NetworkMode: 'appnet' }));
    t.falsy(rewriteContainers(dir, parent, fork).networkStoreReset);
    t.true(existsSync(join(dir, 'network', 'files', 'local-kv.db')));
    // Idempotent: a second pass from the fork's own identity changes nothing.
    const again = rewriteContainers(dir, fork, fork);
    t.deepEqual(again, { rewritten: 0, wereRunning: [], suspendedRestarts: [] });
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('boot unit: runs restore-all, carries a non-default host config; installed only under systemd', async (t) => {
  const { bootUnitText, systemdIsInit } = await import('../src/lifecycle/host.js');
  const text = bootUnitText({ configPath: '/srv/tine/host.json' } as never, '/opt/tine/dist/src/bin/tine-host.js');
  t.regex(text, /^ExecStart=\S+ \/opt\/tine\/dist\/src\/bin\/tine-host\.js repo restore-all -o json$/m);
  t.regex(text, /^Environment=TINE_HOST_CONFIG=\/srv\/tine\/host\.json$/m);
  t.regex(text, /^WantedBy=multi-user\.target$/m);
  t.notRegex(bootUnitText({ configPath: '/etc/tine/host.json' } as never, '/x.js'), /Environment=/);
  t.is(systemdIsInit(), readFileSync('/proc/1/comm', 'utf8').trim() === 'systemd');
});
