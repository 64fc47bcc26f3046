// Secret names and values, checked once at the edge. No message here ever quotes a value.
import { z } from 'zod/v3';

export const KEY_PATTERN = /^[A-Z][A-Z0-9_]*$/;
export const KEY_MAX = 64;
export const VALUE_MAX = { env: 32 * 1024, file: 256 * 1024 } as const;

export const keyField = z
  .string({ required_error: 'is required', invalid_type_error: 'is required' })
  .min(1, 'is empty')
  .max(KEY_MAX, `is longer than ${KEY_MAX} characters`)
  .regex(KEY_PATTERN, 'must match ^[A-Z][A-Z0-9_]*$ (upper-case letters, digits and _, starting with a letter)');

export const modeField = z.enum(['env', 'file'], { errorMap: () => ({ message: 'must be env or file' }) });

/** Why a value is unusable for a mode, or undefined. Never mentions the value itself. */
export function valueProblem(value: string, mode: 'env' | 'file'): string | undefined {
  if (value.length === 0) return 'is empty; a secret needs a value';
  const bytes = Buffer.byteLength(value, 'utf8');
  if (bytes > VALUE_MAX[mode]) return `is ${bytes} bytes; ${mode} secrets hold at most ${VALUE_MAX[mode] / 1024} KiB`;
  // An environment string ends at the first NUL: the value would arrive cut short.
  if (mode === 'env' && value.includes('\0')) return 'contains a NUL byte, which an environment variable cannot carry; use --mode file';
  return undefined;
}

/**
 * A value field: a string, checked for the largest limit here (the mode-specific limit is
 * checked again once the effective mode is known). zod's own messages never echo input.
 */
export const valueField = z.string({ required_error: 'is required', invalid_type_error: 'is required' }).superRefine((v, zctx) => {
  const p = valueProblem(v, 'file');
  if (p) zctx.addIssue({ code: 'custom', message: p });
});

/** One trailing newline dropped from a value read from stdin (`--value -`). */
export function fromStdin(text: string): string {
  if (text.endsWith('\r\n')) return text.slice(0, -2);
  if (text.endsWith('\n')) return text.slice(0, -1);
  return text;
}
