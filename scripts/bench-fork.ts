// Fork benchmark (run as root): how long a fork takes against the raw kernel operation,
// for a 1 GiB sequential repo, a 1 GiB repo fragmented by ≥200k random 4 KiB overwrites,
// and a ≥128 GiB (logical) repo. Everything is measured in one run on one loop btrfs.
//   scripts/bench-fork [--runs N] [--keep]
import { execFileSync, spawnSync } from 'node:child_process';
import { mkdtempSync, writeFileSync, openSync, writeSync, fsyncSync, closeSync, rmSync, mkdirSync } from 'node:fs';
import { randomBytes } from 'node:crypto';
import { join, dirname } from 'node:path';
import { fileURLToPath } from 'node:url';
import { loadNative } from '../src/native/addon.js';

const here = dirname(fileURLToPath(import.meta.url));
const tineHost = join(here, '..', 'src', 'bin', 'tine-host.js');
const tine = join(here, '..', 'src', 'bin', 'tine.js');
const runsArg = process.argv.indexOf('--runs');
const RUNS = runsArg > 0 ? Number(process.argv[runsArg + 1]) : 7;
const GiB = 1024 ** 3;

const sh = (cmd: string, args: string[]) => execFileSync(cmd, args, { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] });
const median = (xs: number[]) => {
  const s = [...xs].sort((a, b) => a - b);
  return s.length % 2 ? s[(s.length - 1) / 2]! : (s[s.length / 2 - 1]! + s[s.length / 2]!) / 2;
};
const now = () => performance.now();
const log = (s: string) => process.stderr.write(s + '\n');

if (process.getuid?.() !== 0) {
  console.error('bench-fork must run as root (it makes a loop btrfs and subvolumes)');
  process.exit(7);
}

const dir = mkdtempSync('/var/tmp/tine-bench-');
const image = join(dir, 'pool.img');
const mnt = join(dir, 'mnt');
const configPath = join(dir, 'host.json');
let loop = '';

function cleanup() {
  spawnSync('umount', [mnt]);
  if (loop) spawnSync('losetup', ['-d', loop]);
  rmSync(dir, { recursive: true, force: true });
}
process.on('exit', cleanup);
process.on('SIGINT', () => process.exit(130));
process.on('SIGTERM', () => process.exit(143));

const env = { ...process.env, TINE_HOST_CONFIG: configPath };
function tineJson(bin: string, args: string[]) {
  const t0 = now();
  const r = spawnSync(process.execPath, [bin, ...args, '-o', 'json'], { env, encoding: 'utf8' });
  const ms = now() - t0;
  if (r.status !== 0) throw new Error(`${args.join(' ')} (exit ${r.status}): ${r.stdout}${r.stderr}`);
  const json = JSON.parse(r.stdout.trim().split('\n').pop()!);
  return { ms, json };
}

// A 24 GiB sparse pool: three 1 GiB repos, temporary full copies of 1 GiB, metadata.
sh('truncate', ['-s', '24G', image]);
sh('mkfs.btrfs', ['-q', image]);
mkdirSync(mnt);
loop = sh('losetup', ['--find', '--show', image]).trim();
sh('mount', [loop, mnt]);
mkdirSync(join(mnt, 'tine'));
writeFileSync(configPath, JSON.stringify({ datastore: join(mnt, 'tine'), pool: null, stateDir: join(dir, 'state'), runDir: join(dir, 'run') }));
tineJson(tineHost, ['setup']);

function writeSequential(path: string, bytes: number) {
  const fd = openSync(path, 'w');
  const chunk = randomBytes(8 << 20);
  for (let off = 0; off < bytes; off += chunk.length) writeSync(fd, chunk, 0, chunk.length, off);
  fsyncSync(fd);
  closeSync(fd);
}

log('building seq1g: 1 GiB written sequentially');
const seq = tineJson(tineHost, ['repo', 'create', 'seq1g']).json.data;
writeSequential(join(seq.path, 'data.bin'), GiB);

