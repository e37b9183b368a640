import * as fs from 'node:fs';
import * as path from 'node:path';
import { TorchError } from './errors';
import { formatBytes } from './format';

// Measured with torch 2.13.0+cpu: the 192 MB wheel installs to 710 MiB with its
// dependencies, and both stay on disk until the stripped tree is committed, so a cold build of one
// target peaks at about five times the wheel in the cache directory.
export const COLD_BUILD_WHEEL_FACTOR = 5;
/** What a cold build of a recent CPU torch needs when the wheel's size is not known yet. */
export const TYPICAL_COLD_BUILD_BYTES = 1_000_000_000;

/** Free bytes for an unprivileged writer on the file system holding `target` (or its nearest existing parent); null when unknown. */
export function freeBytes(target: string): number | null {
  if (typeof fs.statfsSync !== 'function') return null;
  for (let dir = path.resolve(target); ; dir = path.dirname(dir)) {
    try {
      const stats = fs.statfsSync(dir);
      return Number(stats.bavail) * Number(stats.bsize);
    } catch {
      if (path.dirname(dir) === dir) return null;
    }
  }
}

/** ENOSPC from Node, or "No space left on device" in a child process's output. */
export function isDiskFull(error: unknown): boolean {
  if ((error as NodeJS.ErrnoException | undefined)?.code === 'ENOSPC') return true;
  const text = typeof error === 'string' ? error : (error as Error | undefined)?.message ?? '';
  return /No space left on device|\[Errno 28\]/.test(text);
}

/** The path pip or Python names in "[Errno 28] No space left on device: '<path>'", if any. */
export function pathInDiskFullMessage(text: string): string | null {
  return /No space left on device: '([^']+)'/.exec(text)?.[1] ?? null;
}

/** The candidate directory on the fullest file system: the one that most likely ran out. */
export function fullestDirectory(candidates: (string | null | undefined)[]): string {
  const known = candidates.filter((dir): dir is string => Boolean(dir));
  const ranked = known.map((dir) => ({ dir, free: freeBytes(dir) ?? Number.POSITIVE_INFINITY })).sort((a, b) => a.free - b.free);
  return ranked[0]?.dir ?? process.cwd();
}

/** TORCH_DISK_FULL: which directory, what was going on, how much is free and how much the step needs. */
export function diskFullError(options: {
  dir: string;
  step: string;
  /** Bytes the step needs there in all, when known or estimated. */
  neededBytes: number | null;
  /** How `neededBytes` was arrived at, in the user's words. */
  neededFor?: string;
  /** Whether the directory is the cache (which can move) or the service's .serverless/ (which cannot). @default 'cache' */
  holds?: 'cache' | 'artifacts';
  cause?: unknown;
}): TorchError {
  const free = freeBytes(options.dir);
  const needed = options.neededBytes
    ? ` It needs about ${formatBytes(options.neededBytes)} (${options.neededBytes} bytes) free there${options.neededFor ? ` for ${options.neededFor}` : ''}.`
    : '';
  return new TorchError(
    'TORCH_DISK_FULL',
    `No space left on the disk holding ${options.dir} while ${options.step}` +
      `${free === null ? '' : ` (${formatBytes(free)} free there now)`}.${needed} ` +
      (options.holds === 'artifacts'
        ? 'Free some space on that disk: the artifacts go to the .serverless/ directory of the service.'
        : 'Free some space there, or set custom.torch.cacheDir to a directory on a disk with more room.'),
    { cause: options.cause },
  );
}
