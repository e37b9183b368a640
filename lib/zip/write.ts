// Every zip the plugin writes or reads goes through this module.
//
// Writing is deterministic (sorted names, fixed date, normalised modes, no timestamps or extra
// fields) because the framework skips uploading a layer whose hash has not changed: the same
// content must give the same bytes. It is also parallel: members are cut into fixed-size chunks
// that are deflated on libuv's threadpool and written in order. A large member is compressed like
// pigz does it: each chunk is deflated on its own, primed with the previous 32 KiB as dictionary
// and ended with a sync flush, so the concatenation is one valid deflate stream. That lets a
// single 400 MB shared library use every core, keeps memory to a few chunks, and since chunk
// boundaries do not depend on the concurrency the output does not either.
import assert from 'node:assert';
import { createHash, randomBytes } from 'node:crypto';
import { createReadStream, createWriteStream, read as fsRead, promises as fsp } from 'node:fs';
import type { FileHandle } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { Readable, Transform, Writable, type TransformCallback } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { promisify } from 'node:util';
import zlib from 'node:zlib';
import * as yauzl from 'yauzl';

export interface ZipEntry {
  /** Posix path inside the zip, no leading slash. */
  name: string;
  /** A file, or the bytes [start, end) of one (a large file shipped in parts), or bytes in memory. */
  source: { path: string; start?: number; end?: number } | { data: Buffer };
  executable?: boolean;
  /** Default true; false stores the member as is (for content that is already compressed). */
  compress?: boolean;
}

export interface WriteZipOptions {
  /** zlib level, 0-9; default 6. */
  level?: number;
  /**
   * Chunks deflated at once on libuv's threadpool; default twice the cores, at most the
   * threadpool's size (UV_THREADPOOL_SIZE, 4 unless set before node starts).
   */
  concurrency?: number;
  /** Uncompressed bytes written so far out of the total; called after each chunk is written. */
  onProgress?: (doneBytes: number, totalBytes: number) => void;
}

export interface ZipResult {
  path: string;
  /** Size of the zip file. */
  bytes: number;
  unzippedBytes: number;
  /** Hex sha256 of the zip file. */
  sha256: string;
  entries: number;
}

export interface ZipIndexEntry {
  name: string;
  uncompressedSize: number;
  compressedSize: number;
  /** Unix mode from the external attributes, type bits included (0 when the zip has none). */
  mode: number;
  isDirectory: boolean;
  isSymlink: boolean;
}

// 1 MiB keeps a 2-core machine busy on one big member while the per-chunk overhead (a threadpool
// round trip and a 5-byte sync marker) stays negligible; see bench/zip.ts.
const CHUNK_SIZE = 1 << 20;
const DICTIONARY_SIZE = 32 * 1024;
const SYNC_DEFLATE_MAX = 8 * 1024;
const WRITE_BATCH = 1 << 20;
// Completed chunks may wait for a slow predecessor; this many per compression slot bounds memory.
const WINDOW_PER_SLOT = 4;

// 1980-01-01 00:00:00, the earliest DOS date: what archiver writes for the framework's Date(0).
const DOS_TIME = 0;
const DOS_DATE = (1 << 5) | 1;
const MODE_FILE = 0o100644;
const MODE_EXECUTABLE = 0o100755;
const METHOD_STORED = 0;
const METHOD_DEFLATED = 8;
const FLAG_UTF8 = 0x0800;
const VERSION_DEFAULT = 20;
const VERSION_ZIP64 = 45;
const MADE_BY_UNIX = 3 << 8;
const U16_MAX = 0xffff;
const U32_MAX = 0xffffffff;

const SIG_LOCAL = 0x04034b50;
const SIG_CENTRAL = 0x02014b50;
const SIG_EOCD = 0x06054b50;
const SIG_ZIP64_EOCD = 0x06064b50;
const SIG_ZIP64_LOCATOR = 0x07064b50;
const ZIP64_EXTRA_ID = 0x0001;

const deflateRaw = promisify(zlib.deflateRaw) as (input: Buffer, options: zlib.ZlibOptions) => Promise<Buffer>;

