import * as fs from 'node:fs';
import * as path from 'node:path';
import { ResolvedConfig } from '../config/options';
import { Requirements } from '../config/requirements';
import { BYTECODE_FORMAT, TreeBytecode, compileTreeBytecode, findBytecodeCompiler } from '../shrink/bytecode';
import { shrinkTree } from '../shrink/shrink-tree';
import { RuleSummary } from '../shrink/strip';
import { DEFAULT_RULES, PROTECTED } from '../shrink/strip-rules';
import { findStripTool } from '../shrink/symbols';
import { CacheLayout, cacheKey, memo } from '../util/cache';
import { TorchError } from '../util/errors';
import { FileEntry, listTree, totalBytes } from '../util/file-tree';
import { formatBytes, formatSeconds } from '../util/format';
import { PLUGIN_VERSION } from '../util/plugin-paths';
import { Runner } from '../util/process';
import { Reporter } from '../util/reporter';
import { installTree } from './install';
import { DECODER_PROJECT, DecoderChoice, TreeDecoder, chooseDecoder, treeDecoder } from './decoder';
import { checkPip, configuredExtraIndexUrls } from './pip-args';
import { TargetPlatform, targetId } from './target';
import { downloadTorchWheel } from './torch-wheel';

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
  bytecode?: TreeBytecode;
  /** How the shim will decode what travels compressed. */
  decoder: TreeDecoder;
}

type TreeRecord = Omit<DependencyTree, 'dir' | 'key'>;

const TREE_DIR = 'site';
const DECODER_FORMAT = 1;
const RECORD_FILE = 'tree.json';

// What a package must never bring into a Lambda zip: GPU runtimes that cannot run there.
const GPU_PATTERN = /^(nvidia|triton|nvidia_[^/]*|triton-[^/]*\.dist-info|nvidia_[^/]*\.dist-info)(\/|$)|(^|\/)(libtorch_cuda[^/]*\.so|libcudart[^/]*|libcudnn[^/]*)$/;

export function findGpuFiles(files: FileEntry[]): string[] {
  return files.filter((file) => GPU_PATTERN.test(file.path)).map((file) => file.path);
}

/** What a build of the tree needs besides the configuration, found on the build machine. */
interface BuildTools {
  stripTool: string | null;
  compiler: Awaited<ReturnType<typeof findBytecodeCompiler>>;
  configuredExtras: string[];
}

interface TreeStep {
  config: ResolvedConfig;
  target: TargetPlatform;
  requirements: Requirements;
  tools: BuildTools;
  runner: Runner;
  reporter: Reporter;
}

/**
 * The dependencies of one target, installed, stripped and compiled, or taken from the cache. The
 * key holds everything that changes the tree, so a warm cache runs no pip at all.
 */
export async function buildDependencyTree(options: {
  config: ResolvedConfig;
  target: TargetPlatform;
  requirements: Requirements;
  cache: CacheLayout;
  runner: Runner;
  reporter: Reporter;
}): Promise<DependencyTree> {
  const { config, target, requirements, cache, runner, reporter } = options;
  const tools: BuildTools = {
    stripTool: config.strip.symbols ? await findStripTool(target.machine, runner) : null,
    compiler: await findBytecodeCompiler(target, runner),
    configuredExtras: config.indexUrl ? [] : await configuredExtraIndexUrls(config.python, runner),
  };
  const key = cacheKey({
    plugin: PLUGIN_VERSION,
    rules: [DEFAULT_RULES, PROTECTED],
    requirements: requirements.sourceText,
    torch: requirements.torchSpecifier,
    indexes: [config.torchIndexUrl, config.indexUrl, tools.configuredExtras],
    target: targetId(target),
    strip: { keep: config.strip.keep, remove: config.strip.remove, symbols: tools.stripTool !== null },
    bytecode: tools.compiler ? BYTECODE_FORMAT : null,
    // The zstd decoder installed with the requirements (its wheel is resolved like theirs).
    decoder: DECODER_FORMAT,
  });
  const started = Date.now();
  const step: TreeStep = { config, target, requirements, tools, runner, reporter };
  const { record, entryDir, reused } = await memo<TreeRecord>({
    cache,
    kind: 'trees',
    key,
    recordFile: RECORD_FILE,
    build: (stageDir, workDir) => buildTree(step, path.join(stageDir, TREE_DIR), workDir),
  });
  if (reused) {
    reporter.verbose(`Dependencies for ${targetId(target)}: cached tree ${key} (${entryDir}), pip skipped`);
  } else {
    reporter.info(
      `Dependencies for ${target.runtime} ${target.architecture}: ${formatBytes(record.installedBytes)} installed, ` +
        `${formatBytes(record.strippedBytes)} after stripping (${formatSeconds(Date.now() - started)})`,
    );
  }
  return { ...record, key, dir: path.join(entryDir, TREE_DIR) };
}

