// The audit chain itself (no host needed): rotation across files, and concurrent appends
// from several real processes under the kernel-released lock.
import test from 'ava';
import { spawn } from 'node:child_process';
import { mkdtempSync, readdirSync, readFileSync, rmSync, unlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { distRoot } from './helpers/host.js';
import { appendAudit, auditDir, logFiles, readAudit, verifyAudit, type AuditRecord } from '../src/audit/log.js';

const dirs: string[] = [];
test.after.always(() => {
  for (const d of dirs) rmSync(d, { recursive: true, force: true });
});

const tempState = () => {
  const d = mkdtempSync(join(tmpdir(), 'tine-audit-'));
  dirs.push(d);
  return d;
};

const rec = (i: number): AuditRecord => ({ actor: 'agent', reason: `test ${i}`, pid: process.pid, via: 'tine-host', command: 'repo delete', ref: `r${i}`, decision: 'refused', code: 'GRAND_GUARD' });

test('rotation keeps the chain verifiable across files; a removed or edited rotated file is found', async (t) => {
  const stateDir = tempState();
  for (let i = 1; i <= 60; i++) await appendAudit({ stateDir, rotateBytes: 2048 }, rec(i));
  const files = logFiles(stateDir);
  t.true(files.length >= 4, `rotated into ${files.length} files`);
  t.regex(files[0]!, /000000000001\.log$/);
  const v = verifyAudit(stateDir);
  t.is(v.entries, 60);
  t.is(v.firstSeq, 1);
  t.deepEqual(readAudit(stateDir).map((e) => e.seq), Array.from({ length: 60 }, (_, i) => i + 1));

  // Edit an entry inside a rotated file.
  const second = files[1]!;
  const original = readFileSync(second, 'utf8');
  writeFileSync(second, original.replace('"test ', '"TEST '));
  const err = t.throws(() => verifyAudit(stateDir));
  t.is((err as any).code, 'AUDIT_TAMPERED');
  t.is((err as any).details.file, second);
  t.is((err as any).details.line, 1);
  writeFileSync(second, original);
  t.is(verifyAudit(stateDir).entries, 60);

  // Remove a middle file: the first entry of the next file no longer follows.
  unlinkSync(second);
  const gap = t.throws(() => verifyAudit(stateDir));
  t.is((gap as any).details.file, files[2]);
  t.is((gap as any).details.line, 1);
});

test('concurrent appends from several processes keep one unbroken chain', async (t) => {
  const stateDir = tempState();
  const script = `
    const { appendAudit } = await import(${JSON.stringify(join(distRoot, 'src', 'audit', 'log.js'))});
    for (let i = 0; i < 100; i++) await appendAudit({ stateDir: process.argv[1], rotateBytes: 4096 }, { actor: 'agent', reason: 'w' + process.pid, pid: process.pid, via: 'tine-host', command: 'repo up', ref: 'x', decision: 'allowed' });
  `;
  const runs = Array.from({ length: 8 }, () =>
    new Promise<number | null>((resolve) => {
      const c = spawn(process.execPath, ['--input-type=module', '-e', script, stateDir], { stdio: ['ignore', 'ignore', 'inherit'] });
      const timer = setTimeout(() => c.kill('SIGKILL'), 60_000);
      c.on('close', (code) => {
        clearTimeout(timer);
        resolve(code);
      });
    }),
  );
  t.deepEqual(await Promise.all(runs), Array(8).fill(0));
  const v = verifyAudit(stateDir);
  t.is(v.entries, 800);
  t.true(logFiles(stateDir).length > 1, 'it rotated meanwhile');
  const byWriter = new Map<string, number>();
  for (const e of readAudit(stateDir)) byWriter.set(e.reason, (byWriter.get(e.reason) ?? 0) + 1);
  t.deepEqual([...byWriter.values()], Array(byWriter.size).fill(100));
  t.is(byWriter.size, 8);
  t.is(readdirSync(auditDir(stateDir)).filter((n) => !/\.log$/.test(n)).length, 0, 'no lock files left behind');
});
