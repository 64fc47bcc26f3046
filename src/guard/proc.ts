// Reading the process tree, behind one small interface. This module uses plain fs reads so
// the thin client can run it without native code; tine-host uses the native reader
// (native-proc.ts). Both read <procRoot>/<pid>/{stat,environ}.
import { readFileSync } from 'node:fs';

export interface ProcReader {
  readonly procRoot: string;
  /** Parent pid and command name; throws (SystemError) when unreadable. */
  stat(pid: number): { ppid: number; comm: string };
  /** The exec-time environment; throws (SystemError) when unreadable. */
  environ(pid: number): Record<string, string>;
}

/** Parse a stat line: comm is chosen by the process and may hold ')' and spaces, so the
 *  fields start after the LAST ')'. */
export function parseStat(text: string): { pid: number; comm: string; ppid: number } {
  const open = text.indexOf('(');
  const close = text.lastIndexOf(')');
  if (open < 0 || close < open) throw Object.assign(new Error('malformed stat'), { code: 'EINVAL' });
  const fields = text.slice(close + 1).trim().split(/\s+/);
  const pid = Number(text.slice(0, open).trim());
  const ppid = Number(fields[1]);
  if (!Number.isInteger(pid) || !Number.isInteger(ppid)) throw Object.assign(new Error('malformed stat'), { code: 'EINVAL' });
  return { pid, comm: text.slice(open + 1, close), ppid };
}

/** Parse NUL-separated NAME=VALUE entries; the first of duplicate names wins (as getenv). */
export function parseEnviron(data: string): Record<string, string> {
  // A null-prototype object: the environment is untrusted ("__proto__=…").
  const env: Record<string, string> = Object.create(null);
  for (const entry of data.split('\0')) {
    const eq = entry.indexOf('=');
    if (eq <= 0) continue;
    const key = entry.slice(0, eq);
    if (!(key in env)) env[key] = entry.slice(eq + 1);
  }
  return env;
}

export class FsProcReader implements ProcReader {
  constructor(readonly procRoot: string = '/proc') {}
  stat(pid: number) {
    const { comm, ppid } = parseStat(readFileSync(`${this.procRoot}/${pid}/stat`, 'latin1'));
    return { comm, ppid };
  }
  environ(pid: number) {
    return parseEnviron(readFileSync(`${this.procRoot}/${pid}/environ`, 'utf8'));
  }
}
