// Every failure the user sees is a TineError: a stable code, the contract's exit code,
// a message that says what happened, and `next`: what to do instead.

export const EXIT = {
  ok: 0,
  failure: 1,
  usage: 2,
  notFound: 3,
  refused: 4,
  precondition: 5,
  conflict: 6,
  unsupported: 7,
} as const;

export interface NextStep {
  description: string;
  run?: string;
}

export interface TineErrorOptions {
  next?: NextStep[];
  field?: string;
  cause?: unknown;
  details?: Record<string, unknown>;
}

export class TineError extends Error {
  readonly code: string;
  readonly exitCode: number;
  readonly next: NextStep[];
  readonly field?: string;
  readonly details?: Record<string, unknown>;

  constructor(code: string, exitCode: number, message: string, opts: TineErrorOptions = {}) {
    super(message, opts.cause === undefined ? undefined : { cause: opts.cause });
    this.name = 'TineError';
    this.code = code;
    this.exitCode = exitCode;
    this.next = opts.next ?? [];
    this.field = opts.field;
    this.details = opts.details;
  }

  toJSON(): Record<string, unknown> {
    const out: Record<string, unknown> = { code: this.code, message: this.message };
    if (this.field) out.field = this.field;
    if (this.next.length) out.next = this.next;
    if (this.details) out.details = this.details;
    return out;
  }
}

export const invalidInput = (field: string, message: string, next: NextStep[] = []) =>
  new TineError('INVALID_INPUT', EXIT.usage, `${field}: ${message}`, { field, next });

export const notFound = (what: string, next: NextStep[] = []) =>
  new TineError('NOT_FOUND', EXIT.notFound, what, { next });

export const conflict = (code: string, message: string, next: NextStep[] = []) =>
  new TineError(code, EXIT.conflict, message, { next });

export const unsupported = (message: string, next: NextStep[] = []) =>
  new TineError('HOST_UNSUPPORTED', EXIT.unsupported, message, { next });

/** Turn anything thrown into a TineError without losing the system error's fields. */
export function toTineError(err: unknown): TineError {
  if (err instanceof TineError) return err;
  const e = err as { code?: unknown; exitCode?: unknown; message?: unknown; syscall?: unknown; path?: unknown; errno?: unknown };
  if (e && typeof e.exitCode === 'number' && typeof e.code === 'string') {
    return new TineError(e.code, e.exitCode, String(e.message), { cause: err });
  }
  const details: Record<string, unknown> = {};
  for (const k of ['code', 'errno', 'syscall', 'path', 'dest'] as const) {
    const v = (e as Record<string, unknown> | undefined)?.[k];
    if (v !== undefined) details[k] = v;
  }
  const message = err instanceof Error ? err.message : String(err);
  return new TineError('FAILED', EXIT.failure, message, {
    cause: err,
    details: Object.keys(details).length ? details : undefined,
  });
}
