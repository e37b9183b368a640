import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { TorchError } from '../util/errors';
import { Runner } from '../util/process';
import { TargetPlatform } from './target';

export interface Interpreter {
  path: string;
  version: string;
  machine: string;
}

function pyenvCandidates(version: string): string[] {
  const root = process.env.PYENV_ROOT || path.join(os.homedir(), '.pyenv');
  const versionsDir = path.join(root, 'versions');
  if (!fs.existsSync(versionsDir)) return [];
  return fs
    .readdirSync(versionsDir)
    .filter((name) => name === version || name.startsWith(`${version}.`))
    .sort()
    .reverse()
    .map((name) => path.join(versionsDir, name, 'bin', `python${version}`));
}

/**
 * A host interpreter of the runtime's exact minor version: bytecode, extension modules and
 * wheels are all built for one minor version, so another would not run the packaged tree.
 */
export async function findInterpreter(
  target: TargetPlatform,
  runner: Runner,
  explicit?: string,
  /** anyMachine: for work that depends on the Python version only (compiling bytecode). */
  options: { anyMachine?: boolean } = {},
): Promise<Interpreter> {
  const version = target.pythonVersion;
  const candidates = explicit
    ? [explicit]
    : [`python${version}`, ...pyenvCandidates(version), `/usr/bin/python${version}`, `/usr/local/bin/python${version}`];
  const tried: string[] = [];
  for (const candidate of [...new Set(candidates)]) {
    try {
      const result = await runner(candidate, ['-I', '-c', 'import sys, platform; print("%d.%d %s %s" % (sys.version_info[0], sys.version_info[1], platform.machine(), sys.executable))']);
      if (result.code !== 0) {
        tried.push(candidate);
        continue;
      }
      const [found, machine, executable] = result.stdout.trim().split(' ');
      if (found !== version) {
        tried.push(`${candidate} (is ${found})`);
        continue;
      }
      const hostMachine = machine === 'arm64' ? 'aarch64' : machine;
      if (hostMachine !== target.machine && !options.anyMachine) {
        throw new TorchError(
          'TORCH_INVOKE_ARCHITECTURE_MISMATCH',
          `invoke local cannot run a ${target.architecture} function on this ${machine} machine: the packaged ` +
            'libraries are built for the other processor. Run it on a matching machine, or set architecture to ' +
            `${hostMachine === 'aarch64' ? 'arm64' : 'x86_64'} to try it here.`,
        );
      }
      return { path: executable || candidate, version, machine };
    } catch (error) {
      if (error instanceof TorchError) throw error;
      tried.push(candidate);
    }
  }
  throw new TorchError(
    'TORCH_NO_LOCAL_PYTHON',
    `invoke local needs Python ${version} on this machine to run a ${target.runtime} function (packaged ` +
      `libraries only load in the same minor version), and none was found (tried ${tried.join(', ')}). ` +
      `Install it (e.g. "pyenv install ${version}") or put python${version} on PATH.`,
  );
}
