// `audit log` and `audit verify`: read the hash-chained log under the state dir.
import { z } from 'zod/v3';
import type { CommandSpec } from '../commands/spec.js';
import { readAudit, verifyAudit, type AuditEntry, type VerifyResult } from './log.js';

const UNITS: Record<string, number> = { s: 1e3, m: 60e3, h: 3600e3, d: 86400e3 };

/** `1h`, `30m`, `2d` before now, or an ISO time. */
export const sinceField = z.string().transform((v, zctx) => {
  const rel = /^(\d+)([smhd])$/.exec(v.trim());
  if (rel) return new Date(Date.now() - Number(rel[1]) * UNITS[rel[2]!]!);
  const t = new Date(v);
  if (/^\d{4}-\d{2}-\d{2}/.test(v) && !Number.isNaN(t.getTime())) return t;
  zctx.addIssue({ code: 'custom', message: `"${v}" is not a duration like 30m, 1h, 2d or an ISO time` });
  return z.NEVER;
});

const auditLog: CommandSpec<{ actor?: 'human' | 'agent'; since?: Date; limit: number }> = {
  name: 'audit log',
  input: z
    .object({
      actor: z.enum(['human', 'agent'], { errorMap: () => ({ message: 'must be human or agent' }) }).optional(),
      since: sinceField.optional(),
      limit: z.coerce.number().int().min(1, 'must be at least 1').max(100000).default(200),
    })
    .strict(),
  needsHost: false,
  run: (ctx, i) => ({ entries: readAudit(ctx.config.stateDir, i) }),
  human: (d: { entries: AuditEntry[] }) =>
    d.entries.length
      ? d.entries
          .map((e) => `${e.time}  ${e.actor.padEnd(5)}  ${e.decision.padEnd(7)}  ${(e.code ?? '').padEnd(17)}  ${e.command}${e.ref ? ` ${e.ref}` : ''}  (pid ${e.pid}, ${e.reason})`)
          .join('\n')
      : 'No audit entries match.',
};

const auditVerify: CommandSpec<Record<string, never>> = {
  name: 'audit verify',
  input: z.object({}).strict(),
  needsHost: false,
  run: (ctx) => verifyAudit(ctx.config.stateDir),
  human: (d: VerifyResult) =>
    `audit log intact: ${d.entries} entries in ${d.files} file(s)${d.firstSeq !== null && d.firstSeq > 1 ? ` (starts at entry ${d.firstSeq}; older files were removed)` : ''}; head ${d.head.slice(0, 16)}…`,
};

export const auditCommands: CommandSpec[] = [auditLog, auditVerify];
