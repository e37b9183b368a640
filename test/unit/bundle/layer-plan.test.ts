import assert from 'node:assert/strict';
import { Compressor, LEVELS } from '../../../lib/bundle/compressor';
import { PackUnit, PackedUnit } from '../../../lib/bundle/deps-archive';
import { planCompressed } from '../../../lib/bundle/layer-build';
import { chooseUnits, movedLibraries, packUnits, reserveForFunction } from '../../../lib/bundle/layer-plan';
import { UNZIPPED_LIMIT, ephemeralStorageNeeded } from '../../../lib/bundle/limits';
import { DependencyTree } from '../../../lib/resolve/dependency-tree';
import { TorchError } from '../../../lib/util/errors';
import { FileEntry } from '../../../lib/util/file-tree';
import { silentReporter } from '../../../lib/util/reporter';

const MiB = 1024 * 1024;
const file = (path: string, size: number): FileEntry => ({ path, size, executable: false });

// Sizes of the stripped torch 2.13 tree (python3.11 x86_64), rounded, with the zstd decoder.
const TORCH_TREE = [
  file('torch/lib/libtorch_cpu.so', 329 * MiB),
  file('torch/lib/libtorch_python.so', 21 * MiB),
  file('torch/lib/libc10.so', 1 * MiB),
  file('torch/_C.cpython-311-x86_64-linux-gnu.so', 1 * MiB),
  file('torch/nn/modules/linear.py', 58 * MiB),
  file('sympy/__init__.py', 16 * MiB),
  file('networkx/__init__.py', 4 * MiB),
  file('zstandard/backend_c.cpython-311-x86_64-linux-gnu.so', 2 * MiB),
];

/** Measures units as compressing at `ratio` would, and records what it was asked to compress. */
function fakePack(ratio: number, asked: string[] = []): (units: PackUnit[]) => Promise<PackedUnit[]> {
  return async (units) =>
    units.map((unit) => {
      asked.push(unit.name);
      const bytes = Math.round(unit.bytes * ratio);
      return { unit, path: `/work/${unit.name}`, bytes, frames: [[bytes, unit.bytes]] };
    });
}

const budgetFor = (functionBytes: number) => UNZIPPED_LIMIT - reserveForFunction(functionBytes);

describe('layer plan', () => {
  it('orders libraries largest first, then top-level entries less their libraries, and never the decoder', () => {
    const { units, pinnedFiles } = packUnits(TORCH_TREE, ['zstandard']);
    assert.deepEqual(units.map((unit) => unit.name), ['torch/lib/libtorch_cpu.so', 'torch/lib/libtorch_python.so', 'torch/lib/libc10.so', 'torch', 'sympy', 'networkx']);
    assert.deepEqual(units[3].files.map((entry) => entry.path), ['torch/_C.cpython-311-x86_64-linux-gnu.so', 'torch/nn/modules/linear.py']);
    assert.deepEqual(pinnedFiles.map((entry) => entry.path), ['zstandard/backend_c.cpython-311-x86_64-linux-gnu.so']);
  });

  it('compresses only what it must, measuring no more than the largest library for a small function', async () => {
    const asked: string[] = [];
    const { units, pinnedFiles } = packUnits(TORCH_TREE, ['zstandard']);
    const chosen = await chooseUnits({ units, fixedBytes: pinnedFiles[0].size, budget: budgetFor(MiB), overhead: () => 1000, pack: fakePack(0.35, asked) });
    assert.deepEqual(chosen!.map((packed) => packed.unit.name), ['torch/lib/libtorch_cpu.so']);
    assert.deepEqual(asked, ['torch/lib/libtorch_cpu.so']);
    assert.deepEqual(movedLibraries(chosen!), ['torch/lib/libtorch_cpu.so']);
  });

  it('compresses Python packages too when the function needs the room, and a moved package needs no preloading', async () => {
    const { units, pinnedFiles } = packUnits(TORCH_TREE, ['zstandard']);
    const chosen = await chooseUnits({ units, fixedBytes: pinnedFiles[0].size, budget: budgetFor(130 * MiB), overhead: () => 1000, pack: fakePack(0.22) });
    const names = chosen!.map((packed) => packed.unit.name);
    assert.ok(names.includes('torch'), names.join(', '));
    assert.ok(!names.includes('zstandard'));
    assert.deepEqual(movedLibraries(chosen!), [], 'torch moved whole: its libraries unpack beside it');
  });

  it('counts deps.json against the limit', async () => {
    const { units } = packUnits([file('a/liba.so', 200 * MiB), file('b/x.py', 50 * MiB)], []);
    // liba.so at 0.5 leaves 150 MiB: a manifest of more than the last MiB of room makes b move too.
    const small = await chooseUnits({ units, fixedBytes: 0, budget: 151 * MiB, overhead: () => 100, pack: fakePack(0.5) });
    const large = await chooseUnits({ units, fixedBytes: 0, budget: 151 * MiB, overhead: () => 2 * MiB, pack: fakePack(0.5) });
    assert.equal(small!.length, 1);
    assert.equal(large!.length, 2);
    assert.equal(await chooseUnits({ units, fixedBytes: 0, budget: 120 * MiB, overhead: () => 100, pack: fakePack(0.5) }), null);
  });

  it('keeps the same plan when the function code grows a little, and rounds finely on request', () => {
    assert.equal(reserveForFunction(100_000), reserveForFunction(300_000));
    assert.equal(reserveForFunction(140_100_000), 144 * MiB);
    assert.equal(reserveForFunction(140_100_000, 'fine'), 134 * MiB);
  });

  it('asks for more than 512 MB of /tmp only when the unpacked files need it', () => {
    assert.equal(ephemeralStorageNeeded(300 * MiB), 512);
    assert.equal(ephemeralStorageNeeded(600 * MiB), 664);
  });
});

