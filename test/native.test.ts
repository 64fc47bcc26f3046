// The native addon against a real kernel: a loop-mounted btrfs, an ext4 image on it that is
// frozen and reflinked, and real child processes for /proc parsing. Needs root.
import test from 'ava';
import { execFileSync, spawn, spawnSync, type ChildProcess } from 'node:child_process';
import {
  chmodSync,
  copyFileSync,
  mkdirSync,
  mkdtempSync,
  readFileSync,
  rmSync,
  statSync,
  writeFileSync,
} from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { makeLoopFs, isMounted, type LoopFs } from './helpers/loopfs.js';
import { isSystemError, loadNative, type SystemErrorLike } from '../src/native/addon.js';

const native = loadNative();

let fs: LoopFs | undefined;
const children: ChildProcess[] = [];
const innerMounts: string[] = []; // loop mounts of image files living on the btrfs
const tempDirs: string[] = [];

function root(): string {
  if (!fs) throw new Error('btrfs loop fs not set up');
  return fs.mountpoint;
}

function run(cmd: string, args: string[]): string {
  return execFileSync(cmd, args, { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] });
}

function tempDir(): string {
  const d = mkdtempSync(join(tmpdir(), 'tine-native-'));
  tempDirs.push(d);
  return d;
}

/** Asserts `err` is a SystemError-like Error and returns it typed. */
function sysErr(t: { true(v: boolean, m?: string): void }, err: unknown): Error & SystemErrorLike {
  t.true(isSystemError(err), `not a SystemError: ${String(err)}`);
  return err as Error & SystemErrorLike;
}

/** mount -o loop[,ro] image at a new directory below the btrfs mount. */
function loopMount(image: string, name: string, readonly = false): string {
  const mnt = join(root(), name);
  mkdirSync(mnt, { recursive: true });
  run('mount', ['-o', readonly ? 'loop,ro' : 'loop', image, mnt]);
  innerMounts.push(mnt);
  return mnt;
}

function makeExt4Image(name: string): string {
  const image = join(root(), name);
  run('truncate', ['-s', '64M', image]);
  run('mkfs.ext4', ['-q', '-F', image]);
  return image;
}

/** True when a write into `dir` completes within 5 s (i.e. the fs is not frozen). */
function writable(dir: string): boolean {
  return spawnSync('timeout', ['5', 'touch', join(dir, `probe-${Date.now()}-${Math.random()}`)]).status === 0;
}

async function waitForExec(pid: number, comm: string): Promise<void> {
  for (let i = 0; i < 500; i++) {
    try {
      if (native.procStat(pid).comm === comm) return;
    } catch { /* not there yet */ }
    await new Promise((r) => setTimeout(r, 10));
  }
  throw new Error(`process ${pid} never became ${comm}`);
}

test.before(() => {
  if (process.getuid?.() !== 0) throw new Error('native tests need root');
  fs = makeLoopFs({ size: '1G' });
});

test.after.always(() => {
  for (const c of children) {
    try { c.kill('SIGKILL'); } catch { /* already gone */ }
  }
  // Inner loop mounts first (they pin image files on the btrfs), then their loop devices,
  // then the btrfs itself.
  for (const m of innerMounts.reverse()) {
    for (let i = 0; i < 5 && isMounted(m); i++) {
      try { run('umount', [m]); } catch { try { run('umount', ['-l', m]); } catch { /* retry */ } }
    }
  }
  if (fs) {
    const loops = spawnSync('losetup', ['-n', '-O', 'NAME,BACK-FILE', '-l'], { encoding: 'utf8' }).stdout ?? '';
    for (const line of loops.split('\n')) {
      const [dev, file] = line.trim().split(/\s+/, 2);
      if (dev && file && file.startsWith(fs.mountpoint + '/')) spawnSync('losetup', ['-d', dev]);
    }
    fs.cleanup();
  }
  for (const d of tempDirs) rmSync(d, { recursive: true, force: true });
});

test('loads once and reports support', (t) => {
  t.is(loadNative(), native);
  t.true(native.supported);
});