interface Member {
  name: string;
  nameBytes: Buffer;
  source: ZipEntry['source'];
  /** Where the member's bytes start in its source file. */
  sourceOffset: number;
  size: number;
  mode: number;
  compress: boolean;
  chunks: number;
  /**
   * Decided from the uncompressed size before anything is written, since the local header is
   * written before its sizes are known and must keep its length when patched.
   */
  zip64Local: boolean;
  method: number;
  offset: number;
  crc: number;
  compressedSize: number;
}

interface Piece {
  member: Member;
  chunk: number;
  raw: Buffer;
  out: Buffer;
}

/**
 * Writes `entries` to a zip at `dest`, atomically: nothing appears at `dest` unless the whole zip
 * was written. The same entries at the same level give a byte-identical file whatever their
 * order and whatever the concurrency.
 */
export async function writeZip(dest: string, entries: ZipEntry[], options: WriteZipOptions = {}): Promise<ZipResult> {
  const level = options.level ?? 6;
  const concurrency = options.concurrency ?? defaultConcurrency();
  assert.ok(Number.isInteger(level) && level >= 0 && level <= 9, `zip level must be an integer 0-9, got ${level}`);
  assert.ok(Number.isInteger(concurrency) && concurrency >= 1, `zip concurrency must be a positive integer, got ${concurrency}`);
  const planned = planMembers(entries);

  const finalPath = path.resolve(dest);
  const partialPath = `${finalPath}.partial-${process.pid}-${randomBytes(6).toString('hex')}`;
  let fh: FileHandle | undefined;
  try {
    await fsp.mkdir(path.dirname(finalPath), { recursive: true });
    const members = await statMembers(planned);
    fh = await fsp.open(partialPath, 'wx', 0o644);
    const written = await writeMembers(fh, members, level, concurrency, options.onProgress);
    const bytes = await writeCentralDirectory(fh, members, written);
    await fh.close();
    fh = undefined;
    const sha256 = await hashFile(partialPath);
    await fsp.rename(partialPath, finalPath);
    return {
      path: finalPath,
      bytes,
      unzippedBytes: members.reduce((sum, m) => sum + m.size, 0),
      sha256,
      entries: members.length,
    };
  } catch (error) {
    await fh?.close().catch(() => undefined);
    await fsp.rm(partialPath, { force: true }).catch(() => undefined);
    const reason = error instanceof Error ? error.message : String(error);
    throw new Error(`could not write ${finalPath}: ${reason}`, { cause: error });
  }
}

/**
 * Twice the cores, because a thread that finishes a chunk idles until the main thread hands it
 * the next: on 2 cores the torch tree took 7.9 s with 2 in flight and 7.0 s with 4 (13.2 s of
 * CPU). More than the threadpool holds would only queue, and delay file reads behind them.
 */
function defaultConcurrency(): number {
  const threadpool = Number(process.env.UV_THREADPOOL_SIZE) || 4;
  return Math.max(1, Math.min(os.availableParallelism() * 2, threadpool));
}

/** Validates names and sorts by their UTF-8 bytes, the order other tools and hashes agree on. */
function planMembers(entries: ZipEntry[]): Member[] {
  const members = entries.map((entry): Member => {
    assertSafeName(entry.name);
    assert.ok(entry.source && ('path' in entry.source || 'data' in entry.source), `zip entry ${entry.name} has no source`);
    if ('path' in entry.source) {
      const { start = 0, end = Number.MAX_SAFE_INTEGER } = entry.source;
      assert.ok(
        Number.isSafeInteger(start) && Number.isSafeInteger(end) && start >= 0 && start <= end,
        `zip entry ${entry.name} has an invalid byte range [${start}, ${end})`,
      );
    }
    return {
      name: entry.name,
      nameBytes: Buffer.from(entry.name, 'utf8'),
      source: entry.source,
      sourceOffset: 0,
      size: 'data' in entry.source ? entry.source.data.length : -1,
      mode: entry.executable ? MODE_EXECUTABLE : MODE_FILE,
      compress: entry.compress ?? true,
      chunks: 0,
      zip64Local: false,
      method: METHOD_STORED,
      offset: 0,
      crc: 0,
      compressedSize: 0,
    };
  });
  members.sort((a, b) => Buffer.compare(a.nameBytes, b.nameBytes));
  for (let i = 1; i < members.length; i++) {
    assert.ok(members[i - 1].name !== members[i].name, `duplicate zip entry name: ${members[i].name}`);
  }
  return members;
}

