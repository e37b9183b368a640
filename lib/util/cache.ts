import { createHash, randomBytes } from 'node:crypto';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';

/** Stable short digest of everything that changes a cached result. */
export function cacheKey(parts: unknown): string {
  return createHash('sha256').update(JSON.stringify(parts)).digest('hex').slice(0, 16);
}

export interface CacheLayout {
  root: string;
  /** Finished entries, each renamed into place whole. */
  entry(kind: 'trees' | 'artifacts' | 'models' | 'host-torch', key: string): string;
  /** A fresh work directory on the same file system, so finished work can be renamed in. */
  workDir(label: string): string;
}

const STALE_WORK_MS = 6 * 60 * 60 * 1000;

// Work directories are named <label>-<host>-<pid>-<random>, so a later run on the same machine can
// tell that their run is gone. The host part keeps a cache shared between machines safe.
const HOST = createHash('sha256').update(os.hostname()).digest('hex').slice(0, 6);
const WORK_NAME = /-([0-9a-f]{6})-(\d+)-[0-9a-f]{8}$/;

/** True when the work directory belongs to a run on this machine whose process has exited. */
function abandoned(name: string): boolean {
  const match = WORK_NAME.exec(name);
  if (!match || match[1] !== HOST || Number(match[2]) === process.pid) return false;
  try {
    process.kill(Number(match[2]), 0);
    return false;
  } catch (error) {
    return (error as NodeJS.ErrnoException).code === 'ESRCH';
  }
}

export function openCache(root: string): CacheLayout {
  fs.mkdirSync(path.join(root, 'tmp'), { recursive: true });
  // Work directories of runs that were killed are never read (entries appear only by rename);
  // clear them so they do not pile up: a killed cold build leaves about a gigabyte.
  for (const name of fs.readdirSync(path.join(root, 'tmp'))) {
    const dir = path.join(root, 'tmp', name);
    try {
      if (abandoned(name) || Date.now() - fs.statSync(dir).mtimeMs > STALE_WORK_MS) fs.rmSync(dir, { recursive: true, force: true });
    } catch {
      // another run removed it
    }
  }
  return {
    root,
    entry: (kind, key) => path.join(root, kind, key),
    workDir: (label) => {
      const dir = path.join(root, 'tmp', `${label}-${HOST}-${process.pid}-${randomBytes(4).toString('hex')}`);
      fs.mkdirSync(dir, { recursive: true });
      return dir;
    },
  };
}

/**
 * Moves a finished work directory into place as a cache entry. When another process finished
 * the same entry first, theirs is kept and ours discarded: both hold the same content.
 */
export function commitEntry(workDir: string, entryDir: string): void {
  fs.mkdirSync(path.dirname(entryDir), { recursive: true });
  try {
    fs.renameSync(workDir, entryDir);
  } catch (error) {
    const code = (error as NodeJS.ErrnoException).code;
    if (code !== 'ENOTEMPTY' && code !== 'EEXIST') throw error;
    fs.rmSync(workDir, { recursive: true, force: true });
  }
}

export function readEntryJson<T>(entryDir: string, file: string): T | null {
  try {
    return JSON.parse(fs.readFileSync(path.join(entryDir, file), 'utf8')) as T;
  } catch {
    return null;
  }
}

/** Hex sha256 of a file, streamed so a large model or layer is never held in memory. */
export async function sha256File(file: string): Promise<string> {
  const hash = createHash('sha256');
  for await (const chunk of fs.createReadStream(file)) hash.update(chunk as Buffer);
  return hash.digest('hex');
}
