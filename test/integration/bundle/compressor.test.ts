import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { Compressor, openCompressor } from '../../../lib/bundle/compressor';
import { PackedUnit, depsManifest, manifestText, writeArchive } from '../../../lib/bundle/deps-archive';
import { movedLibraries, packUnits } from '../../../lib/bundle/layer-plan';
import { resolveConfig } from '../../../lib/config/resolve-config';
import { TreeDecoder } from '../../../lib/resolve/decoder';
import { openCache } from '../../../lib/util/cache';
import { listTree } from '../../../lib/util/file-tree';
import { BUILD_SCRIPTS_DIR, SHIM_DIR } from '../../../lib/util/plugin-paths';
import { silentReporter } from '../../../lib/util/reporter';
import { TEST_CACHE } from '../../support/sls';
import { isolatedRunner } from '../../support/torch-models';
import { WheelIndex, prepareFixtureWheels, startWheelIndex } from '../../support/wheel-index';

const ZSTD: TreeDecoder = { codec: 'zstd', module: 'zstandard', version: '0.25.0', entries: ['zstandard'], added: true };
const MiB = 1024 * 1024;

/** A small tree: a library of several frames, a package of many small files, a package of one. */
function makeTree(dir: string): void {
  const write = (rel: string, data: Buffer | string, mode = 0o644) => {
    fs.mkdirSync(path.dirname(path.join(dir, rel)), { recursive: true });
    fs.writeFileSync(path.join(dir, rel), data, { mode });
  };
  write('big/lib/libbig.so', Buffer.concat([randomBytes(3 * MiB), Buffer.alloc(14 * MiB, 7)]), 0o755);
  for (let i = 0; i < 200; i++) write(`pkg/m${i}.py`, `VALUE_${i} = ${'"x" * '.repeat(3)}${i}\n`.repeat(50));
  write('pkg/empty.txt', '');
  write('single.py', 'ONE = 1\n');
}