/** Install, shrink, compile: the steps of a tree that is not in the cache yet. */
async function buildTree(step: TreeStep, treeDir: string, workDir: string): Promise<TreeRecord> {
  const { config, target, requirements, tools, runner, reporter } = step;
  if (!config.strip.symbols) {
    reporter.verbose('Symbols are kept (custom.torch.strip.symbols is false)');
  } else if (!tools.stripTool) {
    reporter.notice(
      `No strip tool for ${target.machine} on this machine: shared libraries keep their symbols ` +
        `(install binutils-${target.machine.replace('_', '-')}-linux-gnu or llvm to save about 20%).`,
    );
  }
  const { torch, installed, decoder } = await installDependencies(step, treeDir, workDir);
  const shrunk = await shrinkTree({ treeDir, installed, strip: config.strip, stripTool: tools.stripTool, target, runner, reporter });
  // The shim imports the decoder first thing at cold start: it gets bytecode like the user's requirements.
  const seeds = decoder.codec === 'zstd' && decoder.module === 'zstandard' ? [...requirements.otherLines, DECODER_PROJECT] : requirements.otherLines;
  const bytecode = await compileTreeBytecode({ treeDir, target, requirementLines: seeds, compiler: tools.compiler, runner, reporter });
  const files = listTree(treeDir);
  return {
    files,
    target: { runtime: target.runtime, architecture: target.architecture },
    torch,
    installedBytes: totalBytes(installed),
    strippedBytes: totalBytes(files),
    ...shrunk,
    bytecode,
    decoder,
  };
}

/** The torch wheel from the torch index alone, then the requirements with torch pinned to it; never a GPU build. */
async function installDependencies(step: TreeStep, treeDir: string, workDir: string): Promise<{ torch: TreeRecord['torch']; installed: FileEntry[]; decoder: TreeDecoder }> {
  const { config, target, requirements, tools, runner, reporter } = step;
  await checkPip(config.python, runner);
  const started = Date.now();
  reporter.progress(`Resolving torch${requirements.torchSpecifier} for ${target.runtime} ${target.architecture}`);
  const pipLine = (line: string) => reporter.verbose(`pip: ${line}`);
  const torchWheel = await downloadTorchWheel({ config, target, torchSpecifier: requirements.torchSpecifier, workDir, runner, onLine: pipLine });
  reporter.verbose(`torch wheel for ${targetId(target)}: ${torchWheel.name.filename} from ${config.torchIndexUrl}`);
  const decoderChoice = await chooseDecoder({ config, target, otherLines: requirements.otherLines, workDir, configuredExtras: tools.configuredExtras, runner, onLine: pipLine });
  reporter.verbose(`zstd decoder for ${targetId(target)}: ${describeChoice(decoderChoice)}`);
  reporter.progress(`Installing ${torchWheel.name.filename} and the requirements for ${target.runtime} ${target.architecture}`);
  fs.mkdirSync(treeDir, { recursive: true });
  await installTree({
    config,
    target,
    torchWheel,
    otherLines: requirements.otherLines,
    constraintLines: requirements.constraintLines,
    usesHashes: requirements.usesHashes,
    torchHashes: requirements.torchHashes,
    extraWheels: decoderChoice.kind === 'wheel' ? [decoderChoice.path] : [],
    treeDir,
    workDir,
    configuredExtras: tools.configuredExtras,
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
  const distInfo = fs.readdirSync(treeDir).find((name) => /^torch-.+\.dist-info$/.test(name));
  return {
    torch: { version: distInfo ? distInfo.slice('torch-'.length, -'.dist-info'.length) : torchWheel.name.version, wheel: torchWheel.name.filename },
    installed,
    decoder: treeDecoder(decoderChoice, treeDir),
  };
}

function describeChoice(choice: DecoderChoice): string {
  switch (choice.kind) {
    case 'stdlib':
      return 'compression.zstd of the runtime (python3.14+), nothing to ship';
    case 'requirements':
      return 'zstandard, as the requirements name it';
    case 'wheel':
      return `${path.basename(choice.path)}, installed with the requirements and shipped uncompressed`;
    case 'none':
      return `none (${choice.reason}): the compressed dependencies will use zlib`;
  }
}
