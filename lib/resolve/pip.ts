import { createHash } from 'node:crypto';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { ResolvedConfig } from '../config/options';
import { COLD_BUILD_WHEEL_FACTOR, TYPICAL_COLD_BUILD_BYTES, diskFullError, fullestDirectory, isDiskFull, pathInDiskFullMessage } from '../util/disk-space';
import { TorchError } from '../util/errors';
import { Runner } from '../util/process';
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
    // pip logs fetch problems at info level (stdout) and errors on stderr: read both.
    const output = `${result.stdout}\n${result.stderr}`;
    const known = knownPipFailure('download torch', config.torchIndexUrl, output, downloadDir);
    if (known) throw known;
    // pip says little about a broken index (no versions, or a traceback): read its page to say why.
    const page = await readIndexPage(config.torchIndexUrl, 'torch');
    if (page.problem) throw indexPageError(config.torchIndexUrl, 'custom.torch.torchIndexUrl', page);
    if (/No matching distribution|Could not find a version/.test(output)) {
      throw await explainNoTorchWheel(config.torchIndexUrl, target, torchSpecifier, page.wheels);
    }
    throw pipFailure('download torch', config.torchIndexUrl, output, downloadDir);
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

/**
 * Failures pip reports the same way whatever it was doing: a full disk, bytes that do not match
 * their sha256, an index it could not reach. `step` is what pip was asked to do ("download torch");
 * `dir` is where it was writing. A full disk and a hash mismatch are checked first: pip may also
 * have printed retry warnings on the way to either.
 */
