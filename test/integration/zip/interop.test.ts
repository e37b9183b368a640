import assert from 'node:assert/strict';
import { execFileSync, spawnSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { extractZip, readZipIndex } from '../../../lib/zip/read';
import { sha256 } from '../../../lib/util/hash';
import { writeZip, type ZipEntry } from '../../../lib/zip/write';
import { contentOf, mixedBytes, sampleEntries as sampleSet, sourceFile } from '../../support/zip-samples';


function python(script: string, ...args: string[]): string {
  return execFileSync('python3', ['-c', script, ...args], { encoding: 'utf8', maxBuffer: 256 << 20 });
}

interface PythonEntry {
  name: string;
  sha256: string;
  mode: number;
  date: number[];
  system: number;
  extra: string;
  method: number;
  flags: number;
}

// zipfile.read checks each member's CRC, testzip checks them all again.
const READ_ALL = `
import hashlib, json, sys, zipfile
out = []
with zipfile.ZipFile(sys.argv[1]) as z:
    for i in z.infolist():
        out.append(dict(name=i.filename, sha256=hashlib.sha256(z.read(i)).hexdigest(),
                        mode=i.external_attr >> 16, date=list(i.date_time), system=i.create_system,
                        extra=i.extra.hex(), method=i.compress_type, flags=i.flag_bits))
    bad = z.testzip()
print(json.dumps(dict(entries=out, bad=bad)))
`;

function pythonRead(zipPath: string): PythonEntry[] {
  const result = JSON.parse(python(READ_ALL, zipPath)) as { entries: PythonEntry[]; bad: string | null };
  assert.equal(result.bad, null);
  return result.entries;
}

describe('zip files read and written by other tools (python3 zipfile, unzip)', function () {
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

  it("python's zipfile reads every entry back byte-exact", async function () {
    const entries = sampleEntries();
    const result = await writeZip(path.join(dir, 'py.zip'), entries);
    const read = pythonRead(result.path);
    const expected = [...entries].sort((x, y) => Buffer.compare(Buffer.from(x.name), Buffer.from(y.name)));
    assert.deepEqual(
      read.map((e) => e.name),
      expected.map((e) => e.name),
    );
    for (const [i, e] of expected.entries()) {
      const got = read[i];
      assert.equal(got.sha256, sha256(contentOf(e)), e.name);
      assert.equal(got.mode, e.executable ? 0o100755 : 0o100644, e.name);
      assert.deepEqual(got.date, [1980, 1, 1, 0, 0, 0], e.name);
      assert.equal(got.system, 3, `${e.name} is made by Unix`);
      assert.equal(got.extra, '', `${e.name} has no extra fields`);
      assert.equal(got.flags & 0x8, 0, `${e.name} has no data descriptor`);
    }
    const method = (name: string) => read.find((e) => e.name === name)?.method;
    assert.equal(method('model.pt'), 0, 'compress: false is stored');
    assert.equal(method('noise.bin'), 0, 'incompressible data is stored');
    assert.equal(method('empty.txt'), 0);
    assert.equal(method('torch/lib/libbig.so'), 8);
    assert.equal(method('torch/__init__.py'), 8);
    // Info-ZIP's unzip, as a second reader (.ci/run installs it).
    const test = spawnSync('unzip', ['-t', result.path], { encoding: 'utf8' });
    assert.equal(test.status, 0, `${test.error ?? ''}${test.stdout}${test.stderr}`);
    assert.match(test.stdout, /No errors detected/);
  });

  it('extractZip takes directory entries and executable bits from zips other tools wrote', async function () {
    const zipPath = path.join(dir, 'py-made.zip');
    python(
      `
import sys, zipfile
with zipfile.ZipFile(sys.argv[1], 'w', zipfile.ZIP_DEFLATED) as z:
    d = zipfile.ZipInfo('pkg/sub/')
    d.external_attr = (0o40755 << 16) | 0x10
    z.writestr(d, b'')
    x = zipfile.ZipInfo('pkg/run')
    x.external_attr = 0o100700 << 16
    z.writestr(x, b'#!/bin/sh\\n')
    z.writestr('pkg/plain.txt', b'plain')
`,
      zipPath,
    );
    const out = path.join(dir, 'out');
    await extractZip(zipPath, out);
    assert.ok(fs.statSync(path.join(out, 'pkg', 'sub')).isDirectory());
    assert.equal(fs.statSync(path.join(out, 'pkg', 'run')).mode & 0o777, 0o755);
    assert.equal(fs.readFileSync(path.join(out, 'pkg', 'plain.txt'), 'utf8'), 'plain');
    const index = await readZipIndex(zipPath);
    assert.equal(index.find((e) => e.name === 'pkg/sub/')?.isDirectory, true);
  });

  it('python reads an empty zip', async function () {
    const result = await writeZip(path.join(dir, 'empty.zip'), []);
    assert.deepEqual(pythonRead(result.path), []);
  });

  it('extractZip refuses ../ entries', async function () {
    const hostile = `
import sys, zipfile
with zipfile.ZipFile(sys.argv[1], 'w') as z:
    z.writestr('fine.txt', 'harmless')
    z.writestr(zipfile.ZipInfo(sys.argv[2]), 'evil')
`;
    for (const name of ['../evil.txt', 'a/../../evil.txt', '/tmp/evil-absolute.txt', '..\\evil.txt']) {
      const zipPath = path.join(dir, 'hostile.zip');
      python(hostile, zipPath, name);
      const out = path.join(dir, 'nested', 'out');
      await assert.rejects(extractZip(zipPath, out), { code: 'UNSAFE_ZIP_ENTRY' }, name);
      assert.ok(!fs.existsSync(path.join(dir, 'nested')), `${name}: nothing written, not even fine.txt`);
      assert.ok(!fs.existsSync(path.join(dir, 'evil.txt')));
      assert.ok(!fs.existsSync('/tmp/evil-absolute.txt'));
      // Listing such a zip is harmless and shows the name as it is.
      const listed = await readZipIndex(zipPath);
      assert.equal(listed.length, 2);
    }
  });

  it('extractZip refuses symlink entries', async function () {
    const zipPath = path.join(dir, 'link.zip');
    python(
      `
import sys, zipfile
with zipfile.ZipFile(sys.argv[1], 'w') as z:
    z.writestr('fine.txt', 'harmless')
    link = zipfile.ZipInfo('lib')
    link.create_system = 3
    link.external_attr = 0o120777 << 16
    z.writestr(link, '/etc')
`,
      zipPath,
    );
    const index = await readZipIndex(zipPath);
    assert.equal(index.find((e) => e.name === 'lib')?.isSymlink, true);
    const out = path.join(dir, 'out');
    await assert.rejects(extractZip(zipPath, out), { code: 'UNSAFE_ZIP_ENTRY', message: /symlink/ });
    assert.ok(!fs.existsSync(out));
  });

  it('python reads a 50 MB member written in parallel chunks byte-exact', async function () {
    const content = mixedBytes(50 * 1024 * 1024 + 7);
    const source = file('libtorch_big.so', content, 0o755);
    const result = await writeZip(path.join(dir, 'big.zip'), [
      { name: 'lib/libtorch_big.so', source: { path: source }, executable: true },
      { name: 'lib/small.txt', source: { data: Buffer.from('small') } },
    ]);
    const read = pythonRead(result.path);
    assert.equal(read.find((e) => e.name === 'lib/libtorch_big.so')?.sha256, sha256(content));
  });

  it('python reads the zip64 end record of more than 65535 entries', async function () {
    const count = 66_000;
    const entries: ZipEntry[] = [];
    for (let i = 0; i < count; i++) {
      entries.push({ name: `m/${String(i).padStart(5, '0')}.py`, source: { data: Buffer.from(`x = ${i}\n`) } });
    }
    const result = await writeZip(path.join(dir, 'many.zip'), entries);
    {
      const summary = python(
        `
import sys, zipfile
with zipfile.ZipFile(sys.argv[1]) as z:
    print(len(z.infolist()), z.testzip(), z.read('m/12345.py').decode().strip())
`,
        result.path,
      );
      assert.equal(summary.trim(), `${count} None x = 12345`);
    }
  });

});
