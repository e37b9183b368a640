import { createHash } from 'node:crypto';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { ResolvedConfig } from './config';
import { TorchError } from './errors';
import { Runner } from './process';
import { TargetPlatform, runtimesWithGlibc, SUPPORTED_RUNTIMES } from './target';
import { WheelName, glibcOfTag, parseWheelName, releaseOf, compareReleases, satisfies } from './wheel-name';

/** pip flags that make it resolve for the Lambda target instead of the build machine. */
export function targetArgs(target: TargetPlatform): string[] {
  return [
    '--only-binary=:all:',
    '--python-version',
    target.pythonVersion,
    '--implementation',
    'cp',
    '--abi',
    target.abi,
    ...target.platformTags.flatMap((tag) => ['--platform', tag]),
  ];
}

export const QUIET_ARGS = ['--disable-pip-version-check', '--no-input', '--progress-bar', 'off'];

/**
 * pip replaces, rather than extends, a configured extra-index-url when one is given on the
 * command line. To add the torch index without losing the user's own extra indexes, read them
 * from pip's effective configuration first (environment over install section over global).
 */
export async function configuredExtraIndexUrls(python: string, runner: Runner): Promise<string[]> {
  const result = await runner(python, ['-m', 'pip', 'config', 'list']);
  if (result.code !== 0) return [];
  const values = new Map<string, string>();
  for (const line of result.stdout.split('\n')) {
    const match = /^([^=]+)=(.*)$/.exec(line.trim());
    if (!match) continue;
    values.set(match[1], match[2].replace(/^'(.*)'$/, '$1'));
  }
  for (const key of [':env:.extra-index-url', 'install.extra-index-url', 'global.extra-index-url']) {
    const value = values.get(key);
    if (value !== undefined) return value.split(/\s+/).filter(Boolean);
  }
  return [];
}

export function indexArgs(config: ResolvedConfig, configuredExtras: string[]): string[] {
  const extras = config.indexUrl ? [config.torchIndexUrl] : [...configuredExtras, config.torchIndexUrl];
  return [
    ...(config.indexUrl ? ['--index-url', config.indexUrl] : []),
    ...[...new Set(extras)].flatMap((url) => ['--extra-index-url', url]),
  ];
}

export async function checkPip(python: string, runner: Runner): Promise<void> {
  let result;
  try {
    result = await runner(python, ['-m', 'pip', '--version']);
  } catch (error) {
    throw new TorchError(
      'TORCH_PYTHON_NOT_FOUND',
      `custom.torch.python is "${python}", but it cannot be run on this machine (${(error as Error).message}). ` +
        'Install Python 3 or set custom.torch.python to an interpreter that has pip.',
      { cause: error },
    );
  }
  if (result.code !== 0) {
    throw new TorchError(
      'TORCH_PIP_NOT_FOUND',
      `"${python} -m pip" does not run: ${lastLines(result.stderr, 2)}. ` +
        'Install pip for that interpreter or set custom.torch.python to one that has it.',
    );
  }
}

export function lastLines(text: string, count = 4): string {
  return text.trim().split('\n').slice(-count).join(' | ');
}

export interface TorchWheel {
  path: string;
  name: WheelName;
}

/**
 * Fetches the torch wheel for the target from the torch index alone, so that the CUDA build
 * on another index can never be picked, and so that a refusal can be explained precisely.
 */
export async function downloadTorchWheel(options: {
  config: ResolvedConfig;
  target: TargetPlatform;
  torchSpecifier: string;
  workDir: string;
  runner: Runner;
  onLine?: (line: string) => void;
}): Promise<TorchWheel> {
  const { config, target, torchSpecifier, workDir, runner } = options;
  const downloadDir = path.join(workDir, 'torch-wheel');
  fs.mkdirSync(downloadDir, { recursive: true });
  const result = await runner(
    config.python,
    [
      '-m',
      'pip',
      'download',
      ...QUIET_ARGS,
      '--no-deps',
      ...targetArgs(target),
      '--index-url',
      config.torchIndexUrl,
      '--dest',
      downloadDir,
      `torch${torchSpecifier}`,
    ],
    { onLine: options.onLine },
  );
  if (result.code !== 0) {
    if (/No matching distribution|Could not find a version/.test(result.stderr)) {
      throw await explainNoTorchWheel(config.torchIndexUrl, target, torchSpecifier);
    }
    throw pipFailure('download torch', config.torchIndexUrl, result.stderr);
  }
  const files = fs.readdirSync(downloadDir).filter((file) => file.endsWith('.whl'));
  const wheel = files.map(parseWheelName).find((name) => name?.project === 'torch');
  if (!wheel) throw pipFailure('download torch', config.torchIndexUrl, result.stderr + result.stdout);
  if (/\+cu\d+|\+rocm/.test(wheel.version)) {
    throw new TorchError(
      'TORCH_CUDA_BUILD_SELECTED',
      `The torch index ${config.torchIndexUrl} served ${wheel.filename}, a GPU build: it cannot run on Lambda. ` +
        'Set custom.torch.torchIndexUrl to the CPU-only index https://download.pytorch.org/whl/cpu.',
    );
  }
  return { path: path.join(downloadDir, wheel.filename), name: wheel };
}

