import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { loadSegmentsAligned, stripSymbols } from '../../../lib/shrink/symbols';
import { Runner } from '../../../lib/util/process';

/** A 64-bit little-endian ELF header with one program header per [offset, address] LOAD segment. */
function elf(segments: [number, number][]): Buffer {
  const header = Buffer.alloc(64 + 56 * segments.length);
  header.writeUInt32BE(0x7f454c46, 0);
  header[4] = 2;
  header[5] = 1;
  header.writeBigUInt64LE(64n, 0x20);
  header.writeUInt16LE(56, 0x36);
  header.writeUInt16LE(segments.length, 0x38);
  segments.forEach(([offset, address], index) => {
    const at = 64 + 56 * index;
    header.writeUInt32LE(1, at);
    header.writeBigUInt64LE(BigInt(offset), at + 0x08);
    header.writeBigUInt64LE(BigInt(address), at + 0x10);
    header.writeBigUInt64LE(0x1000n, at + 0x30);
  });
  return header;
}

// Segments as strip left them in numpy 2.4's vendored OpenBLAS (offset 0x15de148 mapped at 0x1626000).
const ALIGNED: [number, number][] = [[0x0, 0x0], [0x15b2d00, 0x15b3d00], [0x16a6000, 0x15d7000]];
const BROKEN: [number, number][] = [[0x0, 0x0], [0x15b2d00, 0x15b3d00], [0x15de148, 0x1626000]];

describe('stripping symbols', () => {
  let dir: string;
  beforeEach(() => (dir = fs.mkdtempSync(path.join(os.tmpdir(), 'symbols-'))));
  afterEach(() => fs.rmSync(dir, { recursive: true, force: true }));

  it('knows a library whose loadable segments the loader cannot map', () => {
    fs.writeFileSync(path.join(dir, 'good.so'), elf(ALIGNED));
    fs.writeFileSync(path.join(dir, 'bad.so'), elf(BROKEN));
    assert.equal(loadSegmentsAligned(path.join(dir, 'good.so')), true);
    assert.equal(loadSegmentsAligned(path.join(dir, 'bad.so')), false);
  });

  it('keeps the original when strip leaves a library the loader cannot map', async () => {
    const original = elf(ALIGNED);
    fs.mkdirSync(path.join(dir, 'numpy.libs'));
    fs.writeFileSync(path.join(dir, 'numpy.libs', 'libopenblas.so'), Buffer.concat([original, Buffer.alloc(1000)]));
    fs.writeFileSync(path.join(dir, 'libfine.so'), Buffer.concat([original, Buffer.alloc(1000)]));
    // strip as it behaved: it shrinks both files, and breaks the alignment of the vendored one.
    const strip: Runner = async (_tool, args) => {
      fs.writeFileSync(args[2], args[3].includes('numpy.libs') ? elf(BROKEN) : elf(ALIGNED));
      return { code: 0, stdout: '', stderr: '' };
    };
    const result = await stripSymbols({ treeDir: dir, files: ['numpy.libs/libopenblas.so', 'libfine.so'], tool: 'strip', runner: strip });
    assert.deepEqual(result.failed, ['numpy.libs/libopenblas.so']);
    assert.equal(fs.statSync(path.join(dir, 'numpy.libs', 'libopenblas.so')).size, original.length + 1000, 'the original stays');
    assert.equal(fs.statSync(path.join(dir, 'libfine.so')).size, original.length, 'the other is stripped');
    assert.deepEqual(fs.readdirSync(path.join(dir, 'numpy.libs')), ['libopenblas.so'], 'no temporary file left');
  });
});
