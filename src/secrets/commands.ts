// The secret commands of the contract. Inputs validated once here; the value fields are
// checked without ever being quoted in a message.
import { z } from 'zod/v3';
import type { CommandSpec } from '../commands/spec.js';
import { refField } from '../commands/spec.js';
import type { Ref } from '../repo/ref.js';
import { keyField, modeField, valueField } from './validate.js';
import { setSecret, getSecret, listSecrets, unsetSecret, liftSecrets, type LiftResult, type SecretChange } from './operations.js';
import type { SecretInfo, SecretMode } from './store.js';

/** --current and --rotate-secret exclude each other (exit 2, field named). */
const oneCheck = <T extends { current?: string; rotateSecret?: boolean }>(i: T, zctx: z.RefinementCtx) => {
  if (i.current !== undefined && i.rotateSecret) {
    zctx.addIssue({ code: 'custom', path: ['rotateSecret'], message: 'cannot be combined with --current; give the old value with --current, or rotate without it' });
  }
};

const currentField = z.string({ required_error: 'must be a string', invalid_type_error: 'must be a string' }).min(1, 'is empty');

type SetInput = { ref: Ref; key: string; value: string; mode?: SecretMode; current?: string; rotateSecret: boolean };
const secretSet: CommandSpec<SetInput> = {
  name: 'repo secret set',
  input: z
    .object({ ref: refField, key: keyField, value: valueField, mode: modeField.optional(), current: currentField.optional(), rotateSecret: z.boolean().default(false) })
    .strict()
    .superRefine(oneCheck),
  target: (i) => i.ref,
  needsHost: true,
  run: (ctx, i) => setSecret(ctx, i),
  human: (d: SecretChange) => `${d.check === 'first-set' ? 'Set' : d.check === 'rotate-secret' ? 'Rotated' : 'Changed'} ${d.key} on ${d.ref} (${d.mode}, ${d.digest})`,
};

const secretGet: CommandSpec<{ ref: Ref; key: string }> = {
  name: 'repo secret get',
  input: z.object({ ref: refField, key: keyField }).strict(),
  target: (i) => i.ref,
  needsHost: true,
  run: (ctx, i) => getSecret(ctx, i),
  human: (d: SecretInfo & { ref: string }) => renderInfo([d]),
};

const secretList: CommandSpec<{ ref: Ref }> = {
  name: 'repo secret list',
  input: z.object({ ref: refField }).strict(),
  target: (i) => i.ref,
  needsHost: true,
  run: (ctx, i) => listSecrets(ctx, i),
  human: (d: { ref: string; secrets: SecretInfo[] }) =>
    d.secrets.length ? renderInfo(d.secrets) : `${d.ref} has no secrets. Set one: tine repo secret set ${d.ref} --key KEY --value -`,
};

const secretUnset: CommandSpec<{ ref: Ref; key: string; current?: string; rotateSecret: boolean }> = {
  name: 'repo secret unset',
  input: z
    .object({ ref: refField, key: keyField, current: currentField.optional(), rotateSecret: z.boolean().default(false) })
    .strict()
    .superRefine(oneCheck),
  target: (i) => i.ref,
  needsHost: true,
  run: (ctx, i) => unsetSecret(ctx, i),
  human: (d: SecretChange) => `Removed ${d.key} from ${d.ref}${d.check === 'rotate-secret' ? ' (without the old value: audited as a rotation)' : ''}`,
};

const secretLift: CommandSpec<{ ref: Ref; from: string; remove: boolean; mode?: SecretMode; rotateSecret: boolean }> = {
  name: 'repo secret lift',
  input: z
    .object({
      ref: refField,
      from: z.string({ required_error: 'is required', invalid_type_error: 'is required' }).min(1, 'is empty').max(4096, 'is too long').refine((s) => !s.includes('\0'), 'contains a NUL byte'),
      remove: z.boolean().default(false),
      mode: modeField.optional(),
      rotateSecret: z.boolean().default(false),
    })
    .strict(),
  target: (i) => i.ref,
  needsHost: true,
  run: (ctx, i) => liftSecrets(ctx, i),
  human: (d: LiftResult) => {
    const lines = [`Lifted ${d.lifted.length} secret(s) from ${d.from} into ${d.ref} (${d.mode})`];
    if (d.lifted.length) lines.push(renderInfo(d.lifted));
    if (d.unchanged.length) lines.push(`unchanged (same value already stored): ${d.unchanged.join(', ')}`);
    for (const s of d.skipped) lines.push(`skipped ${s.key}: ${s.reason}`);
    lines.push(d.removed ? `${d.from} rewritten without those values.` : `${d.from} still holds the values; rerun with --remove to take them out.`);
    lines.push(d.notice);
    return lines.join('\n');
  },
};

function renderInfo(rows: SecretInfo[]): string {
  const head = ['KEY', 'MODE', 'DIGEST', 'SET AT', 'BY'];
  const body = rows.map((r) => [r.key, r.mode, r.digest, r.setAt, r.actor]);
  const widths = head.map((h, i) => Math.max(h.length, ...body.map((b) => b[i]!.length)));
  return [head, ...body].map((row) => row.map((c, i) => c.padEnd(widths[i]!)).join('  ').trimEnd()).join('\n');
}

export const secretCommands: CommandSpec[] = [secretSet, secretGet, secretList, secretUnset, secretLift];
