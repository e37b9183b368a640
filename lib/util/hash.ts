import { createHash } from 'node:crypto';
import * as fs from 'node:fs';

/** Hex sha256 of bytes or text held in memory. */
export function sha256(data: Buffer | string): string {
  return createHash('sha256').update(data).digest('hex');
}

/** Hex sha256 of a file, streamed so that a torch wheel, a model or a layer is never held in memory. */
export async function sha256File(file: string): Promise<string> {
  const hash = createHash('sha256');
  for await (const chunk of fs.createReadStream(file, { highWaterMark: 1 << 20 })) hash.update(chunk as Buffer);
  return hash.digest('hex');
}
