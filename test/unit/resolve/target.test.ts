import assert from 'node:assert/strict';
import { platformTags, runtimesWithGlibc, targetPlatform } from '../../../lib/resolve/target';
import { TorchError } from '../../../lib/util/errors';

describe('target platform', () => {
  it('python3.11 on x86_64 accepts manylinux up to glibc 2.26 and the plain linux tag, newest first', () => {
    const target = targetPlatform('python3.11', 'x86_64');
    assert.equal(target.abi, 'cp311');
    assert.equal(target.platformTags[0], 'manylinux_2_26_x86_64');
    assert.ok(target.platformTags.includes('manylinux2014_x86_64'));
    assert.ok(target.platformTags.includes('manylinux_2_17_x86_64'));
    assert.ok(target.platformTags.includes('manylinux1_x86_64'));
    assert.ok(!target.platformTags.includes('manylinux_2_28_x86_64'));
    assert.equal(target.platformTags.at(-1), 'linux_x86_64');
  });

  it('python3.12 on arm64 accepts manylinux_2_34 aarch64 and nothing older than 2_17', () => {
    const target = targetPlatform('python3.12', 'arm64');
    assert.equal(target.machine, 'aarch64');
    assert.equal(target.platformTags[0], 'manylinux_2_34_aarch64');
    assert.ok(target.platformTags.includes('manylinux_2_28_aarch64'));
    assert.ok(!target.platformTags.some((tag) => tag.includes('manylinux_2_16')));
    assert.ok(target.platformTags.every((tag) => tag.endsWith('aarch64')));
  });

  it('lists tags without duplicates', () => {
    const tags = platformTags('x86_64', [2, 34]);
    assert.equal(new Set(tags).size, tags.length);
  });

  for (const [runtime, architecture, code] of [
    ['nodejs20.x', 'x86_64', 'TORCH_UNSUPPORTED_RUNTIME'],
    ['python3.8', 'x86_64', 'TORCH_UNSUPPORTED_RUNTIME'],
    ['python3.12', 'arm', 'TORCH_UNSUPPORTED_ARCHITECTURE'],
  ]) {
    it(`refuses ${runtime} ${architecture} with ${code}`, () => {
      assert.throws(
        () => targetPlatform(runtime, architecture),
        (error: unknown) => error instanceof TorchError && error.code === code && error.message.includes(runtime === 'python3.12' ? architecture : runtime),
      );
    });
  }

  it('names the runtimes whose glibc runs a manylinux_2_28 wheel', () => {
    assert.deepEqual(runtimesWithGlibc([2, 28]), ['python3.12', 'python3.13', 'python3.14']);
  });
});
