// The policy table covers every command, and the pieces the decision rests on: the override
// parser, the stat parser against a real process whose name holds ')' and spaces, and the
// fs and native readers agreeing on a real process tree.
import test from 'ava';
import { spawn, type ChildProcess } from 'node:child_process';
import { copyFileSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { commands } from '../src/commands/registry.js';
import { POLICY, CONTRACT_COMMANDS, policyFor } from '../src/guard/policy.js';
import { parseOverride, formatOverride, overrideCovers } from '../src/guard/override.js';
import { FsProcReader } from '../src/guard/proc.js';
import { NativeProcReader } from '../src/guard/native-proc.js';
import { detect, readChain } from '../src/guard/detect.js';
import { AGENT_SIGNALS, findSignal } from '../src/guard/signals.js';

const children: ChildProcess[] = [];
const dirs: string[] = [];
test.after.always(() => {
  for (const c of children) if (c.exitCode === null) c.kill('SIGKILL');
  for (const d of dirs) rmSync(d, { recursive: true, force: true });
});

test('every registered command and every contract command has a policy entry', (t) => {
  for (const c of commands) t.truthy(policyFor(c.name), `no guard policy for registered command "${c.name}"`);
  for (const name of CONTRACT_COMMANDS) t.truthy(policyFor(name), `no guard policy for contract command "${name}"`);
  t.is(new Set(POLICY.map((p) => p.command)).size, POLICY.length, 'one entry per command');
  // Commands that act on a repository name the field that holds it.
  for (const c of commands) if (c.target) t.truthy(policyFor(c.name)?.target, `${c.name} has a target field`);
});

test('the policy keeps agents off grands for mutating and entering commands', (t) => {
  for (const name of ['repo delete', 'repo up', 'repo down', 'repo exec', 'repo connect', 'repo secret set', 'repo secret unset']) {
    t.is(policyFor(name)?.agent, 'grand', name);
  }
  for (const name of ['setup', 'repo create', 'machine add', 'machine setup', 'machine remove']) t.is(policyFor(name)?.agent, 'machine', name);
  for (const name of ['repo fork', 'repo list', 'repo info', 'repo secret get', 'repo secret list', 'audit log', 'audit verify']) t.is(policyFor(name)?.agent, 'read', name);
});

test('override parsing: *, names, spaces and empty items; nothing = no override', (t) => {
  t.is(formatOverride(parseOverride(' b , ,a ,')), 'a,b');
  t.is(formatOverride(parseOverride('a,*')), '*');
  t.is(parseOverride(''), null);
  t.is(parseOverride(' , ,'), null);
  t.is(parseOverride(undefined), null);
  t.true(overrideCovers(parseOverride('app'), 'app'));
  t.false(overrideCovers(parseOverride('app'), 'ap'));
  t.false(overrideCovers(parseOverride('app'), 'other'));
});

test('signals: exact 1 vs non-empty; CLAUDECODE=true is not one', (t) => {
  t.is(findSignal({ CLAUDECODE: '1' })?.signal.name, 'CLAUDECODE');
  t.is(findSignal({ CLAUDECODE: 'true' }), undefined);
  t.is(findSignal({ GEMINI_CLI: 'yes' }), undefined);
  t.is(findSignal({ CURSOR_TRACE_ID: '' }), undefined);
  t.is(findSignal({ CURSOR_TRACE_ID: 'x' })?.signal.name, 'CURSOR_TRACE_ID');
  for (const s of AGENT_SIGNALS) t.truthy(s.setBy);
});

test('stat parsing takes the parent after the LAST ")" (a real process named "a) 9 (b")', async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'tine-guard-'));
  dirs.push(dir);
  const exe = join(dir, 'a) 9 (b');
  copyFileSync('/bin/sleep', exe);
  const { chmodSync } = await import('node:fs');
  chmodSync(exe, 0o755);
  const child = spawn(exe, ['30'], { stdio: 'ignore' });
  children.push(child);
  await new Promise((r) => setTimeout(r, 200));
  const fs = new FsProcReader().stat(child.pid!);
  t.is(fs.ppid, process.pid);
  t.is(fs.comm, 'a) 9 (b');
  t.deepEqual(new NativeProcReader().stat(child.pid!), fs);
  child.kill('SIGKILL');
});

test('fs and native readers see the same chain and the same verdict', (t) => {
  const self = { pid: process.pid, env: { ...process.env, CLAUDECODE: '1' } };
  const a = readChain(new FsProcReader(), self);
  const b = readChain(new NativeProcReader(), self);
  t.deepEqual(a.nodes.map((n) => [n.pid, n.comm]), b.nodes.map((n) => [n.pid, n.comm]));
  t.is(a.walk.stoppedBy, 'init');
  const d = detect(new FsProcReader(), self);
  t.is(d.kind, 'agent');
  // The signal is only in the in-memory env: no exec-time boundary, so no override counts.
  t.false(d.overrideVerifiable);
});
