// Benchmark of the network layer (src/network/netns.ts), on a throw-away test host:
//   fast path — ensureRepoNetwork() for a repository whose namespace exists, per call,
//               against `existsSync(file)` (one stat) in the same run
//   create    — the first ensureRepoNetwork() of a repository (namespace, veth, addresses,
//               routes, filter reload), and removeRepoNetwork()
//   exec      — `tine-host repo exec app -- true` (namespace in place) against
//               `tine-host repo info app` (same pipeline, no sandbox), whole processes
import { spawnSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { makeTestHost, tineHostBin } from '../test/helpers/host.js';
import { ensureRepoNetwork, removeRepoNetwork } from '../src/network/netns.js';

const N = Math.max(10, Number(process.argv[2] ?? 21));
const median = (xs: number[]) => {
  const s = [...xs].sort((a, b) => a - b);
  return s.length % 2 ? s[(s.length - 1) / 2]! : (s[s.length / 2 - 1]! + s[s.length / 2]!) / 2;
};
const ms = (t0: bigint) => Number(process.hrtime.bigint() - t0) / 1e6;

const host = makeTestHost();
try {
  const cfg = { runDir: host.runDir, addressBlock: host.addressBlock };
  // Creation and removal: ids far from the repositories' own.
  const create: number[] = [];
  const remove: number[] = [];
  for (let i = 0; i < N; i++) {
    const id = 50_000 + i;
    let t0 = process.hrtime.bigint();
    ensureRepoNetwork(cfg, id);
    create.push(ms(t0));
    t0 = process.hrtime.bigint();
    removeRepoNetwork(cfg, id, { keepFilter: true });
    remove.push(ms(t0));
  }
  // Fast path, interleaved with the baseline, 1000 calls per round.
  const r = host.run(['repo', 'create', 'app']);
  if (r.code !== 0) throw new Error(`create: ${r.stdout}${r.stderr}`);
  const id = r.json.data.networkId as number;
  ensureRepoNetwork(cfg, id);
  const fast: number[] = [];
  const stat: number[] = [];
  for (let round = 0; round < N; round++) {
    let t0 = process.hrtime.bigint();
    for (let i = 0; i < 1000; i++) ensureRepoNetwork(cfg, id);
    fast.push(ms(t0) * 1000 / 1000); // µs per call
    t0 = process.hrtime.bigint();
    for (let i = 0; i < 1000; i++) existsSync(host.runDir);
    stat.push(ms(t0) * 1000 / 1000);
  }
  // Whole commands.
  const exec: number[] = [];
  const info: number[] = [];
  for (let i = 0; i < N; i++) {
    for (const [arr, args] of [[exec, ['repo', 'exec', 'app', '--', 'true']], [info, ['-o', 'json', 'repo', 'info', 'app']]] as const) {
      const t0 = process.hrtime.bigint();
      const p = spawnSync(process.execPath, [tineHostBin, ...args], { env: host.env, stdio: 'ignore' });
      arr.push(ms(t0));
      if (p.status !== 0) throw new Error(`${args.join(' ')}: exit ${p.status}`);
    }
  }
  console.log(`network layer benchmark, median of ${N}`);
  console.log(`ensureRepoNetwork, namespace exists:  ${median(fast).toFixed(2)} µs/call   (existsSync: ${median(stat).toFixed(2)} µs/call, ratio ${(median(fast) / median(stat)).toFixed(1)}x)`);
  console.log(`ensureRepoNetwork, first use (create): ${median(create).toFixed(1)} ms   (min ${Math.min(...create).toFixed(1)}, max ${Math.max(...create).toFixed(1)})`);
  console.log(`removeRepoNetwork:                     ${median(remove).toFixed(1)} ms`);
  console.log(`tine-host repo exec app -- true:       ${median(exec).toFixed(1)} ms   (repo info: ${median(info).toFixed(1)} ms, ratio ${(median(exec) / median(info)).toFixed(2)}x)`);
} finally {
  host.cleanup();
}
