// Reading zips: the index, one member, or the whole zip laid out on disk.
//
// yauzl parses the central directory, through a reader that serves its many small reads from
// one block (yauzl's own reader makes two threadpool round trips per entry: 4 s for 66,000
// entries). Member data is read here with large buffers and a large inflate output, which
// extracts the torch tree faster than Info-ZIP's unzip, where yauzl's 16 KiB streams took twice
// as long. CRC and size are checked for every member, since yauzl checks sizes only.

import assert from 'node:assert';
import { createReadStream, createWriteStream, read as fsRead, promises as fsp } from 'node:fs';
import type { FileHandle } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { Readable, Transform, Writable, type TransformCallback } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import zlib from 'node:zlib';
import * as yauzl from 'yauzl';
import { forEachLimit } from '../util/concurrency';
import { METHOD_DEFLATED, METHOD_STORED, SIG_LOCAL, S_IFDIR, S_IFLNK, S_IFMT } from './format';

export interface ZipIndexEntry {
  name: string;
  uncompressedSize: number;
  compressedSize: number;
  /** Unix mode from the external attributes, type bits included (0 when the zip has none). */
  mode: number;
  isDirectory: boolean;
  isSymlink: boolean;
}

interface Listed {
  entry: yauzl.Entry;
  index: ZipIndexEntry;
}

interface OpenZip {
  zipPath: string;
  fh: FileHandle;
  size: number;
  listed: Listed[];
}

const IO_BUFFER = 1 << 20;

/** Lists every entry, hostile names included: listing is harmless, and shows what extractZip refuses. */
export async function readZipIndex(zipPath: string): Promise<ZipIndexEntry[]> {
  return withZip(zipPath, async (zip) => zip.listed.map((e) => e.index));
}

/** The content of one member, checked against its CRC and size. */
export async function readZipEntry(zipPath: string, name: string): Promise<Buffer> {
  return withZip(zipPath, async (zip) => {
    const found = zip.listed.find((e) => e.index.name === name);
    if (!found) throw Object.assign(new Error(`${zipPath} has no entry ${name}`), { code: 'ENOENT' });
    if (found.index.isDirectory) throw new Error(`${name} in ${zipPath} is a directory`);
    const chunks: Buffer[] = [];
    const collect = new Writable({
      write(chunk: Buffer, _encoding, callback) {
        chunks.push(chunk);
        callback();
      },
    });
    await pipeline([...memberStreams(zip, found, await dataStart(zip, found)), collect]);
    return Buffer.concat(chunks);
  });
}

/**
 * Lays the zip out under destDir as Lambda does: files get 0o755 when any execute bit is set in
 * their mode, 0o644 otherwise. Every name is checked before anything is written, so a zip with
 * an absolute path, a '..' segment or a symlink is refused without touching the disk. destDir
 * may already hold files (layers are laid over one another); symlinks already in it are trusted.
 */
export async function extractZip(zipPath: string, destDir: string): Promise<void> {
  const root = path.resolve(destDir);
  await withZip(zipPath, async (zip) => {
    const targets = zip.listed.map((e) => ({ ...e, target: safeTarget(root, e.index, zipPath) }));
    const directories = new Set<string>([root]);
    for (const t of targets) directories.add(t.index.isDirectory ? t.target : path.dirname(t.target));
    // Sorted, each mkdir finds its parent made and does a single syscall.
    for (const dir of [...directories].sort()) await fsp.mkdir(dir, { recursive: true });

    const files = targets.filter((t) => !t.index.isDirectory);
    await forEachLimit(files, Math.max(4, os.availableParallelism() * 2), async (t) => {
      const mode = t.index.mode & 0o111 ? 0o755 : 0o644;
      const start = await dataStart(zip, t);
      await pipeline([...memberStreams(zip, t, start), createWriteStream(t.target, { mode })]);
      // The umask, or an older file at the same path, may have left other bits.
      await fsp.chmod(t.target, mode);
    });
  });
}

