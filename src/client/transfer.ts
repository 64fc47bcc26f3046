// `repo push REF --to M` / `repo pull REF --from M`: the client joins two protocol ends —
// the sender's `transfer send` (header line + btrfs stream) into the receiver's
// `transfer receive` — after asking the receiver which snapshots it already holds, so the
// stream is incremental when a base is shared. Either end may be this host.
// --with-secrets then relays the secrets end-to-end encrypted (src/secrets/transfer.ts): the
// sink's one-transfer public key to the source, the source's ciphertext to the sink.
import { createInterface } from 'node:readline';
import type { Readable } from 'node:stream';
import type { Machine } from './config.js';
import { spawnRemote, sshFailure, LOCAL } from './ssh.js';
import { runRemote, clientRequest } from './remote.js';
import { clientAuthorize, type ClientVerdict } from './actor.js';
import type { Envelope } from '../commands/execute.js';
import { Timeline, round } from '../ops/timeline.js';
import type { StepListener } from '../ops/timeline.js';
import { TineError, EXIT, toTineError } from '../errors.js';

function readHeaderLines(stream: Readable, count: number, maxBytes = 1 << 20): Promise<{ lines: string[]; rest: Buffer }> {
  return new Promise((resolve, reject) => {
    let buf = Buffer.alloc(0);
    const onData = (chunk: Buffer) => {
      buf = Buffer.concat([buf, chunk]);
      const lines: string[] = [];
      let start = 0;
      for (let i = 0; i < count; i++) {
        const nl = buf.indexOf(0x0a, start);
        if (nl < 0) {
          if (buf.length > maxBytes) { cleanup(); reject(new Error('header too long')); }
          return;
        }
        lines.push(buf.subarray(start, nl).toString('utf8'));
        start = nl + 1;
      }
      cleanup();
      stream.pause();
      resolve({ lines, rest: buf.subarray(start) });
    };
    const onEnd = () => { cleanup(); resolve({ lines: buf.toString('utf8').split('\n').filter(Boolean), rest: Buffer.alloc(0) }); };
    const cleanup = () => { stream.off('data', onData); stream.off('end', onEnd); };
    stream.on('data', onData);
    stream.on('end', onEnd);
    stream.on('error', reject);
  });
}

type Result = { envelope: Envelope; exitCode: number };

export async function transferRepo(
  input: { ref: string; source: Machine; sink: Machine; withSecrets?: boolean; secretsOnly?: boolean },
  verdict: ClientVerdict,
  onStep?: StepListener,
): Promise<Result> {
  const command = input.source === LOCAL ? 'repo push' : 'repo pull';
  const timeline = new Timeline(onStep);
  const t0 = performance.now();
  const done = (r: Result): Result => ({ envelope: { ...r.envelope, command, steps: timeline.steps, ms: round(performance.now() - t0) }, exitCode: r.exitCode });
  try {
    const secrets = Boolean(input.withSecrets || input.secretsOnly);
    // Humans only, decided here before any connection; both hosts decide again.
    if (secrets) clientAuthorize('transfer secrets seal', { ref: input.ref }, verdict);
    let data: Record<string, unknown> | undefined;
    if (!input.secretsOnly) {
      const moved = await moveRepo(input, verdict, timeline);
      if (!moved.envelope.ok) return done(moved);
      data = moved.envelope.data as Record<string, unknown>;
    }
    if (secrets) {
      const retry = command === 'repo push' ? `tine repo push ${input.ref} --to ${input.sink.name} --secrets-only` : `tine repo pull ${input.ref} --from ${input.source.name} --secrets-only`;
      try {
        const copied = await copySecrets(input, verdict, timeline);
        const secretsData = { copied: copied.copied.map((c) => c.key), unchanged: copied.unchanged, sourceHost: copied.from, sinkHost: copied.sinkHost };
        data = { ...(data ?? { ref: copied.ref, guid: copied.guid, from: input.source.name, to: input.sink.name }), secrets: secretsData };
      } catch (err) {
        const e = toTineError(err);
        if (input.secretsOnly) throw e;
        // The repository is there and complete; only the secrets are missing, and say how to add them.
        throw new TineError('SECRETS_NOT_COPIED', e.exitCode === EXIT.usage ? EXIT.failure : e.exitCode,
          `${input.ref} arrived on ${input.sink.name} complete, but its secrets were not copied (${e.code}: ${e.message})`, {
            next: [{ description: 'Copy the secrets again once the cause is fixed (only the secrets; idempotent)', run: retry }, ...e.next.filter((n) => n.run !== retry)],
            details: { repository: data, cause: e.code },
          });
      }
    }
    return done({ envelope: { ok: true, command, data }, exitCode: 0 });
  } catch (err) {
    const e = toTineError(err);
    return done({ envelope: { ok: false, command, error: e.toJSON() as Envelope['error'] }, exitCode: e.exitCode });
  }
}

