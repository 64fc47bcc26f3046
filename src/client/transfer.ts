// `repo push REF --to M` / `repo pull REF --from M`: the client joins two protocol ends —
// the sender's `transfer send` (header line + btrfs stream) into the receiver's
// `transfer receive` — after asking the receiver which snapshots it already holds, so the
// stream is incremental when a base is shared. Either end may be this host.
import { createInterface } from 'node:readline';
import type { Readable } from 'node:stream';
import type { Machine } from './config.js';
import { spawnRemote, sshFailure, LOCAL } from './ssh.js';
import { runRemote, clientRequest } from './remote.js';
import type { ClientVerdict } from './actor.js';
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

export async function transferRepo(
  input: { ref: string; source: Machine; sink: Machine; withSecrets?: boolean },
  verdict: ClientVerdict,
  onStep?: StepListener,
): Promise<{ envelope: Envelope; exitCode: number }> {
  const command = input.source === LOCAL ? 'repo push' : 'repo pull';
  const timeline = new Timeline(onStep);
  const t0 = performance.now();
  try {
    if (input.withSecrets) {
      if (verdict.actor.kind === 'agent') throw new TineError('AGENT_SECRETS', EXIT.refused, 'an agent may not copy secrets between machines', { next: [{ description: 'Move the repository without its secrets', run: `tine ${command} ${input.ref} ${command === 'repo push' ? '--to' : '--from'} <machine>` }] });
      throw new TineError('NOT_IMPLEMENTED', EXIT.failure, '--with-secrets is not available yet: secrets stay on the source host', {
        next: [{ description: 'Move the repository without its secrets and set them on the destination', run: `tine -m <machine> repo secret set ${input.ref} --key <K> --value -` }],
      });
    }
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
    if (!result.envelope.ok) return { envelope: { ...result.envelope, command, steps: timeline.steps, ms: round(performance.now() - t0) }, exitCode: result.exitCode };
    if (sendCode !== 0) throw new TineError('SEND_FAILED', EXIT.failure, `the sender on ${input.source.name} failed (${sendCode}): ${senderErr.trim()}`);
    const data = { ...(result.envelope.data as object), incremental: Boolean(meta.base), from: input.source.name, to: input.sink.name };
    return { envelope: { ok: true, command, data, steps: timeline.steps, ms: round(performance.now() - t0) }, exitCode: 0 };
  } catch (err) {
    const e = toTineError(err);
    return { envelope: { ok: false, command, error: e.toJSON() as Envelope['error'], steps: timeline.steps, ms: round(performance.now() - t0) }, exitCode: e.exitCode };
  }
}
