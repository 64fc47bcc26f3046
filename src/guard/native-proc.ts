// The process-tree reader for tine-host: the native addon's /proc parsers.
import { loadNative } from '../native/addon.js';
import type { ProcReader } from './proc.js';

export class NativeProcReader implements ProcReader {
  constructor(readonly procRoot: string = '/proc') {}
  stat(pid: number) {
    const s = loadNative().procStat(pid, this.procRoot);
    return { ppid: s.ppid, comm: s.comm };
  }
  environ(pid: number) {
    // Copy into a null-prototype object so lookups never reach Object.prototype.
    return Object.assign(Object.create(null) as Record<string, string>, loadNative().procEnviron(pid, this.procRoot));
  }
}
