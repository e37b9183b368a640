import * as fs from 'node:fs';
import * as path from 'node:path';
import { TorchError } from '../util/errors';
import { matcher } from '../util/glob';
import { DEFAULT_RULES, PROTECTED } from './strip-rules';
import { FileEntry } from '../util/file-tree';

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