/** A compressor whose ratio follows the level, as measured on libtorch_cpu.so with zstd. */
function fakeCompressor(ratios: Record<number, number>, asked: number[] = []): Compressor {
  return {
    codec: 'zstd',
    fallback: null,
    host: null,
    pack: async (units, level) => {
      asked.push(level);
      return fakePack(ratios[level])(units);
    },
  };
}

const RATIOS = { [-1]: 0.354, 1: 0.315, 3: 0.271, 9: 0.246, 19: 0.219 };
const tree = { key: 'k', dir: '/tree', files: TORCH_TREE, decoder: { codec: 'zstd', module: 'zstandard', version: '0.25.0', entries: ['zstandard'], added: true } } as unknown as DependencyTree;

describe('layer plan: levels and room, from measured sizes', () => {
  const plan = (functionBytes: number, asked: number[] = []) =>
    planCompressed({ tree, functionBytes, compressor: fakeCompressor(RATIOS, asked), key: 'k', workDir: '/work', reporter: silentReporter });

  it('takes the fastest-decoding level for a small function', async () => {
    const asked: number[] = [];
    const { level, plan: chosen } = await plan(MiB, asked);
    assert.equal(level, LEVELS.zstd[0]);
    assert.deepEqual(asked, [-1]);
    assert.deepEqual(chosen.packed.map((packed) => packed.unit.name), ['torch/lib/libtorch_cpu.so']);
    assert.equal(chosen.reservedForFunction, reserveForFunction(MiB));
  });

  it('climbs the levels when the model needs the room, and rounds the room finely before climbing further', async () => {
    const asked: number[] = [];
    const { level, plan: chosen } = await plan(140_000_000, asked);
    assert.ok(level > LEVELS.zstd[0], `level ${level}`);
    assert.deepEqual(asked.filter((value, index) => asked.indexOf(value) === index), LEVELS.zstd.slice(0, LEVELS.zstd.indexOf(level) + 1));
    const layers = chosen.uncompressed.reduce((sum, entry) => sum + entry.size, 0) + chosen.packed.reduce((sum, packed) => sum + packed.bytes, 0);
    assert.ok(layers + 140_000_000 <= UNZIPPED_LIMIT);
  });

  it('refuses with the size measured at the last level, not a guess', async () => {
    await assert.rejects(plan(200_000_000), (error: unknown) => {
      assert.ok(error instanceof TorchError && error.code === 'TORCH_PACKAGE_TOO_LARGE');
      assert.match(error.message, /measured at \d+\.\d MiB compressed with zstd level 19, plus 2\.0 MiB that must stay uncompressed/);
      assert.match(error.message, /Largest packages: torch /);
      assert.match(error.message, /container image/);
      return true;
    });
  });
});
