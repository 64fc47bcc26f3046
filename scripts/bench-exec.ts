// Benchmark: `tine repo exec app:t1 -- true` and `tine-host repo exec …` as whole processes
// (spawn to exit), median of N, against baselines measured in the same run, interleaved
// round by round so that machine load hits every row alike:
//   unshare   — `unshare -mpf --mount-proc true` (the goal's baseline: namespaces only)
//   helper    — the sandbox helper alone (namespaces + new root + Landlock + drop), no Node
//   node      — `node -e 0` (one Node process start; `tine` costs two)
//   info      — `tine-host repo info app:t1` (the same command pipeline, no sandbox)
// and `tine` as installed (the launcher, build/Release/tine-launch) with `tine-host serve`
// running, which is how a host runs it; the Node-only rows show the path without the daemon.
// Goal: tine repo exec under 100 ms and under 3x unshare.
import { spawnSync } from 'node:child_process';
import { makeTestHost, tineBin, tineHostBin } from '../test/helpers/host.js';
import { helperPath } from '../src/sandbox/helper.js';
import { startServe, launcherDir } from '../test/helpers/serve.js';

const N = Math.max(20, Number(process.argv[2] ?? 21));
const median = (xs: number[]) => {
  const s = [...xs].sort((a, b) => a - b);
  return s.length % 2 ? s[(s.length - 1) / 2]! : (s[s.length / 2 - 1]! + s[s.length / 2]!) / 2;
};

const host = makeTestHost();
const bins = launcherDir();
let serve: Awaited<ReturnType<typeof startServe>> | undefined;
try {
  const must = (args: string[]) => {
    const r = host.run(args);
    if (r.code !== 0) throw new Error(`${args.join(' ')}: ${r.stdout}${r.stderr}`);
    return r.json?.data;
  };
  must(['repo', 'create', 'app']);
  const fork = must(['repo', 'fork', 'app', '--tag', 't1']);
  const env = host.env;
  serve = await startServe(host);
  const rows: [string, string, string[]][] = [
    ['unshare -mpf --mount-proc true', 'unshare', ['-mpf', '--mount-proc', 'true']],
    ['tine-sandbox (helper alone) true', helperPath(), ['--uid', '7111', '--gid', '7111', '--hostname', 'app:t1', '--repo', fork.path, '--landlock', 'required', '--', 'true']],
    ['node -e 0', process.execPath, ['-e', '0']],
    ['tine-host repo info app:t1', process.execPath, [tineHostBin, '-o', 'json', 'repo', 'info', 'app:t1']],
    ['tine-host repo exec app:t1 -- true', process.execPath, [tineHostBin, 'repo', 'exec', 'app:t1', '--', 'true']],
    ['tine repo exec (Node only, no daemon)', process.execPath, [tineBin, 'repo', 'exec', 'app:t1', '--', 'true']],
    ['tine repo exec app:t1 -- true', bins.tine, ['repo', 'exec', 'app:t1', '--', 'true']],
  ];
  const times = rows.map(() => [] as number[]);
  for (const [, cmd, args] of rows) spawnSync(cmd, args, { env, stdio: 'ignore' }); // warm caches
  for (let i = 0; i < N; i++) {
    rows.forEach(([label, cmd, args], j) => {
      const t0 = process.hrtime.bigint();
      const r = spawnSync(cmd, args, { env, stdio: ['ignore', 'ignore', 'pipe'], encoding: 'utf8' });
      times[j]!.push(Number(process.hrtime.bigint() - t0) / 1e6);
      if (r.status !== 0) throw new Error(`${label}: exit ${r.status}: ${r.stderr}`);
    });
  }
  const base = median(times[0]!);
  console.log(`repo exec benchmark, median of ${N} (ms), interleaved rounds`);
  console.log(`${'command'.padEnd(40)}${'median'.padStart(10)}${'min'.padStart(10)}${'x unshare'.padStart(12)}`);
  rows.forEach(([label], j) => {
    const m = median(times[j]!);
    console.log(`${label.padEnd(40)}${m.toFixed(1).padStart(10)}${Math.min(...times[j]!).toFixed(1).padStart(10)}${(m / base).toFixed(2).padStart(12)}`);
  });
  const tine = median(times[6]!);
  console.log(`goal: tine repo exec < 100 ms: ${tine < 100 ? 'yes' : 'no'} (${tine.toFixed(1)} ms); < 3x unshare: ${tine / base < 3 ? 'yes' : 'no'} (${(tine / base).toFixed(2)}x)`);
  console.log('(tine = the installed launcher with tine-host serve running; see src/host/serve.ts)');
} finally {
  await serve?.stop();
  bins.cleanup();
  host.cleanup();
}
