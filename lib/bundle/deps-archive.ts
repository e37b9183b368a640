import * as path from 'node:path';
import { FileEntry } from '../util/file-tree';
import { ZipEntry } from '../zip/write';

/**
 * Files above this are split into parts so that several threads can inflate one file. Small
 * enough that the parts of libtorch_cpu.so (about 40) share out evenly over 2 to 6 vCPUs: with
 * 32 MiB parts one thread got a part more than the other.
 */
export const CHUNK_BYTES = 8 * 1024 * 1024;
/** Where uncompressed dependencies go inside a layer: Lambda puts /opt/python on sys.path. */
export const OPT_ROOT = 'python';
/** The directory of /opt (and of /tmp) that holds the compressed dependencies. */
export const PACKED_DIR = 'serverless-torch';

/** The shim's instructions for unpacking, as README "Runtime layout" describes. */
export interface DepsManifest {
  format: 1;
  key: string;
  unpackedBytes: number;
  archives: string[];
  chunked: Record<string, { size: number; mode: number; parts: { archive: string; member: string; offset: number }[] }>;
  libraries: string[];
  optRoot: string;
}

/** The members of the compressed archive: small files whole, large ones as parts listed in `chunked`. */
export function archiveEntries(
  treeDir: string,
  files: FileEntry[],
  archiveName: string,
): { entries: ZipEntry[]; chunked: DepsManifest['chunked'] } {
  const entries: ZipEntry[] = [];
  const chunked: DepsManifest['chunked'] = {};
  for (const file of files) {
    const source = path.join(treeDir, file.path);
    if (file.size <= CHUNK_BYTES) {
      entries.push({ name: file.path, source: { path: source }, executable: file.executable });
      continue;
    }
    const parts = [];
    for (let offset = 0, index = 0; offset < file.size; offset += CHUNK_BYTES, index++) {
      const member = `.parts/${file.path}.${String(index).padStart(3, '0')}`;
      entries.push({ name: member, source: { path: source, start: offset, end: Math.min(offset + CHUNK_BYTES, file.size) } });
      parts.push({ archive: archiveName, member, offset });
    }
    chunked[file.path] = { size: file.size, mode: file.executable ? 0o755 : 0o644, parts };
  }
  return { entries, chunked };
}