function safeTarget(root: string, index: ZipIndexEntry, zipPath: string): string {
  const refuse = (why: string): never => {
    throw Object.assign(new Error(`refusing to extract ${zipPath}: entry ${JSON.stringify(index.name)} ${why}`), {
      code: 'UNSAFE_ZIP_ENTRY',
    });
  };
  const name = index.name;
  if (name.length === 0 || name.includes('\0')) refuse('has an invalid name');
  if (name.startsWith('/') || /^[A-Za-z]:/.test(name)) refuse('is an absolute path');
  if (name.split('/').includes('..')) refuse("contains '..'");
  if (index.isSymlink) refuse('is a symlink');
  const target = path.resolve(root, name);
  if (target !== root && !target.startsWith(root + path.sep)) refuse('points outside the destination');
  if (target === root && !index.isDirectory) refuse('has an invalid name');
  return target;
}

type DecodeName = (flags: number, raw: Buffer, extraFields: { id: number; data: Buffer }[], strict: boolean) => string;
type ReadCallback = (err: Error | null, bytesRead?: number) => void;

/** Serves yauzl's small sequential reads of the central directory from one 1 MiB block. */
class BlockReader extends yauzl.RandomAccessReader {
  private block: { start: number; data: Buffer } | undefined;

  constructor(
    private readonly fd: number,
    private readonly size: number,
  ) {
    super();
  }

  override read(buffer: Buffer, offset: number, length: number, position: number, callback: ReadCallback): void {
    // Always asynchronous: yauzl reads the next entry from inside the callback, and answering
    // from the block synchronously would nest one stack frame per entry.
    const cached = this.block;
    if (cached && position >= cached.start && position + length <= cached.start + cached.data.length) {
      cached.data.copy(buffer, offset, position - cached.start, position - cached.start + length);
      process.nextTick(callback, null, length);
      return;
    }
    const blockLength = Math.min(Math.max(length, IO_BUFFER), this.size - position);
    if (blockLength < length) {
      process.nextTick(callback, null, Math.max(0, blockLength));
      return;
    }
    const data = Buffer.allocUnsafe(blockLength);
    fsReadFully(this.fd, data, position).then(
      () => {
        this.block = { start: position, data };
        data.copy(buffer, offset, 0, length);
        callback(null, length);
      },
      (error: Error) => callback(error),
    );
  }

  override _readStreamForRange(start: number, end: number): Readable {
    return createReadStream('', { fd: this.fd, start, end: end - 1, autoClose: false });
  }

  override close(callback: (err: Error | null) => void): void {
    // The handle belongs to withZip.
    process.nextTick(callback, null);
  }
}

function fsReadFully(fd: number, buffer: Buffer, position: number): Promise<void> {
  return new Promise((resolve, reject) => {
    const step = (done: number) => {
      if (done === buffer.length) return resolve();
      fsRead(fd, buffer, done, buffer.length - done, position + done, (err, bytesRead) => {
        if (err) return reject(err);
        if (bytesRead === 0) return reject(new Error('unexpected end of file'));
        step(done + bytesRead);
      });
    };
    step(0);
  });
}

async function withZip<T>(zipPath: string, use: (zip: OpenZip) => Promise<T>): Promise<T> {
  const fh = await fsp.open(zipPath, 'r');
  try {
    const size = (await fh.stat()).size;
    const listed = await listEntries(new BlockReader(fh.fd, size), size);
    return await use({ zipPath, fh, size, listed });
  } finally {
    await fh.close();
  }
}

async function listEntries(reader: BlockReader, size: number): Promise<Listed[]> {
  // Names are decoded here rather than by yauzl, which would reject hostile names while listing
  // and leave extractZip unable to say which entry it refused and why.
  const decodeName = (yauzl as unknown as { getFileNameLowLevel?: DecodeName }).getFileNameLowLevel;
  assert.ok(typeof decodeName === 'function', 'yauzl no longer exports getFileNameLowLevel');
  const zipfile = await new Promise<yauzl.ZipFile>((resolve, reject) =>
    yauzl.fromRandomAccessReader(
      reader,
      size,
      { lazyEntries: true, autoClose: true, decodeStrings: false, validateEntrySizes: true },
      (err, zf) => (err ? reject(err) : resolve(zf)),
    ),
  );
  const listed: Listed[] = [];
  try {
    await new Promise<void>((resolve, reject) => {
      zipfile.on('entry', (entry: yauzl.Entry) => {
        const raw = entry.fileName as unknown as Buffer;
        // yauzl's non-strict decoding turns backslashes into slashes, so '..\\x' is caught as '../x'.
        const name = decodeName(entry.generalPurposeBitFlag, raw, entry.extraFields, false);
        const mode = entry.externalFileAttributes >>> 16;
        listed.push({
          entry,
          index: {
            name,
            uncompressedSize: entry.uncompressedSize,
            compressedSize: entry.compressedSize,
            mode,
            isDirectory: name.endsWith('/') || (mode & S_IFMT) === S_IFDIR,
            isSymlink: (mode & S_IFMT) === S_IFLNK,
          },
        });
        zipfile.readEntry();
      });
      zipfile.once('end', () => resolve());
      zipfile.once('error', reject);
      zipfile.readEntry();
    });
  } finally {
    zipfile.close();
  }
  return listed;
}

