import assert from 'node:assert/strict';
import { planStrip, summariseRemovals } from '../../../lib/shrink/strip';
import { TorchError } from '../../../lib/util/errors';
import { FileEntry } from '../../../lib/util/file-tree';

const file = (path: string, size = 1000): FileEntry => ({ path, size, executable: false });

const TREE = [
  file('torch/__init__.py'),
  file('torch/_C.cpython-311-x86_64-linux-gnu.so', 100_000),
  file('torch/lib/libtorch_cpu.so', 400_000_000),
  file('torch/lib/libtorchbind_test.so', 900_000),
  file('torch/lib/libc10.so', 1_500_000),
  file('torch/bin/torch_shm_manager', 50_000),
  file('torch/bin/protoc', 5_000_000),
  file('torch/test/test_api', 80_000_000),
  file('torch/include/ATen/ATen.h', 2_000),
  file('torch/share/cmake/Torch/TorchConfig.cmake', 3_000),
  file('torch/testing/__init__.py'),
  file('torch/_C/__init__.pyi', 2_000),
  file('torch/__pycache__/__init__.cpython-311.pyc', 3_000),
  file('torchgen/model.py'),
  file('torch-2.13.0+cpu.dist-info/METADATA'),
  file('sympy/core/tests/test_basic.py'),
  file('bin/isympy'),
];

describe('strip plan', () => {
  const plan = planStrip(TREE, { keep: [], remove: [] });
  const removed = new Map(plan.removals.map((removal) => [removal.path, removal.rule]));

  const expectations: [string, string | null][] = [
    ['torch/test/test_api', 'torch-tests'],
    ['torch/include/ATen/ATen.h', 'headers'],
    ['torch/share/cmake/Torch/TorchConfig.cmake', 'cmake'],
    ['torch/bin/protoc', 'torch-tools'],
    ['torch/lib/libtorchbind_test.so', 'test-libraries'],
    ['torch/_C/__init__.pyi', 'type-stubs'],
    ['torch/__pycache__/__init__.cpython-311.pyc', 'foreign-bytecode'],
    ['sympy/core/tests/test_basic.py', 'package-tests'],
    ['bin/isympy', 'scripts'],
    ['torch/bin/torch_shm_manager', null],
    ['torch/testing/__init__.py', null],
    ['torchgen/model.py', null],
    ['torch/lib/libtorch_cpu.so', null],
    ['torch-2.13.0+cpu.dist-info/METADATA', null],
    ['torch/__init__.py', null],
  ];
  for (const [path, rule] of expectations) {
    it(rule ? `removes ${path} (${rule})` : `keeps ${path}, which import torch needs`, () => {
      assert.equal(removed.get(path) ?? null, rule);
    });
  }

  it('strips symbols from the shared libraries it keeps, not from tiny ones', () => {
    assert.deepEqual([...plan.symbolCandidates].sort(), ['torch/_C.cpython-311-x86_64-linux-gnu.so', 'torch/lib/libc10.so', 'torch/lib/libtorch_cpu.so']);
  });

  it('keep globs win over the defaults', () => {
    const kept = planStrip(TREE, { keep: ['torch/include/**'], remove: [] });
    assert.ok(!kept.removals.some((removal) => removal.path.startsWith('torch/include/')));
  });

  it('remove globs add to the defaults', () => {
    const more = planStrip([...TREE, file('torch/_inductor/graph.py')], { keep: [], remove: ['torch/_inductor/**'] });
    assert.equal(more.removals.find((removal) => removal.path === 'torch/_inductor/graph.py')?.rule, 'remove: torch/_inductor/**');
  });

  it('refuses a remove glob that would break import torch or delete package metadata', () => {
    for (const pattern of ['torch/lib/**', '*.dist-info/**', 'torchgen/**', 'torch/testing/**']) {
      assert.throws(
        () => planStrip(TREE, { keep: [], remove: [pattern] }),
        (error: unknown) => error instanceof TorchError && error.code === 'TORCH_STRIP_PROTECTED' && error.message.includes(pattern),
      );
    }
  });

  it('summarises by rule, largest first, with the biggest files of each', () => {
    const summary = summariseRemovals(plan.removals);
    assert.equal(summary[0].rule, 'torch-tests');
    assert.equal(summary[0].bytes, 80_000_000);
    assert.deepEqual(summary[0].largest, [{ path: 'torch/test/test_api', bytes: 80_000_000 }]);
  });
});
