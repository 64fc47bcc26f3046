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
