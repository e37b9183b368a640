import { ResolvedConfig } from '../config/options';
import { TargetPlatform } from '../resolve/target';
import { FileEntry } from '../util/file-tree';
import { formatBytes } from '../util/format';
import { Runner } from '../util/process';
import { Reporter } from '../util/reporter';
import { RuleSummary, applyRemovals, planStrip, summariseRemovals } from './strip';
import { stripSymbols } from './symbols';

export interface ShrinkResult {
  removed: RuleSummary[];
  symbols: { tool: string | null; before: number; after: number };
}

/** Removes what inference does not need from an installed tree, then strips symbols when a tool exists. */
export async function shrinkTree(options: {
  treeDir: string;
  installed: FileEntry[];
  strip: ResolvedConfig['strip'];
  stripTool: string | null;
  target: TargetPlatform;
  runner: Runner;
  reporter: Reporter;
}): Promise<ShrinkResult> {
  const { treeDir, stripTool, target, runner, reporter } = options;
  reporter.progress(`Stripping what inference does not need (${target.runtime} ${target.architecture})`);
  const plan = planStrip(options.installed, options.strip);
  applyRemovals(treeDir, plan.removals);
  const removed = summariseRemovals(plan.removals);
  for (const summary of removed) {
    reporter.verbose(
      `strip ${summary.rule}: ${summary.files} files, ${formatBytes(summary.bytes)} (${summary.reason}); ` +
        `largest: ${summary.largest.map((item) => `${item.path} ${formatBytes(item.bytes)}`).join(', ')}`,
    );
  }
  if (!stripTool) return { removed, symbols: { tool: null, before: 0, after: 0 } };
  reporter.progress(`Stripping symbols from ${plan.symbolCandidates.length} shared libraries`);
  const result = await stripSymbols({ treeDir, files: plan.symbolCandidates, tool: stripTool, runner });
  reporter.verbose(
    `strip symbols (${stripTool} --strip-unneeded): ${formatBytes(result.before)} → ${formatBytes(result.after)}` +
      (result.failed.length ? `; left as they were: ${result.failed.join(', ')}` : ''),
  );
  return { removed, symbols: { tool: stripTool, before: result.before, after: result.after } };
}