interface CopiedSecrets {
  ref: string;
  guid: string;
  from: string;
  sinkHost: string;
  copied: { key: string }[];
  unchanged: string[];
}

/**
 * The sink opens (one-transfer key pair; its stdin stays open), the source seals to the
 * offered key, the sink gets the ciphertext as its second request line. Values never pass
 * through here in clear, never on argv, never in a file.
 */
async function copySecrets(input: { ref: string; source: Machine; sink: Machine }, verdict: ClientVerdict, timeline: Timeline): Promise<CopiedSecrets> {
  const sinkName = input.sink === LOCAL ? undefined : input.sink.name;
  const sink = spawnRemote(input.sink, ['rpc']);
  let sinkErr = '';
  sink.stderr!.on('data', (d) => { if (sinkErr.length < 65536) sinkErr += d; });
  sink.stdin!.on('error', () => {});
  sink.stdin!.write(JSON.stringify(clientRequest('transfer secrets open', { ref: input.ref, ...(sinkName ? { machine: sinkName } : {}) }, verdict.actor)) + '\n');
  const sinkClosed = new Promise<number>((resolve) => { sink.on('error', () => resolve(255)); sink.on('close', (c) => resolve(c ?? 255)); });
  let offer: unknown;
  let result: { envelope: Envelope; exitCode: number } | undefined;
  let offered!: () => void;
  const offerSeen = new Promise<void>((resolve) => { offered = resolve; });
  const lines = createInterface({ input: sink.stdout! });
  lines.on('line', (line) => {
    try {
      const ev = JSON.parse(line);
      if (ev.event === 'secrets-offer') { offer = ev.offer; offered(); }
      if (ev.event === 'result') { result = { envelope: ev.envelope, exitCode: ev.exitCode }; offered(); }
    } catch { /* not ours */ }
  });
  const fail = (r: { envelope: Envelope; exitCode: number }) => new TineError(r.envelope.error!.code, r.exitCode, r.envelope.error!.message, { next: r.envelope.error!.next });
  try {
    await timeline.step('secrets_offer', `${input.sink.name} made a one-transfer key`, async () => {
      await Promise.race([offerSeen, sinkClosed]);
      if (result && !result.envelope.ok) throw fail(result);
      if (!offer) {
        const code = await sinkClosed;
        throw code === 255 ? sshFailure(input.sink, sinkErr) : new TineError('SECRETS_NOT_COPIED', EXIT.failure, `${input.sink.name} made no key offer: ${sinkErr.trim()}`);
      }
    });
    const sealed = await timeline.step('secrets_seal', `${input.source.name} sealed the secrets to it`, async () => {
      const r = await runRemote(input.source, clientRequest('transfer secrets seal', { ref: input.ref, offer: offer as Record<string, unknown> }, verdict.actor));
      if (!r.envelope.ok) throw fail(r);
      return (r.envelope.data as { sealed: unknown }).sealed;
    });
    const data = await timeline.step('secrets_store', `${input.sink.name} opened and stored them`, async () => {
      sink.stdin!.end(JSON.stringify({ sealed }) + '\n');
      const code = await sinkClosed;
      if (!result) throw code === 255 ? sshFailure(input.sink, sinkErr) : new TineError('SECRETS_NOT_COPIED', EXIT.failure, `${input.sink.name} ended (exit ${code}) without a result: ${sinkErr.trim()}`);
      if (!result.envelope.ok) throw fail(result);
      return result.envelope.data as Omit<CopiedSecrets, 'sinkHost'>;
    });
    return { ...data, sinkHost: (offer as { host: string }).host };
  } finally {
    // On any failure the sink's stdin ends without a sealed line: it stores nothing and drops its key.
    if (!sink.stdin!.writableEnded) sink.stdin!.end();
    await sinkClosed;
  }
}

