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
import { randomBytes } from 'node:crypto';
import { promises as fsp } from 'node:fs';
import type { FileHandle } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { promisify } from 'node:util';
import zlib from 'node:zlib';
import { Semaphore, forEachLimit } from '../util/concurrency';
import { sha256File } from '../util/hash';
import {
  HeaderFields,
  METHOD_DEFLATED,
  METHOD_STORED,
  MODE_EXECUTABLE,
  MODE_FILE,
  U16_MAX,
  U32_MAX,
  centralHeader,
  endOfCentralDirectory,
  localHeader,
} from './format';

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


// 1 MiB keeps a 2-core machine busy on one big member while the per-chunk overhead (a threadpool
// round trip and a 5-byte sync marker) stays negligible; see bench/zip.ts.
const CHUNK_SIZE = 1 << 20;
const DICTIONARY_SIZE = 32 * 1024;
const SYNC_DEFLATE_MAX = 8 * 1024;
const WRITE_BATCH = 1 << 20;
// Completed chunks may wait for a slow predecessor; this many per compression slot bounds memory.
const WINDOW_PER_SLOT = 4;

const deflateRaw = promisify(zlib.deflateRaw) as (input: Buffer, options: zlib.ZlibOptions) => Promise<Buffer>;

interface Member extends HeaderFields {
  source: ZipEntry['source'];
  /** Where the member's bytes start in its source file. */
  sourceOffset: number;
  size: number;
  compress: boolean;
  chunks: number;
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
    // Read back rather than hashed while writing: a large member's header is patched after its
    // data, so the bytes are not final in order. It costs about 0.1 s for the torch layer.
    const sha256 = await sha256File(partialPath);
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

/**
 * Returns the offset where the central directory starts. One function, longer than most: the
 * queue of chunks in flight, the batch of pending writes and the file position are the state of
 * one pipelined write, and split apart they would have to be handed around on every chunk.
 */
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

/** Returns the size of the whole zip. */
async function writeCentralDirectory(fh: FileHandle, members: Member[], start: number): Promise<number> {
  const buffers = members.map(centralHeader);
  const size = buffers.reduce((sum, b) => sum + b.length, 0);
  buffers.push(...endOfCentralDirectory(members.length, size, start));
  return start + (await writeAll(fh, buffers, start));
}