const OVERWRITES = 200_000;
log(`building frag1g: 1 GiB, then ${OVERWRITES} random 4 KiB overwrites (fsync every 5000)`);
const frag = tineJson(tineHost, ['repo', 'create', 'frag1g']).json.data;
writeSequential(join(frag.path, 'data.bin'), GiB);
{
  const fd = openSync(join(frag.path, 'data.bin'), 'r+');
  const block = randomBytes(4096);
  for (let i = 0; i < OVERWRITES; i++) {
    const off = Math.floor(Math.random() * (GiB / 4096)) * 4096;
    writeSync(fd, block, 0, 4096, off);
    if (i % 5000 === 4999) fsyncSync(fd);
  }
  fsyncSync(fd);
  closeSync(fd);
}
const extents = sh('filefrag', [join(frag.path, 'data.bin')]).trim();

const COPIES = 128;
log(`building big128: 1 GiB file + ${COPIES} reflinked copies = ${COPIES + 1} GiB logical`);
const big = tineJson(tineHost, ['repo', 'create', 'big128']).json.data;
writeSequential(join(big.path, 'data-0.bin'), GiB);
for (let i = 1; i <= COPIES; i++) sh('cp', ['--reflink=always', join(big.path, 'data-0.bin'), join(big.path, `data-${i}.bin`)]);
const logical = sh('du', ['-s', '--apparent-size', '-B1G', big.path]).split('\t')[0];
sh('sync', []);

const native = loadNative();
// Before each measurement: flush. Nothing made here is deleted before the end of the run:
// btrfs drops deleted subvolumes in a background cleaner, which would steal CPU from
// whatever is measured next (more so after the 129 GiB repository). Snapshots and reflinked
// copies share their data, so keeping them costs only metadata.
const settle = () => sh('sync', []);
// Loads the addon in a new process and times one snapshot ioctl, as tine's cow_clone step does.
const FRESH_SNAPSHOT = `
import { loadNative } from ${JSON.stringify(join(here, '..', 'src', 'native', 'addon.js'))};
const n = loadNative();
const t0 = performance.now();
await n.snapshot(process.argv[1], process.argv[2], false);
console.log(performance.now() - t0);`;
type Row = Record<string, number | undefined>;
const results: Record<string, Row> = {};
const repos = [
  { key: 'seq1g', rec: seq },
  { key: 'frag1g', rec: frag },
  { key: 'big128', rec: big },
];
const set = (method: string, repo: string, v: number) => ((results[method] ??= {})[repo] = v);

for (const { key, rec } of repos) {
  log(`measuring ${key} (${RUNS} runs each)`);
  const scratch = join(mnt, `scratch-${key}`);
  mkdirSync(scratch, { recursive: true });
  const raw: number[] = [], rawFresh: number[] = [], cli: number[] = [], reflink: number[] = [], full: number[] = [];
  const forkTine: number[] = [], forkHost: number[] = [], clone: number[] = [], cloneHost: number[] = [];
  for (let i = 0; i < RUNS; i++) {
    settle();
    let t0 = now();
    await native.snapshot(rec.path, join(scratch, `raw${i}`), false);
    raw.push(now() - t0);

    // The same ioctl as the first call of a fresh process, which is how tine makes it.
    settle();
    const fresh = spawnSync(process.execPath, ['--input-type=module', '-e', FRESH_SNAPSHOT, rec.path, join(scratch, `fresh${i}`)], { encoding: 'utf8', env });
    if (fresh.status !== 0) throw new Error(`fresh snapshot: ${fresh.stderr}`);
    rawFresh.push(Number(fresh.stdout.trim()));

    settle();
    t0 = now();
    sh('btrfs', ['subvolume', 'snapshot', rec.path, join(scratch, `cli${i}`)]);
    cli.push(now() - t0);

    settle();
    t0 = now();
    sh('cp', ['-a', '--reflink=always', rec.path, join(scratch, `ref${i}`)]);
    reflink.push(now() - t0);

    if (key === 'seq1g' && i < 5) {
      settle();
      t0 = now();
      sh('cp', ['-a', '--reflink=never', rec.path, join(scratch, `full${i}`)]);
      settle();
      full.push(now() - t0);
      settle();
    }

    settle();
    const viaTine = tineJson(tine, ['repo', 'fork', key, '--tag', `b${i}`]);
    forkTine.push(viaTine.ms);
    clone.push(viaTine.json.steps.find((s: { step: string }) => s.step === 'cow_clone').ms);

    settle();
    const viaHost = tineJson(tineHost, ['repo', 'fork', key, '--tag', `h${i}`]);
    forkHost.push(viaHost.ms);
    cloneHost.push(viaHost.json.steps.find((s: { step: string }) => s.step === 'cow_clone').ms);
  }
  set('raw snapshot ioctl (in-process)', key, median(raw));
  set('raw snapshot ioctl (fresh process)', key, median(rawFresh));
  set('btrfs subvolume snapshot', key, median(cli));
  set('cp -a --reflink=always', key, median(reflink));
  if (full.length) set('cp -a --reflink=never (+ sync)', key, median(full));
  set('tine repo fork: cow_clone step', key, median([...clone, ...cloneHost]));
  set('tine repo fork (whole process)', key, median(forkTine));
  set('tine-host repo fork (whole process)', key, median(forkHost));
}

