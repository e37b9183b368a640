import * as fs from 'node:fs';
import * as path from 'node:path';
import { CacheLayout, cacheKey, commitEntry, readEntryJson } from '../util/cache';
import { ResolvedConfig } from '../config/options';
import { TorchError } from '../util/errors';
import { formatBytes, formatSeconds } from '../util/format';
import { QUIET_ARGS, checkPip, configuredExtraIndexUrls, indexArgs, lastLines, pipFailure } from '../resolve/pip';
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
  let probe;
  try {
    probe = await runner(config.python, ['-I', '-c', PROBE]);
  } catch (error) {
    throw new TorchError(
      'TORCH_PYTHON_NOT_FOUND',
      `custom.torch.python is "${config.python}", but it cannot be run on this machine (${(error as Error).message}). ` +
        'Quantizing the model runs torch on the build machine: install Python 3 or set custom.torch.python.',
      { cause: error },
    );
  }
  if (probe.code !== 0) {
    throw new TorchError('TORCH_PYTHON_NOT_FOUND', `"${config.python}" does not run: ${lastLines(probe.stderr, 2)}. Set custom.torch.python to a working interpreter.`);
  }
  const [pythonVersion, platform, machine, ownTorch] = probe.stdout.trim().split(' ');
  if (ownTorch !== '-' && publicVersion(ownTorch) === publicVersion(torchVersion)) {
    reporter.verbose(`Host torch: ${config.python} (Python ${pythonVersion}) has torch ${ownTorch} installed, the version the functions run`);
    return { python: config.python, pythonVersion, torchVersion: ownTorch, sitePath: null };
  }

  const key = cacheKey({ torch: torchVersion, python: pythonVersion, platform, machine });
  const entryDir = cache.entry('host-torch', key);
  const cached = readEntryJson<HostRecord>(entryDir, RECORD_FILE);
  if (cached) {
    reporter.verbose(`Host torch: cached torch ${cached.torchVersion} for Python ${pythonVersion} ${machine} (${entryDir})`);
    return { python: config.python, pythonVersion, torchVersion: cached.torchVersion, sitePath: path.join(entryDir, SITE_DIR) };
  }

  await checkPip(config.python, runner);
  const configuredExtras = config.indexUrl ? [] : await configuredExtraIndexUrls(config.python, runner);
  const workDir = cache.workDir(`host-torch-${key}`);
  try {
    const started = Date.now();
    const pipLine = (line: string) => reporter.verbose(`pip: ${line}`);
    reporter.progress(`Installing torch ${torchVersion} for this machine (Python ${pythonVersion} ${machine}) to quantize the model`);
    // torch alone from the torch index, as for the functions, so a CUDA build elsewhere is never picked.
    const wheelDir = path.join(workDir, 'wheel');
    const download = await runner(
      config.python,
      ['-m', 'pip', 'download', ...QUIET_ARGS, '--no-deps', '--only-binary=:all:', '--index-url', config.torchIndexUrl, '--dest', wheelDir, `torch==${torchVersion}`],
      { onLine: pipLine },
    );
    if (download.code !== 0) {
      if (/No matching distribution|Could not find a version/.test(download.stderr)) {
        throw new TorchError(
          'TORCH_NO_HOST_WHEEL',
          `quantize: dynamic runs torch ${torchVersion} on this machine, but ${config.torchIndexUrl} has no torch ${torchVersion} ` +
            `wheel for ${config.python} (Python ${pythonVersion}, ${platform} ${machine}). Set custom.torch.python to an ` +
            `interpreter of a version that torch ${torchVersion} supports, or install torch==${torchVersion} into it.`,
        );
      }
      throw pipFailure(`download torch ${torchVersion} for this machine`, config.torchIndexUrl, download.stderr);
    }
    const wheel = fs.readdirSync(wheelDir).find((file) => file.startsWith('torch-') && file.endsWith('.whl'));
    if (!wheel) throw pipFailure(`download torch ${torchVersion} for this machine`, config.torchIndexUrl, download.stderr + download.stdout);
    const stageDir = path.join(workDir, 'entry');
    const siteDir = path.join(stageDir, SITE_DIR);
    fs.mkdirSync(siteDir, { recursive: true });
    // Bytecode is kept here (unlike in the functions): this tree only ever runs on this interpreter.
    const install = await runner(
      config.python,
      ['-m', 'pip', 'install', ...QUIET_ARGS, '--no-warn-script-location', '--only-binary=:all:', '--target', siteDir, ...indexArgs(config, configuredExtras), path.join(wheelDir, wheel)],
      { onLine: pipLine },
    );
    if (install.code !== 0) throw pipFailure(`install torch ${torchVersion} for this machine`, config.indexUrl ?? "pip's configured index", install.stderr);
    const distInfo = fs.readdirSync(siteDir).find((name) => /^torch-.+\.dist-info$/.test(name));
    const record: HostRecord = {
      torchVersion: distInfo ? distInfo.slice('torch-'.length, -'.dist-info'.length) : torchVersion,
      pythonVersion,
      machine,
      bytes: totalBytes(listTree(siteDir)),
    };
    fs.writeFileSync(path.join(stageDir, RECORD_FILE), JSON.stringify(record));
    commitEntry(stageDir, entryDir);
    reporter.info(`Installed torch ${record.torchVersion} for this machine's Python ${pythonVersion} into the cache (${formatBytes(record.bytes)}, ${formatSeconds(Date.now() - started)})`);
    return { python: config.python, pythonVersion, torchVersion: record.torchVersion, sitePath: path.join(entryDir, SITE_DIR) };
  } finally {
    fs.rmSync(workDir, { recursive: true, force: true });
  }
}

/** Interpreter arguments that import the host torch and nothing else from the machine's site-packages. */
export function hostPythonArgs(host: HostTorch): string[] {
  return host.sitePath ? ['-I', '-S'] : ['-I'];
}