test('fsType names btrfs and does not mistake /proc for it', (t) => {
  t.deepEqual(native.fsType(root()), { type: 'btrfs', magic: 0x9123683e });
  t.true(['proc', 'unknown'].includes(native.fsType('/proc').type));
  const err = sysErr(t, t.throws(() => native.fsType(join(root(), 'missing'))));
  t.is(err.code, 'ENOENT');
  t.is(err.syscall, 'statfs');
});

test('subvolume create, snapshots (rw, ro), independence, destroy', async (t) => {
  const base = join(root(), 'sv');
  await native.subvolumeCreate(base);
  t.true(native.isSubvolume(base));
  writeFileSync(join(base, 'a.txt'), 'original');

  const rw = join(root(), 'sv-rw');
  const ro = join(root(), 'sv-ro');
  await native.snapshot(base, rw, false);
  await native.snapshot(base, ro, true);
  t.true(native.isSubvolume(rw));
  t.true(native.isSubvolume(ro));
  t.is(readFileSync(join(rw, 'a.txt'), 'utf8'), 'original');
  t.is(readFileSync(join(ro, 'a.txt'), 'utf8'), 'original');

  // Read-only snapshot refuses writes.
  const roErr = t.throws(() => writeFileSync(join(ro, 'b.txt'), 'x')) as NodeJS.ErrnoException;
  t.is(roErr.code, 'EROFS');

  // Neither side sees the other's writes.
  writeFileSync(join(rw, 'a.txt'), 'changed in fork');
  writeFileSync(join(rw, 'fork-only'), 'f');
  writeFileSync(join(base, 'parent-only'), 'p');
  t.is(readFileSync(join(base, 'a.txt'), 'utf8'), 'original');
  t.throws(() => statSync(join(base, 'fork-only')), { code: 'ENOENT' });
  t.throws(() => statSync(join(rw, 'parent-only')), { code: 'ENOENT' });

  // Snapshot onto an existing name fails with EEXIST.
  const exists = sysErr(t, await t.throwsAsync(native.snapshot(base, rw, false)));
  t.is(exists.code, 'EEXIST');
  t.is(exists.syscall, 'ioctl(BTRFS_IOC_SNAP_CREATE_V2)');
  t.is(exists.path, base);
  t.is(exists.dest, rw);

  for (const p of [ro, rw, base]) {
    await native.subvolumeDestroy(p);
    t.false(native.isSubvolume(p));
    t.throws(() => statSync(p), { code: 'ENOENT' });
  }
});

test('isSubvolume: top level yes; plain dir, file, missing and non-btrfs no', (t) => {
  t.true(native.isSubvolume(root()));
  const dir = join(root(), 'plain-dir');
  mkdirSync(dir);
  writeFileSync(join(dir, 'f'), '');
  t.false(native.isSubvolume(dir));
  t.false(native.isSubvolume(join(dir, 'f')));
  t.false(native.isSubvolume(join(root(), 'does-not-exist')));
  t.false(native.isSubvolume('/proc'));
  const err = sysErr(t, t.throws(() => native.isSubvolume(join(dir, 'f', 'below-a-file'))));
  t.is(err.code, 'ENOTDIR');
  t.is(err.syscall, 'stat');
});

test('snapshot of a missing subvolume: ENOENT with Node SystemError fields', async (t) => {
  const src = join(root(), 'no-such-subvolume');
  const err = sysErr(t, await t.throwsAsync(native.snapshot(src, join(root(), 'snap'), false)));
  t.is(err.code, 'ENOENT');
  t.is(err.errno, -2);
  t.is(err.syscall, 'open');
  t.is(err.path, src);
  t.is(err.message, `ENOENT: no such file or directory, open '${src}'`);
});

test('subvolumeDestroy of a plain directory fails and keeps it', async (t) => {
  const dir = join(root(), 'not-a-subvolume');
  mkdirSync(dir);
  const err = sysErr(t, await t.throwsAsync(native.subvolumeDestroy(dir)));
  t.true(err.syscall.startsWith('ioctl(BTRFS_IOC_SNAP_DESTROY'));
  t.is(err.path, dir);
  t.true(statSync(dir).isDirectory());
});