function assertSafeName(name: string): void {
  assert.ok(typeof name === 'string' && name.length > 0, 'zip entry name must be a non-empty string');
  assert.ok(!name.startsWith('/') && !/^[A-Za-z]:/.test(name), `zip entry name must be relative: ${name}`);
  assert.ok(!name.includes('\\') && !name.includes('\0'), `zip entry name must be a posix path: ${JSON.stringify(name)}`);
  const segments = name.split('/');
  assert.ok(!segments.includes('..'), `zip entry name must not contain '..': ${name}`);
  assert.ok(
    segments.every((s) => s !== '' && s !== '.'),
    `zip entry name must be a normalised file path (no empty or '.' segments, no trailing '/'): ${name}`,
  );
  assert.ok(Buffer.byteLength(name, 'utf8') <= U16_MAX, `zip entry name is too long: ${name.slice(0, 80)}...`);
}

async function statMembers(members: Member[]): Promise<Member[]> {
  await forEachLimit(members, 32, async (m) => {
    if ('path' in m.source) {
      const stat = await fsp.stat(m.source.path);
      if (!stat.isFile()) throw new Error(`${m.source.path} (zip entry ${m.name}) is not a regular file`);
      const { start = 0, end = stat.size } = m.source;
      if (end > stat.size) {
        throw new Error(`${m.source.path} (zip entry ${m.name}) has ${stat.size} bytes, fewer than the ${end} asked for`);
      }
      m.sourceOffset = start;
      m.size = end - start;
    }
    m.chunks = Math.max(1, Math.ceil(m.size / CHUNK_SIZE));
    m.method = m.compress && m.size > 0 ? METHOD_DEFLATED : METHOD_STORED;
    m.zip64Local = worstCaseCompressedSize(m) >= U32_MAX || m.size >= U32_MAX;
  });
  return members;
}

/** zlib's deflateBound plus a sync-flush marker per chunk; stored members never grow. */
function worstCaseCompressedSize(m: Member): number {
  if (m.method === METHOD_STORED) return m.size;
  const n = m.size;
  return n + Math.floor(n / 4096) + Math.floor(n / 16384) + Math.floor(n / 33554432) + 13 + m.chunks * 16;
}

/** Returns the offset where the central directory starts. */
async function writeMembers(
  fh: FileHandle,
  members: Member[],
  level: number,
  concurrency: number,
  onProgress: WriteZipOptions['onProgress'],
): Promise<number> {
  const totalBytes = members.reduce((sum, m) => sum + m.size, 0);
  const slots = new Semaphore(concurrency);
  const windowSize = concurrency * WINDOW_PER_SLOT;
  const queue: Promise<Piece>[] = [];
  let position = 0;
  let doneBytes = 0;

  // Small members are gathered into one write: a threadpool round trip for each would make the
  // writer, not deflate, the limit on trees of many small files.
  let pending: Buffer[] = [];
  let pendingBytes = 0;
  const flush = async () => {
    if (pendingBytes === 0) return;
    const buffers = pending;
    const at = position;
    pending = [];
    position += pendingBytes;
    pendingBytes = 0;
    await writeAll(fh, buffers, at);
  };
  const append = (buffer: Buffer) => {
    pending.push(buffer);
    pendingBytes += buffer.length;
  };

  const writeNext = async () => {
    const piece = await (queue.shift() as Promise<Piece>);
    const m = piece.member;
    const last = piece.chunk === m.chunks - 1;
    m.crc = zlib.crc32(piece.raw, m.crc);
    if (m.chunks === 1 && m.method === METHOD_DEFLATED && piece.out.length >= piece.raw.length) {
      // Incompressible: storing is smaller and cheaper to read back.
      m.method = METHOD_STORED;
      piece.out = piece.raw;
    }
    m.compressedSize += piece.out.length;
    if (piece.chunk === 0) {
      m.offset = position + pendingBytes;
      append(localHeader(m, last));
    }
    append(piece.out);
    if (pendingBytes >= WRITE_BATCH) await flush();
    if (last && m.chunks > 1) {
      // The placeholder header must be on disk before it is overwritten.
      await flush();
      await writeAll(fh, [localHeader(m, true)], m.offset);
    }
    doneBytes += piece.raw.length;
    onProgress?.(doneBytes, totalBytes);
  };

  try {
    for (const m of members) {
      for (let chunk = 0; chunk < m.chunks; chunk++) {
        if (queue.length >= windowSize) await writeNext();
        const job = runChunk(m, chunk, level, slots);
        // Rejections are observed when the writer reaches the chunk; until then they must not
        // count as unhandled.
        job.catch(() => undefined);
        queue.push(job);
      }
    }
    while (queue.length > 0) await writeNext();
    await flush();
  } catch (error) {
    // Let in-flight reads close their files before the caller removes the partial zip.
    await Promise.allSettled(queue);
    throw error;
  }
  return position;
}

