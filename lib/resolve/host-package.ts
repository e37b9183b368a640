import * as fs from 'node:fs';
import * as path from 'node:path';
import { ResolvedConfig } from '../config/options';
import { CacheLayout, cacheKey, memo } from '../util/cache';
import { TorchError } from '../util/errors';
import { listTree, totalBytes } from '../util/file-tree';
import { formatBytes, formatSeconds } from '../util/format';
import { Runner } from '../util/process';
import { Reporter } from '../util/reporter';
import { QUIET_ARGS, checkPip, configuredExtraIndexUrls, indexArgs } from './pip-args';
import { knownPipFailure, lastLines, pipFailure } from './pip-failure';

/**
 * A package the build machine's interpreter can import, for work done at package time: torch to
 * quantize the model, zstandard to compress the dependencies. Never shipped.
 */
export interface HostPackage {
  /** The interpreter (config.python). */
  python: string;
  /** "3.11" */
  pythonVersion: string;
  /** The version it imports, as its dist-info names it ("2.13.0+cpu", "0.25.0"). */
  version: string;
  /**
   * The cached tree holding the package, to put on sys.path of a `-I -S` interpreter; null when the
   * interpreter's own site-packages has it (then it runs with `-I` only).
   */
  sitePath: string | null;
}

interface HostRecord {
  version: string;
  pythonVersion: string;
  machine: string;
  bytes: number;
}

interface HostProbe {
  pythonVersion: string;
  platform: string;
  machine: string;
  /** The version of the project its own site-packages has, or null. */
  own: string | null;
}

const SITE_DIR = 'site';
const RECORD_FILE = 'host-package.json';

/** Local labels ("+cpu") name the build, not the code. */
function publicVersion(version: string): string {
  return version.split('+')[0];
}

function probeScript(project: string): string {
  return [
    'import sys, platform',
    'try:',
    '    from importlib.metadata import version',
    `    own = version(${JSON.stringify(project)})`,
    'except Exception:',
    '    own = ""',
    'print("%d.%d %s %s %s" % (sys.version_info[0], sys.version_info[1], sys.platform, platform.machine(), own or "-"))',
  ].join('\n');
}

/** What the build machine's interpreter is, and which version of `project` it already has. */
async function probeHost(python: string, project: string, runner: Runner): Promise<HostProbe> {
  let probe;
  try {
    probe = await runner(python, ['-I', '-c', probeScript(project)]);
  } catch (error) {
    throw new TorchError(
      'TORCH_PYTHON_NOT_FOUND',
      `custom.torch.python is "${python}", but it cannot be run on this machine (${(error as Error).message}). ` +
        'Packaging runs Python on the build machine: install Python 3 or set custom.torch.python.',
      { cause: error },
    );
  }
  if (probe.code !== 0) {
    throw new TorchError('TORCH_PYTHON_NOT_FOUND', `"${python}" does not run: ${lastLines(probe.stderr, 2)}. Set custom.torch.python to a working interpreter.`);
  }
  const [pythonVersion, platform, machine, own] = probe.stdout.trim().split(' ');
  return { pythonVersion, platform, machine, own: own === '-' ? null : own };
}

/** What a host package is for and where it comes from. */
export interface HostPackageRequest {
  project: string;
  /** The version wanted (compared without local labels); null takes the newest the indexes have. */
  version: string | null;
  /** The only index asked for the project itself (its dependencies come from the configured ones). @default the configured indexes */
  projectIndex?: string;
  /** What it is for, in the user's words ("quantize: dynamic", "compressing the dependencies"). */
  purpose: string;
}

/**
 * A host copy of `project`. The build machine's own copy is used when it is the version wanted;
 * otherwise a host-platform wheel is installed into the cache once per (project, version, Python
 * version, platform), from the same indexes the functions' packages come from, so the user never
 * installs it themselves.
 */
export async function ensureHostPackage(options: {
  config: ResolvedConfig;
  request: HostPackageRequest;
  cache: CacheLayout;
  runner: Runner;
  reporter: Reporter;
}): Promise<HostPackage> {
  const { config, request, cache, runner, reporter } = options;
  const host = await probeHost(config.python, request.project, runner);
  const { pythonVersion, platform, machine } = host;
  if (host.own && (request.version === null || publicVersion(host.own) === publicVersion(request.version))) {
    reporter.verbose(`Host ${request.project}: ${config.python} (Python ${pythonVersion}) has ${request.project} ${host.own} installed`);
    return { python: config.python, pythonVersion, version: host.own, sitePath: null };
  }
  const started = Date.now();
  const { record, entryDir, reused } = await memo<HostRecord>({
    cache,
    kind: 'host',
    key: cacheKey({ project: request.project, version: request.version, python: pythonVersion, platform, machine }),
    recordFile: RECORD_FILE,
    build: async (stageDir, workDir) => {
      reporter.progress(`Installing ${request.project}${request.version ? ` ${request.version}` : ''} for this machine (Python ${pythonVersion} ${machine}) for ${request.purpose}`);
      const siteDir = path.join(stageDir, SITE_DIR);
      await installHostPackage({ config, request, host, siteDir, workDir, runner, reporter });
      const name = request.project.replace(/-/g, '_');
      const distInfo = fs.readdirSync(siteDir).find((entry) => entry.startsWith(`${name}-`) && entry.endsWith('.dist-info'));
      return {
        version: distInfo ? distInfo.slice(name.length + 1, -'.dist-info'.length) : request.version ?? 'unknown',
        pythonVersion,
        machine,
        bytes: totalBytes(listTree(siteDir)),
      };
    },
  });
  if (reused) {
    reporter.verbose(`Host ${request.project}: cached ${request.project} ${record.version} for Python ${pythonVersion} ${machine} (${entryDir})`);
  } else {
    reporter.info(`Installed ${request.project} ${record.version} for this machine's Python ${pythonVersion} into the cache (${formatBytes(record.bytes)}, ${formatSeconds(Date.now() - started)})`);
  }
  return { python: config.python, pythonVersion, version: record.version, sitePath: path.join(entryDir, SITE_DIR) };
}