test('subvolumeCreate into a missing parent names the parent', async (t) => {
  const parent = join(root(), 'missing-parent');
  const err = sysErr(t, await t.throwsAsync(native.subvolumeCreate(join(parent, 'child'))));
  t.is(err.code, 'ENOENT');
  t.is(err.syscall, 'open');
  t.is(err.path, parent);
});

test('arguments of the wrong type are TypeErrors naming the argument', async (t) => {
  const bad = native as unknown as Record<string, (...a: unknown[]) => unknown>;
  await t.throwsAsync(bad.snapshot!(1, 'x', false) as Promise<void>, { instanceOf: TypeError, message: /"src"/ });
  await t.throwsAsync(bad.snapshot!('a', 'b', 'yes') as Promise<void>, { instanceOf: TypeError, message: /"readonly"/ });
  await t.throwsAsync(bad.freezeClone!('/', 'a', null) as Promise<void>, { instanceOf: TypeError, message: /"dst"/ });
  t.throws(() => bad.isSubvolume!(undefined), { instanceOf: TypeError, message: /"path"/ });
  t.throws(() => bad.procStat!('1'), { instanceOf: TypeError, message: /"pid"/ });
  t.throws(() => bad.procStat!(1.5), { instanceOf: TypeError, message: /"pid"/ });
  t.throws(() => bad.procEnviron!(1, 42), { instanceOf: TypeError, message: /"procRoot"/ });
  t.throws(() => bad.fsType!('/tmp\0/x'), { instanceOf: TypeError, message: /"path"/ });
});

test('cloneFile: same content and mode, independent copy, EEXIST keeps dst', async (t) => {
  const src = join(root(), 'clone-src.bin');
  const data = Buffer.alloc(3 * 1024 * 1024 + 17, 'abc');
  writeFileSync(src, data);
  chmodSync(src, 0o640);
  const dst = join(root(), 'clone-dst.bin');
  await native.cloneFile(src, dst);
  t.true(readFileSync(dst).equals(data));
  t.is(statSync(dst).mode & 0o7777, 0o640);

  writeFileSync(dst, 'overwritten');
  t.true(readFileSync(src).equals(data));
  writeFileSync(src, 'source changed');
  t.is(readFileSync(dst, 'utf8'), 'overwritten');

  const err = sysErr(t, await t.throwsAsync(native.cloneFile(src, dst)));
  t.is(err.code, 'EEXIST');
  t.is(err.errno, -17);
  t.is(err.syscall, 'open');
  t.is(err.path, dst);
  t.is(readFileSync(dst, 'utf8'), 'overwritten');

  const missing = sysErr(t, await t.throwsAsync(native.cloneFile(join(root(), 'nope'), join(root(), 'nope2'))));
  t.is(missing.code, 'ENOENT');
  t.throws(() => statSync(join(root(), 'nope2')), { code: 'ENOENT' });
});

test('cloneFile across filesystems fails with EXDEV and removes the dst it created', async (t) => {
  const src = join(tempDir(), 'on-another-fs');
  writeFileSync(src, 'x');
  const dst = join(root(), 'cross-fs-dst');
  const err = sysErr(t, await t.throwsAsync(native.cloneFile(src, dst)));
  t.is(err.code, 'EXDEV');
  t.is(err.syscall, 'ioctl(FICLONE)');
  t.is(err.path, src);
  t.is(err.dest, dst);
  t.throws(() => statSync(dst), { code: 'ENOENT' });
});

test('syncfs resolves on the btrfs and rejects a missing path', async (t) => {
  await t.notThrowsAsync(native.syncfs(root()));
  const err = sysErr(t, await t.throwsAsync(native.syncfs(join(root(), 'missing'))));
  t.is(err.code, 'ENOENT');
  t.is(err.syscall, 'open');
});

// The freeze tests share one ext4 and must not freeze it concurrently.
let ext4: { image: string; mnt: string } | undefined;
function ext4Fs(): { image: string; mnt: string } {
  if (!ext4) {
    const image = makeExt4Image('inner-ext4.img');
    ext4 = { image, mnt: loopMount(image, 'inner-ext4') };
  }
  return ext4;
}

