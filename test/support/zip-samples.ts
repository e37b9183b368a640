/** What the zip tests write: a bit of everything the plugin zips, in a directory of the test's. */
import { randomBytes } from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import type { ZipEntry } from '../../lib/zip/write';

// Compressible and not: random runs between repeated text, so deflate has real work and the
// dictionary carried across chunks matters.
export function mixedBytes(size: number): Buffer {
  const out = Buffer.alloc(size);
  const text = Buffer.from('import torch\nfrom torch import nn\nclass Model(nn.Module): pass\n'.repeat(40));
  let at = 0;
  while (at < size) {
    at += randomBytes(Math.min(4096, size - at)).copy(out, at);
    if (at < size) at += text.copy(out, at, 0, Math.min(text.length, size - at));
  }
  return out;
}

/** Writes a source file under dir/src and returns its path. */
export function sourceFile(dir: string, rel: string, content: string | Buffer, mode = 0o644): string {
  const p = path.join(dir, 'src', rel);
  fs.mkdirSync(path.dirname(p), { recursive: true });
  fs.writeFileSync(p, content);
  fs.chmodSync(p, mode);
  return p;
}

/** Code, an executable, an empty file, a stored member, non-ASCII, multi-chunk members. */
export function sampleEntries(dir: string): ZipEntry[] {
  const file = (rel: string, content: string | Buffer, mode?: number) => sourceFile(dir, rel, content, mode);
  return [
    { name: 'handler.py', source: { path: file('handler.py', 'def handler(event, context):\n    return 1\n') } },
    { name: 'bin/tool', source: { path: file('bin/tool', '#!/bin/sh\necho hi\n', 0o755) }, executable: true },
    { name: 'empty.txt', source: { path: file('empty.txt', '') } },
    { name: 'model.pt', source: { data: randomBytes(200_000) }, compress: false },
    { name: 'noise.bin', source: { data: randomBytes(70_000) } },
    { name: 'données/été.txt', source: { data: Buffer.from('unicode name\n') } },
    { name: 'torch/lib/libbig.so', source: { path: file('libbig.so', mixedBytes(3 * 1024 * 1024 + 12345), 0o755) }, executable: true },
    { name: 'torch/__init__.py', source: { data: Buffer.from('x = 1\n'.repeat(5000)) } },
    // Several chunks, the last one small enough to be deflated inline.
    { name: 'torch/lib/libtail.so', source: { data: mixedBytes(2 * 1024 * 1024 + 100) } },
  ];
}

export function contentOf(entry: ZipEntry): Buffer {
  return 'data' in entry.source ? entry.source.data : fs.readFileSync(entry.source.path);
}