/** Where a member's data starts, from its local header, checked against the file's bounds. */
async function dataStart(zip: OpenZip, { entry, index }: Listed): Promise<number> {
  const fail = (why: string): never => {
    throw new Error(`cannot read ${index.name} from ${zip.zipPath}: ${why}`);
  };
  if (entry.generalPurposeBitFlag & 0x1) fail('it is encrypted');
  const method = entry.compressionMethod;
  if (method !== METHOD_STORED && method !== METHOD_DEFLATED) fail(`unsupported compression method ${method}`);
  const header = Buffer.alloc(30);
  const { bytesRead } = await zip.fh.read(header, 0, 30, entry.relativeOffsetOfLocalHeader);
  if (bytesRead !== 30 || header.readUInt32LE(0) !== SIG_LOCAL) fail('bad local header');
  const start = entry.relativeOffsetOfLocalHeader + 30 + header.readUInt16LE(26) + header.readUInt16LE(28);
  if (start + entry.compressedSize > zip.size) fail('member data runs past the end of the file');
  return start;
}

/** The streams that turn a member's bytes in the zip into its verified content. */
function memberStreams(zip: OpenZip, { entry, index }: Listed, start: number): [Readable, ...Transform[]] {
  const check = new MemberCheck(entry.uncompressedSize, entry.crc32 >>> 0, () => `${index.name} in ${zip.zipPath}`);
  if (entry.compressedSize === 0) return [Readable.from([]), check];
  // Buffers sized to the member: a megabyte for each of thousands of small files costs more in
  // allocation and GC than the inflating itself. The numeric fd, because FileHandle streams that
  // leave it open each keep a listener on it.
  const raw = createReadStream('', {
    fd: zip.fh.fd,
    start,
    end: start + entry.compressedSize - 1,
    autoClose: false,
    highWaterMark: Math.min(IO_BUFFER, entry.compressedSize),
  });
  if (entry.compressionMethod === METHOD_STORED) return [raw, check];
  const chunkSize = Math.max(zlib.constants.Z_MIN_CHUNK, Math.min(IO_BUFFER, entry.uncompressedSize));
  return [raw, zlib.createInflateRaw({ chunkSize }), check];
}

/** Stops as soon as a member outgrows its declared size, and checks its CRC at the end. */
class MemberCheck extends Transform {
  private crc = 0;
  private bytes = 0;

  constructor(
    private readonly expectedBytes: number,
    private readonly expectedCrc: number,
    private readonly describe: () => string,
  ) {
    super();
  }

  override _transform(chunk: Buffer, _encoding: BufferEncoding, callback: TransformCallback): void {
    this.bytes += chunk.length;
    if (this.bytes > this.expectedBytes) {
      callback(new Error(`${this.describe()} is larger than its declared ${this.expectedBytes} bytes`));
      return;
    }
    this.crc = zlib.crc32(chunk, this.crc);
    callback(null, chunk);
  }

  override _flush(callback: TransformCallback): void {
    if (this.bytes !== this.expectedBytes) {
      callback(new Error(`${this.describe()} has ${this.bytes} bytes, not the declared ${this.expectedBytes}`));
    } else if (this.crc >>> 0 !== this.expectedCrc) {
      callback(new Error(`CRC mismatch for ${this.describe()}`));
    } else {
      callback();
    }
  }
}