export function pipFailure(step: string, index: string, stderr: string): TorchError {
  if (/(Connection|NewConnectionError|Max retries|Name or service not known|timed out|Could not fetch URL|No such file or directory: .*simple)/i.test(stderr)) {
    return new TorchError(
      'TORCH_INDEX_UNREACHABLE',
      `pip could not ${step}: the index ${index} did not answer (${lastLines(stderr, 2)}). ` +
        'Check the network or proxy, or point custom.torch.torchIndexUrl / indexUrl at a mirror you can reach.',
    );
  }
  if (/THESE PACKAGES DO NOT MATCH THE HASHES/.test(stderr)) {
    return new TorchError(
      'TORCH_WHEEL_HASH_MISMATCH',
      `pip could not ${step}: a downloaded wheel does not match its expected sha256 (${lastLines(stderr, 3)}). ` +
        'The index or a proxy served different bytes; fix the index or the --hash pins in your requirements.',
    );
  }
  return new TorchError('TORCH_PIP_FAILED', `pip could not ${step} from ${index}: ${lastLines(stderr, 6)}`);
}

/** Wheel file names a PEP 503 index lists for a project (http(s) or file://). */
export async function listIndexWheels(indexUrl: string, project: string): Promise<WheelName[]> {
  const pageUrl = `${indexUrl.replace(/\/+$/, '')}/${project}/`;
  let html = '';
  try {
    if (pageUrl.startsWith('file://')) {
      const dir = new URL(pageUrl).pathname;
      const indexFile = path.join(dir, 'index.html');
      html = fs.existsSync(indexFile) ? fs.readFileSync(indexFile, 'utf8') : fs.readdirSync(dir).map((f) => `<a href="${f}">`).join('');
    } else {
      const response = await fetch(pageUrl, { signal: AbortSignal.timeout(30_000) });
      if (!response.ok) return [];
      html = await response.text();
    }
  } catch {
    return [];
  }
  const names: WheelName[] = [];
  for (const match of html.matchAll(/href="([^"#]+)/g)) {
    const name = parseWheelName(decodeURIComponent(match[1].split('/').pop() ?? ''));
    if (name && name.project === project) names.push(name);
  }
  return names;
}

/** Turns pip's "no matching distribution" into what is missing for this target and what would work. */
export async function explainNoTorchWheel(
  indexUrl: string,
  target: TargetPlatform,
  specifier: string,
): Promise<TorchError> {
  const wanted = `torch${specifier || ' (any version)'}`;
  const where = `${target.runtime} ${target.architecture}`;
  const wheels = await listIndexWheels(indexUrl, 'torch');
  if (wheels.length === 0) {
    return new TorchError(
      'TORCH_NO_WHEEL_FOR_PLATFORM',
      `No torch wheel was found on ${indexUrl} for ${where}. Check custom.torch.torchIndexUrl ` +
        '(the CPU-only index is https://download.pytorch.org/whl/cpu).',
    );
  }
  const matching = wheels.filter((wheel) => !specifier || satisfies(wheel.version, specifier));
  if (matching.length === 0) {
    const versions = [...new Set(wheels.map((wheel) => wheel.version))]
      .sort((a, b) => compareReleases(releaseOf(b), releaseOf(a)))
      .slice(0, 6);
    return new TorchError(
      'TORCH_VERSION_NOT_FOUND',
      `${indexUrl} has no ${wanted}. Newest versions there: ${versions.join(', ')}. Change the torch pin.`,
    );
  }
  const forPython = matching.filter((wheel) => wheel.pythonTags.includes(target.abi));
  if (forPython.length === 0) {
    const pythons = [...new Set(matching.flatMap((wheel) => wheel.pythonTags))].filter((tag) => /^cp3\d+$/.test(tag));
    const runtimes = SUPPORTED_RUNTIMES.filter((runtime) => pythons.includes(`cp${runtime.slice(6).replace('.', '')}`));
    return new TorchError(
      'TORCH_NO_WHEEL_FOR_RUNTIME',
      `${wanted} has no wheel for ${target.runtime} (${target.abi}) on ${indexUrl}. ` +
        (runtimes.length ? `Runtimes it has wheels for: ${runtimes.join(', ')}. ` : '') +
        'Change the runtime or the torch version.',
    );
  }
  const forMachine = forPython.filter((wheel) => wheel.platformTags.some((tag) => tag.endsWith(target.machine)));
  if (forMachine.length === 0) {
    return new TorchError(
      'TORCH_NO_WHEEL_FOR_ARCHITECTURE',
      `${wanted} has no ${target.machine} wheel for ${target.runtime} on ${indexUrl}. ` +
        `Use architecture ${target.architecture === 'arm64' ? 'x86_64' : 'arm64'} or another torch version.`,
    );
  }
  const needs = forMachine
    .flatMap((wheel) => wheel.platformTags.map(glibcOfTag))
    .filter((glibc): glibc is [number, number] => glibc !== null)
    .sort((a, b) => a[0] - b[0] || a[1] - b[1])[0];
  if (needs) {
    const runtimes = runtimesWithGlibc(needs);
    const example = forMachine[0];
    return new TorchError(
      'TORCH_NEEDS_NEWER_GLIBC',
      `${example.filename} needs glibc ${needs.join('.')} but ${target.runtime} runs on ${target.os} ` +
        `with glibc ${target.glibc.join('.')}, so torch ${example.version} cannot run there. ` +
        `Use runtime ${runtimes.join(' or ')} (Amazon Linux 2023), or pin a torch built for glibc ` +
        `${target.glibc.join('.')} (torch<=2.6 on x86_64, <=2.5 on arm64).`,
    );
  }
  return new TorchError(
    'TORCH_NO_WHEEL_FOR_PLATFORM',
    `pip found no ${wanted} for ${where} on ${indexUrl}, though the index lists ` +
      `${forMachine.map((wheel) => wheel.filename).slice(0, 3).join(', ')}. Run with --verbose to see pip's reasoning.`,
  );
}

/** Installs the requirements, with torch pinned to the given wheel file, into `treeDir`. */
export async function installTree(options: {
  config: ResolvedConfig;
  target: TargetPlatform;
  torchWheel: TorchWheel;
  otherLines: string[];
  usesHashes: boolean;
  treeDir: string;
  workDir: string;
  configuredExtras: string[];
  runner: Runner;
  onLine?: (line: string) => void;
}): Promise<void> {
  const { config, target, torchWheel, treeDir, workDir, runner } = options;
  let torchLine = torchWheel.path;
  if (options.usesHashes) {
    const digest = createHash('sha256').update(fs.readFileSync(torchWheel.path)).digest('hex');
    torchLine += ` --hash=sha256:${digest}`;
  }
  // The user's file is never edited: pip reads a copy with torch replaced by the chosen wheel.
  const requirementsCopy = path.join(workDir, 'requirements.txt');
  fs.writeFileSync(requirementsCopy, [...options.otherLines, torchLine].join('\n') + '\n');
  const result = await runner(
    config.python,
    [
      '-m',
      'pip',
      'install',
      ...QUIET_ARGS,
      '--no-compile',
      '--no-warn-script-location',
      '--target',
      treeDir,
      ...targetArgs(target),
      ...indexArgs(config, options.configuredExtras),
      '-r',
      requirementsCopy,
    ],
    { onLine: options.onLine },
  );
  if (result.code !== 0) {
    const missing = /No matching distribution found for ([^\s]+)/.exec(result.stderr);
    if (missing) {
      throw new TorchError(
        'TORCH_REQUIREMENT_NOT_FOUND',
        `pip found no wheel of ${missing[1]} for ${target.runtime} ${target.architecture} ` +
          `(${target.platformTags[0]}, ${target.abi}). Lambda needs binary wheels built for its platform: ` +
          'pick a version that publishes one, or drop the requirement.',
      );
    }
    if (/Invalid requirement|ERROR: Could not open requirements file|Expected (end|package name)/.test(result.stderr)) {
      throw new TorchError(
        'TORCH_REQUIREMENTS_INVALID',
        `pip cannot read the requirements: ${lastLines(result.stderr, 3)}. Fix the line it names in ` +
          `${config.requirementsPath ?? 'requirements.txt'}.`,
      );
    }
    throw pipFailure('install the requirements', config.indexUrl ?? "pip's configured index", result.stderr);
  }
}