/** Why pip found nothing to install, in the user's terms. */
function noHostWheel(config: ResolvedConfig, request: HostPackageRequest, host: HostProbe, source: string, spec: string): TorchError {
  const wanted = request.version ? `${request.project} ${request.version}` : request.project;
  return new TorchError(
    'TORCH_NO_HOST_WHEEL',
    `${request.purpose} runs ${wanted} on this machine, but ${source} has no ${request.project} wheel for ${config.python} ` +
      `(Python ${host.pythonVersion}, ${host.platform} ${host.machine}). Set custom.torch.python to an interpreter of a version that ` +
      `${wanted} supports, or install ${spec} into it.`,
  );
}

const NOTHING_FOUND = /No matching distribution|Could not find a version/;

/**
 * pip installs the host-platform wheel of the project into `siteDir`. With a projectIndex the
 * project is downloaded alone from it first, so a build from elsewhere is never picked (torch);
 * otherwise one pip run does it all.
 */
async function installHostPackage(options: {
  config: ResolvedConfig;
  request: HostPackageRequest;
  host: HostProbe;
  siteDir: string;
  workDir: string;
  runner: Runner;
  reporter: Reporter;
}): Promise<void> {
  const { config, request, host, siteDir, workDir, runner, reporter } = options;
  await checkPip(config.python, runner);
  const configuredExtras = config.indexUrl ? [] : await configuredExtraIndexUrls(config.python, runner);
  const indexes = indexArgs(config, configuredExtras);
  const pipLine = (line: string) => reporter.verbose(`pip: ${line}`);
  const spec = request.version ? `${request.project}==${request.version}` : request.project;
  const source = request.projectIndex ?? config.indexUrl ?? "pip's configured index";
  let requirement = spec;
  if (request.projectIndex) {
    const wheelDir = path.join(workDir, 'wheel');
    const download = await runner(
      config.python,
      ['-m', 'pip', 'download', ...QUIET_ARGS, '--no-deps', '--only-binary=:all:', '--index-url', request.projectIndex, '--dest', wheelDir, spec],
      { onLine: pipLine },
    );
    if (download.code !== 0) {
      // pip logs fetch problems at info level (stdout) and errors on stderr: read both, and an
      // index that did not answer before "no matching distribution", which pip also prints then.
      const output = `${download.stdout}\n${download.stderr}`;
      const known = knownPipFailure(`download ${request.project} for this machine`, source, output, wheelDir);
      if (known) throw known;
      if (NOTHING_FOUND.test(output)) throw noHostWheel(config, request, host, source, spec);
      throw pipFailure(`download ${request.project} for this machine`, source, output, wheelDir);
    }
    const prefix = `${request.project.replace(/-/g, '_')}-`.toLowerCase();
    const wheel = fs.readdirSync(wheelDir).find((file) => file.toLowerCase().startsWith(prefix) && file.endsWith('.whl'));
    if (!wheel) throw pipFailure(`download ${request.project} for this machine`, source, download.stderr + download.stdout);
    requirement = path.join(wheelDir, wheel);
  }
  fs.mkdirSync(siteDir, { recursive: true });
  // Bytecode is kept here (unlike in the functions): this tree only ever runs on this interpreter.
  const install = await runner(
    config.python,
    ['-m', 'pip', 'install', ...QUIET_ARGS, '--no-warn-script-location', '--only-binary=:all:', '--target', siteDir, ...indexes, requirement],
    { onLine: pipLine },
  );
  if (install.code !== 0) {
    const output = `${install.stdout}\n${install.stderr}`;
    const known = knownPipFailure(`install ${request.project} for this machine`, source, output, siteDir);
    if (known) throw known;
    if (!request.projectIndex && NOTHING_FOUND.test(output)) throw noHostWheel(config, request, host, source, spec);
    throw pipFailure(`install ${request.project} for this machine`, config.indexUrl ?? "pip's configured index", output, siteDir);
  }
}

/** Interpreter arguments that import the host package and nothing else from the machine's site-packages. */
export function hostPythonArgs(host: HostPackage): string[] {
  return host.sitePath ? ['-I', '-S'] : ['-I'];
}
