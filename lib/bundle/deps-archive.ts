import * as fs from 'node:fs';
import { FileEntry } from '../util/file-tree';

/**
 * Each unit's files are cut into frames of this many bytes, compressed one by one, so that the
 * frames of one large library share out over every vCPU at cold start. Measured on the stripped
 * libtorch_cpu.so of torch 2.13 at zstd level 3: 2, 4, 8, 16 MiB frames compress to 0.275,
 * 0.273, 0.271, 0.271 of it; the 42 frames of 8 MiB split evenly over 2 to 6 vCPUs, and a
 * frame's 8 MiB buffer stays under glibc's largest mmap threshold, so buffers are reused
 * rather than faulted in afresh (32 MiB frames decoded several times slower for that reason).
 */
export const FRAME_BYTES = 8 * 1024 * 1024;
/** Where uncompressed dependencies go inside a layer: Lambda puts /opt/python on sys.path. */
export const OPT_ROOT = 'python';
/** The directory of /opt (and of /tmp) that holds the compressed dependencies. */
export const PACKED_DIR = 'serverless-torch';
/** deps.json's format: the shim refuses any other. 2: zstd or zlib frames in one archive (1 was a zip). */
export const DEPS_FORMAT = 2;

export type Codec = 'zstd' | 'zlib';

/** The shim's instructions for unpacking, as README "Runtime layout" describes. */
export interface DepsManifest {
  format: typeof DEPS_FORMAT;
  key: string;
  codec: Codec;
  archive: string;
  unpackedBytes: number;
  /** [path, size, mode] in the order their bytes follow each other once the frames are decoded. */
  files: [string, number, number][];
  /** [compressed bytes, size] of each frame, in archive order. */
  frames: [number, number][];
  libraries: string[];
  optRoot: string;
}

/**
 * Files compressed together into frames of their own: one shared library, or a top-level entry
 * of the tree less its shared libraries. Frames never span units, so the compressed size of any
 * set of units is the sum of theirs.
 */
export interface PackUnit {
  kind: 'library' | 'package';
  /** The library's path, or the top-level entry's name. */
  name: string;
  files: FileEntry[];
  bytes: number;
}

/** A unit compressed at one level: its frames, one after the other in the file at `path`. */
export interface PackedUnit {
  unit: PackUnit;
  path: string;
  bytes: number;
  /** [compressed bytes, size] of each frame. */
  frames: [number, number][];
}

export function archiveName(key: string, codec: Codec): string {
  return `deps-${key}.${codec === 'zstd' ? 'zst' : 'zz'}`;
}

/** deps.json for the units that travel compressed, in the order their frames are in the archive. */
export function depsManifest(options: { key: string; codec: Codec; packed: PackedUnit[]; libraries: string[] }): DepsManifest {
  const files = options.packed.flatMap((packed) => packed.unit.files);
  return {
    format: DEPS_FORMAT,
    key: options.key,
    codec: options.codec,
    archive: archiveName(options.key, options.codec),
    unpackedBytes: files.reduce((sum, file) => sum + file.size, 0),
    files: files.map((file) => [file.path, file.size, file.executable ? 0o755 : 0o644]),
    frames: options.packed.flatMap((packed) => packed.frames),
    libraries: options.libraries,
    optRoot: OPT_ROOT,
  };
}

/** deps.json as it ships: compact, since it lists every compressed file and counts against the limit. */
export function manifestText(manifest: DepsManifest): Buffer {
  return Buffer.from(JSON.stringify(manifest));
}

/** The archive: the units' frames, concatenated in manifest order (copied through a small buffer: a unit can be 100 MB). */
export function writeArchive(dest: string, packed: PackedUnit[]): void {
  const buffer = Buffer.allocUnsafe(1 << 20);
  const out = fs.openSync(dest, 'wx');
  try {
    for (const unit of packed) {
      const input = fs.openSync(unit.path, 'r');
      try {
        let copied = 0;
        for (let read; (read = fs.readSync(input, buffer, 0, buffer.length, null)) > 0; copied += read) fs.writeSync(out, buffer, 0, read);
        if (copied !== unit.bytes) throw new Error(`${unit.path} has ${copied} bytes, ${unit.bytes} were measured`);
      } finally {
        fs.closeSync(input);
      }
    }
  } finally {
    fs.closeSync(out);
  }
}
