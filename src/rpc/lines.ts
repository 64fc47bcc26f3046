// Read the first line of a byte stream and keep what came after it: the request line of
// an RPC may be followed by a raw payload (a btrfs send stream).
import type { Readable } from 'node:stream';

export function readFirstLine(stream: Readable, maxBytes: number): Promise<{ line: string | null; rest: Buffer }> {
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    let size = 0;
    const done = (line: string | null, rest: Buffer) => {
      stream.off('data', onData);
      stream.off('end', onEnd);
      stream.off('error', reject);
      stream.pause();
      resolve({ line, rest });
    };
    const onData = (chunk: Buffer) => {
      const nl = chunk.indexOf(0x0a);
      if (nl >= 0) {
        chunks.push(chunk.subarray(0, nl));
        done(Buffer.concat(chunks).toString('utf8'), chunk.subarray(nl + 1));
        return;
      }
      chunks.push(chunk);
      size += chunk.length;
      if (size > maxBytes) {
        stream.off('data', onData);
        reject(new Error(`first line longer than ${maxBytes} bytes`));
      }
    };
    const onEnd = () => {
      const all = Buffer.concat(chunks).toString('utf8');
      done(all.trim() ? all : null, Buffer.alloc(0));
    };
    stream.on('data', onData);
    stream.on('end', onEnd);
    stream.on('error', reject);
  });
}

/** The next line after `rest` (bytes already read past the first line), or null at end; bounded in size and time. */
export async function readNextLine(rest: Buffer, stream: Readable, maxBytes: number, timeoutMs: number): Promise<string | null> {
  const nl = rest.indexOf(0x0a);
  if (nl >= 0) return rest.subarray(0, nl).toString('utf8');
  if (rest.length) stream.unshift(rest);
  let timer: NodeJS.Timeout | undefined;
  try {
    const line = readFirstLine(stream, maxBytes).then((r) => r.line);
    // The first read paused the stream; a new 'data' listener does not restart a paused stream.
    stream.resume();
    return await Promise.race([
      line,
      new Promise<never>((_, reject) => { timer = setTimeout(() => reject(new Error(`no line within ${Math.round(timeoutMs / 1000)} s`)), timeoutMs); }),
    ]);
  } finally {
    clearTimeout(timer);
  }
}
