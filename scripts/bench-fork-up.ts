// Benchmark: `repo fork app --tag T --up` of a running one-container app, end to end (the
// CLI process from spawn to exit, the fork answering on its own address), median of N,
// against baselines measured in the same run on the same throw-away host:
//   snapshot  — `repo fork` without --up (reserve + CoW snapshot through the same CLI)
//   restart   — `docker start` of the app's own (stopped) container until it answers
// Run as root: `scripts/bench-fork-up [N]` (default 7). Prints a table and ratios.
import { execFileSync } from 'node:child_process';
import { makeTestHost } from '../test/helpers/host.js';
import { writeCounterApp, openTestHostForSandbox, getCounter, teardownLifecycleHost } from '../test/helpers/lifecycle-app.js';
import { join } from 'node:path';

const N = Math.max(5, Number(process.argv[2] ?? 7));
const median = (xs: number[]) => {
  const s = [...xs].sort((a, b) => a - b);
  return s.length % 2 ? s[(s.length - 1) / 2]! : (s[s.length / 2 - 1]! + s[s.length / 2]!) / 2;
};
const ms = (t0: bigint) => Number(process.hrtime.bigint() - t0) / 1e6;

async function main(): Promise<void> {
  const host = makeTestHost({ size: '8G' });
  try {
    openTestHostForSandbox(host);
    const src = join(host.dir, 'src');
    writeCounterApp(src);
    const must = (args: string[]) => {
      const r = host.run(args, { timeoutMs: 180_000 });
      if (r.code !== 0) throw new Error(`${args.join(' ')}: ${r.stdout}${r.stderr}`);
      return r.json;
    };
    must(['repo', 'create', 'app', '--from', src]);
    const app = must(['repo', 'up', 'app']).data;

    const forkUp: number[] = [];
    const snapshot: number[] = [];
    const restart: number[] = [];
    const steps: Record<string, number[]> = {};
    for (let i = 0; i < N; i++) {
      // fork --up, end to end
      let t0 = process.hrtime.bigint();
      const r = must(['repo', 'fork', 'app', '--tag', `b${i}`, '--up']);
      const f = r.data;
      const elapsed = ms(t0);
      if (getCounter(f.ip) === null) throw new Error(`fork b${i} does not answer on ${f.ip}`);
      forkUp.push(elapsed);
      for (const s of r.steps as { step: string; ms: number }[]) (steps[s.step] ??= []).push(s.ms);
      must(['repo', 'delete', `app:b${i}`, '--yes']);

      // baseline 1: the raw snapshot through the same CLI
      t0 = process.hrtime.bigint();
      must(['repo', 'fork', 'app', '--tag', `s${i}`]);
      snapshot.push(ms(t0));
      must(['repo', 'delete', `app:s${i}`, '--yes']);

      // baseline 2: start the app's own container again until it answers
      const env = { ...process.env, DOCKER_HOST: app.dockerHost };
      execFileSync('docker', ['stop', '-t', '1', 'counter'], { env, stdio: 'ignore' });
      t0 = process.hrtime.bigint();
      execFileSync('docker', ['start', 'counter'], { env, stdio: 'ignore' });
      for (let k = 0; k < 600 && getCounter(app.ip, 1) === null; k++) await new Promise((res) => setTimeout(res, 20));
      restart.push(ms(t0));
    }
    const fu = median(forkUp);
    const rows: [string, number][] = [
      ['fork --up (end to end)', fu],
      ['baseline: repo fork (snapshot only)', median(snapshot)],
      ['baseline: docker start + answering', median(restart)],
    ];
    console.log(`\nbench-fork-up: N=${N}, load ${execFileSync('cat', ['/proc/loadavg'], { encoding: 'utf8' }).split(' ').slice(0, 3).join(' ')}`);
    console.log('| what | median ms | ratio fork --up / this |');
    console.log('| --- | ---: | ---: |');
    for (const [name, v] of rows) console.log(`| ${name} | ${v.toFixed(0)} | ${(fu / v).toFixed(2)} |`);
    console.log('\nfork --up steps (median ms):');
    for (const [name, v] of Object.entries(steps)) console.log(`  ${name.padEnd(14)} ${median(v).toFixed(1)}`);
    console.log(`\nall fork --up runs (ms): ${forkUp.map((x) => x.toFixed(0)).join(' ')}`);
    console.log(`goal < 3000 ms: ${fu < 3000 ? 'met' : 'NOT met'} (median ${fu.toFixed(0)} ms)`);
  } finally {
    await teardownLifecycleHost(host);
    host.cleanup();
  }
}

main().catch((err) => {
  console.error(err);
  process.exit(1);
});
