// Client config validation and the RPC endpoint's own input checks: bad input is exit 2
// with the field named, and nothing is written.
import test from 'ava';
import { spawnSync } from 'node:child_process';
import { mkdtempSync, writeFileSync, readFileSync, rmSync, readdirSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { tineBin, tineHostBin } from './helpers/host.js';

const dir = mkdtempSync(join(tmpdir(), 'tine-client-config-'));
test.after.always(() => rmSync(dir, { recursive: true, force: true }));

const clean = (): NodeJS.ProcessEnv => {
  const env: NodeJS.ProcessEnv = { ...process.env, TINE_CLIENT_CONFIG: join(dir, 'tine', 'config.json'), TINE_HOST_CONFIG: join(dir, 'no-host.json') };
  for (const k of ['TINE_AGENT', 'CLAUDECODE', 'GEMINI_CLI', 'COPILOT_CLI', 'CURSOR_TRACE_ID', 'CODEX_THREAD_ID', 'CODEX_SANDBOX', 'CLINE_ACTIVE', 'TINE_ALLOW_GRAND_REPO']) delete env[k];
  return env;
};

test.serial('a client config with a bad field is refused naming that field', (t) => {
  const cfg = join(dir, 'tine', 'config.json');
  spawnSync('mkdir', ['-p', join(dir, 'tine')]);
  const bad = JSON.stringify({ machines: [{ name: 'box', host: 'example.test', port: 'twenty-two', knownHostKey: 'SHA256:x' }] });
  writeFileSync(cfg, bad);
  const r = spawnSync(process.execPath, [tineBin, 'machine', 'list', '-o', 'json'], { env: clean(), encoding: 'utf8' });
  t.is(r.status, 2, r.stdout + r.stderr);
  const env = JSON.parse(r.stdout);
  t.is(env.error.code, 'CLIENT_CONFIG_INVALID');
  t.is(env.error.field, 'machines.0.port');
  t.is(readFileSync(cfg, 'utf8'), bad);
  rmSync(cfg);
});

test.serial('machine add refuses bad input before any contact, naming the field', (t) => {
  for (const [args, field] of [
    [['machine', 'add', 'Bad_Name', '--host', '127.0.0.1'], 'name'],
    [['machine', 'add', 'box', '--host', 'a b'], 'host'],
    [['machine', 'add', 'box', '--host', '127.0.0.1', '--agent'], 'key'],
  ] as const) {
    const r = spawnSync(process.execPath, [tineBin, ...args, '-o', 'json'], { env: clean(), encoding: 'utf8' });
    t.is(r.status, 2, r.stdout + r.stderr);
    t.is(JSON.parse(r.stdout).error.field, field);
  }
  t.deepEqual(readdirSync(dir).filter((f) => f !== 'tine'), []);
});

test('tine-host rpc answers a bad request with exit 2 and the field', (t) => {
  const notJson = spawnSync(process.execPath, [tineHostBin, 'rpc'], { env: clean(), encoding: 'utf8', input: 'nonsense\n' });
  t.is(notJson.status, 2);
  t.is(JSON.parse(notJson.stdout.trim().split('\n').pop()!).envelope.error.code, 'RPC_BAD_REQUEST');
  const badActor = spawnSync(process.execPath, [tineHostBin, 'rpc'], {
    env: clean(), encoding: 'utf8', input: JSON.stringify({ command: 'repo list', input: {}, client: { actor: 'robot' } }) + '\n',
  });
  t.is(badActor.status, 2);
  const ev = JSON.parse(badActor.stdout.trim().split('\n').pop()!);
  t.is(ev.event, 'result');
  t.is(ev.envelope.error.field, 'client.actor');
  const smuggled = spawnSync(process.execPath, [tineHostBin, 'rpc'], {
    env: clean(), encoding: 'utf8', input: JSON.stringify({ command: 'repo exec', input: {}, argv: ['setup'] }) + '\n',
  });
  t.is(smuggled.status, 2, smuggled.stdout);
  t.is(JSON.parse(smuggled.stdout.trim().split('\n').pop()!).envelope.error.field, 'argv');
});