export function knownPipFailure(step: string, index: string, output: string, dir?: string): TorchError | null {
  if (isDiskFull(output)) {
    const wheelMb = /Downloading \S*torch-[^\s/]+\.whl \(([\d.]+) MB\)/.exec(output)?.[1];
    const wheelBytes = wheelMb ? Math.round(Number(wheelMb) * 1e6) : null;
    return diskFullError({
      // pip may name its own temporary file (the source of a copy), on another disk than the one that filled up.
      dir: fullestDirectory([pathInDiskFullMessage(output) && path.dirname(pathInDiskFullMessage(output)!), dir]),
      step: `pip tried to ${step}`,
      neededBytes: wheelBytes ? wheelBytes * COLD_BUILD_WHEEL_FACTOR : TYPICAL_COLD_BUILD_BYTES,
      neededFor: wheelBytes
        ? `the ${(wheelBytes / 1e6).toFixed(1)} MB torch wheel, its installed files and their stripped copy`
        : 'a recent CPU torch: the wheel, its installed files and their stripped copy',
    });
  }
  const mismatch = hashMismatch(step, output);
  if (mismatch) return mismatch;
  const reason = /(\[Errno -?\d+\] [^'")\n]+|Name or service not known|Temporary failure in name resolution|Read timed out|timed out|certificate verify failed|ProxyError[^'"\n]*)/i.exec(
    output.split('\n').filter((line) => /Retrying|NewConnectionError|ConnectTimeout|ReadTimeout|SSLError|ProxyError|Max retries|Could not fetch URL/i.test(line)).join('\n'),
  );
  if (reason) {
    return new TorchError(
      'TORCH_INDEX_UNREACHABLE',
      `pip could not reach ${index} to ${step}: ${reason[1].trim()}. Check the URL, the network or proxy, ` +
        'or point custom.torch.torchIndexUrl / indexUrl at a mirror you can reach.',
    );
  }
  return null;
}

/** pip's "THESE PACKAGES DO NOT MATCH THE HASHES" block, as the file, where it came from, and both digests. */
export function hashMismatch(step: string, output: string): TorchError | null {
  const at = output.indexOf('THESE PACKAGES DO NOT MATCH THE HASHES');
  if (at < 0) return null;
  const block = output.slice(at);
  const source = /\sfrom (\S+?)(?:#sha256=[0-9a-f]+)?(?::\s|\s\(from )/.exec(block)?.[1] ?? null;
  const file = source ? decodeURIComponent(source.split('/').pop()!) : 'a downloaded file';
  const expected = [...block.matchAll(/(?:Expected sha256|\bor)\s+([0-9a-f]{64})/g)].map((match) => match[1]);
  const got = /Got\s+([0-9a-f]{64})/.exec(block)?.[1] ?? 'something else';
  return new TorchError(
    'TORCH_WHEEL_HASH_MISMATCH',
    `pip refused ${file}${source ? ` from ${decodeURIComponent(source)}` : ''} (asked to ${step}): expected sha256 ` +
      `${expected.join(' or ') || '(see pip)'}, got ${got}. The index, a mirror or a proxy served other bytes than the ` +
      'sha256 it lists or your requirements pin with --hash: fix the index or the pin; do not turn the check off.',
  );
}

export function pipFailure(step: string, index: string, output: string, dir?: string): TorchError {
  const known = knownPipFailure(step, index, output, dir);
  if (known) return known;
  return new TorchError('TORCH_PIP_FAILED', `pip could not ${step} from ${index}: ${lastLines(output, 6)}`);
}

/** What an index answered for one project's page. */
export interface IndexPage {
  url: string;
  /** Set when the page could not be read or is not an index page. */
  problem: null | { kind: 'unreachable'; reason: string } | { kind: 'status'; status: number; statusText: string } | { kind: 'not-an-index'; bytes: number; contentType: string };
  wheels: WheelName[];
}

/** Reads a PEP 503 project page (http(s) or file://) the way pip does, keeping why it failed. */
export async function readIndexPage(indexUrl: string, project: string): Promise<IndexPage> {
  const url = `${indexUrl.replace(/\/+$/, '')}/${project}/`;
  let html = '';
  if (url.startsWith('file://')) {
    const dir = new URL(url).pathname;
    const indexFile = path.join(dir, 'index.html');
    try {
      html = fs.existsSync(indexFile) ? fs.readFileSync(indexFile, 'utf8') : fs.readdirSync(dir).map((f) => `<a href="${f}">`).join('');
    } catch (error) {
      return { url, problem: { kind: 'status', status: 404, statusText: (error as Error).message }, wheels: [] };
    }
  } else {
    let response: Response;
    try {
      response = await fetch(url, { signal: AbortSignal.timeout(30_000) });
    } catch (error) {
      const cause = (error as { cause?: { code?: string; message?: string } }).cause;
      return { url, problem: { kind: 'unreachable', reason: cause?.code ?? cause?.message ?? (error as Error).message }, wheels: [] };
    }
    if (!response.ok) return { url, problem: { kind: 'status', status: response.status, statusText: response.statusText }, wheels: [] };
    const body = Buffer.from(await response.arrayBuffer());
    html = body.toString('utf8');
    if (!/<a\s[^>]*href=/i.test(html)) {
      return { url, problem: { kind: 'not-an-index', bytes: body.length, contentType: response.headers.get('content-type') ?? 'no content type' }, wheels: [] };
    }
  }
  const wheels: WheelName[] = [];
  for (const match of html.matchAll(/href="([^"#]+)/g)) {
    const name = parseWheelName(decodeURIComponent(match[1].split('/').pop() ?? ''));
    if (name && name.project === project) wheels.push(name);
  }
  return { url, problem: null, wheels };
}

/** The error for an index page that could not be read: unreachable, an HTTP error, or not an index. */
export function indexPageError(indexUrl: string, option: string, page: IndexPage): TorchError {
  const problem = page.problem!;
  const fix = `Check ${option} (the CPU-only torch index is https://download.pytorch.org/whl/cpu) and any proxy in between.`;
  if (problem.kind === 'unreachable') {
    return new TorchError('TORCH_INDEX_UNREACHABLE', `${indexUrl} did not answer (${problem.reason} for ${page.url}). ${fix}`);
  }
  if (problem.kind === 'status') {
    return new TorchError(
      'TORCH_NOT_ON_INDEX',
      `${indexUrl} has no page for torch: ${page.url} answered ${problem.status} ${problem.statusText}. ${fix}`,
    );
  }
  return new TorchError(
    'TORCH_INDEX_INVALID',
    `${page.url} is not a package index page: it answered ${problem.bytes} bytes of ${problem.contentType} without a single link, ` +
      `so pip cannot find torch there. ${fix}`,
  );
}

/** Wheel file names a PEP 503 index lists for a project (http(s) or file://); none when it cannot be read. */
export async function listIndexWheels(indexUrl: string, project: string): Promise<WheelName[]> {
  return (await readIndexPage(indexUrl, project)).wheels;
}

/** Turns pip's "no matching distribution" into what is missing for this target and what would work. */
export async function explainNoTorchWheel(
  indexUrl: string,
  target: TargetPlatform,
  specifier: string,
  listed?: WheelName[],
): Promise<TorchError> {
  const wanted = `torch${specifier || ' (any version)'}`;
  const where = `${target.runtime} ${target.architecture}`;
  const wheels = listed ?? (await listIndexWheels(indexUrl, 'torch'));
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
      `${indexUrl} has no ${wanted}. Newest versions there: ${versions.join(', ')}. ` +
        'Change the torch pin (the torch line of the requirements, or custom.torch.torchVersion).',
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
  /** The user's sha256 pins for torch: the chosen wheel must match one. @default none */
  torchHashes?: string[];
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
    // pip never sees the user's torch line, so its pins are checked here, where pip would have.
    const pins = options.torchHashes ?? [];
    if (pins.length && !pins.includes(digest)) {
      throw new TorchError(
        'TORCH_WHEEL_HASH_MISMATCH',
        `${torchWheel.name.filename} from ${config.torchIndexUrl} has sha256 ${digest}, but ` +
          `${config.requirementsPath ? path.basename(config.requirementsPath) : 'the requirements'} pins torch to sha256 ` +
          `${pins.join(' or ')}. The index served other bytes than you pinned, or the pin is for another wheel: pin the hash ` +
          `of the ${target.runtime} ${target.architecture} wheel (a torch line may carry one --hash per wheel), or fix the index.`,
      );
    }
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
    const output = `${result.stdout}\n${result.stderr}`;
    const index = config.indexUrl ?? "pip's configured index";
    const known = knownPipFailure('install the requirements', index, output, treeDir);
    if (known) throw known;
    const invalid = requirementsProblem(output, config.requirementsPath);
    if (invalid) throw invalid;
    const missing = /No matching distribution found for ([^\s]+)/.exec(result.stderr);
    if (missing) {
      throw new TorchError(
        'TORCH_REQUIREMENT_NOT_FOUND',
        `pip found no wheel of ${missing[1]} for ${target.runtime} ${target.architecture} ` +
          `(${target.platformTags[0]}, ${target.abi}). Lambda needs binary wheels built for its platform: ` +
          'pick a version that publishes one, or drop the requirement.',
      );
    }
    throw pipFailure('install the requirements', index, output, treeDir);
  }
  forgetWheelPath(treeDir, torchWheel);
}

/**
 * pip records a wheel installed from a file in <dist-info>/direct_url.json (PEP 610), here the
 * path of this run's work directory. That path differs on every cold build, so it would make the
 * layers differ too and be uploaded again. torch came from the index, as an index install records
 * nothing, so the file and its RECORD line go.
 */
function forgetWheelPath(treeDir: string, torchWheel: TorchWheel): void {
  const distInfo = fs.readdirSync(treeDir).find((name) => name.startsWith('torch-') && name.endsWith('.dist-info'));
  if (!distInfo) return;
  const directUrl = path.join(treeDir, distInfo, 'direct_url.json');
  let url = '';
  try {
    url = String(JSON.parse(fs.readFileSync(directUrl, 'utf8')).url);
  } catch {
    return;
  }
  if (!url.startsWith('file://') || !decodeURIComponent(url).endsWith(`/${torchWheel.name.filename}`)) return;
  fs.rmSync(directUrl);
  const record = path.join(treeDir, distInfo, 'RECORD');
  if (fs.existsSync(record)) {
    const lines = fs.readFileSync(record, 'utf8').split('\n');
    fs.writeFileSync(record, lines.filter((line) => !line.startsWith(`${distInfo}/direct_url.json,`)).join('\n'));
  }
}

/**
 * pip's complaints about the requirements themselves, pointed at the user's file: pip reads a
 * copy (torch replaced), so the line numbers it gives are not the user's.
 */
export function requirementsProblem(output: string, requirementsPath: string | null): TorchError | null {
  const label = requirementsPath ? path.basename(requirementsPath) : 'requirements.txt';
  const invalid = /Invalid requirement: '([^']*)'/.exec(output);
  if (invalid) {
    const hint = /^Hint: (.+)$/m.exec(output)?.[1];
    const text = requirementsPath && fs.existsSync(requirementsPath) ? fs.readFileSync(requirementsPath, 'utf8') : '';
    const lineIndex = text.split(/\r?\n/).findIndex((line) => line.includes(invalid[1]));
    // Not found: the line is in a file the requirements include with -r.
    const where = lineIndex >= 0 ? `${label} line ${lineIndex + 1}` : `${label} (or a file it includes)`;
    return new TorchError(
      'TORCH_REQUIREMENTS_INVALID',
      `${where}: "${invalid[1]}" is not a valid requirement${hint ? ` (pip: ${hint})` : ''}. Fix that line; ` +
        'requirements are written like "sympy==1.14.0" or "sympy>=1.13".',
    );
  }
  const unopened = /Could not open requirements file: (.+)/.exec(output);
  if (unopened) {
    return new TorchError('TORCH_REQUIREMENTS_INVALID', `pip could not open a file your ${label} includes: ${unopened[1].trim()}. Fix the -r or -c line.`);
  }
  if (/Hashes are required in --require-hashes mode|In --require-hashes mode, all requirements must have their versions pinned/.test(output)) {
    const unpinned = [...output.matchAll(/^\s{4}(\S+)(?: from [^\n]*)?(?: --hash=sha256:([0-9a-f]{64}))?$/gm)]
      .map((match) => (match[2] ? `${match[1]} --hash=sha256:${match[2]}` : match[1]))
      .slice(0, 8);
    return new TorchError(
      'TORCH_REQUIREMENTS_INVALID',
      `${label} uses --hash pins, so pip checks every package it installs and needs each one pinned with == and a hash, ` +
        `torch's dependencies too. Missing: ${unpinned.join('; ') || lastLines(output, 4)}. Add those lines (serverless-torch ` +
        'adds the hash of the torch wheel itself), or remove every --hash.',
    );
  }
  return null;
}
