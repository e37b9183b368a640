import assert from 'node:assert/strict';
import { S3_CLIENT_SECONDS, S3_NETWORK_BYTES_PER_SECOND, checkSnapStart, estimateInit, initBudgetWarning } from '../../../lib/bundle/init-budget';
import { targetPlatform } from '../../../lib/resolve/target';

const MiB = 1024 * 1024;
// The example service with torch 2.13: libtorch_cpu.so unpacks to /tmp, the model is tiny.
const example = { functionName: 'predict', tmpBytes: 329 * MiB, codec: 'zstd' as const, modelBytes: 21_000, bytecode: true };

describe('init budget', () => {
  it('scales unpacking with vCPUs and single-threaded import only below one vCPU', () => {
    const one = estimateInit({ ...example, memorySize: 1769 });
    const two = estimateInit({ ...example, memorySize: 3538 });
    assert.ok(Math.abs(one.unpack / two.unpack - 2) < 1e-9);
    assert.equal(one.import, two.import);
    assert.ok(estimateInit({ ...example, memorySize: 885 }).import > one.import * 1.9);
  });

  it('runs a model\'s download from S3 alongside unpack and import: only what passes them lengthens the init', () => {
    const packaged = estimateInit({ ...example, memorySize: 3008, modelBytes: 400e6 });
    const fromS3 = estimateInit({ ...example, memorySize: 3008, modelBytes: 400e6, downloadBytes: 400e6 });
    // 400 MB at the assumed 90 MB/s after creating the client: longer than unpack + import.
    assert.ok(Math.abs(fromS3.download - (S3_CLIENT_SECONDS + 400e6 / S3_NETWORK_BYTES_PER_SECOND)) < 1e-9);
    assert.ok(Math.abs(fromS3.total - (fromS3.download + fromS3.load)) < 1e-9);
    assert.ok(fromS3.total > packaged.total);
    // A small one is hidden behind them.
    const small = estimateInit({ ...example, memorySize: 3008, modelBytes: 10e6, downloadBytes: 10e6 });
    assert.ok(Math.abs(small.total - (small.unpack + small.import + small.load)) < 1e-9);
  });

  it('warns when a download makes the init pass 10 s, with the memory that brings it back', () => {
    const big = { ...example, memorySize: 1769, modelBytes: 900e6, downloadBytes: 900e6 };
    const warning = initBudgetWarning(big);
    assert.match(warning ?? '', /meanwhile the model's download from S3 \d+\.\d s/);
    assert.match(warning ?? '', /No memory size brings it under the limit: enable SnapStart/);
    assert.equal(initBudgetWarning({ ...big, downloadBytes: 0, modelBytes: 1e6 }), null);
  });

  it('counts the cost of shipping without bytecode', () => {
    const withBytecode = estimateInit({ ...example, memorySize: 3008 });
    const source = estimateInit({ ...example, memorySize: 3008, bytecode: false });
    assert.ok(source.import > withBytecode.import);
  });

  for (const [memorySize, warns] of [
    [3008, false],
    [1024, false],
    [512, false],
    [256, true],
    [128, true],
  ] as const) {
    it(`${warns ? 'warns' : 'does not warn'} for the example at ${memorySize} MB`, () => {
      const warning = initBudgetWarning({ ...example, memorySize });
      assert.equal(warning !== null, warns, warning ?? '');
    });
  }

  it('counts zlib as the slower codec it is: the example at 512 MB warns with it', () => {
    assert.ok(estimateInit({ ...example, codec: 'zlib', memorySize: 3008 }).unpack > 2.5 * estimateInit({ ...example, memorySize: 3008 }).unpack);
    assert.match(initBudgetWarning({ ...example, codec: 'zlib', memorySize: 512 }) ?? '', /unpack 329\.0 MiB \(zlib\)/);
  });

  it('names the estimate, the limit and a memory size that fits', () => {
    const warning = initBudgetWarning({ ...example, memorySize: 256 })!;
    assert.match(warning, /^Function "predict": its cold start is estimated at \d+\.\d s at 256 MB/);
    assert.match(warning, /10 s init limit/);
    const suggested = Number(/Set memorySize to (\d+) MB/.exec(warning)![1]);
    assert.ok(estimateInit({ ...example, memorySize: suggested }).total < 8);
  });
});

describe('SnapStart', () => {
  const base = { functionName: 'predict', tmpMbNeeded: 393, ephemeralStorageSize: null, tmpBytes: 329 * MiB };

  it('accepts python3.12+ functions whose /tmp fits 512 MB', () => {
    checkSnapStart({ ...base, target: targetPlatform('python3.12', 'x86_64') });
  });

  it('refuses python3.11, where Lambda has no SnapStart for Python', () => {
    assert.throws(() => checkSnapStart({ ...base, target: targetPlatform('python3.11', 'x86_64') }), (error: any) => {
      assert.equal(error.code, 'TORCH_SNAPSTART_RUNTIME');
      assert.match(error.message, /functions\.predict\.snapStart is true, but its runtime is python3\.11/);
      return true;
    });
  });

  it('refuses dependencies that need more than 512 MB of /tmp, naming the size and the fix', () => {
    assert.throws(() => checkSnapStart({ ...base, tmpMbNeeded: 700, tmpBytes: 636 * MiB, target: targetPlatform('python3.13', 'x86_64') }), (error: any) => {
      assert.equal(error.code, 'TORCH_SNAPSTART_TMP_TOO_LARGE');
      assert.match(error.message, /needs 700 MB of \/tmp .*at most 512 MB/);
      assert.match(error.message, /remove snapStart/);
      return true;
    });
  });

  it('refuses an ephemeralStorageSize above 512 MB set by the user', () => {
    assert.throws(() => checkSnapStart({ ...base, ephemeralStorageSize: 1024, target: targetPlatform('python3.13', 'arm64') }), /TORCH_SNAPSTART_TMP_TOO_LARGE|needs 1024 MB/);
  });
});