const fmt = (v: number | undefined) => (v === undefined ? '—' : v >= 1000 ? `${(v / 1000).toFixed(2)} s` : `${v.toFixed(1)} ms`);
const cols = repos.map((r) => r.key);
const out: string[] = [];
out.push(`tine bench-fork — median of ${RUNS} runs (cp -a: 5), kernel ${sh('uname', ['-r']).trim()}, ${sh('nproc', []).trim()} cores`);
out.push(`repos: seq1g = 1 GiB sequential; frag1g = 1 GiB after ${OVERWRITES} random 4 KiB overwrites (${extents.replace(/^.*: /, '')}); big128 = 1 GiB + ${COPIES} reflinked copies (${logical} GiB logical)`);
out.push('');
out.push(['method'.padEnd(40), ...cols.map((c) => c.padStart(12))].join(''));
for (const [method, row] of Object.entries(results)) out.push([method.padEnd(40), ...cols.map((c) => fmt(row[c]).padStart(12))].join(''));
out.push('');
const rawM = results['raw snapshot ioctl (in-process)']!;
const rawFreshM = results['raw snapshot ioctl (fresh process)']!;
const cloneM = results['tine repo fork: cow_clone step']!;
const whole = results['tine repo fork (whole process)']!;
const ratio = (a: number, b: number) => (a / b).toFixed(2);
out.push('ratios');
for (const c of cols) out.push(`  cow_clone step / raw ioctl in a fresh process, ${c}: ${ratio(cloneM[c]!, rawFreshM[c]!)}×   (goal ≤ 1.5×; vs the warm in-process ioctl: ${ratio(cloneM[c]!, rawM[c]!)}×)`);
out.push(`  tine repo fork big128 / seq1g: ${ratio(whole.big128!, whole.seq1g!)}×   (goal ≤ 1.3×)`);
out.push(`  tine repo fork whole process, median over repos: ${fmt(median(cols.map((c) => whole[c]!)))}   (goal < 300 ms)`);
out.push(`  vs 6.3–7.2 s reported by a commercial tool: ${(6300 / Math.max(...cols.map((c) => whole[c]!))).toFixed(0)}× faster (worst repo)`);
out.push(`  tine repo fork / btrfs subvolume snapshot (seq1g): ${ratio(whole.seq1g!, results['btrfs subvolume snapshot']!.seq1g!)}×`);
out.push(`  cp -a / tine repo fork (seq1g): ${ratio(results['cp -a --reflink=never (+ sync)']!.seq1g!, whole.seq1g!)}×`);
console.log(out.join('\n'));
