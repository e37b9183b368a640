import * as fs from 'node:fs';
import * as path from 'node:path';
import { BYTECODE_FORMAT, BytecodeResult, bytecodeSeeds, compileEagerBytecode, findBytecodeCompiler } from '../shrink/bytecode';
import { CacheLayout, cacheKey, commitEntry, readEntryJson } from '../util/cache';
import { ResolvedConfig } from '../config/options';
import { TorchError } from '../util/errors';
import { formatBytes, formatSeconds } from '../util/format';
import { checkPip, configuredExtraIndexUrls, downloadTorchWheel, installTree } from './pip';
import { Runner } from '../util/process';
import { Reporter } from '../util/reporter';
import { Requirements } from '../config/requirements';
import { DEFAULT_RULES, PROTECTED, RuleSummary, applyRemovals, findStripTool, planStrip, stripSymbols, summariseRemovals } from '../shrink/strip';
import { TargetPlatform, targetId } from './target';
import { FileEntry, listTree, totalBytes } from '../util/file-tree';
import { PLUGIN_VERSION } from '../util/plugin-paths';

/** The installed, stripped dependencies for one target, as kept in the cache. */
export interface DependencyTree {
  key: string;
  /** Root of the tree: what goes on sys.path. */
  dir: string;
  files: FileEntry[];
  target: { runtime: string; architecture: string };
  torch: { version: string; wheel: string };
  installedBytes: number;
  strippedBytes: number;
  removed: RuleSummary[];
  symbols: { tool: string | null; before: number; after: number };
  /** .pyc written for the modules a cold start imports; null when no interpreter of the runtime's version was found. */
  bytecode?: (BytecodeResult & { python: string }) | null;
}

type TreeRecord = Omit<DependencyTree, 'dir' | 'key'>;

const TREE_DIR = 'site';
const RECORD_FILE = 'tree.json';

// What a package must never bring into a Lambda zip (FACTS §3): GPU runtimes that cannot run there.
const GPU_PATTERN = /^(nvidia|triton|nvidia_[^/]*|triton-[^/]*\.dist-info|nvidia_[^/]*\.dist-info)(\/|$)|(^|\/)(libtorch_cuda[^/]*\.so|libcudart[^/]*|libcudnn[^/]*)$/;

export function findGpuFiles(files: FileEntry[]): string[] {
  return files.filter((file) => GPU_PATTERN.test(file.path)).map((file) => file.path);
}