async function runChunk(m: Member, chunk: number, level: number, slots: Semaphore): Promise<Piece> {
  const start = chunk * CHUNK_SIZE;
  const end = Math.min(m.size, start + CHUNK_SIZE);
  const deflated = m.method === METHOD_DEFLATED;
  const dictionaryLength = deflated ? Math.min(DICTIONARY_SIZE, start) : 0;
  const buffer = await readRange(m, start - dictionaryLength, end);
  const raw = buffer.subarray(dictionaryLength);
  if (!deflated) return { member: m, chunk, raw, out: raw };
  const last = chunk === m.chunks - 1;
  const deflateOptions: zlib.ZlibOptions = {
    level,
    dictionary: dictionaryLength > 0 ? buffer.subarray(0, dictionaryLength) : undefined,
    finishFlush: last ? zlib.constants.Z_FINISH : zlib.constants.Z_SYNC_FLUSH,
    // Room for the whole output: each 16 KiB default chunk is a threadpool round trip that
    // leaves the thread idle while the main thread queues the next, which cost a quarter of
    // the throughput when measured.
    chunkSize: Math.max(zlib.constants.Z_MIN_CHUNK, raw.length + (raw.length >> 10) + 64),
  };
  if (raw.length <= SYNC_DEFLATE_MAX) {
    // Setting up an async zlib stream costs more than deflating a small file: measured 140 µs
    // against 30 µs for a 10-byte file, so small members, the most numerous, are done inline.
    return { member: m, chunk, raw, out: zlib.deflateRawSync(raw, deflateOptions) };
  }
  await slots.acquire();
  try {
    return { member: m, chunk, raw, out: await deflateRaw(raw, deflateOptions) };
  } finally {
    slots.release();
  }
}

async function readRange(m: Member, start: number, end: number): Promise<Buffer> {
  if ('data' in m.source) return m.source.data.subarray(start, end);
  const length = end - start;
  const buffer = Buffer.allocUnsafe(length);
  const fh = await fsp.open(m.source.path, 'r');
  try {
    let done = 0;
    while (done < length) {
      const { bytesRead } = await fh.read(buffer, done, length - done, m.sourceOffset + start + done);
      if (bytesRead === 0) {
        throw new Error(`${m.source.path} (zip entry ${m.name}) shrank while being zipped`);
      }
      done += bytesRead;
    }
  } finally {
    await fh.close();
  }
  return buffer;
}

async function writeAll(fh: FileHandle, buffers: Buffer[], position: number): Promise<number> {
  let total = 0;
  let pending = buffers.filter((b) => b.length > 0);
  while (pending.length > 0) {
    const { bytesWritten } = await fh.writev(pending, position + total);
    total += bytesWritten;
    let skip = bytesWritten;
    const rest: Buffer[] = [];
    for (const b of pending) {
      if (skip >= b.length) {
        skip -= b.length;
      } else {
        rest.push(skip > 0 ? b.subarray(skip) : b);
        skip = 0;
      }
    }
    pending = rest;
  }
  return total;
}

