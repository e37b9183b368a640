import * as fs from 'node:fs';
import * as path from 'node:path';
import { CacheLayout, cacheKey, memo } from '../util/cache';
import { ResolvedConfig } from '../config/options';
import { TorchError } from '../util/errors';
import { formatBytes, formatSeconds } from '../util/format';
import { QUIET_ARGS, checkPip, configuredExtraIndexUrls, indexArgs } from '../resolve/pip-args';
import { knownPipFailure, lastLines, pipFailure } from '../resolve/pip-failure';
import { Runner } from '../util/process';
import { Reporter } from '../util/reporter';
import { listTree, totalBytes } from '../util/file-tree';

/** A torch the build machine's interpreter can import, for work done at package time. */
export interface HostTorch {
  /** The interpreter (config.python). */
  python: string;
  /** "3.11" */
  pythonVersion: string;
  /** The torch version it imports, as the dist-info names it ("2.13.0+cpu"). */
  torchVersion: string;
  /**
   * The cached tree holding torch, to put on sys.path of a `-I -S` interpreter; null when the
   * interpreter's own site-packages has that torch (then it runs with `-I` only).
   */
  sitePath: string | null;
}

interface HostRecord {
  torchVersion: string;
  pythonVersion: string;
  machine: string;
  bytes: number;
}

const SITE_DIR = 'site';
const RECORD_FILE = 'host-torch.json';

// Local labels ("+cpu") name the build, not the code: 2.13.0 and 2.13.0+cpu quantize alike.
function publicVersion(version: string): string {
  return version.split('+')[0];
}

const PROBE = [
  'import sys, platform',
  'try:',
  '    from importlib.metadata import version',
  '    torch = version("torch")',
  'except Exception:',
  '    torch = ""',
  'print("%d.%d %s %s %s" % (sys.version_info[0], sys.version_info[1], sys.platform, platform.machine(), torch or "-"))',
].join('\n');

interface HostProbe {
  pythonVersion: string;
  platform: string;
  machine: string;
  /** The torch version its own site-packages has, or null. */
  ownTorch: string | null;
}

/** What the build machine's interpreter is, and which torch it already has. */
async function probeHost(python: string, runner: Runner): Promise<HostProbe> {
  let probe;
  try {
    probe = await runner(python, ['-I', '-c', PROBE]);
  } catch (error) {
    throw new TorchError(
      'TORCH_PYTHON_NOT_FOUND',
      `custom.torch.python is "${python}", but it cannot be run on this machine (${(error as Error).message}). ` +
        'Quantizing the model runs torch on the build machine: install Python 3 or set custom.torch.python.',
      { cause: error },
    );
  }
  if (probe.code !== 0) {
    throw new TorchError('TORCH_PYTHON_NOT_FOUND', `"${python}" does not run: ${lastLines(probe.stderr, 2)}. Set custom.torch.python to a working interpreter.`);
  }
  const [pythonVersion, platform, machine, ownTorch] = probe.stdout.trim().split(' ');
  return { pythonVersion, platform, machine, ownTorch: ownTorch === '-' ? null : ownTorch };
}

/**
 * A host copy of exactly the torch version the functions run. The build machine's own torch is
 * used when it is that version; otherwise a host-platform wheel is installed into the cache once
 * per (torch version, Python version, platform), from the same indexes as the functions' torch,
 * so the user never installs torch themselves.
 */