/** The subvolume: bases from the sink, the source's send stream piped into the sink's receive. */
async function moveRepo(
  input: { ref: string; source: Machine; sink: Machine },
  verdict: ClientVerdict,
  timeline: Timeline,
): Promise<Result> {
  const command = input.source === LOCAL ? 'repo push' : 'repo pull';
  {
    const bases = await timeline.step('bases', `Asked ${input.sink.name} for shared snapshots`, async () => {
      const r = await runRemote(input.sink, clientRequest('transfer bases', {}, verdict.actor));
      if (!r.envelope.ok) throw Object.assign(new TineError(r.envelope.error!.code, r.exitCode, r.envelope.error!.message, { next: r.envelope.error!.next }));
      return (r.envelope.data as { snapshots: string[] }).snapshots;
    });
    const sendReq = clientRequest('transfer send', { ref: input.ref, bases }, verdict.actor);
    const sender = spawnRemote(input.source, ['rpc']);
    let senderErr = '';
    sender.stderr!.on('data', (d) => { if (senderErr.length < 65536) senderErr += d; });
    sender.stdin!.on('error', () => {});
    sender.stdin!.end(JSON.stringify(sendReq) + '\n');
    const senderDone = new Promise<number>((resolve) => { sender.on('error', () => resolve(255)); sender.on('close', (c) => resolve(c ?? 255)); });
    const head = await readHeaderLines(sender.stdout!, 2);
    const headerEvents = head.lines.map((l) => { try { return JSON.parse(l); } catch { return {}; } });
    const sendHeader = headerEvents.find((e) => e.event === 'send');
    if (!sendHeader) {
      const code = await senderDone;
      const failed = headerEvents.find((e) => e.event === 'result');
      if (failed) throw new TineError(failed.envelope.error.code, failed.exitCode, failed.envelope.error.message, { next: failed.envelope.error.next });
      throw code === 255 ? sshFailure(input.source, senderErr) : new TineError('SEND_FAILED', EXIT.failure, `sending from ${input.source.name} failed: ${senderErr.trim()}`);
    }
    const meta = sendHeader.meta;
    const receiver = spawnRemote(input.sink, ['rpc']);
    let receiverErr = '';
    receiver.stderr!.on('data', (d) => { if (receiverErr.length < 65536) receiverErr += d; });
    receiver.stdin!.on('error', () => {});
    receiver.stdin!.write(JSON.stringify(clientRequest('transfer receive', { meta }, verdict.actor)) + '\n');
    receiver.stdin!.write(head.rest);
    sender.stdout!.pipe(receiver.stdin!);
    sender.stdout!.resume();
    let result: { envelope: Envelope; exitCode: number } | undefined;
    const lines = createInterface({ input: receiver.stdout! });
    lines.on('line', (line) => {
      try {
        const ev = JSON.parse(line);
        if (ev.event === 'step') timeline.record(ev.step, ev.label, ev.ms);
        if (ev.event === 'result') result = { envelope: ev.envelope, exitCode: ev.exitCode };
      } catch { /* not ours */ }
    });
    const [sendCode, recvCode] = await Promise.all([
      senderDone,
      new Promise<number>((resolve) => {
        receiver.on('error', () => resolve(255));
        receiver.on('close', (c) => {
          // A receiver that stopped early (refused, failed) leaves the sender blocked: stop it.
          if (sender.exitCode === null && sender.signalCode === null) sender.kill('SIGTERM');
          resolve(c ?? 255);
        });
      }),
    ]);
    if (!result) throw recvCode === 255 ? sshFailure(input.sink, receiverErr) : new TineError('RECEIVE_FAILED', EXIT.failure, `receiving on ${input.sink.name} failed: ${receiverErr.trim()}`);
    if (!result.envelope.ok) return { envelope: { ...result.envelope, command }, exitCode: result.exitCode };
    if (sendCode !== 0) throw new TineError('SEND_FAILED', EXIT.failure, `the sender on ${input.source.name} failed (${sendCode}): ${senderErr.trim()}`);
    const data = { ...(result.envelope.data as object), incremental: Boolean(meta.base), from: input.source.name, to: input.sink.name };
    return { envelope: { ok: true, command, data }, exitCode: 0 };
  }
}