/**
 * Before the last chunk is written the CRC and sizes are zero and get patched in afterwards, so
 * no data descriptors are needed: every reader, streaming ones too, finds sizes in the header.
 */
function localHeader(m: Member, final: boolean): Buffer {
  assert.ok(m.zip64Local || m.compressedSize < U32_MAX, `zip entry ${m.name} outgrew its zip64 estimate`);
  const extraLength = m.zip64Local ? 20 : 0;
  const header = Buffer.alloc(30 + m.nameBytes.length + extraLength);
  header.writeUInt32LE(SIG_LOCAL, 0);
  header.writeUInt16LE(m.zip64Local ? VERSION_ZIP64 : VERSION_DEFAULT, 4);
  header.writeUInt16LE(flags(m), 6);
  header.writeUInt16LE(m.method, 8);
  header.writeUInt16LE(DOS_TIME, 10);
  header.writeUInt16LE(DOS_DATE, 12);
  header.writeUInt32LE(final ? m.crc >>> 0 : 0, 14);
  header.writeUInt32LE(m.zip64Local ? U32_MAX : final ? m.compressedSize : 0, 18);
  header.writeUInt32LE(m.zip64Local ? U32_MAX : final ? m.size : 0, 22);
  header.writeUInt16LE(m.nameBytes.length, 26);
  header.writeUInt16LE(extraLength, 28);
  m.nameBytes.copy(header, 30);
  if (m.zip64Local) {
    const at = 30 + m.nameBytes.length;
    header.writeUInt16LE(ZIP64_EXTRA_ID, at);
    header.writeUInt16LE(16, at + 2);
    writeU64(header, final ? m.size : 0, at + 4);
    writeU64(header, final ? m.compressedSize : 0, at + 12);
  }
  return header;
}

function flags(m: Member): number {
  return m.nameBytes.length !== m.name.length ? FLAG_UTF8 : 0;
}

function centralHeader(m: Member): Buffer {
  // Sizes go to the zip64 field when the local header has one, so both headers agree.
  const bigSizes = m.zip64Local || m.size >= U32_MAX || m.compressedSize >= U32_MAX;
  const bigOffset = m.offset >= U32_MAX;
  const extraLength = bigSizes || bigOffset ? 4 + (bigSizes ? 16 : 0) + (bigOffset ? 8 : 0) : 0;
  const version = bigSizes || bigOffset ? VERSION_ZIP64 : VERSION_DEFAULT;
  const header = Buffer.alloc(46 + m.nameBytes.length + extraLength);
  header.writeUInt32LE(SIG_CENTRAL, 0);
  header.writeUInt16LE(MADE_BY_UNIX | version, 4);
  header.writeUInt16LE(version, 6);
  header.writeUInt16LE(flags(m), 8);
  header.writeUInt16LE(m.method, 10);
  header.writeUInt16LE(DOS_TIME, 12);
  header.writeUInt16LE(DOS_DATE, 14);
  header.writeUInt32LE(m.crc >>> 0, 16);
  header.writeUInt32LE(bigSizes ? U32_MAX : m.compressedSize, 20);
  header.writeUInt32LE(bigSizes ? U32_MAX : m.size, 24);
  header.writeUInt16LE(m.nameBytes.length, 28);
  header.writeUInt16LE(extraLength, 30);
  header.writeUInt16LE(0, 32); // comment
  header.writeUInt16LE(0, 34); // disk
  header.writeUInt16LE(0, 36); // internal attributes
  header.writeUInt32LE((m.mode << 16) >>> 0, 38);
  header.writeUInt32LE(bigOffset ? U32_MAX : m.offset, 42);
  m.nameBytes.copy(header, 46);
  if (extraLength > 0) {
    let at = 46 + m.nameBytes.length;
    header.writeUInt16LE(ZIP64_EXTRA_ID, at);
    header.writeUInt16LE(extraLength - 4, at + 2);
    at += 4;
    if (bigSizes) {
      writeU64(header, m.size, at);
      writeU64(header, m.compressedSize, at + 8);
      at += 16;
    }
    if (bigOffset) writeU64(header, m.offset, at);
  }
  return header;
}

