import { createHash, randomBytes } from 'node:crypto';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';

/** Stable short digest of everything that changes a cached result. */
export function cacheKey(parts: unknown): string {
  return createHash('sha256').update(JSON.stringify(parts)).digest('hex').slice(0, 16);
}

/** What the cache holds: dependency trees, built layers, quantized models, host copies of torch and zstandard, runtime packages. */
export type CacheKind = 'trees' | 'artifacts' | 'models' | 'host' | 'runtime';

export interface CacheLayout {
  root: string;
  /** Finished entries, each renamed into place whole. */
  entry(kind: CacheKind, key: string): string;
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

function readEntryJson<T>(entryDir: string, file: string): T | null {
  try {
    return JSON.parse(fs.readFileSync(path.join(entryDir, file), 'utf8')) as T;
  } catch {
    return null;
  }
}

export interface Memoized<T> {
  record: T;
  entryDir: string;
  /** True when the entry was already there and nothing was built. */
  reused: boolean;
}

/**
 * The one way an entry is made. A finished entry is used as it is; otherwise `build` fills a
 * stage directory, the record is written beside its files, the directory is renamed into place
 * and the record is read back (another process may have committed the same entry first: its
 * copy is kept, and holds the same content). A run killed at any point leaves no entry, only a
 * work directory that openCache later removes.
 */
export async function memo<T>(options: {
  cache: CacheLayout;
  kind: CacheKind;
  key: string;
  /** File name of the record (JSON) inside the entry. */
  recordFile: string;
  /** Whether a finished entry can still be used (for example, all its files are there). @default always */
  reusable?: (record: T, entryDir: string) => boolean;
  /** Writes the entry's files into `stageDir` and returns its record; `workDir` is scratch space, removed afterwards. */
  build: (stageDir: string, workDir: string) => Promise<T>;
}): Promise<Memoized<T>> {
  const { cache, kind, key, recordFile } = options;
  const entryDir = cache.entry(kind, key);
  const cached = readEntryJson<T>(entryDir, recordFile);
  if (cached !== null && (options.reusable?.(cached, entryDir) ?? true)) return { record: cached, entryDir, reused: true };
  const workDir = cache.workDir(`${kind}-${key}`);
  try {
    const stageDir = path.join(workDir, 'entry');
    fs.mkdirSync(stageDir);
    const record = await options.build(stageDir, workDir);
    fs.writeFileSync(path.join(stageDir, recordFile), JSON.stringify(record));
    if (cached !== null) fs.rmSync(entryDir, { recursive: true, force: true });
    commitEntry(stageDir, entryDir);
    return { record: readEntryJson<T>(entryDir, recordFile) ?? record, entryDir, reused: false };
  } finally {
    fs.rmSync(workDir, { recursive: true, force: true });
  }
}
