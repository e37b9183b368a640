import assert from 'node:assert/strict';
import { TorchError } from '../../../lib/util/errors';
import { planLayers, reserveForFunction } from '../../../lib/bundle/layer-plan';
import { UNZIPPED_LIMIT, ephemeralStorageNeeded } from '../../../lib/bundle/limits';
import { FileEntry, totalBytes } from '../../../lib/util/file-tree';

const MiB = 1024 * 1024;
const file = (path: string, size: number): FileEntry => ({ path, size, executable: false });

// Sizes of a stripped torch 2.13 tree, rounded.
const TORCH_TREE = [
  file('torch/lib/libtorch_cpu.so', 330 * MiB),
  file('torch/lib/libtorch_python.so', 29 * MiB),
  file('torch/lib/libc10.so', 1 * MiB),
  file('torch/_C.cpython-311-x86_64-linux-gnu.so', 1 * MiB),
  file('torch/nn/modules/linear.py', 40 * MiB),
  file('sympy/__init__.py', 15 * MiB),
  file('networkx/__init__.py', 5 * MiB),
];

describe('layer plan', () => {
  it('ships everything uncompressed when it fits', () => {
    const files = [file('numpy/core.so', 40 * MiB)];
    const plan = planLayers({ files, functionBytes: MiB });
    assert.equal(plan.compressed.length, 0);
    assert.deepEqual(plan.uncompressed, files);
  });

  it('compresses the largest shared library first and keeps the Python files uncompressed', () => {
    const plan = planLayers({ files: TORCH_TREE, functionBytes: MiB });
    assert.deepEqual(plan.compressed.map((entry) => entry.path), ['torch/lib/libtorch_cpu.so']);
    assert.deepEqual(plan.libraries, ['torch/lib/libtorch_cpu.so']);
    assert.ok(totalBytes(plan.uncompressed) + plan.estimatedArchiveBytes + plan.reservedForFunction <= UNZIPPED_LIMIT);
  });

  it('never moves a Python extension module out of its package', () => {
    // A poor ratio forces more than the libraries out: torch then moves as a whole package.
    const plan = planLayers({ files: TORCH_TREE, functionBytes: MiB, compressionRatio: 0.5 });
    const compressed = plan.compressed.map((entry) => entry.path);
    assert.ok(compressed.includes('torch/_C.cpython-311-x86_64-linux-gnu.so'));
    assert.ok(compressed.includes('torch/nn/modules/linear.py'));
    assert.deepEqual(plan.libraries, [], 'a package that moved whole needs no preloading');
  });

  it('moves whole packages when libraries are not enough, and those need no preloading', () => {
    const files = [file('big/lib/libhuge.so', 100 * MiB), file('big/data.bin', 300 * MiB), file('small/x.py', MiB)];
    const plan = planLayers({ files, functionBytes: MiB });
    assert.ok(plan.compressed.some((entry) => entry.path === 'big/data.bin'));
    assert.deepEqual(plan.libraries, []);
  });

  it('refuses with a breakdown when nothing fits, even compressed', () => {
    const files = [file('huge/a.bin', 900 * MiB), file('huge/b.bin', 100 * MiB)];
    assert.throws(
      () => planLayers({ files, functionBytes: MiB, compressionRatio: 0.9 }),
      (error: unknown) =>
        error instanceof TorchError &&
        error.code === 'TORCH_PACKAGE_TOO_LARGE' &&
        /Largest packages: huge/.test(error.message) &&
        /huge\/a\.bin/.test(error.message) &&
        /container image/.test(error.message),
    );
  });

  it('keeps the same plan when the function code grows a little', () => {
    assert.equal(reserveForFunction(100_000), reserveForFunction(300_000));
  });

  it('asks for more than 512 MB of /tmp only when the unpacked files need it', () => {
    assert.equal(ephemeralStorageNeeded(300 * MiB), 512);
    assert.equal(ephemeralStorageNeeded(600 * MiB), 664);
  });
});
