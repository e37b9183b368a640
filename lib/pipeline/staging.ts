import { randomBytes } from 'node:crypto';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { PackageOutput } from './types';

const STAGING_PREFIX = '.torch-staging-';

/** Staging directories of runs that were killed (their process is gone): nothing reads them. */
function removeAbandonedStaging(serverlessDir: string): void {
  let names: string[];
  try {
    names = fs.readdirSync(serverlessDir);
  } catch {
    return;
  }
  for (const name of names) {
    const pid = Number(/^\.torch-staging-(\d+)-/.exec(name)?.[1]);
    if (!pid || pid === process.pid) continue;
    try {
      process.kill(pid, 0);
      continue;
    } catch (error) {
      // EPERM: alive under another user. Only ESRCH means the run is gone.
      if ((error as NodeJS.ErrnoException).code !== 'ESRCH') continue;
    }
    fs.rmSync(path.join(serverlessDir, name), { recursive: true, force: true });
  }
}

/**
 * Builds into a staging directory and moves the artifacts into `serverlessDir` only when every
 * step succeeded, so a failed run never leaves something a later deploy would ship.
 */
export async function buildStaged(serverlessDir: string, build: (stagingDir: string) => Promise<PackageOutput>): Promise<PackageOutput> {
  removeAbandonedStaging(serverlessDir);
  const staging = path.join(serverlessDir, `${STAGING_PREFIX}${process.pid}-${randomBytes(4).toString('hex')}`);
  try {
    const output = await build(staging);
    const moved = new Map<string, string>();
    for (const file of fs.readdirSync(staging)) {
      const final = path.join(serverlessDir, file);
      // A directory (the models stored for S3) replaces the one an earlier run left: rename does
      // not replace a directory that is not empty (deploy function keeps .serverless/).
      if (fs.statSync(path.join(staging, file)).isDirectory()) fs.rmSync(final, { recursive: true, force: true });
      fs.renameSync(path.join(staging, file), final);
      moved.set(path.join(staging, file), final);
    }
    const finalPath = (staged: string) => moved.get(staged) ?? staged;
    return {
      ...output,
      functions: output.functions.map((fn) => ({ ...fn, artifact: finalPath(fn.artifact) })),
      layers: output.layers.map((layer) => ({ ...layer, artifact: finalPath(layer.artifact) })),
    };
  } finally {
    fs.rmSync(staging, { recursive: true, force: true });
  }
}
