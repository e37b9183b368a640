import * as fs from 'node:fs';
import * as path from 'node:path';
import { TorchError } from '../util/errors';
import { matcher } from '../util/glob';
import { Runner } from '../util/process';
import { FileEntry } from '../util/file-tree';

/** One default rule: what it removes and why inference does not need it. */
interface StripRule {
  id: string;
  reason: string;
  patterns: string[];
}

// FACTS §4: everything here was removed from torch 2.13 with import, torch.load (mmap),
// jit.load and quantize_dynamic still working.
export const DEFAULT_RULES: StripRule[] = [
  { id: 'torch-tests', reason: 'C++ test binaries', patterns: ['torch/test/**'] },
  { id: 'package-tests', reason: 'test suites no package imports', patterns: ['**/tests/**'] },
  { id: 'headers', reason: 'C/C++ headers, only for compiling extensions', patterns: ['torch/include/**', '*.h', '*.hpp', '*.cuh'] },
  { id: 'cmake', reason: 'CMake files, only for building against torch', patterns: ['torch/share/**', '*.cmake'] },
  { id: 'torch-tools', reason: 'build and benchmark tools', patterns: ['torch/bin/**'] },
  {
    id: 'test-libraries',
    reason: 'libraries only torch\'s own tests load',
    patterns: ['torch/lib/{libaoti_custom_ops,libbackend_with_compiler,libjitbackend_test,libtorchbind_test}.so'],
  },
  { id: 'type-stubs', reason: 'type stubs, read only by type checkers', patterns: ['*.pyi'] },
  { id: 'foreign-bytecode', reason: 'bytecode compiled for the build machine\'s Python', patterns: ['**/__pycache__/**', '*.pyc'] },
  { id: 'scripts', reason: 'console scripts written for the build machine\'s Python', patterns: ['bin/**'] },
  { id: 'static-libraries', reason: 'static libraries, only for linking', patterns: ['*.a'] },
];

// What `import torch` and model loading cannot do without (FACTS §4), and package metadata
// that importlib.metadata reads at run time: a rule that would remove these is refused.
export const PROTECTED = [
  '*.dist-info/**',
  'torch/bin/torch_shm_manager',
  'torch/testing/**',
  'torchgen/**',
  'torch/lib/{libtorch_cpu,libtorch,libtorch_python,libc10,libshm,libtorch_global_deps}.so',
  'torch/lib/libgomp*',
  'torch/_C*.so',
];

export interface StripOptions {
  keep: string[];
  remove: string[];
}

export interface Removal {
  path: string;
  bytes: number;
  rule: string;
  reason: string;
}

export interface StripPlan {
  removals: Removal[];
  /** Shared libraries whose symbols are worth stripping. */
  symbolCandidates: string[];
}

const isProtected = matcher(PROTECTED);

/** Decides, from the file list alone, what to delete. Pure, so it is tested with tables. */
export function planStrip(files: FileEntry[], options: StripOptions): StripPlan {
  const keep = matcher(options.keep);
  const userRemove = matcher(options.remove);
  const defaults = DEFAULT_RULES.map((rule) => ({ rule, match: matcher(rule.patterns) }));
  const removals: Removal[] = [];
  const symbolCandidates: string[] = [];
  for (const file of files) {
    const userPattern = userRemove(file.path);
    if (userPattern && isProtected(file.path)) {
      throw new TorchError(
        'TORCH_STRIP_PROTECTED',
        `custom.torch.strip.remove pattern "${userPattern}" matches ${file.path}, which import torch or ` +
          'package metadata needs. Narrow the pattern so it leaves that file alone.',
      );
    }
    if (keep(file.path)) continue;
    if (userPattern) {
      removals.push({ path: file.path, bytes: file.size, rule: `remove: ${userPattern}`, reason: 'custom.torch.strip.remove' });
      continue;
    }
    if (!isProtected(file.path)) {
      const hit = defaults.find(({ match }) => match(file.path));
      if (hit) {
        removals.push({ path: file.path, bytes: file.size, rule: hit.rule.id, reason: hit.rule.reason });
        continue;
      }
    }
    if (/\.so(\.\d+)*$/.test(file.path) && file.size > 64 * 1024) symbolCandidates.push(file.path);
  }
  return { removals, symbolCandidates };
}

export interface RuleSummary {
  rule: string;
  reason: string;
  files: number;
  bytes: number;
  largest: { path: string; bytes: number }[];
}

export function summariseRemovals(removals: Removal[]): RuleSummary[] {
  const byRule = new Map<string, RuleSummary>();
  for (const removal of removals) {
    const summary = byRule.get(removal.rule) ?? { rule: removal.rule, reason: removal.reason, files: 0, bytes: 0, largest: [] };
    summary.files += 1;
    summary.bytes += removal.bytes;
    summary.largest.push({ path: removal.path, bytes: removal.bytes });
    byRule.set(removal.rule, summary);
  }
  return [...byRule.values()]
    .map((summary) => ({ ...summary, largest: summary.largest.sort((a, b) => b.bytes - a.bytes).slice(0, 3) }))
    .sort((a, b) => b.bytes - a.bytes);
}

export function applyRemovals(treeDir: string, removals: Removal[]): void {
  const dirs = new Set<string>();
  for (const removal of removals) {
    fs.rmSync(path.join(treeDir, removal.path), { force: true });
    dirs.add(path.dirname(removal.path));
  }
  // Deepest first, so a directory emptied by removing its children goes too.
  const candidates = [...dirs].flatMap((dir) => {
    const chain: string[] = [];
    for (let current = dir; current !== '.' && current !== ''; current = path.dirname(current)) chain.push(current);
    return chain;
  });
  for (const dir of [...new Set(candidates)].sort((a, b) => b.length - a.length)) {
    const absolute = path.join(treeDir, dir);
    try {
      if (fs.readdirSync(absolute).length === 0) fs.rmdirSync(absolute);
    } catch {
      // already gone
    }
  }
}

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