export async function ensureHostTorch(options: {
  config: ResolvedConfig;
  torchVersion: string;
  cache: CacheLayout;
  runner: Runner;
  reporter: Reporter;
}): Promise<HostTorch> {
  const { config, torchVersion, cache, runner, reporter } = options;
  const host = await probeHost(config.python, runner);
  const { pythonVersion, platform, machine } = host;
  if (host.ownTorch && publicVersion(host.ownTorch) === publicVersion(torchVersion)) {
    reporter.verbose(`Host torch: ${config.python} (Python ${pythonVersion}) has torch ${host.ownTorch} installed, the version the functions run`);
    return { python: config.python, pythonVersion, torchVersion: host.ownTorch, sitePath: null };
  }
  const started = Date.now();
  const { record, entryDir, reused } = await memo<HostRecord>({
    cache,
    kind: 'host-torch',
    key: cacheKey({ torch: torchVersion, python: pythonVersion, platform, machine }),
    recordFile: RECORD_FILE,
    build: async (stageDir, workDir) => {
      reporter.progress(`Installing torch ${torchVersion} for this machine (Python ${pythonVersion} ${machine}) to quantize the model`);
      const siteDir = path.join(stageDir, SITE_DIR);
      await installHostTorch({ config, torchVersion, host, siteDir, workDir, runner, reporter });
      const distInfo = fs.readdirSync(siteDir).find((name) => /^torch-.+\.dist-info$/.test(name));
      return {
        torchVersion: distInfo ? distInfo.slice('torch-'.length, -'.dist-info'.length) : torchVersion,
        pythonVersion,
        machine,
        bytes: totalBytes(listTree(siteDir)),
      };
    },
  });
  if (reused) {
    reporter.verbose(`Host torch: cached torch ${record.torchVersion} for Python ${pythonVersion} ${machine} (${entryDir})`);
  } else {
    reporter.info(`Installed torch ${record.torchVersion} for this machine's Python ${pythonVersion} into the cache (${formatBytes(record.bytes)}, ${formatSeconds(Date.now() - started)})`);
  }
  return { python: config.python, pythonVersion, torchVersion: record.torchVersion, sitePath: path.join(entryDir, SITE_DIR) };
}

/** pip installs the host-platform torch wheel into `siteDir`, torch alone from the torch index. */
async function installHostTorch(options: {
  config: ResolvedConfig;
  torchVersion: string;
  host: HostProbe;
  siteDir: string;
  workDir: string;
  runner: Runner;
  reporter: Reporter;
}): Promise<void> {
  const { config, torchVersion, host, siteDir, workDir, runner, reporter } = options;
  await checkPip(config.python, runner);
  const configuredExtras = config.indexUrl ? [] : await configuredExtraIndexUrls(config.python, runner);
  const pipLine = (line: string) => reporter.verbose(`pip: ${line}`);
  // torch alone from the torch index, as for the functions, so a CUDA build elsewhere is never picked.
  const wheelDir = path.join(workDir, 'wheel');
  const download = await runner(
    config.python,
    ['-m', 'pip', 'download', ...QUIET_ARGS, '--no-deps', '--only-binary=:all:', '--index-url', config.torchIndexUrl, '--dest', wheelDir, `torch==${torchVersion}`],
    { onLine: pipLine },
  );
  const step = `download torch ${torchVersion} for this machine`;
  if (download.code !== 0) {
    // pip logs fetch problems at info level (stdout) and errors on stderr: read both, and an
    // index that did not answer before "no matching distribution", which pip also prints then.
    const output = `${download.stdout}\n${download.stderr}`;
    const known = knownPipFailure(step, config.torchIndexUrl, output, wheelDir);
    if (known) throw known;
    if (/No matching distribution|Could not find a version/.test(output)) {
      throw new TorchError(
        'TORCH_NO_HOST_WHEEL',
        `quantize: dynamic runs torch ${torchVersion} on this machine, but ${config.torchIndexUrl} has no torch ${torchVersion} ` +
          `wheel for ${config.python} (Python ${host.pythonVersion}, ${host.platform} ${host.machine}). Set custom.torch.python to an ` +
          `interpreter of a version that torch ${torchVersion} supports, or install torch==${torchVersion} into it.`,
      );
    }
    throw pipFailure(step, config.torchIndexUrl, output, wheelDir);
  }
  const wheel = fs.readdirSync(wheelDir).find((file) => file.startsWith('torch-') && file.endsWith('.whl'));
  if (!wheel) throw pipFailure(step, config.torchIndexUrl, `${download.stdout}\n${download.stderr}`);
  fs.mkdirSync(siteDir, { recursive: true });
  // Bytecode is kept here (unlike in the functions): this tree only ever runs on this interpreter.
  const install = await runner(
    config.python,
    ['-m', 'pip', 'install', ...QUIET_ARGS, '--no-warn-script-location', '--only-binary=:all:', '--target', siteDir, ...indexArgs(config, configuredExtras), path.join(wheelDir, wheel)],
    { onLine: pipLine },
  );
  if (install.code !== 0) {
    throw pipFailure(`install torch ${torchVersion} for this machine`, config.indexUrl ?? "pip's configured index", `${install.stdout}\n${install.stderr}`, siteDir);
  }
}

/** Interpreter arguments that import the host torch and nothing else from the machine's site-packages. */
export function hostPythonArgs(host: HostTorch): string[] {
  return host.sitePath ? ['-I', '-S'] : ['-I'];
}