test.serial('freezeClone: consistent copy of a mounted ext4 image, fs thawed after', async (t) => {
  const { image, mnt } = ext4Fs();
  const payload = 'written just before the freeze\n'.repeat(1000);
  writeFileSync(join(mnt, 'data.txt'), payload); // no explicit sync: the freeze must flush it
  const clone = join(root(), 'inner-ext4-clone.img');
  await native.freezeClone(mnt, image, clone);

  t.true(writable(mnt), 'ext4 is still frozen after freezeClone');
  writeFileSync(join(mnt, 'after.txt'), 'after');

  const cloneMnt = loopMount(clone, 'inner-ext4-clone-mnt', true);
  t.is(readFileSync(join(cloneMnt, 'data.txt'), 'utf8'), payload);
  t.throws(() => statSync(join(cloneMnt, 'after.txt')), { code: 'ENOENT' });
});

test.serial('freezeClone with a missing src fails with ENOENT and leaves the fs thawed', async (t) => {
  const { mnt } = ext4Fs();
  const src = join(root(), 'no-such-image.img');
  const dst = join(root(), 'never-created.img');
  const err = sysErr(t, await t.throwsAsync(native.freezeClone(mnt, src, dst)));
  t.is(err.code, 'ENOENT');
  t.is(err.syscall, 'open');
  t.is(err.path, src);
  t.true(writable(mnt), 'ext4 left frozen');
  t.throws(() => statSync(dst), { code: 'ENOENT' });
});

test.serial('freezeClone failing while frozen (FICLONE of a directory) still thaws', async (t) => {
  const { mnt } = ext4Fs();
  const srcDir = join(root(), 'a-directory');
  mkdirSync(srcDir, { recursive: true });
  const dst = join(root(), 'dir-clone.img');
  const err = sysErr(t, await t.throwsAsync(native.freezeClone(mnt, srcDir, dst)));
  t.is(err.syscall, 'ioctl(FICLONE)');
  t.true(['EISDIR', 'EINVAL'].includes(err.code), err.code);
  t.is(err.path, srcDir);
  t.is(err.dest, dst);
  t.true(writable(mnt), 'ext4 left frozen');
  t.throws(() => statSync(dst), { code: 'ENOENT' });
});

test.serial('freezeClone refuses a dst on the frozen fs itself (would deadlock)', async (t) => {
  const { image, mnt } = ext4Fs();
  const dst = join(mnt, 'self.img');
  const err = sysErr(t, await t.throwsAsync(native.freezeClone(mnt, image, dst)));
  t.is(err.code, 'EDEADLK');
  t.true(writable(mnt), 'ext4 left frozen');
  t.throws(() => statSync(dst), { code: 'ENOENT' });
});

test.serial('freezeClone of a missing mountpoint reports open of the mountpoint', async (t) => {
  const mp = join(root(), 'no-mountpoint');
  const err = sysErr(t, await t.throwsAsync(native.freezeClone(mp, ext4Fs().image, join(root(), 'x.img'))));
  t.is(err.code, 'ENOENT');
  t.is(err.syscall, 'open');
  t.is(err.path, mp);
});

test('procStat and procEnviron of a spawned child', async (t) => {
  const big = 'y'.repeat(100_000); // environ larger than any single read buffer
  const child = spawn('/bin/sleep', ['30'], {
    env: { FOO: 'bar', EQ: 'a=b=c', EMPTY: '', BIG: big },
    stdio: 'ignore',
  });
  children.push(child);
  const pid = child.pid!;
  await waitForExec(pid, 'sleep');

  const st = native.procStat(pid);
  t.is(st.pid, pid);
  t.is(st.comm, 'sleep');
  t.is(st.ppid, process.pid);
  t.true(['S', 'R'].includes(st.state), st.state);
  t.true(Number.isInteger(st.starttime));
  t.true(st.starttime >= native.procStat(process.pid).starttime);

  const env = native.procEnviron(pid);
  t.is(env.FOO, 'bar');
  t.is(env.EQ, 'a=b=c');
  t.is(env.EMPTY, '');
  t.is(env.BIG, big);
  t.is(Object.keys(env).length, 4);
});

