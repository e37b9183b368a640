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

/**
 * Strips unneeded symbols in place. Each library is stripped into a temporary file that
 * replaces it only on success, so a strip that fails leaves the original untouched.
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
      if (result.code === 0 && fs.existsSync(temporary)) {
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
