// The zip format as this plugin writes it: fixed dates and modes, no extra fields but zip64's.
// Shared by the writer (zip/write.ts) and the reader (zip/read.ts).
import assert from 'node:assert';

// 1980-01-01 00:00:00, the earliest DOS date: what archiver writes for the framework's Date(0).
const DOS_TIME = 0;
const DOS_DATE = (1 << 5) | 1;
export const MODE_FILE = 0o100644;
export const MODE_EXECUTABLE = 0o100755;
export const METHOD_STORED = 0;
export const METHOD_DEFLATED = 8;
const FLAG_UTF8 = 0x0800;
const VERSION_DEFAULT = 20;
const VERSION_ZIP64 = 45;
const MADE_BY_UNIX = 3 << 8;
export const U16_MAX = 0xffff;
export const U32_MAX = 0xffffffff;

export const SIG_LOCAL = 0x04034b50;
const SIG_CENTRAL = 0x02014b50;
const SIG_EOCD = 0x06054b50;
const SIG_ZIP64_EOCD = 0x06064b50;
const SIG_ZIP64_LOCATOR = 0x07064b50;
const ZIP64_EXTRA_ID = 0x0001;
export const S_IFMT = 0o170000;
export const S_IFDIR = 0o040000;
export const S_IFLNK = 0o120000;

/** What the headers of one member say. */
export interface HeaderFields {
  name: string;
  nameBytes: Buffer;
  mode: number;
  /**
   * Decided from the uncompressed size before anything is written, since the local header is
   * written before its sizes are known and must keep its length when patched.
   */
  zip64Local: boolean;
  method: number;
  offset: number;
  crc: number;
  compressedSize: number;
  size: number;
}

/**
 * Before the last chunk is written the CRC and sizes are zero and get patched in afterwards, so
 * no data descriptors are needed: every reader, streaming ones too, finds sizes in the header.
 */
export function localHeader(m: HeaderFields, final: boolean): Buffer {
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

function flags(m: HeaderFields): number {
  return m.nameBytes.length !== m.name.length ? FLAG_UTF8 : 0;
}

export function centralHeader(m: HeaderFields): Buffer {
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


/**
 * The end of central directory record for `count` entries whose directory of `size` bytes starts
 * at `start`, preceded by the zip64 record and locator when a field does not fit.
 */
export function endOfCentralDirectory(count: number, size: number, start: number): Buffer[] {
  const buffers: Buffer[] = [];
  const zip64 = count >= U16_MAX || size >= U32_MAX || start >= U32_MAX;
  if (zip64) {
    const record = Buffer.alloc(56);
    record.writeUInt32LE(SIG_ZIP64_EOCD, 0);
    writeU64(record, 44, 4);
    record.writeUInt16LE(MADE_BY_UNIX | VERSION_ZIP64, 12);
    record.writeUInt16LE(VERSION_ZIP64, 14);
    record.writeUInt32LE(0, 16);
    record.writeUInt32LE(0, 20);
    writeU64(record, count, 24);
    writeU64(record, count, 32);
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
  end.writeUInt16LE(zip64 ? U16_MAX : count, 8);
  end.writeUInt16LE(zip64 ? U16_MAX : count, 10);
  end.writeUInt32LE(zip64 ? U32_MAX : size, 12);
  end.writeUInt32LE(zip64 ? U32_MAX : start, 16);
  buffers.push(end);
  return buffers;
}

function writeU64(buffer: Buffer, value: number, at: number): void {
  buffer.writeBigUInt64LE(BigInt(value), at);
}
