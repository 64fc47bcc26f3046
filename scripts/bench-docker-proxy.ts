// Benchmark: `docker version` (one CLI process, two API requests) against a repository that
// is up, through its filtering endpoint (the socket the sandbox sees) and through the raw
// dockerd socket, median of N each, interleaved round by round so machine load hits both
// alike. Also one API request alone (GET /version over the socket, no CLI) both ways.
// Goal: the endpoint adds under 5 ms to the median of `docker version`.
import { spawnSync } from 'node:child_process';
import { request } from 'node:http';
import { join } from 'node:path';
import { makeTestHost } from '../test/helpers/host.js';
import { teardownLifecycleHost } from '../test/helpers/lifecycle-app.js';

const N = Math.max(20, Number(process.argv[2] ?? 25));
const median = (xs: number[]) => {
  const s = [...xs].sort((a, b) => a - b);
  return s.length % 2 ? s[(s.length - 1) / 2]! : (s[s.length / 2 - 1]! + s[s.length / 2]!) / 2;
};

function apiVersion(socketPath: string): Promise<number> {
  const t0 = process.hrtime.bigint();
  return new Promise((resolve, reject) => {
    const req = request({ socketPath, path: '/version', timeout: 10_000 }, (res) => {
      res.resume();
      res.on('end', () => (res.statusCode === 200 ? resolve(Number(process.hrtime.bigint() - t0) / 1e6) : reject(new Error(`status ${res.statusCode}`))));
    });
    req.on('error', reject);
    req.end();
  });
}

const host = makeTestHost({ size: '3G' });
try {
  const must = (args: string[]) => {
    const r = host.run(args, { timeoutMs: 240_000 });
    if (r.code !== 0) throw new Error(`${args.join(' ')}: ${r.stdout}${r.stderr}`);
    return r.json?.data;
  };
  must(['repo', 'create', 'app']);
  const rec = must(['repo', 'up', 'app']);
  const proxy = rec.dockerHost.replace(/^unix:\/\//, '');
  const raw = join(host.runDir, 'docker-raw', `${rec.networkId}.sock`);
  const rows: [string, string][] = [['raw dockerd socket', raw], ['filtering endpoint', proxy]];
  const cli = rows.map(() => [] as number[]);
  const api = rows.map(() => [] as number[]);
  for (const [, sock] of rows) spawnSync('docker', ['-H', `unix://${sock}`, 'version'], { stdio: 'ignore' }); // warm caches
  for (let i = 0; i < N; i++) {
    for (const [j, [label, sock]] of rows.entries()) {
      const t0 = process.hrtime.bigint();
      const r = spawnSync('docker', ['-H', `unix://${sock}`, 'version'], { stdio: ['ignore', 'ignore', 'pipe'], encoding: 'utf8' });
      cli[j]!.push(Number(process.hrtime.bigint() - t0) / 1e6);
      if (r.status !== 0) throw new Error(`${label}: exit ${r.status}: ${r.stderr}`);
      api[j]!.push(await apiVersion(sock));
    }
  }
  console.log(`docker endpoint benchmark, median of ${N} (ms), interleaved rounds`);
  console.log(`${'socket'.padEnd(24)}${'docker version'.padStart(16)}${'GET /version'.padStart(14)}`);
  rows.forEach(([label], j) => console.log(`${label.padEnd(24)}${median(cli[j]!).toFixed(2).padStart(16)}${median(api[j]!).toFixed(2).padStart(14)}`));
  const added = median(cli[1]!) - median(cli[0]!);
  const addedApi = median(api[1]!) - median(api[0]!);
  console.log(`added by the endpoint: docker version ${added.toFixed(2)} ms, one request ${addedApi.toFixed(2)} ms; goal < 5 ms: ${added < 5 ? 'yes' : 'no'}`);
} finally {
  await teardownLifecycleHost(host);
  host.cleanup();
}
