import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { extractZip, readZipEntry, readZipIndex } from '../../../lib/zip/read';
import { writeZip, type ZipEntry } from '../../../lib/zip/write';
import { sha256 } from '../../../lib/util/hash';
import { contentOf, mixedBytes, sampleEntries as sampleSet, sourceFile } from '../../support/zip-samples';

describe('zip', function () {
  // Some tests zip tens of megabytes or tens of thousands of entries on a 2-core machine.
  this.timeout(120_000);
  let dir: string;

  beforeEach(() => {
    dir = fs.mkdtempSync(path.join(os.tmpdir(), 'zip-test-'));
  });

  afterEach(() => {
    fs.rmSync(dir, { recursive: true, force: true });
  });

  const file = (rel: string, content: string | Buffer, mode?: number) => sourceFile(dir, rel, content, mode);
  const sampleEntries = () => sampleSet(dir);

  it('writing the same entries twice yields byte-identical zips', async function () {
    const entries = sampleEntries();
    const a = await writeZip(path.join(dir, 'a.zip'), entries);
    // Another time, order and concurrency: none of it may show in the bytes.
    await new Promise((resolve) => setTimeout(resolve, 1100));
    const b = await writeZip(path.join(dir, 'b.zip'), [...entries].reverse(), { concurrency: 1 });
    const c = await writeZip(path.join(dir, 'c.zip'), entries, { concurrency: 7 });
    assert.equal(a.sha256, b.sha256);
    assert.equal(a.sha256, c.sha256);
    assert.ok(fs.readFileSync(a.path).equals(fs.readFileSync(b.path)));
    assert.equal(a.sha256, sha256(fs.readFileSync(a.path)));
    assert.equal(a.bytes, fs.statSync(a.path).size);
    assert.equal(a.entries, entries.length);
    assert.equal(a.unzippedBytes, entries.reduce((sum, e) => sum + contentOf(e).length, 0));
  });

  it('a different level gives a different but equally valid zip', async function () {
    const entries = sampleEntries();
    const six = await writeZip(path.join(dir, 'six.zip'), entries);
    const one = await writeZip(path.join(dir, 'one.zip'), entries, { level: 1 });
    assert.notEqual(six.sha256, one.sha256);
    for (const e of entries) assert.ok((await readZipEntry(one.path, e.name)).equals(contentOf(e)));
  });

  it('entries are sorted whatever the input order', async function () {
    const names = ['b/z.txt', 'a.txt', 'B.txt', 'b/a.txt', 'a/b.txt', 'a-b.txt', 'é.txt', 'z.txt'];
    const entries = names.map((name) => ({ name, source: { data: Buffer.from(name) } }));
    const result = await writeZip(path.join(dir, 'sorted.zip'), entries);
    const listed = (await readZipIndex(result.path)).map((e) => e.name);
    const byBytes = [...names].sort((x, y) => Buffer.compare(Buffer.from(x), Buffer.from(y)));
    assert.deepEqual(listed, byBytes);
    assert.deepEqual(listed, ['B.txt', 'a-b.txt', 'a.txt', 'a/b.txt', 'b/a.txt', 'b/z.txt', 'z.txt', 'é.txt']);
  });

  it('readZipIndex reports sizes and modes', async function () {
    const entries = sampleEntries();
    const result = await writeZip(path.join(dir, 'index.zip'), entries);
    const index = await readZipIndex(result.path);
    for (const e of entries) {
      const found = index.find((i) => i.name === e.name);
      assert.ok(found, e.name);
      assert.equal(found.uncompressedSize, contentOf(e).length);
      assert.equal(found.mode, e.executable ? 0o100755 : 0o100644);
      assert.equal(found.isDirectory, false);
      assert.equal(found.isSymlink, false);
    }
    const big = index.find((i) => i.name === 'torch/lib/libbig.so');
    assert.ok(big && big.compressedSize < big.uncompressedSize * 0.8, 'the multi-chunk member is compressed');
    assert.equal(
      index.reduce((sum, i) => sum + i.uncompressedSize, 0),
      result.unzippedBytes,
    );
  });

  it('readZipEntry returns one member, and says ENOENT for a missing one', async function () {
    const entries = sampleEntries();
    const result = await writeZip(path.join(dir, 'entry.zip'), entries);
    for (const e of entries) assert.ok((await readZipEntry(result.path, e.name)).equals(contentOf(e)), e.name);
    await assert.rejects(readZipEntry(result.path, 'nope.py'), (err: NodeJS.ErrnoException) => err.code === 'ENOENT');
  });

  it('executable mode survives extraction', async function () {
    const entries = sampleEntries();
    const result = await writeZip(path.join(dir, 'x.zip'), entries);
    const out = path.join(dir, 'out');
    await extractZip(result.path, out);
    for (const e of entries) {
      const target = path.join(out, e.name);
      assert.ok(fs.readFileSync(target).equals(contentOf(e)), e.name);
      assert.equal(fs.statSync(target).mode & 0o777, e.executable ? 0o755 : 0o644, e.name);
    }
  });

  it('extractZip lays a zip over files already there, resetting their modes', async function () {
    const out = path.join(dir, 'out');
    fs.mkdirSync(path.join(out, 'bin'), { recursive: true });
    fs.writeFileSync(path.join(out, 'bin', 'tool'), 'old and longer than the new content');
    fs.chmodSync(path.join(out, 'bin', 'tool'), 0o600);
    fs.writeFileSync(path.join(out, 'other.txt'), 'kept');
    const result = await writeZip(path.join(dir, 'layer.zip'), [
      { name: 'bin/tool', source: { data: Buffer.from('new') }, executable: true },
    ]);
    await extractZip(result.path, out);
    assert.equal(fs.readFileSync(path.join(out, 'bin', 'tool'), 'utf8'), 'new');
    assert.equal(fs.statSync(path.join(out, 'bin', 'tool')).mode & 0o777, 0o755);
    assert.equal(fs.readFileSync(path.join(out, 'other.txt'), 'utf8'), 'kept');
  });

  it('a failed write leaves no file at the destination', async function () {
    const dest = path.join(dir, 'out', 'fn.zip');
    const entries: ZipEntry[] = [
      ...sampleEntries(),
      { name: 'zzz/missing.py', source: { path: path.join(dir, 'does-not-exist.py') } },
    ];
    await assert.rejects(writeZip(dest, entries), (err: Error) => {
      assert.match(err.message, /does-not-exist\.py/);
      assert.equal((err.cause as NodeJS.ErrnoException).code, 'ENOENT');
      return true;
    });
    assert.deepEqual(fs.readdirSync(path.dirname(dest)), []);
  });

  it('a source that fails halfway through the zip also leaves nothing behind', async function () {
    const dest = path.join(dir, 'fn.zip');
    fs.writeFileSync(dest, 'the previous artifact');
    const big = file('big.bin', mixedBytes(4 * 1024 * 1024));
    let calls = 0;
    const failure = new Error('stop here');
    await assert.rejects(
      writeZip(dest, [{ name: 'big.bin', source: { path: big } }], {
        onProgress: () => {
          if (++calls === 2) throw failure;
        },
      }),
      (err: Error) => err.cause === failure,
    );
    assert.deepEqual(fs.readdirSync(dir).sort(), ['fn.zip', 'src']);
    assert.equal(fs.readFileSync(dest, 'utf8'), 'the previous artifact');
  });

  it('the zip appears at the destination only once complete', async function () {
    const dest = path.join(dir, 'layer.zip');
    const seen: string[][] = [];
    const big = file('big.bin', mixedBytes(3 * 1024 * 1024));
    const result = await writeZip(dest, [{ name: 'big.bin', source: { path: big } }], {
      onProgress: () => {
        seen.push(fs.readdirSync(dir).filter((n) => n !== 'src'));
      },
    });
    assert.ok(seen.length >= 3);
    for (const names of seen) {
      assert.equal(names.length, 1);
      assert.match(names[0], new RegExp(`^layer\\.zip\\.partial-${process.pid}-[0-9a-f]+$`));
    }
    assert.deepEqual(fs.readdirSync(dir).sort(), ['layer.zip', 'src']);
    assert.equal(result.path, dest);
  });

  it('progress counts uncompressed bytes up to the total', async function () {
    const entries = sampleEntries();
    const calls: [number, number][] = [];
    const result = await writeZip(path.join(dir, 'p.zip'), entries, { onProgress: (d, t) => calls.push([d, t]) });
    assert.ok(calls.length > entries.length, 'a multi-chunk member reports each chunk');
    for (let i = 1; i < calls.length; i++) assert.ok(calls[i][0] >= calls[i - 1][0]);
    assert.deepEqual(calls[calls.length - 1], [result.unzippedBytes, result.unzippedBytes]);
  });

  it('names that are absolute, contain .. or repeat are rejected as bugs', async function () {
    const dest = path.join(dir, 'bad.zip');
    const data = { data: Buffer.from('x') };
    for (const name of ['/etc/passwd', '../up.txt', 'a/../../b', 'a\\b', 'a//b', 'dir/', '', 'C:/x']) {
      await assert.rejects(writeZip(dest, [{ name, source: data }]), { code: 'ERR_ASSERTION' }, JSON.stringify(name));
    }
    await assert.rejects(
      writeZip(dest, [
        { name: 'same.py', source: data },
        { name: 'same.py', source: data },
      ]),
      { code: 'ERR_ASSERTION', message: /duplicate/ },
    );
    assert.deepEqual(fs.readdirSync(dir), []);
  });

  it('byte ranges of one file become members that put it back together', async function () {
    const content = mixedBytes(3 * 1024 * 1024 + 555);
    const source = file('libhuge.so', content);
    const cut = [0, 1_000_000, 1_000_001, 2_500_000, content.length];
    const entries: ZipEntry[] = cut.slice(1).map((end, i) => ({
      name: `.parts/libhuge.so.${i}`,
      source: { path: source, start: cut[i], end },
    }));
    const result = await writeZip(path.join(dir, 'parts.zip'), entries);
    const parts = await Promise.all(entries.map((e) => readZipEntry(result.path, e.name)));
    assert.deepEqual(
      parts.map((p) => p.length),
      [1_000_000, 1, 1_499_999, content.length - 2_500_000],
    );
    assert.ok(Buffer.concat(parts).equals(content));
    await assert.rejects(
      writeZip(path.join(dir, 'short.zip'), [{ name: 'x', source: { path: source, start: 0, end: content.length + 1 } }]),
      /fewer than/,
    );
    await assert.rejects(
      writeZip(path.join(dir, 'short.zip'), [{ name: 'x', source: { path: source, start: 5, end: 4 } }]),
      { code: 'ERR_ASSERTION' },
    );
    assert.ok(!fs.existsSync(path.join(dir, 'short.zip')));
  });

  it('an empty entry list gives a valid empty zip', async function () {
    const result = await writeZip(path.join(dir, 'empty.zip'), []);
    assert.equal(result.bytes, 22);
    assert.deepEqual(await readZipIndex(result.path), []);
  });

  it('a corrupted member is reported, not extracted silently', async function () {
    const content = Buffer.from('print("hello")\n'.repeat(1000));
    const result = await writeZip(path.join(dir, 'c.zip'), [{ name: 'a.py', source: { data: content }, compress: false }]);
    const bytes = fs.readFileSync(result.path);
    const at = bytes.indexOf('print');
    bytes[at] = 'P'.charCodeAt(0);
    fs.writeFileSync(result.path, bytes);
    await assert.rejects(readZipEntry(result.path, 'a.py'), /CRC mismatch/);
    await assert.rejects(extractZip(result.path, path.join(dir, 'out')), /CRC mismatch/);
  });

  it('a 50 MB member round-trips', async function () {
    const content = mixedBytes(50 * 1024 * 1024 + 7);
    const source = file('libtorch_big.so', content, 0o755);
    const result = await writeZip(path.join(dir, 'big.zip'), [
      { name: 'lib/libtorch_big.so', source: { path: source }, executable: true },
      { name: 'lib/small.txt', source: { data: Buffer.from('small') } },
    ]);
    assert.ok(result.bytes < content.length * 0.8, `compressed to ${result.bytes}`);
    assert.ok((await readZipEntry(result.path, 'lib/libtorch_big.so')).equals(content));
    const out = path.join(dir, 'out');
    await extractZip(result.path, out);
    assert.equal(sha256(fs.readFileSync(path.join(out, 'lib', 'libtorch_big.so'))), sha256(content));
  });

  it('more than 65535 entries get a zip64 end record', async function () {
    const count = 66_000;
    const entries: ZipEntry[] = [];
    for (let i = 0; i < count; i++) {
      entries.push({ name: `m/${String(i).padStart(5, '0')}.py`, source: { data: Buffer.from(`x = ${i}\n`) } });
    }
    const result = await writeZip(path.join(dir, 'many.zip'), entries);
    assert.equal(result.entries, count);
    const index = await readZipIndex(result.path);
    assert.equal(index.length, count);
    assert.equal((await readZipEntry(result.path, 'm/65999.py')).toString(), 'x = 65999\n');
  });

});
