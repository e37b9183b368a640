import * as path from 'node:path';
import { ResolvedConfig } from '../config/options';
import { BUILD_SCRIPTS_DIR } from '../util/plugin-paths';
import { TorchError } from '../util/errors';
import { Runner } from '../util/process';
import { lastLines } from './pip-failure';
import { TargetPlatform } from './target';

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

export const PIP_FOR_TARGET_SCRIPT = path.join(BUILD_SCRIPTS_DIR, 'pip_for_target.py');

/**
 * The environment markers see on the target (PEP 508 names), so that `python_version`,
 * `platform_machine` and `sys_platform` come out as Lambda's whatever the build machine is.
 */
export function markerEnvironment(target: TargetPlatform): Record<string, string> {
  return {
    implementation_name: 'cpython',
    implementation_version: `${target.pythonVersion}.0`,
    os_name: 'posix',
    platform_machine: target.machine,
    platform_python_implementation: 'CPython',
    platform_release: '',
    platform_system: 'Linux',
    platform_version: '',
    python_full_version: `${target.pythonVersion}.0`,
    python_version: target.pythonVersion,
    sys_platform: 'linux',
  };
}

/**
 * The interpreter arguments that run pip for the target: python/build/pip_for_target.py sets
 * the marker environment to the target's, then runs pip with `pipArgs`.
 */
export function pipForTarget(target: TargetPlatform, pipArgs: string[]): string[] {
  return [PIP_FOR_TARGET_SCRIPT, JSON.stringify(markerEnvironment(target)), ...pipArgs];
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