export async function buildDependencyTree(options: {
  config: ResolvedConfig;
  target: TargetPlatform;
  requirements: Requirements;
  cache: CacheLayout;
  runner: Runner;
  reporter: Reporter;
}): Promise<DependencyTree> {
  const { config, target, requirements, cache, runner, reporter } = options;
  const stripTool = config.strip.symbols ? await findStripTool(target.machine, runner) : null;
  const compiler = await findBytecodeCompiler(target, runner);
  const configuredExtras = config.indexUrl ? [] : await configuredExtraIndexUrls(config.python, runner);
  const key = cacheKey({
    plugin: PLUGIN_VERSION,
    rules: [DEFAULT_RULES, PROTECTED],
    requirements: requirements.sourceText,
    torch: requirements.torchSpecifier,
    indexes: [config.torchIndexUrl, config.indexUrl, configuredExtras],
    target: targetId(target),
    strip: { keep: config.strip.keep, remove: config.strip.remove, symbols: stripTool !== null },
    bytecode: compiler ? BYTECODE_FORMAT : null,
  });
  const entryDir = cache.entry('trees', key);
  const cached = readEntryJson<TreeRecord>(entryDir, RECORD_FILE);
  if (cached) {
    reporter.verbose(`Dependencies for ${targetId(target)}: cached tree ${key} (${entryDir}), pip skipped`);
    return { ...cached, key, dir: path.join(entryDir, TREE_DIR) };
  }
  if (!config.strip.symbols) {
    reporter.verbose('Symbols are kept (custom.torch.strip.symbols is false)');
  } else if (!stripTool) {
    reporter.notice(
      `No strip tool for ${target.machine} on this machine: shared libraries keep their symbols ` +
        `(install binutils-${target.machine.replace('_', '-')}-linux-gnu or llvm to save about 20%).`,
    );
  }

  await checkPip(config.python, runner);
  const workDir = cache.workDir(`tree-${key}`);
  try {
    const started = Date.now();
    reporter.progress(`Resolving torch${requirements.torchSpecifier} for ${target.runtime} ${target.architecture}`);
    const pipLine = (line: string) => reporter.verbose(`pip: ${line}`);
    const torchWheel = await downloadTorchWheel({
      config,
      target,
      torchSpecifier: requirements.torchSpecifier,
      workDir,
      runner,
      onLine: pipLine,
    });
    reporter.verbose(`torch wheel for ${targetId(target)}: ${torchWheel.name.filename} from ${config.torchIndexUrl}`);
    reporter.progress(`Installing ${torchWheel.name.filename} and the requirements for ${target.runtime} ${target.architecture}`);
    const stageDir = path.join(workDir, 'entry');
    const treeDir = path.join(stageDir, TREE_DIR);
    fs.mkdirSync(treeDir, { recursive: true });
    await installTree({
      config,
      target,
      torchWheel,
      otherLines: requirements.otherLines,
      usesHashes: requirements.usesHashes,
      torchHashes: requirements.torchHashes,
      treeDir,
      workDir,
      configuredExtras,
      runner,
      onLine: pipLine,
    });
    const installed = listTree(treeDir);
    const gpuFiles = findGpuFiles(installed);
    if (gpuFiles.length) {
      throw new TorchError(
        'TORCH_GPU_PACKAGES_RESOLVED',
        `The requirements brought GPU packages into the bundle (${gpuFiles.slice(0, 3).join(', ')}): they cannot ` +
          'run on Lambda and waste the size limit. Install torch-family packages (torchvision, torchaudio) from the ' +
          'CPU index too, or drop the requirement that pulls in CUDA.',
      );
    }
    reporter.verbose(`Installed ${formatBytes(totalBytes(installed))} in ${installed.length} files in ${formatSeconds(Date.now() - started)}`);

    reporter.progress(`Stripping what inference does not need (${target.runtime} ${target.architecture})`);
    const plan = planStrip(installed, config.strip);
    applyRemovals(treeDir, plan.removals);
    const removed = summariseRemovals(plan.removals);
    for (const summary of removed) {
      reporter.verbose(
        `strip ${summary.rule}: ${summary.files} files, ${formatBytes(summary.bytes)} (${summary.reason}); ` +
          `largest: ${summary.largest.map((item) => `${item.path} ${formatBytes(item.bytes)}`).join(', ')}`,
      );
    }
    let symbols = { tool: stripTool, before: 0, after: 0 };
    if (stripTool) {
      reporter.progress(`Stripping symbols from ${plan.symbolCandidates.length} shared libraries`);
      const result = await stripSymbols({ treeDir, files: plan.symbolCandidates, tool: stripTool, runner });
      symbols = { tool: stripTool, before: result.before, after: result.after };
      reporter.verbose(
        `strip symbols (${stripTool} --strip-unneeded): ${formatBytes(result.before)} → ${formatBytes(result.after)}` +
          (result.failed.length ? `; left as they were: ${result.failed.join(', ')}` : ''),
      );
    }
    let bytecode: DependencyTree['bytecode'] = null;
    if (compiler) {
      reporter.progress(`Compiling bytecode for Python ${target.pythonVersion}`);
      const result = await compileEagerBytecode({ treeDir, seeds: bytecodeSeeds(treeDir, requirements.otherLines), compiler, runner });
      bytecode = { ...result, python: compiler.path };
      reporter.verbose(
        `bytecode (${compiler.path}, unchecked-hash): ${result.compiled} modules imported at cold start, ${formatBytes(result.bytes)}` +
          (result.failed.length ? `; not valid Python ${target.pythonVersion}, left as source: ${result.failed.join(', ')}` : ''),
      );
    } else {
      reporter.notice(
        `No Python ${target.pythonVersion} on this machine to compile bytecode with: the dependencies ship as source only, ` +
          `so every cold start of a ${target.runtime} function compiles what it imports (about 2 s more for torch). ` +
          `Install it (e.g. "pyenv install ${target.pythonVersion}") or put python${target.pythonVersion} on PATH, and package again.`,
      );
    }
    const files = listTree(treeDir);
    const distInfo = fs.readdirSync(treeDir).find((name) => /^torch-.+\.dist-info$/.test(name));
    const record: TreeRecord = {
      files,
      target: { runtime: target.runtime, architecture: target.architecture },
      torch: { version: distInfo ? distInfo.slice('torch-'.length, -'.dist-info'.length) : torchWheel.name.version, wheel: torchWheel.name.filename },
      installedBytes: totalBytes(installed),
      strippedBytes: totalBytes(files),
      removed,
      symbols,
      bytecode,
    };
    fs.writeFileSync(path.join(stageDir, RECORD_FILE), JSON.stringify(record));
    commitEntry(stageDir, entryDir);
    reporter.info(
      `Dependencies for ${target.runtime} ${target.architecture}: ${formatBytes(record.installedBytes)} installed, ` +
        `${formatBytes(record.strippedBytes)} after stripping (${formatSeconds(Date.now() - started)})`,
    );
    const committed = readEntryJson<TreeRecord>(entryDir, RECORD_FILE) ?? record;
    return { ...committed, key, dir: path.join(entryDir, TREE_DIR) };
  } finally {
    fs.rmSync(workDir, { recursive: true, force: true });
  }
}
