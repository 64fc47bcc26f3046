// The filtering Docker endpoint of one repository: a long-lived root process serving the
// socket the sandbox and the Tinefile see (DOCKER_HOST), forwarding to the repository's own
// dockerd on a root-only socket only what proxy-policy.ts allows.
//
// One client connection carries one request. The request head is parsed here (bounded);
// the body is read only on the endpoints whose JSON must be checked (bounded); then the
// head goes upstream with `Connection: close` (plus `Upgrade` for the hijack endpoints),
// and from there on both directions are piped byte for byte: chunked responses (logs -f,
// events, stats), hijacked streams (attach, exec: 101 Upgrade or the older 200 hijack) and
// build contexts pass untouched. Because the daemon closes after answering a request that
// says `Connection: close`, nothing a client sends after its first request is ever parsed
// by the daemon as a second, unchecked request.
//
// Fail closed: if this process dies, the socket stays and answers nothing; the raw socket
// is in a root-only directory and is never reachable from the sandbox.
import { createServer, connect, type Socket } from 'node:net';
import { chmodSync, chownSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { loadHostConfig, type HostConfig } from '../host/config.js';
import { openDb } from '../state/db.js';
import { daemonPaths, daemonPid, dockerApi, type DaemonPaths } from './daemon.js';
import { hostNetworkIsRepoNetwork } from '../network/netns.js';
import { secretsDirOf } from '../secrets/delivery.js';
import { bodyNeeded, canonicalKeys, decide, isHijackEndpoint, stripVersion, type DaemonLookups, type PolicyContext, type Decision } from './proxy-policy.js';
import { pinRequestBody, pinSource } from './pins.js';

const MAX_HEAD = 64 * 1024;
const MAX_BODY = 4 * 1024 * 1024;
const HEAD_TIMEOUT_MS = 60_000;

/** GET through the raw socket, JSON or null on 404. */
async function rawGet(socket: string, path: string): Promise<any | null> {
  const r = await dockerApi(socket, 'GET', path, 10_000, { maxBytes: 16 * MAX_BODY });
  if (r.status === 404) return null;
  if (r.status !== 200) throw new Error(`docker ${path}: ${r.status}`);
  return JSON.parse(r.body);
}

export function rawLookups(rawSocket: string): DaemonLookups {
  return {
    volume: (name) => rawGet(rawSocket, `/volumes/${encodeURIComponent(name)}`),
    container: (id) => rawGet(rawSocket, `/containers/${encodeURIComponent(id)}/json`),
  };
}

export function policyContext(config: Pick<HostConfig, 'runDir' | 'addressBlock'>, repoPath: string, p: DaemonPaths): PolicyContext {
  const pid = daemonPid(p);
  return {
    repoPath,
    secretsDir: secretsDirOf(config, p.networkId),
    runDir: config.runDir,
    proxySocket: p.socket,
    // "host" networking is the repository's own only when dockerd runs in exactly its namespace.
    hostNetworkIsRepoNetwork: pid !== null && hostNetworkIsRepoNetwork(config, p.networkId, pid),
    pinsDir: p.pinsDir,
  };
}

interface Head {
  method: string;
  target: string;
  version: string;
  headers: [string, string][];
  /** Bytes after the head already read. */
  rest: Buffer;
}

class BadRequest extends Error {
  constructor(message: string, readonly status = 400) { super(message); }
}

function parseHead(buf: Buffer, end: number): Head {
  const text = buf.subarray(0, end).toString('latin1');
  const lines = text.split('\r\n');
  const m = /^([A-Z]+) (\S+) (HTTP\/1\.[01])$/.exec(lines[0]!);
  if (!m) throw new BadRequest('malformed request line');
  const headers: [string, string][] = [];
  for (const line of lines.slice(1)) {
    const h = /^([!#$%&'*+.^_`|~0-9A-Za-z-]+):[ \t]*(.*?)[ \t]*$/.exec(line);
    if (!h) throw new BadRequest('malformed header');
    headers.push([h[1]!, h[2]!]);
  }
  return { method: m[1]!, target: m[2]!, version: m[3]!, headers, rest: buf.subarray(end + 4) };
}

const headerValues = (h: Head, name: string) => h.headers.filter(([k]) => k.toLowerCase() === name).map(([, v]) => v);

/** A decoded, clean path (no `..`, `.`, `//`, encoded slashes that decode into them). */
function cleanPath(target: string): { path: string; query: URLSearchParams } {
  if (!target.startsWith('/')) throw new BadRequest('request target must be a path');
  const q = target.indexOf('?');
  const rawPath = q < 0 ? target : target.slice(0, q);
  let path: string;
  try {
    path = decodeURIComponent(rawPath);
  } catch {
    throw new BadRequest('malformed path encoding');
  }
  if (/\/\.{1,2}(\/|$)|\/\/|[\0\\]/.test(path)) throw new BadRequest('path is not clean');
  return { path, query: new URLSearchParams(q < 0 ? '' : target.slice(q + 1)) };
}

function respond(sock: Socket, status: number, message: string): void {
  const body = JSON.stringify({ message });
  const reason = status === 403 ? 'Forbidden' : status === 400 ? 'Bad Request' : status === 413 ? 'Payload Too Large' : status === 431 ? 'Request Header Fields Too Large' : 'Error';
  sock.end(`HTTP/1.1 ${status} ${reason}\r\nContent-Type: application/json\r\nContent-Length: ${Buffer.byteLength(body)}\r\nConnection: close\r\n\r\n${body}`);
}

/** Read exactly the body of a checked request (Content-Length or chunked), bounded. */
function readBody(sock: Socket, head: Head, pull: () => Promise<Buffer | null>): Promise<{ body: Buffer; rest: Buffer }> {
  const te = headerValues(head, 'transfer-encoding');
  const cl = headerValues(head, 'content-length');
  if (te.length && cl.length) throw new BadRequest('both Content-Length and Transfer-Encoding');
  let buf = head.rest;
  const more = async () => {
    const d = await pull();
    if (!d) throw new BadRequest('connection closed in the body');
    buf = Buffer.concat([buf, d]);
    if (buf.length > MAX_BODY + 64 * 1024) throw new BadRequest('body too large', 413);
  };
  return (async () => {
    if (te.length) {
      if (te.length !== 1 || te[0]!.toLowerCase() !== 'chunked') throw new BadRequest('unsupported Transfer-Encoding');
      const parts: Buffer[] = [];
      let size = 0;
      let pos = 0;
      for (let n = 0; n < 100_000; n++) {
        let eol = buf.indexOf('\r\n', pos);
        while (eol < 0) { await more(); eol = buf.indexOf('\r\n', pos); }
        const len = Number.parseInt(buf.subarray(pos, eol).toString('latin1').split(';')[0]!.trim(), 16);
        if (!Number.isFinite(len) || len < 0) throw new BadRequest('malformed chunk');
        size += len;
        if (size > MAX_BODY) throw new BadRequest('body too large', 413);
        const start = eol + 2;
        if (len === 0) {
          // No trailers: CRLF right away; with trailers: up to the empty line.
          while (buf.length < start + 2) await more();
          if (buf[start] === 13 && buf[start + 1] === 10) return { body: Buffer.concat(parts), rest: buf.subarray(start + 2) };
          let e = buf.indexOf('\r\n\r\n', start);
          while (e < 0) { await more(); e = buf.indexOf('\r\n\r\n', start); }
          return { body: Buffer.concat(parts), rest: buf.subarray(e + 4) };
        }
        while (buf.length < start + len + 2) await more();
        parts.push(buf.subarray(start, start + len));
        pos = start + len + 2;
      }
      throw new BadRequest('too many chunks');
    }
    if (cl.length > 1 && new Set(cl).size > 1) throw new BadRequest('conflicting Content-Length');
    const len = cl.length ? Number(cl[0]) : 0;
    if (!Number.isInteger(len) || len < 0) throw new BadRequest('malformed Content-Length');
    if (len > MAX_BODY) throw new BadRequest('body too large', 413);
    while (buf.length < len) await more();
    return { body: buf.subarray(0, len), rest: buf.subarray(len) };
  })();
}

/** Serve one client connection: one request, checked, then piped. */
function serveConnection(client: Socket, rawSocket: string, ctx: PolicyContext, lookups: DaemonLookups, log: (s: string) => void, pin?: (source: string) => string | null): void {
  let buf = Buffer.alloc(0);
  const waiting: ((d: Buffer | null) => void)[] = [];
  let ended = false;
  const onData = (d: Buffer) => {
    const w = waiting.shift();
    if (w) w(d);
    else buf = Buffer.concat([buf, d]);
  };
  const onEnd = () => { ended = true; for (const w of waiting.splice(0)) w(null); };
  client.on('data', onData);
  client.on('end', onEnd);
  client.on('error', () => client.destroy());
  client.setTimeout(HEAD_TIMEOUT_MS, () => client.destroy());
  const pull = (): Promise<Buffer | null> => {
    if (buf.length) { const d = buf; buf = Buffer.alloc(0); return Promise.resolve(d); }
    if (ended) return Promise.resolve(null);
    return new Promise((r) => waiting.push(r));
  };
  void (async () => {
    let acc = Buffer.alloc(0);
    let end = -1;
    while (end < 0) {
      const d = await pull();
      if (!d) { client.destroy(); return; }
      acc = Buffer.concat([acc, d]);
      end = acc.indexOf('\r\n\r\n');
      if (end < 0 && acc.length > MAX_HEAD) throw new BadRequest('request head too large', 431);
    }
    const head = parseHead(acc, end);
    const { path, query } = cleanPath(head.target);
    const checked = bodyNeeded(head.method, path);
    let bodyBytes: Buffer | null = null;
    let rest = head.rest;
    let parsed: unknown;
    if (checked) {
      const r = await readBody(client, head, pull);
      bodyBytes = r.body;
      rest = r.rest;
      const text = r.body.toString('utf8').trim();
      try {
        parsed = text ? JSON.parse(text) : undefined;
      } catch {
        throw new BadRequest(`tine: ${head.method} ${path} refused — its body is not JSON; send the request as the docker CLI does`, 403);
      }
    }
    const decision: Decision = await decide({ method: head.method, path, query, body: parsed }, ctx, lookups);
    if (!decision.allow) {
      log(`refused ${head.method} ${path}: ${decision.message}`);
      respond(client, decision.status, decision.message);
      return;
    }
    // dockerd gets exactly what was checked: the body as parsed, written again. Go's decoder
    // merges a repeated key's objects ({"HostConfig":{…},"HostConfig":{}}) where JSON.parse
    // keeps only the last, so the original bytes could say more than the policy saw.
    if (checked && parsed !== undefined) bodyBytes = Buffer.from(JSON.stringify(canonicalKeys(parsed)), 'utf8');
    // The decision sticks: bind sources inside the repository become pins of the inodes
    // just checked, so a symlink swapped in later cannot redirect a (re)start's mount.
    const api = stripVersion(path);
    if (pin && bodyBytes && head.method === 'POST' && (api === '/containers/create' || api === '/volumes/create')) {
      const body = canonicalKeys(parsed) as Record<string, any>;
      try {
        if (body && pinRequestBody(api, body, pin)) bodyBytes = Buffer.from(JSON.stringify(body), 'utf8');
      } catch (err) {
        const e = err as NodeJS.ErrnoException;
        const why = e.code === 'ELOOP' ? 'a component of a bind source changed into a symbolic link' : e.message;
        throw new BadRequest(`tine: ${head.method} ${path} refused — its bind source could not be pinned (${why}); bind a real directory under the repository`, 403);
      }
    }
    // Forward: the request line as sent, headers minus hop-by-hop ones, one request only.
    const upgrade = isHijackEndpoint(head.method, path) && headerValues(head, 'upgrade').length > 0;
    const keep = head.headers.filter(([k]) => !['connection', 'keep-alive', 'proxy-connection', ...(upgrade ? [] : ['upgrade']), ...(bodyBytes ? ['content-length', 'transfer-encoding'] : [])].includes(k.toLowerCase()));
    const lines = [`${head.method} ${head.target} ${head.version}`, ...keep.map(([k, v]) => `${k}: ${v}`), upgrade ? 'Connection: Upgrade, close' : 'Connection: close'];
    if (bodyBytes) lines.push(`Content-Length: ${bodyBytes.length}`);
    const upstream = connect({ path: rawSocket, allowHalfOpen: true });
    upstream.on('error', () => { if (!client.destroyed) respond(client, 502, 'tine: the repository\'s Docker daemon does not answer; run tine repo up <ref>'); upstream.destroy(); });
    client.off('data', onData);
    client.off('end', onEnd);
    client.setTimeout(0);
    upstream.write(Buffer.concat([Buffer.from(lines.join('\r\n') + '\r\n\r\n', 'latin1'), bodyBytes ?? Buffer.alloc(0), rest, buf]));
    buf = Buffer.alloc(0);
    if (ended) upstream.end();
    else client.pipe(upstream);
    upstream.pipe(client);
    client.on('close', () => upstream.destroy());
    upstream.on('close', () => client.destroy());
  })().catch((err) => {
    const status = err instanceof BadRequest ? err.status : 400;
    const msg = err instanceof BadRequest && err.message.startsWith('tine:') ? err.message : `tine: request refused — ${(err as Error).message}`;
    log(`refused: ${msg}`);
    if (!client.destroyed) respond(client, status, msg);
  });
}

export interface ProxyHandle { close(): Promise<void> }

/** Listen on `p.socket` (0660 root:gid) and forward to `p.rawSocket`. */
export function serveProxy(p: DaemonPaths, ctx: PolicyContext, gid: number, log: (s: string) => void = () => {}): Promise<ProxyHandle> {
  const lookups = rawLookups(p.rawSocket);
  // pinsDir set: this is the repository's live endpoint (tests may serve without pins).
  const pin = ctx.pinsDir ? (s: string) => pinSource({ runDir: ctx.runDir }, ctx.repoPath, p.networkId, s) : undefined;
  const server = createServer({ allowHalfOpen: true }, (c) => serveConnection(c, p.rawSocket, ctx, lookups, log, pin));
  rmSync(p.socket, { force: true });
  const old = process.umask(0o177); // created 0600: never reachable before chown/chmod
  return new Promise((resolve, reject) => {
    server.once('error', (e) => { process.umask(old); reject(e); });
    server.listen(p.socket, () => {
      process.umask(old);
      chownSync(p.socket, 0, gid);
      chmodSync(p.socket, 0o660);
      resolve({ close: () => new Promise((r) => server.close(() => r())) });
    });
  });
}

/**
 * `tine-host docker-proxy --network-id N --listen SOCKET` (internal; started by startDaemon
 * as root). Everything it serves is derived from the host config and the state database:
 * its arguments name a repository, they cannot widen what is allowed.
 */
export async function proxyMain(argv: string[]): Promise<number> {
  if (process.getuid?.() !== 0) {
    process.stderr.write('tine-host docker-proxy: internal command, run by tine as root\n');
    return 7;
  }
  const arg = (name: string) => { const i = argv.indexOf(name); return i >= 0 ? argv[i + 1] : undefined; };
  const networkId = Number(arg('--network-id'));
  const config = loadHostConfig();
  const db = openDb(config);
  const row = db.prepare('SELECT path FROM repos WHERE network_id = ?').get(networkId) as { path: string } | undefined;
  db.close();
  if (!Number.isInteger(networkId) || !row) {
    process.stderr.write(`tine-host docker-proxy: no repository with network id ${arg('--network-id')}\n`);
    return 3;
  }
  const p = daemonPaths(config, row.path, networkId);
  if (arg('--listen') !== p.socket) {
    process.stderr.write(`tine-host docker-proxy: --listen must be ${p.socket}\n`);
    return 2;
  }
  const ctx = policyContext(config, row.path, p);
  const log = (s: string) => process.stderr.write(`${new Date().toISOString()} ${s.replace(/\n/g, ' ')}\n`);
  const handle = await serveProxy(p, ctx, config.sandboxUid, log);
  writeFileSync(p.proxyPidFile, `${process.pid}\n`, { mode: 0o600 });
  log(`serving ${p.socket} → ${p.rawSocket} (repo ${row.path}, host network is ${ctx.hostNetworkIsRepoNetwork ? 'the repository\'s own' : 'shared: --network host refused'})`);
  await new Promise<void>((resolve) => {
    for (const s of ['SIGTERM', 'SIGINT', 'SIGHUP'] as const) process.once(s, () => resolve());
  });
  await Promise.race([handle.close(), new Promise((r) => setTimeout(r, 1000))]);
  try {
    if (readFileSync(p.proxyPidFile, 'utf8').trim() === String(process.pid)) rmSync(p.proxyPidFile, { force: true });
  } catch { /* gone */ }
  return 0;
}
