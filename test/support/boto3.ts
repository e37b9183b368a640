/**
 * boto3 and botocore for the Python tests and the bench of fetch.py, as the Lambda Python runtime
 * provides them: installed once from pip's wheel store into os.tmpdir(), outside any cache the
 * plugin uses, and reused across runs. The store holds boto3 1.43, which needs Python >= 3.10.
 */
import { execFileSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { pipEnv, storeIndexArgs } from './wheel-index';

const ROOT = path.join(os.tmpdir(), 'serverless-torch-boto3');
// Bump when what an entry holds changes, so old entries are ignored.
const ENTRY = path.join(ROOT, 'boto3-v1');
const PYTHON = 'python3.11';

let ready: Promise<string> | undefined;

/** A directory to put on sys.path: boto3, botocore, s3transfer, urllib3 and the rest. */
export function boto3Site(): Promise<string> {
  ready = ready ?? install();
  return ready;
}

function installed(dir: string): boolean {
  return fs.existsSync(path.join(dir, 'boto3', '__init__.py')) && fs.existsSync(path.join(dir, 'botocore', '__init__.py'));
}

async function install(): Promise<string> {
  if (installed(ENTRY)) return ENTRY;
  fs.mkdirSync(ROOT, { recursive: true });
  // Installed beside the entry and renamed into place, so a killed run never leaves half of it.
  const work = fs.mkdtempSync(path.join(ROOT, '.work-'));
  try {
    const wheels = path.join(work, 'wheels');
    // pip's own configuration names the store on these machines; its first extra index is made
    // the primary one, so pip never waits for an index it cannot reach.
    execFileSync(PYTHON, ['-m', 'pip', 'download', '--only-binary=:all:', '--disable-pip-version-check', '-d', wheels, 'boto3', ...(await storeIndexArgs())], {
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    const site = path.join(work, 'site');
    execFileSync(PYTHON, ['-m', 'pip', 'install', '--no-compile', '--no-index', '--find-links', wheels, '--target', site, 'boto3'], {
      env: pipEnv(),
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    try {
      fs.renameSync(site, ENTRY);
    } catch (error) {
      if (!installed(ENTRY)) throw error;
    }
  } finally {
    fs.rmSync(work, { recursive: true, force: true });
  }
  return ENTRY;
}