test('procStat: comm containing ") (" is parsed up to the last parenthesis', async (t) => {
  const dir = join(root(), 'odd-comm');
  mkdirSync(dir, { recursive: true });
  const exe = join(dir, 'a) (b');
  copyFileSync('/bin/sleep', exe);
  chmodSync(exe, 0o755);
  const child = spawn(exe, ['30'], { stdio: 'ignore' });
  children.push(child);
  const pid = child.pid!;
  await waitForExec(pid, 'a) (b');
  const st = native.procStat(pid);
  t.is(st.comm, 'a) (b');
  t.is(st.ppid, process.pid);
  t.true(['S', 'R'].includes(st.state), st.state);
  t.true(st.starttime > 0);
});

test('procStat/procEnviron with a procRoot that lacks the pid: ENOENT', (t) => {
  const procRoot = tempDir();
  for (const fn of [native.procStat, native.procEnviron]) {
    const err = sysErr(t, t.throws(() => fn(process.pid, procRoot)));
    t.is(err.code, 'ENOENT');
    t.is(err.errno, -2);
    t.is(err.syscall, 'open');
    t.true(err.path!.startsWith(`${procRoot}/${process.pid}/`));
  }
});

test('procStat/procEnviron read a fake procRoot; odd entries are ignored, first duplicate wins', (t) => {
  const procRoot = tempDir();
  mkdirSync(join(procRoot, '4242'));
  const fields = ['S', '77', ...Array.from({ length: 17 }, (_, i) => String(i)), '123456789', '0'];
  writeFileSync(join(procRoot, '4242', 'stat'), `4242 (x) (y) z) ${fields.join(' ')}\n`);
  t.deepEqual({ ...native.procStat(4242, procRoot) }, {
    pid: 4242, comm: 'x) (y) z', state: 'S', ppid: 77, starttime: 123456789,
  });
  writeFileSync(join(procRoot, '4242', 'environ'), 'A=1\0NOEQUALS\0=nokey\0A=2\0__proto__=x\0B=\0');
  const env = native.procEnviron(4242, procRoot);
  t.deepEqual(Object.keys(env), ['A', '__proto__', 'B']);
  t.is(env.A, '1');
  t.is(Object.getOwnPropertyDescriptor(env, '__proto__')?.value, 'x');
  t.is(Object.getPrototypeOf(env), Object.prototype);

  writeFileSync(join(procRoot, '4242', 'stat'), '4242 (truncated');
  const err = sysErr(t, t.throws(() => native.procStat(4242, procRoot)));
  t.is(err.code, 'EINVAL');
});

test('loader: without a build it lists every path tried and how to build', (t) => {
  // A copy of the compiled loader inside a package that has no build/ directory.
  const pkg = tempDir();
  const here = dirname(fileURLToPath(import.meta.url)); // dist/test
  const loaderDir = join(pkg, 'dist', 'src', 'native');
  mkdirSync(loaderDir, { recursive: true });
  copyFileSync(join(here, '..', 'src', 'native', 'addon.js'), join(loaderDir, 'addon.js'));
  writeFileSync(join(pkg, 'package.json'), '{"type":"module"}');
  const script = `
    const m = await import(${JSON.stringify(join(loaderDir, 'addon.js'))});
    try { m.loadNative(); console.log('loaded'); }
    catch (e) { console.log(JSON.stringify({ name: e.name, code: e.code, exitCode: e.exitCode, message: e.message, isErr: e instanceof m.NativeUnavailableError })); }`;
  const envPath = join(pkg, 'custom', 'tine_native.node');
  const out = execFileSync(process.execPath, ['--input-type=module', '-e', script], {
    encoding: 'utf8',
    env: { ...process.env, TINE_NATIVE_PATH: envPath },
  });
  const r = JSON.parse(out) as { name: string; code: string; exitCode: number; message: string; isErr: boolean };
  t.true(r.isErr);
  t.is(r.code, 'HOST_UNSUPPORTED');
  t.is(r.exitCode, 7);
  for (const p of [envPath, join(pkg, 'build', 'Release', 'tine_native.node'), join(pkg, 'build', 'Debug', 'tine_native.node')]) {
    t.true(r.message.includes(p), `message lacks ${p}`);
  }
  t.regex(r.message, /npm run build/);
  t.true(r.message.indexOf(envPath) < r.message.indexOf(join(pkg, 'build', 'Release')));
});