describe('the compressor and the unpacker, back to back (host zstandard, real python3.11)', () => {
  let index: WheelIndex;
  let work: string;
  const treeDir = () => path.join(work, 'tree');

  before(async () => {
    const wheels = await prepareFixtureWheels();
    index = await startWheelIndex({ torchWheels: [wheels.torchWheelRetagged], otherWheels: wheels.dependencyWheels });
    work = fs.mkdtempSync(path.join(os.tmpdir(), 'compressor-test-'));
    makeTree(treeDir());
  });

  after(async () => {
    await index?.close();
    fs.rmSync(work, { recursive: true, force: true });
  });

  const compressor = (decoder: TreeDecoder) => {
    fs.mkdirSync(path.join(work, 'service'), { recursive: true });
    fs.writeFileSync(path.join(work, 'service', 'model.pt'), '');
    const config = resolveConfig(
      { model: 'model.pt', python: 'python3.11', torchIndexUrl: index.torchUrl, indexUrl: index.simpleUrl, cacheDir: TEST_CACHE, requirements: false },
      path.join(work, 'service'),
    );
    return openCompressor({ config, decoder, cache: openCache(TEST_CACHE), runner: isolatedRunner, reporter: silentReporter });
  };

  /** Archive and deps.json in an /opt of their own, unpacked by the shim's unpacker into a fresh /tmp. */
  function unpackWithShim(packed: PackedUnit[], codec: Compressor['codec'], zstandardSite: string | null, label: string): string {
    const opt = path.join(work, label, 'opt');
    const tmp = path.join(work, label, 'tmp');
    fs.mkdirSync(path.join(opt, 'serverless-torch'), { recursive: true });
    fs.mkdirSync(tmp);
    const manifest = depsManifest({ key: '0123456789abcdef', codec, packed, libraries: movedLibraries(packed) });
    fs.writeFileSync(path.join(opt, 'serverless-torch', 'deps.json'), manifestText(manifest));
    writeArchive(path.join(opt, 'serverless-torch', manifest.archive), packed);
    const script = `import sys; sys.path[:0] = ${JSON.stringify([path.dirname(SHIM_DIR), ...(zstandardSite ? [zstandardSite] : [])])}
from serverless_torch import unpack
print(unpack.unpack(${JSON.stringify(opt)}, ${JSON.stringify(tmp)}))`;
    return execFileSync('python3.11', ['-I', '-S', '-c', script], { encoding: 'utf8', env: { PATH: process.env.PATH } }).trim();
  }

  function assertSameFiles(unpacked: string, packed: PackedUnit[]): void {
    for (const file of packed.flatMap((unit) => unit.unit.files)) {
      assert.deepEqual(fs.readFileSync(path.join(unpacked, file.path)), fs.readFileSync(path.join(treeDir(), file.path)), file.path);
      assert.equal((fs.statSync(path.join(unpacked, file.path)).mode & 0o111) !== 0, file.executable, file.path);
    }
  }

  it('compresses units measured in separate batches into files of their own, which the shim unpacks byte-exact', async () => {
    const zstd = await compressor(ZSTD);
    assert.equal(zstd.codec, 'zstd');
    assert.ok(zstd.host?.sitePath, 'the host zstandard lives in the plugin cache');
    const { units } = packUnits(listTree(treeDir()), []);
    assert.deepEqual(units.map((unit) => unit.name), ['big/lib/libbig.so', 'pkg', 'single.py']);
    const dir = path.join(work, 'zstd3');
    const packed = [...(await zstd.pack(units.slice(0, 1), 3, dir, treeDir())), ...(await zstd.pack(units.slice(1), 3, dir, treeDir()))];
    assert.equal(new Set(packed.map((unit) => unit.path)).size, 3);
    for (const unit of packed) {
      assert.equal(fs.statSync(unit.path).size, unit.bytes, unit.unit.name);
      assert.equal(unit.frames.reduce((sum, [compressed]) => sum + compressed, 0), unit.bytes);
      assert.equal(unit.frames.reduce((sum, [, size]) => sum + size, 0), unit.unit.bytes);
    }
    assert.deepEqual(packed[0].frames.map(([, size]) => size), [8 * MiB, 8 * MiB, MiB], '8 MiB frames, the last one shorter');
    assert.ok(packed[0].bytes < 4 * MiB, `${packed[0].bytes} bytes: the zeros compress`);
    assertSameFiles(unpackWithShim(packed, 'zstd', zstd.host!.sitePath, 'zstd'), packed);
  });

  it('gives the same bytes for the same files, whatever the number of threads', async () => {
    const files = listTree(treeDir()).map((file) => [path.join(treeDir(), file.path), file.size]);
    const site = (await compressor(ZSTD)).host!.sitePath;
    const digests = [1, 2, 4].map((threads) => {
      const dir = path.join(work, `threads-${threads}`);
      fs.mkdirSync(dir);
      const job = { sysPath: [site], codec: 'zstd', level: 3, frameBytes: MiB, threads, units: [{ out: path.join(dir, 'unit'), files }] };
      fs.writeFileSync(path.join(dir, 'job.json'), JSON.stringify(job));
      execFileSync('python3.11', ['-I', '-S', path.join(BUILD_SCRIPTS_DIR, 'compress.py'), path.join(dir, 'job.json'), path.join(dir, 'result.json')], { stdio: 'ignore' });
      return fs.readFileSync(path.join(dir, 'unit')).toString('base64');
    });
    assert.equal(digests[1], digests[0]);
    assert.equal(digests[2], digests[0]);
  });

  it('writes zlib frames the shim unpacks with the standard library alone, where the target has no zstd decoder', async () => {
    const zlib = await compressor({ codec: 'zlib', reason: 'the index has no zstandard wheel for python3.11 x86_64' });
    assert.equal(zlib.codec, 'zlib');
    assert.equal(zlib.fallback, 'the index has no zstandard wheel for python3.11 x86_64');
    const { units } = packUnits(listTree(treeDir()), []);
    const packed = await zlib.pack(units, 6, path.join(work, 'zlib6'), treeDir());
    assertSameFiles(unpackWithShim(packed, 'zlib', null, 'zlib'), packed);
  });
});
