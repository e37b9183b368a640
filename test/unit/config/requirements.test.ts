import assert from 'node:assert/strict';
import { parseRequirements } from '../../../lib/config/requirements';
import { TorchError } from '../../../lib/util/errors';

const code = (expected: string) => (error: unknown) => error instanceof TorchError && error.code === expected;

describe('requirements', () => {
  it('takes torch out and keeps every other line', () => {
    const parsed = parseRequirements('numpy==2.1.0\ntorch==2.13.0  # pinned\n\npillow\n', '/svc', null);
    assert.equal(parsed.torchSpecifier, '==2.13.0');
    assert.deepEqual(parsed.otherLines, ['numpy==2.1.0', 'pillow']);
    assert.equal(parsed.usesHashes, false);
  });

  it('does not mistake torchvision for torch', () => {
    const parsed = parseRequirements('torchvision==0.28.0\n', '/svc', null);
    assert.equal(parsed.torchSpecifier, '');
    assert.deepEqual(parsed.otherLines, ['torchvision==0.28.0']);
  });

  it('drops extras, markers and per-line options from the torch line', () => {
    const parsed = parseRequirements('torch[opt] >= 2.5 , < 2.14 ; python_version >= "3.10" --hash=sha256:abc\n', '/svc', null);
    assert.equal(parsed.torchSpecifier, '>=2.5,<2.14');
    assert.equal(parsed.usesHashes, true);
  });

  it('keeps the sha256 pins of the torch line, so the wheel it picks can be checked against them', () => {
    const a = 'a'.repeat(64);
    const b = 'B'.repeat(64);
    const parsed = parseRequirements(`torch==2.13.0 \\\n    --hash=sha256:${a} \\\n    --hash sha256:${b}\nsympy==1.14.0 --hash=sha256:${'c'.repeat(64)}\n`, '/svc', null);
    assert.deepEqual(parsed.torchHashes, [a, 'b'.repeat(64)]);
    assert.equal(parsed.usesHashes, true);
  });

  it('makes -r and -c paths absolute so the copy pip reads works from anywhere', () => {
    const parsed = parseRequirements('-r base.txt\n--constraint=pins.txt\n', '/svc/deps', null);
    assert.deepEqual(parsed.otherLines, ['-r /svc/deps/base.txt', '--constraint /svc/deps/pins.txt']);
  });

  it('joins continued lines', () => {
    const parsed = parseRequirements('torch==2.13.0 \\\n  --hash=sha256:abc\n', '/svc', null);
    assert.equal(parsed.torchSpecifier, '==2.13.0');
  });

  it('lets torchVersion pin torch when the requirements do not', () => {
    assert.equal(parseRequirements('numpy\n', '/svc', '2.13.0').torchSpecifier, '==2.13.0');
  });

  it('refuses a torchVersion that contradicts the requirements', () => {
    assert.throws(() => parseRequirements('torch==2.12.0\n', '/svc', '2.13.0'), code('TORCH_VERSION_CONFLICT'));
  });

  it('refuses torch named by URL', () => {
    assert.throws(() => parseRequirements('torch @ https://example.com/torch.whl\n', '/svc', null), code('TORCH_REQUIREMENT_UNSUPPORTED'));
  });

  it('refuses two different torch lines', () => {
    assert.throws(() => parseRequirements('torch==2.13.0\ntorch==2.12.0\n', '/svc', null), code('TORCH_REQUIREMENT_CONFLICT'));
  });
});
