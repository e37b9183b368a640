import * as fs from 'node:fs';
import * as path from 'node:path';
import { Runner } from '../util/process';

/**
 * A `strip` that understands the target's machine code: the cross binutils for the target,
 * llvm-strip (every architecture), or the host's own strip when the host is the target.
 */
export async function findStripTool(machine: 'x86_64' | 'aarch64', runner: Runner): Promise<string | null> {
  const hostMachine = process.arch === 'x64' ? 'x86_64' : process.arch === 'arm64' ? 'aarch64' : process.arch;
  const candidates = [`${machine}-linux-gnu-strip`, 'llvm-strip', ...(hostMachine === machine ? ['strip'] : [])];
  for (const candidate of candidates) {
    try {
      const result = await runner(candidate, ['--version']);
      if (result.code === 0) return candidate;
    } catch {
      // not installed
    }
  }
  return null;
}

const PT_LOAD = 1;
// What the loader maps: 4 KiB pages on x86_64 and on Lambda's arm64.
const PAGE_BYTES = 4096;

/**
 * Whether every loadable segment of a 64-bit little-endian ELF file starts at the same offset in
 * its page in the file as in memory, which the dynamic loader requires ("ELF load command
 * address/offset not page-aligned"). strip breaks this on some libraries that auditwheel's
 * patchelf rewrote (numpy's vendored OpenBLAS, measured): such a library must keep its symbols.
 * Files of another ELF class or byte order are not judged (true).
 */
export function loadSegmentsAligned(file: string): boolean {
  const fd = fs.openSync(file, 'r');
  try {
    const header = Buffer.alloc(64);
    if (fs.readSync(fd, header, 0, 64, 0) < 64 || header.readUInt32BE(0) !== 0x7f454c46) return false;
    if (header[4] !== 2 || header[5] !== 1) return true;
    const phoff = Number(header.readBigUInt64LE(0x20));
    const entrySize = header.readUInt16LE(0x36);
    const count = header.readUInt16LE(0x38);
    const table = Buffer.alloc(entrySize * count);
    if (fs.readSync(fd, table, 0, table.length, phoff) < table.length) return false;
    for (let index = 0; index < count; index++) {
      const at = index * entrySize;
      if (table.readUInt32LE(at) !== PT_LOAD) continue;
      const offset = table.readBigUInt64LE(at + 0x08);
      const address = table.readBigUInt64LE(at + 0x10);
      if ((address - offset) % BigInt(PAGE_BYTES) !== 0n) return false;
    }
    return true;
  } finally {
    fs.closeSync(fd);
  }
}

/**
 * Strips unneeded symbols in place. Each library is stripped into a temporary file that
 * replaces it only when strip succeeded and left a library the loader can still map, so a strip
 * that fails or breaks a library leaves the original untouched.
 */
export async function stripSymbols(options: {
  treeDir: string;
  files: string[];
  tool: string;
  runner: Runner;
  concurrency?: number;
}): Promise<{ before: number; after: number; failed: string[] }> {
  const queue = [...options.files];
  let before = 0;
  let after = 0;
  const failed: string[] = [];
  const worker = async () => {
    for (let file = queue.shift(); file !== undefined; file = queue.shift()) {
      const absolute = path.join(options.treeDir, file);
      const temporary = `${absolute}.strip-${process.pid}`;
      const size = fs.statSync(absolute).size;
      before += size;
      const result = await options.runner(options.tool, ['--strip-unneeded', '-o', temporary, absolute]);
      if (result.code === 0 && fs.existsSync(temporary) && loadSegmentsAligned(temporary)) {
        fs.chmodSync(temporary, fs.statSync(absolute).mode);
        fs.renameSync(temporary, absolute);
        after += fs.statSync(absolute).size;
      } else {
        fs.rmSync(temporary, { force: true });
        failed.push(file);
        after += size;
      }
    }
  };
  await Promise.all(Array.from({ length: options.concurrency ?? 2 }, worker));
  return { before, after, failed };
}
