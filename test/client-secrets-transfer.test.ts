// `repo push/pull --with-secrets` between two datastores over a real sshd on 127.0.0.1: the
// values arrive (same value, digest under each host's own key), never pass the client in
// clear (argv, stdout, stderr, ssh's argv log, sshd's log), both hosts audit keys and peer;
// agents are refused by the client before any connection and by the host for an agent-role
// key; tampered or misdirected ciphertext stores nothing; a failed secrets part after the
// subvolume arrived says how to retry, and the retry (--secrets-only) is idempotent.
import test from 'ava';
import { spawn, spawnSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { existsSync, mkdtempSync, readFileSync, readdirSync, rmSync, writeFileSync, appendFileSync } from 'node:fs';
import { createInterface } from 'node:readline';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import Database from 'better-sqlite3';
import { makeTestHost, tineBin, tineHostBin, type TestHost } from './helpers/host.js';
import { startSshd, type TestSshd } from './helpers/sshd.js';
import { findValues, readSecretRows, decryptWith } from './helpers/secrets.js';
import { deriveKeys, digestOf } from '../src/secrets/hostkey.js';

let remote: TestHost;
let local: TestHost;
let sshd: TestSshd;
let clientDir: string;
let env: NodeJS.ProcessEnv;
/** Every secret value handed to tine, and every byte the client printed. */
const values: string[] = [];
const outputs: string[] = [];
const secretValue = (label: string) => {
  const v = `${label}-${randomBytes(12).toString('hex')}`;
  values.push(v);
  return v;
};

interface Run { code: number | null; stdout: string; stderr: string; json: any }

function tine(args: string[], extra: NodeJS.ProcessEnv = {}): Run {
  const r = spawnSync(process.execPath, [tineBin, ...args, '-o', 'json'], { env: { ...env, ...extra }, encoding: 'utf8', input: '', timeout: 240_000 });
  outputs.push(r.stdout, r.stderr, JSON.stringify(args));
  let json: unknown;
  try { json = JSON.parse(r.stdout.trim().split('\n').pop() ?? ''); } catch { json = undefined; }
  return { code: r.status, stdout: r.stdout, stderr: r.stderr, json };
}

const clientConfig = () => join(clientDir, 'tine', 'config.json');
const secretList = (h: TestHost, ref: string): any[] => {
  const r = h.run(['repo', 'secret', 'list', ref]);
  if (r.code !== 0) throw new Error(`secret list ${ref}: ${r.stdout}${r.stderr}`);
  return r.json.data.secrets;
};
const setSecret = (h: TestHost, ref: string, key: string, value: string, mode = 'file') => {
  const r = h.run(['repo', 'secret', 'set', ref, '--key', key, '--value', '-', '--mode', mode], { input: value });
  if (r.code !== 0) throw new Error(`secret set: ${r.stdout}${r.stderr}`);
};
const hostKeys = (h: TestHost) => deriveKeys(readFileSync(join(h.stateDir, 'secret.key')));
const auditOf = (h: TestHost): any[] => {
  const dir = join(h.stateDir, 'audit');
  return existsSync(dir) ? readdirSync(dir).sort().flatMap((f) => readFileSync(join(dir, f), 'utf8').split('\n').filter(Boolean).map((l) => JSON.parse(l))) : [];
};
const rawAudit = (h: TestHost) => {
  const dir = join(h.stateDir, 'audit');
  return existsSync(dir) ? readdirSync(dir).map((f) => readFileSync(join(dir, f), 'utf8')).join('') : '';
};
const secretsTable = (h: TestHost) => JSON.stringify(readSecretRows(join(h.stateDir, 'state.db')).map((r) => [r.repo_guid, r.key, r.mode, Buffer.from(r.box).toString('hex')]));

/** End our ssh master connections by pid: those whose command line names our control dir. */
function killOurSsh(): void {
  for (const pid of readdirSync('/proc').filter((p) => /^\d+$/.test(p))) {
    try {
      const cmd = readFileSync(`/proc/${pid}/cmdline`, 'utf8');
      if (clientDir && cmd.includes(clientDir) && cmd.startsWith('ssh')) process.kill(Number(pid), 'SIGTERM');
    } catch { /* gone */ }
  }
}

test.before(async () => {
  remote = makeTestHost();
  local = makeTestHost();
  sshd = await startSshd({ setEnv: { TINE_HOST_CONFIG: remote.configPath } });
  clientDir = mkdtempSync(join(tmpdir(), 'tine-client-'));
  env = { ...local.env, ...sshd.env, TINE_CLIENT_CONFIG: clientConfig() };
  const add = tine(['machine', 'add', 'local-ssh', '--host', '127.0.0.1', '--port', String(sshd.port), '--key', sshd.humanKey]);
  if (add.code !== 0) throw new Error(`machine add: ${add.stdout}${add.stderr}`);
  // tine-host of this build on the "remote" (machine setup has its own test in client-ssh).
  const cfg = JSON.parse(readFileSync(clientConfig(), 'utf8'));
  const entry = Array.isArray(cfg.machines) ? cfg.machines.find((m: any) => m.name === 'local-ssh') : cfg.machines['local-ssh'];
  entry.tineHost = `${process.execPath} ${tineHostBin}`;
  writeFileSync(clientConfig(), JSON.stringify(cfg), { mode: 0o600 });
  // An agent-role key: its forced command makes the host treat it as an agent.
  appendFileSync(sshd.authorizedKeys, `restrict,command="${process.execPath} ${tineHostBin} rpc --role agent" ${readFileSync(`${sshd.agentKey}.pub`, 'utf8')}`);
});

test.after.always(() => {
  if (clientDir) {
    spawnSync(process.execPath, [tineBin, 'machine', 'remove', 'local-ssh'], { env, stdio: 'ignore', timeout: 20_000 });
    killOurSsh();
  }
  sshd?.stop();
  remote?.cleanup();
  local?.cleanup();
  if (clientDir) rmSync(clientDir, { recursive: true, force: true });
});

test.serial('push --with-secrets: the sink holds the same values (digests under each host\'s key), both hosts audit keys and peer, the client never sees a value', (t) => {
  t.is(local.run(['repo', 'create', 'web']).code, 0);
  const token = secretValue('api-token');
  const dbUrl = secretValue('postgres://u:pw');
  setSecret(local, 'web', 'API_TOKEN', token, 'file');
  setSecret(local, 'web', 'DB_URL', dbUrl, 'env');
  const conns = sshd.connections();

  const push = tine(['repo', 'push', 'web', '--to', 'local-ssh', '--with-secrets']);
  t.is(push.code, 0, push.stdout + push.stderr);
  t.deepEqual(push.json.data.secrets.copied.sort(), ['API_TOKEN', 'DB_URL']);
  t.deepEqual(push.json.data.secrets.unchanged, []);
  t.is(push.json.data.ref, 'web');
  t.true(push.json.steps.some((s: any) => s.step === 'secrets_store'));
  t.true(sshd.connections() > conns, 'it went over sshd');

  const [lk, rk] = [hostKeys(local), hostKeys(remote)];
  t.not(lk.keyId, rk.keyId, 'two hosts, two host keys');
  for (const [key, value, mode] of [['API_TOKEN', token, 'file'], ['DB_URL', dbUrl, 'env']] as const) {
    const src = local.run(['repo', 'secret', 'get', 'web', '--key', key]).json.data;
    const dst = remote.run(['repo', 'secret', 'get', 'web', '--key', key]).json.data;
    t.is(dst.mode, mode);
    t.is(dst.mode, src.mode);
    // Digests are keyed by each host's own key (so never comparable across hosts): each one
    // is the digest of the same value under its own host's key.
    t.is(src.digest, digestOf(lk, Buffer.from(value)));
    t.is(dst.digest, digestOf(rk, Buffer.from(value)));
    t.is(dst.actor, 'human');
  }
  // And the stored row opens to the value under the sink's own key.
  const guid = push.json.data.guid;
  const rows = readSecretRows(join(remote.stateDir, 'state.db')).filter((r) => r.repo_guid === guid);
  t.deepEqual(rows.map((r) => decryptWith(readFileSync(join(remote.stateDir, 'secret.key')), r)).sort(), [token, dbUrl].sort());

  const sealAudit = auditOf(local).find((e) => e.command === 'transfer secrets seal');
  const openAudit = auditOf(remote).find((e) => e.command === 'transfer secrets open');
  t.deepEqual(sealAudit?.keys, ['API_TOKEN', 'DB_URL']);
  t.deepEqual(openAudit?.keys?.sort(), ['API_TOKEN', 'DB_URL']);
  t.is(sealAudit.ref, 'web');
  t.is(openAudit.ref, 'web');
  t.is(sealAudit.peer, push.json.data.secrets.sinkHost);
  t.is(openAudit.peer, push.json.data.secrets.sourceHost);
  t.regex(openAudit.peer, new RegExp(`#${lk.keyId}$`));
  t.regex(sealAudit.peer, new RegExp(`#${rk.keyId}$`));
  t.is(local.run(['audit', 'verify']).code, 0);
  t.is(remote.run(['audit', 'verify']).code, 0);

  // Never in clear outside the two tine-host processes.
  t.deepEqual(findValues(outputs.join('\n'), values), [], 'client argv/stdout/stderr');
  t.deepEqual(findValues(readFileSync(sshd.sshCalls), values), [], 'argv of every ssh the client ran');
  t.deepEqual(findValues(readFileSync(sshd.log), values), [], 'sshd log');
  t.deepEqual(findValues(rawAudit(local) + rawAudit(remote), values), [], 'audit logs');
});

test.serial('re-running for the secrets only is idempotent; another value on the sink is a precondition failure, nothing stored', (t) => {
  const again = tine(['repo', 'push', 'web', '--to', 'local-ssh', '--secrets-only']);
  t.is(again.code, 0, again.stdout + again.stderr);
  t.deepEqual(again.json.data.secrets.copied, []);
  t.deepEqual(again.json.data.secrets.unchanged.sort(), ['API_TOKEN', 'DB_URL']);

  const other = secretValue('changed-on-sink');
  t.is(remote.run(['repo', 'secret', 'set', 'web', '--key', 'API_TOKEN', '--value', '-', '--rotate-secret'], { input: other }).code, 0);
  const newKey = secretValue('new-one');
  setSecret(local, 'web', 'NEW_KEY', newKey);
  const before = secretsTable(remote);
  const clash = tine(['repo', 'push', 'web', '--to', 'local-ssh', '--secrets-only']);
  t.is(clash.code, 5, clash.stdout + clash.stderr);
  t.is(clash.json.error.code, 'PRECONDITION_FAILED');
  t.regex(clash.json.error.message, /API_TOKEN/);
  t.true(clash.json.error.next.some((n: any) => /secret unset web --key API_TOKEN --rotate-secret/.test(n.run ?? '')));
  t.is(secretsTable(remote), before, 'NEW_KEY was not stored either');
  t.deepEqual(findValues(outputs.join('\n'), values), []);
});

test.serial('without --with-secrets the sink has no secrets; a fork pushed --with-secrets carries only its own (none)', (t) => {
  t.is(local.run(['repo', 'create', 'plain']).code, 0);
  setSecret(local, 'plain', 'PLAIN_KEY', secretValue('plain'));
  const push = tine(['repo', 'push', 'plain', '--to', 'local-ssh']);
  t.is(push.code, 0, push.stdout + push.stderr);
  t.is(push.json.data.secrets, undefined);
  t.deepEqual(secretList(remote, 'plain'), []);

  const fork = local.run(['repo', 'fork', 'web', '--tag', 'f1']);
  t.is(fork.code, 0);
  const pf = tine(['repo', 'push', 'web:f1', '--to', 'local-ssh', '--with-secrets']);
  t.is(pf.code, 0, pf.stdout + pf.stderr);
  t.deepEqual(pf.json.data.secrets.copied, []);
  t.deepEqual(secretList(remote, 'web:f1'), [], 'the parent\'s secrets never reach the fork');
  t.deepEqual(auditOf(local).filter((e) => e.command === 'transfer secrets seal' && e.ref === 'web:f1').map((e) => e.keys), [[]]);
});

test.serial('pull --with-secrets brings a remote repository\'s secrets here', (t) => {
  t.is(remote.run(['repo', 'create', 'api']).code, 0);
  const v = secretValue('remote-made');
  setSecret(remote, 'api', 'REMOTE_KEY', v, 'env');
  const pull = tine(['repo', 'pull', 'api', '--from', 'local-ssh', '--with-secrets']);
  t.is(pull.code, 0, pull.stdout + pull.stderr);
  t.deepEqual(pull.json.data.secrets.copied, ['REMOTE_KEY']);
  const got = local.run(['repo', 'secret', 'get', 'api', '--key', 'REMOTE_KEY']).json.data;
  t.is(got.digest, digestOf(hostKeys(local), Buffer.from(v)));
  t.is(got.mode, 'env');
  t.deepEqual(findValues(outputs.join('\n') + readFileSync(sshd.log, 'utf8') + readFileSync(sshd.sshCalls, 'utf8'), values), []);
});

test.serial('an agent is refused by the client before any SSH connection, even with the user\'s * override', (t) => {
  const conns = sshd.connections();
  const calls = sshd.sshInvocations();
  const before = secretsTable(remote);
  for (const args of [['repo', 'push', 'web', '--to', 'local-ssh', '--secrets-only'], ['repo', 'pull', 'api', '--from', 'local-ssh', '--with-secrets']]) {
    const r = tine(args, { CLAUDECODE: '1', TINE_ALLOW_GRAND_REPO: '*' });
    t.is(r.code, 4, r.stdout + r.stderr);
    t.is(r.json.error.code, 'HUMAN_ONLY');
    t.truthy(r.json.error.next?.length);
  }
  // Without the override the move itself is already refused (the guard's own rule).
  const plain = tine(['repo', 'push', 'web', '--to', 'local-ssh', '--with-secrets'], { CLAUDECODE: '1' });
  t.is(plain.code, 4);
  t.is(sshd.sshInvocations(), calls, 'ssh was never started');
  t.is(sshd.connections(), conns, 'sshd saw no connection');
  t.is(secretsTable(remote), before);
});

/** Raw `ssh` with the agent-role key, the request on stdin claiming a human client. */
function agentRpc(request: unknown) {
  const r = spawnSync('ssh', ['-i', sshd.agentKey, '-p', String(sshd.port), '-o', 'BatchMode=yes', '-o', 'StrictHostKeyChecking=no', '-o', 'UserKnownHostsFile=/dev/null', '-o', 'LogLevel=ERROR', 'root@127.0.0.1', 'tine-host rpc'], {
    input: JSON.stringify(request) + '\n', encoding: 'utf8', timeout: 60_000,
  });
  const events = r.stdout.split('\n').filter((l) => l.startsWith('{')).map((l) => JSON.parse(l));
  return { status: r.status, events, result: events.find((e) => e.event === 'result') };
}

test.serial('an agent-role key is refused by the host for both secrets verbs, whatever the client claims; refusals audited', (t) => {
  const before = secretsTable(remote);
  const claim = { actor: 'human', reason: 'trust me' };
  const open = agentRpc({ command: 'transfer secrets open', input: { ref: 'web' }, client: claim });
  t.is(open.status, 4, JSON.stringify(open.events));
  t.is(open.result?.envelope?.error?.code, 'HUMAN_ONLY');
  t.truthy(open.result?.envelope?.error?.next?.length);
  t.false(open.events.some((e) => e.event === 'secrets-offer'), 'no key offered');
  const remoteWeb = remote.run(['repo', 'info', 'web']).json.data;
  const offer = { v: 1, host: `somewhere#${'0'.repeat(12)}`, guid: remoteWeb.guid, publicKey: randomBytes(32).toString('base64url') };
  const seal = agentRpc({ command: 'transfer secrets seal', input: { ref: 'web', offer }, client: claim });
  t.is(seal.status, 4, JSON.stringify(seal.events));
  t.is(seal.result?.envelope?.error?.code, 'HUMAN_ONLY');
  t.false(JSON.stringify(seal.events).includes('"sealed"'));
  t.is(secretsTable(remote), before);
  const refused = auditOf(remote).filter((e) => e.decision === 'refused' && e.actor === 'agent').map((e) => e.command);
  t.true(refused.includes('transfer secrets open'));
  t.true(refused.includes('transfer secrets seal'));
});

/** The test as the relaying client: open on the remote (sink), seal on the local host (source), tamper, deliver. */
async function relay(ref: string, tamper: (sealed: any) => void) {
  const sink = spawn(process.execPath, [tineHostBin, 'rpc'], { env: remote.env, stdio: ['pipe', 'pipe', 'pipe'] });
  const timer = setTimeout(() => sink.kill('SIGKILL'), 120_000);
  const events: any[] = [];
  let gotOffer!: (o: any) => void;
  const offer = new Promise<any>((resolve) => { gotOffer = resolve; });
  createInterface({ input: sink.stdout }).on('line', (l) => {
    try {
      const ev = JSON.parse(l);
      events.push(ev);
      if (ev.event === 'secrets-offer') gotOffer(ev.offer);
      if (ev.event === 'result') gotOffer(undefined);
    } catch { /* not json */ }
  });
  const closed = new Promise<number | null>((resolve) => sink.on('close', (c) => { clearTimeout(timer); resolve(c); }));
  sink.stdin.write(JSON.stringify({ command: 'transfer secrets open', input: { ref } }) + '\n');
  const o = await offer;
  if (!o) throw new Error(`no offer: ${JSON.stringify(events)}`);
  const src = spawnSync(process.execPath, [tineHostBin, 'rpc'], { env: local.env, encoding: 'utf8', input: JSON.stringify({ command: 'transfer secrets seal', input: { ref, offer: o } }) + '\n', timeout: 60_000 });
  const result = src.stdout.split('\n').filter((l) => l.startsWith('{')).map((l) => JSON.parse(l)).find((e) => e.event === 'result');
  if (!result?.envelope?.ok) throw new Error(`seal failed: ${src.stdout}${src.stderr}`);
  const sealed = result.envelope.data.sealed;
  tamper(sealed);
  sink.stdin.end(JSON.stringify({ sealed }) + '\n');
  const code = await closed;
  return { code, result: events.find((e) => e.event === 'result') };
}

test.serial('tampered or misdirected ciphertext is refused by the sink with nothing stored', async (t) => {
  // `plain` is on both hosts; its secret stayed on the source.
  const before = secretsTable(remote);
  const flip = (b64: string, i: number) => { const b = Buffer.from(b64, 'base64url'); b[i] = b[i]! ^ 1; return b.toString('base64url'); };
  const cases: [string, (s: any) => void][] = [
    ['a flipped ciphertext byte', (s) => { s.box = flip(s.box, 3); }],
    ['a flipped tag byte', (s) => { s.box = flip(s.box, Buffer.from(s.box, 'base64url').length - 1); }],
    ['another source host claimed', (s) => { s.sourceHost = `evil#${'a'.repeat(12)}`; }],
    ['another public key', (s) => { s.publicKey = randomBytes(32).toString('base64url'); }],
  ];
  for (const [what, tamper] of cases) {
    const r = await relay('plain', tamper);
    t.is(r.code, 1, `${what}: ${JSON.stringify(r.result)}`);
    t.is(r.result?.envelope?.error?.code, 'SECRETS_NOT_AUTHENTIC', what);
    t.truthy(r.result?.envelope?.error?.next?.length);
    t.is(secretsTable(remote), before, `${what}: nothing stored`);
  }
  const misdirected = await relay('plain', (s) => { s.sinkHost = `other#${'b'.repeat(12)}`; });
  t.is(misdirected.result?.envelope?.error?.code, 'SECRETS_NOT_AUTHENTIC');
  t.is(secretsTable(remote), before);
  // The untouched relay works: the refusals were the tampering, not the relay.
  const clean = await relay('plain', () => {});
  t.is(clean.code, 0, JSON.stringify(clean.result));
  t.deepEqual(clean.result.envelope.data.copied.map((c: any) => c.key), ['PLAIN_KEY']);
});

test.serial('a secrets failure after the subvolume arrived: the repository is complete, the error says how to retry, the retry works', (t) => {
  t.is(local.run(['repo', 'create', 'shop']).code, 0);
  const v = secretValue('shop');
  setSecret(local, 'shop', 'SHOP_KEY', v);
  const guid = local.run(['repo', 'info', 'shop']).json.data.guid;
  // Damage the source's stored row: sealing it fails (SECRET_CORRUPT) after the move.
  const db = new Database(join(local.stateDir, 'state.db'));
  const good = db.prepare('SELECT box FROM secrets WHERE repo_guid = ?').pluck().get(guid) as Buffer;
  const bad = Buffer.from(good);
  bad[0] = bad[0]! ^ 1;
  db.prepare('UPDATE secrets SET box = ? WHERE repo_guid = ?').run(bad, guid);
  db.close();

  const push = tine(['repo', 'push', 'shop', '--to', 'local-ssh', '--with-secrets']);
  t.is(push.code, 1, push.stdout + push.stderr);
  t.is(push.json.error.code, 'SECRETS_NOT_COPIED');
  t.regex(push.json.error.message, /arrived on local-ssh complete/);
  t.is(push.json.error.details.cause, 'SECRET_CORRUPT');
  t.is(push.json.error.next[0].run, 'tine repo push shop --to local-ssh --secrets-only');
  t.is(remote.run(['repo', 'info', 'shop']).json.data.guid, guid, 'the repository arrived');
  t.deepEqual(secretList(remote, 'shop'), []);

  const db2 = new Database(join(local.stateDir, 'state.db'));
  db2.prepare('UPDATE secrets SET box = ? WHERE repo_guid = ?').run(good, guid);
  db2.close();
  const retry = tine(['repo', 'push', 'shop', '--to', 'local-ssh', '--secrets-only']);
  t.is(retry.code, 0, retry.stdout + retry.stderr);
  t.deepEqual(retry.json.data.secrets.copied, ['SHOP_KEY']);
  t.is(remote.run(['repo', 'secret', 'get', 'shop', '--key', 'SHOP_KEY']).json.data.digest, digestOf(hostKeys(remote), Buffer.from(v)));
  // --secrets-only to a host without the repository: not found, says to move it first.
  t.is(local.run(['repo', 'create', 'nowhere']).code, 0);
  const missing = tine(['repo', 'push', 'nowhere', '--to', 'local-ssh', '--secrets-only']);
  t.is(missing.code, 3, missing.stdout + missing.stderr);
  t.is(missing.json.error.code, 'NOT_FOUND');
  t.deepEqual(findValues(outputs.join('\n'), values), []);
});
