// The guard with REAL process trees: a "user" shell (with or without the override) starts an
// "agent" (bash with a signal in its exec-time environment), which starts a shell, which
// runs `tine` (or `tine-host`). Every refusal asserts exit code, error code and that nothing
// changed. The probe `repo delete REF` without --yes is refused by the guard (exit 4) or,
// once past the guard, stops at CONFIRMATION_REQUIRED (exit 2) without deleting anything.
import test, { type ExecutionContext } from 'ava';
import { spawn } from 'node:child_process';
import { chmodSync, chownSync, mkdirSync, readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { makeTestHost, tineBin, tineHostBin, type TestHost, type RunResult } from './helpers/host.js';
import Database from 'better-sqlite3';
import { AGENT_SIGNALS } from '../src/guard/signals.js';

let host: TestHost;

test.before(() => {
  host = makeTestHost();
  for (const args of [['repo', 'create', 'app'], ['repo', 'create', 'other'], ['repo', 'create', 'base'], ['repo', 'fork', 'base', '--tag', 't1']]) {
    const r = host.run(args);
    if (r.code !== 0) throw new Error(`${args.join(' ')}: ${r.stdout}${r.stderr}`);
  }
});
test.after.always(() => host?.cleanup());

const q = (s: string) => `'${s.replace(/'/g, `'\\''`)}'`;

interface TreeOptions {
  /** Environment of the user's shell, above the agent (e.g. the override). */
  above?: Record<string, string>;
  /** The agent's signal(s), set in the agent's exec-time environment; none = no agent. */
  agent?: Record<string, string>;
  /** A prefix the agent's shell puts before the command (env -u …, a wrapper, VAR=…). */
  inner?: string;
  bin?: 'tine' | 'tine-host';
  config?: string;
}

/** user shell (bash) → agent (bash, signals) → shell (sh) → node tine … -o json */
function runTree(args: string[], o: TreeOptions = {}): Promise<RunResult> {
  const bin = o.bin === 'tine-host' ? tineHostBin : tineBin;
  const config = o.config ?? host.configPath;
  const l3 = `${o.inner ?? ''} ${q(process.execPath)} ${q(bin)} ${[...args, '-o', 'json'].map(q).join(' ')}; exit $?`;
  const agentEnv = Object.entries(o.agent ?? {}).map(([k, v]) => q(`${k}=${v}`)).join(' ');
  // `; exit $?` keeps every level a process of its own (bash would exec a lone command).
  const l2 = `sh -c "$T_L3"; exit $?`;
  const l1 = `env ${agentEnv} bash -c "$T_L2"; exit $?`;
  const env = { ...host.env, TINE_HOST_CONFIG: config, ...o.above, T_L2: l2, T_L3: l3 };
  return new Promise((resolve) => {
    const child = spawn('bash', ['-c', l1], { env, stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (d) => (stdout += d));
    child.stderr.on('data', (d) => (stderr += d));
    const timer = setTimeout(() => child.kill('SIGKILL'), 60_000);
    child.on('close', (code, signal) => {
      clearTimeout(timer);
      let json: any;
      try {
        json = JSON.parse(stdout.trim().split('\n').pop() ?? '');
      } catch {
        json = undefined;
      }
      resolve({ code, signal, stdout, stderr, json });
    });
  });
}

/** Everything a command could change: registered repos and subvolumes on disk. */
function snapshot(): string {
  const db = new Database(join(host.stateDir, 'state.db'), { readonly: true });
  try {
    const repos = db.prepare('SELECT guid, name, tag, status, state FROM repos ORDER BY guid').all();
    const dirs = readdirSync(join(host.datastore, 'repos')).sort();
    return JSON.stringify({ repos, dirs });
  } finally {
    db.close();
  }
}

async function refused(t: ExecutionContext, args: string[], o: TreeOptions, code: string): Promise<RunResult> {
  const before = snapshot();
  const r = await runTree(args, o);
  t.is(r.code, 4, `${args.join(' ')}: ${r.stdout}${r.stderr}`);
  t.is(r.json?.error?.code, code, r.stdout);
  t.true((r.json?.error?.next ?? []).length > 0, 'a refusal says what to do instead');
  t.is(snapshot(), before, 'nothing changed');
  return r;
}

/** Past the guard: the probe stops at the confirmation, nothing deleted. */
async function passes(t: ExecutionContext, ref: string, o: TreeOptions): Promise<void> {
  const before = snapshot();
  const r = await runTree(['repo', 'delete', ref], o);
  t.is(r.code, 2, `${ref}: ${r.stdout}${r.stderr}`);
  t.is(r.json?.error?.code, 'CONFIRMATION_REQUIRED', r.stdout);
  t.is(snapshot(), before);
}

const claude = { CLAUDECODE: '1' };
const AGENT_VALUES: Record<string, string> = { CURSOR_TRACE_ID: 'abc123', CODEX_THREAD_ID: 'th_1', CODEX_SANDBOX: 'seatbelt', CLINE_ACTIVE: 'true', TINE_ROLE: 'agent' };

test('1. no signal: human, allowed', async (t) => {
  await passes(t, 'app', {});
});

test('1. each signal alone makes an agent (refused on a grand)', async (t) => {
  for (const s of AGENT_SIGNALS) {
    const value = AGENT_VALUES[s.name] ?? '1';
    const r = await refused(t, ['repo', 'delete', 'app'], { agent: { [s.name]: value } }, 'GRAND_GUARD');
    t.regex(r.json.error.message, new RegExp(`${s.name}=${value}`), 'the reason names the signal');
  }
});

test('1. CLAUDECODE=true, CLAUDECODE=0 and an empty CURSOR_TRACE_ID are not signals', async (t) => {
  await passes(t, 'app', { agent: { CLAUDECODE: 'true' } });
  await passes(t, 'app', { agent: { CLAUDECODE: '0' } });
  await passes(t, 'app', { agent: { CURSOR_TRACE_ID: '' } });
});

test('2. the signal removed below the agent: still an agent', async (t) => {
  const wrapper = join(host.dir, 'wrap.sh');
  writeFileSync(wrapper, '#!/bin/sh\nunset CLAUDECODE TINE_AGENT\nexport CLAUDECODE=true\n"$@"\nexit $?\n');
  chmodSync(wrapper, 0o755);
  for (const inner of ['env -u CLAUDECODE', `env -i PATH=/usr/bin:/bin TINE_HOST_CONFIG=${q(host.configPath)}`, q(wrapper)]) {
    await refused(t, ['repo', 'delete', 'app'], { agent: claude, inner }, 'GRAND_GUARD');
  }
});

test.serial('3. agent on a grand without override: GRAND_GUARD with next steps; on a fork: allowed', async (t) => {
  const r = await refused(t, ['repo', 'delete', 'app'], { agent: claude }, 'GRAND_GUARD');
  const runs = r.json.error.next.map((n: any) => n.run);
  t.true(runs.includes('tine repo fork app --tag <tag>'), JSON.stringify(runs));
  t.regex(r.json.error.message, /grand/);
  await passes(t, 'base:t1', { agent: claude });
  // Forking a grand is what an agent should do: allowed.
  const f = await runTree(['repo', 'fork', 'base', '--tag', 'agent1'], { agent: claude });
  t.is(f.code, 0, f.stdout + f.stderr);
  t.is(f.json.data.ref, 'base:agent1');
  // Reads are allowed.
  t.is((await runTree(['repo', 'info', 'app'], { agent: claude })).code, 0);
});

test('3. the same through tine-host directly (an agent that skips the client)', async (t) => {
  await refused(t, ['repo', 'delete', 'app'], { agent: claude, bin: 'tine-host' }, 'GRAND_GUARD');
  await refused(t, ['repo', 'delete', 'app'], { agent: claude, inner: 'env -u CLAUDECODE', bin: 'tine-host' }, 'GRAND_GUARD');
  await refused(t, ['repo', 'create', 'zz'], { agent: claude, bin: 'tine-host' }, 'MACHINE_GUARD');
  await passes(t, 'base:t1', { agent: claude, bin: 'tine-host' });
});

test('4. override set above the agent: the named repo, another repo, *, a list with spaces and empty items', async (t) => {
  await passes(t, 'app', { above: { TINE_ALLOW_GRAND_REPO: 'app' }, agent: claude });
  await refused(t, ['repo', 'delete', 'app'], { above: { TINE_ALLOW_GRAND_REPO: 'other' }, agent: claude }, 'GRAND_GUARD');
  await passes(t, 'other', { above: { TINE_ALLOW_GRAND_REPO: 'other' }, agent: claude });
  await passes(t, 'app', { above: { TINE_ALLOW_GRAND_REPO: '*' }, agent: claude });
  await passes(t, 'app', { above: { TINE_ALLOW_GRAND_REPO: ' other , ,app ,' }, agent: claude });
  await passes(t, 'other', { above: { TINE_ALLOW_GRAND_REPO: ' other , ,app ,' }, agent: claude });
  await refused(t, ['repo', 'delete', 'base'], { above: { TINE_ALLOW_GRAND_REPO: ' other , ,app ,' }, agent: claude }, 'GRAND_GUARD');
  // Set by the user in the same command that starts the agent: the agent's exec env has it.
  await passes(t, 'app', { agent: { ...claude, TINE_ALLOW_GRAND_REPO: 'app' } });
});

const REJECTED = 'agent-initiated overrides are not accepted; only the user can set it before starting the agent';

test('5. override set inside the agent: OVERRIDE_REJECTED', async (t) => {
  for (const bin of ['tine', 'tine-host'] as const) {
    const r = await refused(t, ['repo', 'delete', 'app'], { agent: claude, inner: 'env TINE_ALLOW_GRAND_REPO=app', bin }, 'OVERRIDE_REJECTED');
    t.true(r.json.error.message.includes(REJECTED), r.json.error.message);
  }
  // Also when the agent drops its signal at the same time.
  await refused(t, ['repo', 'delete', 'app'], { agent: claude, inner: 'env -u CLAUDECODE TINE_ALLOW_GRAND_REPO=*' }, 'OVERRIDE_REJECTED');
});

test('5. a list widened inside the agent keeps only what the user set', async (t) => {
  const o = { above: { TINE_ALLOW_GRAND_REPO: 'app' }, agent: claude, inner: "env TINE_ALLOW_GRAND_REPO='app,other'" };
  await passes(t, 'app', o);
  const r = await refused(t, ['repo', 'delete', 'other'], o, 'OVERRIDE_REJECTED');
  t.true(r.json.error.message.includes(REJECTED));
});

test('5. set above but changed inside to *: only what was set above holds', async (t) => {
  const o = { above: { TINE_ALLOW_GRAND_REPO: 'app' }, agent: claude, inner: "env TINE_ALLOW_GRAND_REPO='*'" };
  await passes(t, 'app', o);
  await refused(t, ['repo', 'delete', 'other'], o, 'OVERRIDE_REJECTED');
  await refused(t, ['repo', 'create', 'sneaky'], o, 'OVERRIDE_REJECTED');
  await refused(t, ['repo', 'delete', 'other'], { ...o, bin: 'tine-host' }, 'OVERRIDE_REJECTED');
});

test.serial('6. machine-level commands need * from above', async (t) => {
  await refused(t, ['repo', 'create', 'newone'], { agent: claude }, 'MACHINE_GUARD');
  await refused(t, ['setup'], { agent: claude }, 'MACHINE_GUARD');
  await refused(t, ['repo', 'create', 'newone'], { above: { TINE_ALLOW_GRAND_REPO: 'newone' }, agent: claude }, 'MACHINE_GUARD');
  await refused(t, ['setup'], { above: { TINE_ALLOW_GRAND_REPO: 'app,other' }, agent: claude, bin: 'tine-host' }, 'MACHINE_GUARD');
  const c = await runTree(['repo', 'create', 'newone'], { above: { TINE_ALLOW_GRAND_REPO: '*' }, agent: claude });
  t.is(c.code, 0, c.stdout + c.stderr);
  t.is(c.json.data.ref, 'newone');
  const s = await runTree(['setup'], { above: { TINE_ALLOW_GRAND_REPO: '*' }, agent: claude });
  t.is(s.code, 0, s.stdout + s.stderr);
  t.is(host.run(['repo', 'delete', 'newone', '--yes']).code, 0);
});

test('6. role agent on tine-host: --role agent or TINE_ROLE=agent, whatever else the caller says', async (t) => {
  await refused(t, ['--role', 'agent', 'repo', 'delete', 'app'], { bin: 'tine-host' }, 'GRAND_GUARD');
  await refused(t, ['--role', 'agent', 'setup'], { bin: 'tine-host' }, 'MACHINE_GUARD');
  // A role given outside the process tree has no verifiable boundary: no override.
  const r = await refused(t, ['--role', 'agent', 'repo', 'delete', 'app'], { bin: 'tine-host', above: { TINE_ALLOW_GRAND_REPO: 'app' } }, 'OVERRIDE_REJECTED');
  t.regex(r.json.error.message, /could not be verified/);
  // The SSH forced command of an agent key sets TINE_ROLE=agent in tine-host's environment.
  await refused(t, ['repo', 'delete', 'app'], { bin: 'tine-host', inner: 'env TINE_ROLE=agent CLAUDECODE=0' }, 'GRAND_GUARD');
  await passes(t, 'app', { bin: 'tine-host', inner: 'env TINE_ROLE=agent TINE_ALLOW_GRAND_REPO=app' });
  // --role human does not exist: nobody can talk the host down.
  const h = await runTree(['--role', 'human', 'repo', 'delete', 'app'], { agent: claude, bin: 'tine-host' });
  t.is(h.code, 2, h.stdout);
});

test.serial('7. /proc unreadable (empty proc root): overrides refused, origin could not be verified', async (t) => {
  const emptyProc = join(host.dir, 'empty-proc');
  mkdirSync(emptyProc, { recursive: true });
  const config = join(host.dir, 'host-noproc.json');
  writeFileSync(config, JSON.stringify({ ...JSON.parse(readFileSync(host.configPath, 'utf8')), procRoot: emptyProc }));
  for (const bin of ['tine', 'tine-host'] as const) {
    const r = await refused(t, ['repo', 'delete', 'app'], { config, above: { TINE_ALLOW_GRAND_REPO: 'app' }, agent: claude, bin }, 'OVERRIDE_REJECTED');
    t.regex(r.json.error.message, /origin could not be verified/);
    // The signal in the current environment still makes an agent.
    await refused(t, ['repo', 'delete', 'app'], { config, agent: claude, bin }, 'GRAND_GUARD');
    await refused(t, ['repo', 'create', 'x1'], { config, above: { TINE_ALLOW_GRAND_REPO: '*' }, agent: claude, bin }, 'OVERRIDE_REJECTED');
  }
  // The knob is honoured only from a root-owned config no one else can write: an agent's
  // own config file cannot blind the guard (the override from above works again).
  chownSync(config, 65534, 65534);
  try {
    await passes(t, 'app', { config, above: { TINE_ALLOW_GRAND_REPO: 'app' }, agent: claude });
    chownSync(config, 0, 0);
    chmodSync(config, 0o666);
    await passes(t, 'app', { config, above: { TINE_ALLOW_GRAND_REPO: 'app' }, agent: claude, bin: 'tine-host' });
  } finally {
    chownSync(config, 0, 0);
    chmodSync(config, 0o644);
  }
});

test('the client refuses before it spawns tine-host (audit entry via tine)', async (t) => {
  const r = await refused(t, ['repo', 'delete', 'other'], { agent: { GEMINI_CLI: '1' } }, 'GRAND_GUARD');
  t.truthy(r.json);
  const log = host.run(['audit', 'log', '--actor', 'agent']).json.data.entries as any[];
  const mine = log.filter((e) => e.ref === 'other' && /GEMINI_CLI=1/.test(e.reason));
  t.true(mine.length >= 1);
  t.true(mine.every((e) => e.via === 'tine'), 'no tine-host was spawned for it');
});

test('an agent with a bad ref gets exit 2 from validation, not a guard verdict', async (t) => {
  const before = snapshot();
  for (const bin of ['tine', 'tine-host'] as const) {
    const r = await runTree(['repo', 'delete', 'Bad_Ref'], { agent: claude, bin });
    t.is(r.code, 2, r.stdout);
    t.is(r.json?.error?.code, 'INVALID_INPUT');
    t.is(r.json?.error?.field, 'ref');
  }
  t.is(snapshot(), before);
});

test('sandbox-gateway: the repository comes from its guid; an agent cannot enter a grand through it', async (t) => {
  const db = new Database(join(host.stateDir, 'state.db'), { readonly: true });
  const guidOf = (name: string, tag: string | null) =>
    (db.prepare("SELECT guid FROM repos WHERE name = ? AND coalesce(tag, '') = ?").get(name, tag ?? '') as { guid: string }).guid;
  const grand = guidOf('app', null);
  db.close();
  await refused(t, ['sandbox-gateway', grand], { agent: claude }, 'GRAND_GUARD');
  await refused(t, ['sandbox-gateway', grand], { bin: 'tine-host', inner: 'env TINE_ROLE=agent' }, 'GRAND_GUARD');
  // An unknown guid: no repository to judge, so an agent needs `*` (fail closed).
  await refused(t, ['sandbox-gateway', '00000000-0000-4000-8000-000000000000'], { agent: claude, bin: 'tine-host' }, 'MACHINE_GUARD');
});

test('a tree deeper than 64 levels is treated as an agent (an agent could hide above it)', async (t) => {
  const nest = join(host.dir, 'nest.sh');
  writeFileSync(nest, '#!/bin/sh\nn=$1; shift\nif [ "$n" -gt 0 ]; then "$0" $((n-1)) "$@"; exit $?; fi\n"$@"\nexit $?\n');
  chmodSync(nest, 0o755);
  const r = await refused(t, ['repo', 'delete', 'app'], { inner: `${q(nest)} 70`, bin: 'tine-host' }, 'GRAND_GUARD');
  t.regex(r.json.error.message, /deeper than 64 levels/);
  // 40 levels: the walk reaches init; a human.
  await passes(t, 'app', { inner: `${q(nest)} 40`, bin: 'tine-host' });
});
