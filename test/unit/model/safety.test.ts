import assert from 'node:assert/strict';
import { checkLoaderSafety, knownBypasses } from '../../../lib/model/safety';
import { pinnedVersion } from '../../../lib/resolve/version';
import { PackagedLoader } from '../../../lib/model/inspect';

describe('model safety', () => {
  it('knows which torch releases have a weights-only bypass', () => {
    assert.deepEqual(knownBypasses('2.5.1+cpu').map((bypass) => bypass.cve), ['CVE-2025-32434', 'CVE-2026-24747']);
    assert.deepEqual(knownBypasses('2.6.0').map((bypass) => bypass.cve), ['CVE-2026-24747']);
    assert.deepEqual(knownBypasses('2.9.1').map((bypass) => bypass.cve), ['CVE-2026-24747']);
    assert.deepEqual(knownBypasses('2.10.0'), []);
    assert.deepEqual(knownBypasses('2.13.0+cpu'), []);
  });

  // [loader, torch, allowUnsafeTorch] → refused?, warnings
  const decisions: [PackagedLoader, string, boolean, boolean, number][] = [
    ['weights', '2.13.0+cpu', false, false, 0],
    ['state_dict', '2.13.0+cpu', false, false, 0],
    ['pickle', '2.13.0+cpu', false, false, 1],
    ['torchscript', '2.13.0+cpu', false, false, 0],
    ['weights', '2.5.1', false, true, 0],
    ['state_dict', '2.9.1', false, true, 0],
    ['pickle', '2.9.1', false, true, 1],
    ['torchscript', '2.5.1', false, false, 0],
    ['state_dict', '2.5.1', true, false, 1],
    ['pickle', '2.5.1', true, false, 2],
  ];
  for (const [loader, torchVersion, allowUnsafeTorch, refused, warnings] of decisions) {
    it(`loader ${loader} on torch ${torchVersion}${allowUnsafeTorch ? ' with allowUnsafeTorch' : ''} is ${refused ? 'refused' : 'packaged'} with ${warnings} warning(s)`, () => {
      const safety = checkLoaderSafety({ loader, pickledWeights: loader !== 'torchscript', torchVersion, allowUnsafeTorch, modelPath: 'model/model.pt' });
      assert.equal(safety.refusal !== null, refused);
      assert.equal(safety.warnings.length, warnings);
    });
  }

  it('a refusal names the version, the advisories, the loader and every way out', () => {
    const { refusal } = checkLoaderSafety({ loader: 'state_dict', pickledWeights: true, torchVersion: '2.5.1+cpu', allowUnsafeTorch: false, modelPath: 'model/model.pt' });
    assert.equal(refusal?.code, 'TORCH_UNSAFE_TORCH_VERSION');
    assert.match(refusal!.message, /torch 2\.5\.1\+cpu has CVE-2025-32434 .* and CVE-2026-24747 .*loader state_dict.*model\/model\.pt/);
    assert.match(refusal!.message, /Use torch 2\.10\.0 or newer.*loader: torchscript.*allowUnsafeTorch: true/);
  });

  it('safetensors, torch.export programs and transformers directories with safetensors weights are not judged by the weights-only bypasses', () => {
    for (const loader of ['safetensors', 'export', 'transformers', 'custom'] as const) {
      assert.equal(checkLoaderSafety({ loader, pickledWeights: false, torchVersion: '2.5.1', allowUnsafeTorch: false, modelPath: 'm' }).refusal, null, loader);
    }
    assert.notEqual(checkLoaderSafety({ loader: 'transformers', pickledWeights: true, torchVersion: '2.5.1', allowUnsafeTorch: false, modelPath: 'm' }).refusal, null, 'pytorch_model.bin');
  });

  it('reads the version of an exact pin only', () => {
    assert.equal(pinnedVersion('==2.5.1'), '2.5.1');
    assert.equal(pinnedVersion('===2.5.1+cpu'), '2.5.1+cpu');
    assert.equal(pinnedVersion('==2.5.*'), null);
    assert.equal(pinnedVersion('>=2.5'), null);
    assert.equal(pinnedVersion(''), null);
  });
});
