/**
 * A torch the test machine's python3.11 can import, for fixtures that only real torch can write
 * (a pickled nn.Module). Installed once from the fixture wheels into os.tmpdir(), outside any
 * cache the plugin uses, and reused across runs.
 */
import { execFileSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { TORCH_VERSION, prepareFixtureWheels, pipEnv } from './wheel-index';

const ROOT = path.join(os.tmpdir(), 'serverless-torch-host-torch');
const ENTRY = path.join(ROOT, `torch-${TORCH_VERSION}-cp311-x86_64-v1`);

let ready: Promise<string> | undefined;

/** A directory to put first on sys.path of python3.11 -I -S: it holds torch and its dependencies. */
export function hostTorchSite(): Promise<string> {
  ready = ready ?? install();
  return ready;
}

async function install(): Promise<string> {
  if (fs.existsSync(path.join(ENTRY, 'torch', '__init__.py'))) return ENTRY;
  const wheels = await prepareFixtureWheels();
  fs.mkdirSync(ROOT, { recursive: true });
  // Installed beside the entry and renamed into place, so a killed run never leaves half a torch.
  const work = fs.mkdtempSync(path.join(ROOT, '.work-'));
  try {
    execFileSync(
      'python3.11',
      ['-m', 'pip', 'install', '--no-deps', '--no-compile', '--no-index', '--disable-pip-version-check', '--target', work, wheels.torchWheel, ...wheels.dependencyWheels],
      { env: pipEnv(), stdio: 'ignore' },
    );
    try {
      fs.renameSync(work, ENTRY);
    } catch (error) {
      if (!fs.existsSync(path.join(ENTRY, 'torch', '__init__.py'))) throw error;
    }
  } finally {
    fs.rmSync(work, { recursive: true, force: true });
  }
  return ENTRY;
}

/** Runs a Python snippet with the host torch importable and `cwd` first on sys.path. */
export async function runWithTorch(script: string, cwd: string): Promise<string> {
  const site = await hostTorchSite();
  const prelude = `import sys; sys.path[:0] = [${JSON.stringify(cwd)}, ${JSON.stringify(site)}]\n`;
  return execFileSync('python3.11', ['-I', '-S', '-c', prelude + script], {
    cwd,
    encoding: 'utf8',
    env: { PATH: process.env.PATH, HOME: process.env.HOME, LANG: 'C.UTF-8' },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
}
