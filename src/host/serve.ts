// `tine-host serve`: the host daemon. Node needs ~110 ms to start on a small host, before any
// of tine loads; the hot paths cannot pay that on every call. This long-lived root process
// answers, on a root-only unix socket, the two requests of the `tine` / `tine-host` launcher
// (native/launcher/tine-launch.c):
//
//   EXEC  `tine repo exec|connect …` run by root on this host: the whole pipeline (validate,
//         repair, guard on the CALLER's process tree, audit) and then, instead of running the
//         command, the sandbox helper's argv + env, which the launcher executes itself.
//   RPC   `tine-host rpc` (the far end of `tine -m`, also under an agent key's forced
//         command): one request answered here, events streamed back.
//
// Anything else is answered FALLBACK and the launcher starts Node as before, so the daemon
// is an accelerator, never a second implementation: both paths call execute().
// Requests are handled one at a time (the guard's detection and several temp names are per
// process), so only short commands are answered here; long ones (up, down, delete…) and
// exec/connect themselves (which own a terminal) always go to Node.
//
// Who asks: the caller's pid from SO_PEERCRED, pinned by SO_PEERPIDFD (or its start time):
// the guard walks that pid's tree and the answer counts only if the very process that
// connected still lived after the walk. A caller that is gone, or whose /proc is unreadable,
// is refused: a dead or reused pid must never read as "no agent here".
//
// Wire format (launcher → serve), a header line, the launcher's host config path, then:
//   EXEC <argc> <envc> <ttymask>\n config\0 argv…\0 env K=V…\0   ttymask: 1 stdin 2 stdout 4 stderr
//   RPC <agent|-> <len>\n config\0 <len bytes: the request line>
// serve → launcher:
//   FALLBACK\n                                   (also when the config is not serve's own)
//   EXIT <code> <outlen> <errlen>\n <stdout bytes><stderr bytes>
//   RUN <argc> <envc> <json|text>\n path+args…\0 env…\0 failure-out\0 failure-err\0
//       (the SANDBOX_FAILED rendering, with \x01 where the helper's status goes)
//   STREAM\n  JSON lines…  \0EXIT <code>\n
import { createServer, connect, type Socket } from 'node:net';
import { chmodSync, closeSync, lstatSync, mkdirSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { join, resolve as resolvePath } from 'node:path';
import { loadHostConfig, type HostConfig } from './config.js';
import { execute } from '../commands/execute.js';
import { findCommand } from '../commands/registry.js';
import { nonInteractive, type Actor } from '../ops/context.js';
import { detect, setProcessDetection, trustedProcRoot, withAgentRole } from '../guard/detect.js';
import { NativeProcReader } from '../guard/native-proc.js';
import { loadNative } from '../native/addon.js';
import { renderEnvelope } from '../cli/host-main.js';
import { answerRequest, answeredByServe, badRequestLine, decideActor, helloEvent, parseRequest } from '../rpc/server.js';
import type { RpcEvent } from '../rpc/protocol.js';
import { TineError, EXIT, conflict } from '../errors.js';
import { sandboxFailed } from '../sandbox/helper.js';
import { ownerAlive } from '../repo/intents.js';

/** Largest request accepted (argv of an exec, or one RPC request line). */
const MAX_REQUEST_BYTES = 4 << 20;
/** A launcher that connects and sends nothing is dropped after this long. */
const REQUEST_TIMEOUT_MS = 10_000;
/** Caller variables an exec may carry into the sandbox (sandboxEnv filters them again). */
const CALLER_ENV = new Set(['TERM', 'LANG', 'LC_ALL', 'COLORTERM', 'TZ']);

export const hostSocketPath = (config: Pick<HostConfig, 'runDir'>) => join(config.runDir, 'host.sock');

interface Peer {
  pid: number;
  uid: number;
  /** SO_PEERPIDFD, or -1 (then `start` pins the pid). */
  pidfd: number;
  start: number;
}

type Request =
  | { kind: 'exec'; config: string; argv: string[]; env: Record<string, string>; tty: { stdin: boolean; stdout: boolean; stderr: boolean } }
  | { kind: 'rpc'; config: string; role: 'agent' | undefined; line: Buffer };

/** Commands the daemon answers for a relay: short ones. The rest go to Node (concurrent). */
const SERVED_RPC = new Set(['repo list', 'repo info', 'repo fork', 'repo create', 'repo secret get', 'repo secret list', 'repo secret set', 'repo secret unset', 'repo key list', 'audit log', 'audit verify']);

function servedHere(command: string, input: Record<string, unknown>): boolean {
  if (!SERVED_RPC.has(command)) return false;
  // fork --up starts a daemon; create --from copies a tree: both may take long.
  return !(command === 'repo fork' && input.up) && !(command === 'repo create' && input.from);
}

/** Parse a complete request from the bytes read so far; null = need more bytes. */
export function parseFrame(buf: Buffer): Request | null {
  const nl = buf.indexOf(10);
  if (nl < 0) {
    if (buf.length > 256) throw new Error('header line too long');
    return null;
  }
  const header = buf.subarray(0, nl).toString('latin1').split(' ');
  const afterHeader = buf.subarray(nl + 1);
  const cfgEnd = afterHeader.indexOf(0);
  if (cfgEnd < 0) {
    if (afterHeader.length > 4096) throw new Error('config path too long');
    return null;
  }
  const config = afterHeader.subarray(0, cfgEnd).toString('utf8');
  const body = afterHeader.subarray(cfgEnd + 1);
  if (header[0] === 'RPC' && header.length === 3) {
    const len = Number(header[2]);
    if (!Number.isInteger(len) || len < 0 || len > MAX_REQUEST_BYTES) throw new Error('bad RPC length');
    if (header[1] !== 'agent' && header[1] !== '-') throw new Error('bad RPC role');
    if (body.length < len) return null;
    return { kind: 'rpc', config, role: header[1] === 'agent' ? 'agent' : undefined, line: body.subarray(0, len) };
  }
  if (header[0] === 'EXEC' && header.length === 4) {
    const [argc, envc, mask] = header.slice(1).map(Number) as [number, number, number];
    if (![argc, envc, mask].every((n) => Number.isInteger(n) && n >= 0) || argc > 65536 || envc > 64) throw new Error('bad EXEC header');
    const strings: string[] = [];
    let at = 0;
    while (strings.length < argc + envc) {
      const end = body.indexOf(0, at);
      if (end < 0) return null;
      strings.push(body.subarray(at, end).toString('utf8'));
      at = end + 1;
    }
    const env: Record<string, string> = {};
    for (const kv of strings.slice(argc)) {
      const eq = kv.indexOf('=');
      if (eq > 0 && CALLER_ENV.has(kv.slice(0, eq))) env[kv.slice(0, eq)] = kv.slice(eq + 1);
    }
    return { kind: 'exec', config, argv: strings.slice(0, argc), env, tty: { stdin: Boolean(mask & 1), stdout: Boolean(mask & 2), stderr: Boolean(mask & 4) } };
  }
  throw new Error(`unknown request ${JSON.stringify(header[0]).slice(0, 20)}`);
}

/**
 * The exec/connect command lines the daemon plans; anything else (other commands, -m, help,
 * options it does not know) is left to the full command tree in Node. Mirrors commander's
 * reading of `[-o FMT] repo exec <ref> [--] CMD…` and `[-o FMT] repo connect <ref>`.
 */
export function plannable(argv: string[]): { name: 'repo exec' | 'repo connect'; input: Record<string, unknown>; output?: 'json' | 'text' } | null {
  let i = 0;
  let output: 'json' | 'text' | undefined;
  for (; i < argv.length; i++) {
    const a = argv[i]!;
    if ((a === '-o' || a === '--output') && (argv[i + 1] === 'json' || argv[i + 1] === 'text')) output = argv[++i] as 'json' | 'text';
    else if (a === '-ojson' || a === '-otext' || a === '--output=json' || a === '--output=text') output = a.endsWith('json') ? 'json' : 'text';
    else break;
  }
  if (argv[i] !== 'repo') return null;
  const verb = argv[i + 1];
  const ref = argv[i + 2];
  if (ref === undefined || ref.startsWith('-')) return null;
  const rest = argv.slice(i + 3);
  if (verb === 'connect') return rest.length === 0 ? { name: 'repo connect', input: { ref }, output } : null;
  if (verb !== 'exec') return null;
  const command = rest[0] === '--' ? rest.slice(1) : rest;
  // Without `--`, commander would read a dash word as an option of exec: let it say so.
  if (rest[0] !== '--' && rest.some((w) => w.startsWith('-'))) return null;
  if (command.length === 0) return null;
  return { name: 'repo exec', input: { ref, command }, output };
}

/**
 * The guard's detection on the caller's process tree (the launcher's pid, from SO_PEERCRED).
 * Fail closed: a caller whose own /proc entry cannot be read, or that is no longer the
 * process that connected once the walk is done, is refused (a dead caller's chain is empty,
 * and an empty chain would otherwise read as a human).
 */
function callerActor(config: HostConfig & { configPath: string; configExists: boolean }, peer: Peer, role: 'agent' | undefined): Actor {
  let who = detect(new NativeProcReader(trustedProcRoot(config)), { pid: peer.pid, env: {} });
  const native = loadNative();
  const stillThere = peer.pidfd >= 0 ? native.pidfdAlive(peer.pidfd) : ownerAlive(peer.pid, peer.start);
  if (who.walk.levels === 0 || !stillThere) {
    throw new TineError('CALLER_UNVERIFIED', EXIT.refused, `the calling process ${peer.pid} ${stillThere ? 'could not be read' : 'is gone'}, so the guard cannot tell who asks`, {
      next: [{ description: 'Run the command from a process that waits for its answer' }],
    });
  }
  if (role === 'agent') who = withAgentRole(who, '--role agent', {});
  setProcessDetection(who);
  return { kind: who.kind, reason: who.reason, pid: peer.pid };
}

/** The caller's host config must be the daemon's own: another install is not ours to answer. */
function sameConfig(config: { configPath: string }, theirs: string): boolean {
  return resolvePath(theirs || '/etc/tine/host.json') === resolvePath(config.configPath);
}

const nulJoin = (xs: string[]) => Buffer.concat(xs.map((x) => Buffer.from(x + '\0', 'utf8')));

function exitFrame(code: number, out: string, err: string): Buffer {
  const o = Buffer.from(out, 'utf8');
  const e = Buffer.from(err, 'utf8');
  return Buffer.concat([Buffer.from(`EXIT ${code} ${o.length} ${e.length}\n`), o, e]);
}

async function answerExec(sock: Socket, peer: Peer, req: Extract<Request, { kind: 'exec' }>): Promise<string> {
  const config = loadHostConfig();
  const wanted = plannable(req.argv);
  if (!wanted || !sameConfig(config, req.config)) {
    sock.end('FALLBACK\n');
    return 'fallback';
  }
  const mode = wanted.output ?? (req.tty.stdout ? 'text' : 'json');
  const tty = { stdout: req.tty.stdout, stderr: req.tty.stderr };
  const human = findCommand(wanted.name)?.human;
  let result;
  try {
    const actor = callerActor(config, peer, undefined);
    result = await execute(wanted.name, wanted.input, { actor, caller: nonInteractive, plan: { callerEnv: req.env } });
  } catch (err) {
    const e = err instanceof TineError ? err : new TineError('INTERNAL', EXIT.failure, (err as Error).message);
    result = { envelope: { ok: false, command: wanted.name, error: e.toJSON() as never }, exitCode: e.exitCode };
  }
  const { envelope, exitCode } = result;
  if (!envelope.ok) {
    const { out, err } = renderEnvelope(envelope, mode, human, tty);
    sock.end(exitFrame(exitCode, out, err));
    return `refused ${envelope.error?.code}`;
  }
  const plan = envelope.data as { path: string; args: string[]; env: Record<string, string>; ref: string };
  const argv = [plan.path, ...plan.args];
  const env = Object.entries(plan.env).map(([k, v]) => `${k}=${v}`);
  // How a sandbox that could not be built is reported, exactly as the Node path renders it.
  const failed = sandboxFailed(config, plan.ref, '\x01', 125);
  const failure = renderEnvelope({ ok: false, command: wanted.name, error: failed.toJSON() as never }, mode, human, tty);
  sock.end(Buffer.concat([Buffer.from(`RUN ${argv.length} ${env.length} ${mode}\n`), nulJoin(argv), nulJoin(env), nulJoin([failure.out, failure.err])]));
  return `run ${plan.ref}`;
}

async function answerRpc(sock: Socket, peer: Peer, req: Extract<Request, { kind: 'rpc' }>): Promise<string> {
  const out = (ev: RpcEvent) => { sock.write(JSON.stringify(ev) + '\n'); };
  let raw: unknown;
  try {
    raw = JSON.parse(req.line.toString('utf8'));
  } catch (err) {
    const env = badRequestLine(err);
    sock.write('STREAM\n');
    out({ event: 'result', ...env });
    sock.end(`\0EXIT ${env.exitCode}\n`);
    return 'bad request';
  }
  const parsed = parseRequest(raw);
  if ('failure' in parsed) {
    sock.write('STREAM\n');
    out({ event: 'result', ...parsed.failure });
    sock.end(`\0EXIT ${parsed.failure.exitCode}\n`);
    return 'bad request';
  }
  const config = loadHostConfig();
  if (!answeredByServe(parsed.req) || !servedHere(parsed.req.command, parsed.req.input) || !sameConfig(config, req.config)) {
    sock.end('FALLBACK\n');
    return `fallback ${parsed.req.command}`;
  }
  let hostSide: Actor;
  try {
    hostSide = callerActor(config, peer, req.role);
  } catch (err) {
    const e = err as TineError;
    sock.write('STREAM\n');
    out({ event: 'result', envelope: { ok: false, command: parsed.req.command, error: e.toJSON() as never }, exitCode: e.exitCode });
    sock.end(`\0EXIT ${e.exitCode}\n`);
    return `refused ${e.code}`;
  }
  const actor = { ...decideActor(req.role, parsed.req.client, hostSide), pid: peer.pid };
  sock.write('STREAM\n');
  out(helloEvent(actor));
  const code = await answerRequest(parsed.req, actor, out);
  sock.end(`\0EXIT ${code}\n`);
  return `${parsed.req.command} → ${code}`;
}

/** Read one request from a connection (bounded in size and time). */
function readRequest(sock: Socket): Promise<Request> {
  return new Promise((resolve, reject) => {
    let buf = Buffer.alloc(0);
    const timer = setTimeout(() => fail(new Error('no request within 10 s')), REQUEST_TIMEOUT_MS);
    const fail = (err: Error) => {
      clearTimeout(timer);
      sock.off('data', onData);
      reject(err);
    };
    const onData = (d: Buffer) => {
      buf = Buffer.concat([buf, d]);
      if (buf.length > MAX_REQUEST_BYTES + 4096) return fail(new Error('request too large'));
      let req: Request | null;
      try {
        req = parseFrame(buf);
      } catch (err) {
        return fail(err as Error);
      }
      if (!req) return;
      clearTimeout(timer);
      sock.off('data', onData);
      resolve(req);
    };
    sock.on('data', onData);
    sock.once('end', () => fail(Object.assign(new Error('connection closed before a whole request'), { empty: buf.length === 0 })));
    sock.once('error', fail);
  });
}

function isLive(path: string): Promise<boolean> {
  return new Promise((resolve) => {
    const c = connect(path);
    c.once('connect', () => { c.destroy(); resolve(true); });
    c.once('error', () => resolve(false));
  });
}

/** Run the daemon until SIGTERM/SIGINT. */
/**
 * One daemon per install: a pidfile (pid + start time) taken with O_EXCL; a stale one (its
 * owner dead) is replaced. The socket is unlinked on stop only while it is still ours.
 */
function takePidfile(file: string): () => void {
  const mine = `${process.pid} ${loadNative().procStat(process.pid).starttime}\n`;
  for (let attempt = 0; attempt < 2; attempt++) {
    try {
      writeFileSync(file, mine, { flag: 'wx', mode: 0o600 });
      return () => {
        try {
          if (readFileSync(file, 'utf8') === mine) rmSync(file, { force: true });
        } catch {
          /* gone */
        }
      };
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'EEXIST') throw err;
      const [pid, start] = readFileSync(file, 'utf8').trim().split(' ').map(Number);
      if (pid && start !== undefined && ownerAlive(pid, start)) {
        throw conflict('SERVE_RUNNING', `tine-host serve already runs here (pid ${pid})`, [{ description: 'Leave it (one is enough), or stop it first', run: `kill ${pid}` }]);
      }
      rmSync(file, { force: true });
    }
  }
  throw conflict('SERVE_RUNNING', `could not take ${file}`, []);
}

