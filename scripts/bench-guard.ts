// What the guard costs per command: one full walk of this process's ancestry (detect(),
// uncached) with the fs reader (thin client) and the native reader (tine-host), against a
// baseline measured in the same run: a single read of /proc/self/stat.
// Run: node dist/scripts/bench-guard.js [iterations]
import { readFileSync } from 'node:fs';
import { performance } from 'node:perf_hooks';
import { detect } from '../src/guard/detect.js';
import { FsProcReader } from '../src/guard/proc.js';
import { NativeProcReader } from '../src/guard/native-proc.js';

const n = Math.max(10, Math.min(100_000, Number(process.argv[2] ?? 2000)));

function time(fn: () => unknown): number {
  for (let i = 0; i < Math.min(100, n); i++) fn(); // warm up
  const t0 = performance.now();
  for (let i = 0; i < n; i++) fn();
  return ((performance.now() - t0) / n) * 1000; // µs per call
}

const baseline = time(() => readFileSync('/proc/self/stat', 'latin1'));
const fsReader = new FsProcReader();
const nativeReader = new NativeProcReader();
const levels = detect(fsReader).walk.levels;
const fsWalk = time(() => detect(fsReader));
const nativeWalk = time(() => detect(nativeReader));
console.log(`ancestry: ${levels} levels; ${n} iterations`);
console.log(`baseline  read /proc/self/stat   ${baseline.toFixed(1)} µs`);
console.log(`detect()  fs reader (client)     ${fsWalk.toFixed(1)} µs  = ${(fsWalk / baseline).toFixed(1)}x baseline`);
console.log(`detect()  native reader (host)   ${nativeWalk.toFixed(1)} µs  = ${(nativeWalk / baseline).toFixed(1)}x baseline`);