/** Returns the size of the whole zip. */
async function writeCentralDirectory(fh: FileHandle, members: Member[], start: number): Promise<number> {
  const buffers = members.map(centralHeader);
  const size = buffers.reduce((sum, b) => sum + b.length, 0);
  const zip64 = members.length >= U16_MAX || size >= U32_MAX || start >= U32_MAX;
  if (zip64) {
    const record = Buffer.alloc(56);
    record.writeUInt32LE(SIG_ZIP64_EOCD, 0);
    writeU64(record, 44, 4);
    record.writeUInt16LE(MADE_BY_UNIX | VERSION_ZIP64, 12);
    record.writeUInt16LE(VERSION_ZIP64, 14);
    record.writeUInt32LE(0, 16);
    record.writeUInt32LE(0, 20);
    writeU64(record, members.length, 24);
    writeU64(record, members.length, 32);
    writeU64(record, size, 40);
    writeU64(record, start, 48);
    const locator = Buffer.alloc(20);
    locator.writeUInt32LE(SIG_ZIP64_LOCATOR, 0);
    locator.writeUInt32LE(0, 4);
    writeU64(locator, start + size, 8);
    locator.writeUInt32LE(1, 16);
    buffers.push(record, locator);
  }
  const end = Buffer.alloc(22);
  end.writeUInt32LE(SIG_EOCD, 0);
  // With a zip64 record every field points there, as Go and Info-ZIP do; some readers only look
  // for the zip64 record when they see these markers.
  end.writeUInt16LE(zip64 ? U16_MAX : members.length, 8);
  end.writeUInt16LE(zip64 ? U16_MAX : members.length, 10);
  end.writeUInt32LE(zip64 ? U32_MAX : size, 12);
  end.writeUInt32LE(zip64 ? U32_MAX : start, 16);
  buffers.push(end);
  return start + (await writeAll(fh, buffers, start));
}

function writeU64(buffer: Buffer, value: number, at: number): void {
  buffer.writeBigUInt64LE(BigInt(value), at);
}

/**
 * Read back rather than hashed while writing: a large member's header is patched after its data,
 * so the bytes are not final in order. It costs about 0.1 s for the torch layer.
 */
async function hashFile(file: string): Promise<string> {
  const hash = createHash('sha256');
  for await (const chunk of createReadStream(file, { highWaterMark: 1 << 20 })) hash.update(chunk as Buffer);
  return hash.digest('hex');
}

class Semaphore {
  private free: number;
  private readonly waiting: (() => void)[] = [];

  constructor(count: number) {
    this.free = count;
  }

  acquire(): Promise<void> {
    if (this.free > 0) {
      this.free--;
      return Promise.resolve();
    }
    return new Promise((resolve) => this.waiting.push(resolve));
  }

  release(): void {
    const next = this.waiting.shift();
    if (next) next();
    else this.free++;
  }
}

async function forEachLimit<T>(items: T[], limit: number, fn: (item: T) => Promise<void>): Promise<void> {
  let next = 0;
  let failed = false;
  const worker = async () => {
    while (!failed && next < items.length) {
      const item = items[next++];
      try {
        await fn(item);
      } catch (error) {
        failed = true;
        throw error;
      }
    }
  };
  const results = await Promise.allSettled(Array.from({ length: Math.min(limit, items.length) }, worker));
  const rejected = results.find((r): r is PromiseRejectedResult => r.status === 'rejected');
  if (rejected) throw rejected.reason;
}

// ---------------------------------------------------------------------------------------------
// Reading
//
// yauzl parses the central directory, through a reader that serves its many small reads from
// one block (yauzl's own reader makes two threadpool round trips per entry: 4 s for 66,000
// entries). Member data is read here with large buffers and a large inflate output, which
// extracts the torch tree faster than Info-ZIP's unzip, where yauzl's 16 KiB streams took twice
// as long. CRC and size are checked for every member, since yauzl checks sizes only.

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

const S_IFMT = 0o170000;
const S_IFDIR = 0o040000;
const S_IFLNK = 0o120000;
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