/** The run dir holds a root-only socket that root's launcher trusts: it must be root's alone. */
function checkRunDir(dir: string): void {
  mkdirSync(dir, { recursive: true, mode: 0o711 });
  const st = lstatSync(dir);
  if (!st.isDirectory() || st.uid !== 0 || (st.mode & 0o022) !== 0) {
    throw new TineError('RUN_DIR_UNSAFE', EXIT.failure, `${dir} is not a root-owned directory that only root may write (uid ${st.uid}, mode ${(st.mode & 0o7777).toString(8)})`, {
      next: [{ description: 'Make it root-owned and not group/other-writable', run: `chown root:root ${dir} && chmod 711 ${dir}` }],
    });
  }
}

/** Run the daemon until SIGTERM/SIGINT. */
export async function serveHost(opts: { socket?: string }): Promise<number> {
  const config = loadHostConfig();
  if (process.getuid?.() !== 0) throw new TineError('HOST_UNSUPPORTED', EXIT.unsupported, 'tine-host serve needs root');
  const native = loadNative();
  const path = opts.socket ?? hostSocketPath(config);
  checkRunDir(config.runDir);
  const releasePidfile = takePidfile(join(config.runDir, 'host.pid'));
  if (await isLive(path)) {
    releasePidfile();
    throw conflict('SERVE_RUNNING', `a tine-host serve already answers on ${path}`, [{ description: 'Stop it first (or leave it: one is enough)' }]);
  }
  rmSync(path, { force: true });
  const log = (msg: string) => process.stderr.write(`tine-host serve: ${msg}\n`);
  let queue: Promise<void> = Promise.resolve();
  // allowHalfOpen: a client may shut down its sending side and still read the answer.
  const server = createServer({ allowHalfOpen: true }, (sock) => {
    let peer: Peer;
    try {
      const fd = (sock as unknown as { _handle?: { fd?: number } })._handle?.fd;
      if (typeof fd !== 'number' || fd < 0) throw new Error('no fd');
      const cred = native.peerCredentials(fd);
      const pidfd = native.peerPidfd(fd);
      let start = -1;
      try {
        start = native.procStat(cred.pid).starttime;
      } catch {
        /* gone already: callerActor refuses */
      }
      peer = { ...cred, pidfd, start };
      if (pidfd >= 0) sock.once('close', () => { try { closeSync(pidfd); } catch { /* closed */ } });
    } catch (err) {
      log(`dropped a connection: no peer credentials (${(err as Error).message})`);
      sock.destroy();
      return;
    }
    // Defence in depth: the socket is root-only already.
    if (peer.uid !== 0) {
      sock.end(exitFrame(EXIT.unsupported, '', 'tine-host serve answers root only\n'));
      return;
    }
    sock.on('error', () => undefined);
    readRequest(sock).then(
      (req) => {
        queue = queue.then(async () => {
          try {
            const what = req.kind === 'exec' ? await answerExec(sock, peer, req) : await answerRpc(sock, peer, req);
            log(`${req.kind} pid ${peer.pid}: ${what}`);
          } catch (err) {
            log(`${req.kind} pid ${peer.pid} failed: ${(err as Error)?.stack ?? err}`);
            if (!sock.writableEnded) sock.end(req.kind === 'exec' ? exitFrame(EXIT.failure, '', `tine: internal error in tine-host serve: ${(err as Error)?.message}\n`) : `\0EXIT ${EXIT.failure}\n`);
          }
        });
      },
      (err: Error & { empty?: boolean }) => {
        // A connect-and-close (a liveness probe) is not worth a line.
        if (!err.empty) log(`dropped a request from pid ${peer.pid}: ${err.message}`);
        sock.destroy();
      },
    );
  });
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    // Created root-only: nothing but root may ask it anything.
    const old = process.umask(0o177);
    server.listen(path, () => {
      process.umask(old);
      resolve();
    });
  });
  chmodSync(path, 0o600);
  const ours = statSync(path).ino;
  log(`listening on ${path} (pid ${process.pid})`);
  return new Promise<number>((resolve) => {
    const stop = () => {
      server.close();
      try {
        if (statSync(path).ino === ours) rmSync(path, { force: true });
      } catch {
        /* gone */
      }
      releasePidfile();
      resolve(0);
    };
    process.once('SIGTERM', stop);
    process.once('SIGINT', stop);
  });
}

