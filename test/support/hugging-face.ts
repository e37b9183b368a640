/**
 * transformers and its dependencies for tests: the wheels from pip's local store (served by the
 * tests' wheel index so the plugin resolves them as a user's index would), and a host install
 * beside the host torch to make a small Hugging Face model and compute what it answers.
 */
import { execFileSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { hostTorchSite } from './host-torch';
import { pipEnv, prepareStoreWheels } from './wheel-index';

export const TRANSFORMERS_VERSION = '5.18.0';
const LABEL = `transformers-${TRANSFORMERS_VERSION}-cp311-x86_64-glibc226-v1`;
const ROOT = path.join(os.tmpdir(), 'serverless-torch-host-torch');

/** transformers, tokenizers, safetensors and everything they need, for CPython 3.11 x86_64. */
export function transformersWheels(): Promise<string[]> {
  return prepareStoreWheels(LABEL, [`transformers==${TRANSFORMERS_VERSION}`, 'tokenizers', 'safetensors']);
}

let site: Promise<string> | undefined;

/** A directory holding transformers and its dependencies for python3.11, installed once. */
export function hostTransformersSite(): Promise<string> {
  site = site ?? install();
  return site;
}

async function install(): Promise<string> {
  const entry = path.join(ROOT, LABEL);
  if (fs.existsSync(path.join(entry, 'transformers', '__init__.py'))) return entry;
  const wheels = await transformersWheels();
  fs.mkdirSync(ROOT, { recursive: true });
  const work = fs.mkdtempSync(path.join(ROOT, '.work-'));
  try {
    execFileSync('python3.11', ['-m', 'pip', 'install', '--no-deps', '--no-index', '--disable-pip-version-check', '--target', work, ...wheels], { env: pipEnv(), stdio: 'ignore' });
    try {
      fs.renameSync(work, entry);
    } catch (error) {
      if (!fs.existsSync(path.join(entry, 'transformers', '__init__.py'))) throw error;
    }
  } finally {
    fs.rmSync(work, { recursive: true, force: true });
  }
  return entry;
}

/** Runs a Python snippet with torch and transformers importable, offline, and `cwd` first on sys.path. */
export async function runWithTransformers(script: string, cwd: string): Promise<string> {
  const paths = [cwd, await hostTransformersSite(), await hostTorchSite()];
  const prelude = `import sys, warnings; sys.path[:0] = ${JSON.stringify(paths)}; warnings.simplefilter("ignore")\n`;
  return execFileSync('python3.11', ['-I', '-S', '-c', prelude + script], {
    cwd,
    encoding: 'utf8',
    env: { PATH: process.env.PATH, HOME: process.env.HOME, LANG: 'C.UTF-8', HF_HUB_OFFLINE: '1', HF_HOME: path.join(cwd, '.hf-home'), TRANSFORMERS_VERBOSITY: 'error' },
    stdio: ['ignore', 'pipe', 'pipe'],
    maxBuffer: 64 * 1024 * 1024,
  });
}
