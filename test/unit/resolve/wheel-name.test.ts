import assert from 'node:assert/strict';
import { glibcOfTag, parseWheelName } from '../../../lib/resolve/wheel-name';
import { satisfies } from '../../../lib/resolve/version';

describe('wheel names', () => {
  it('takes apart a torch CPU wheel name with a local version and compressed tags', () => {
    const name = parseWheelName('torch-2.13.0+cpu-cp311-cp311-manylinux_2_17_x86_64.manylinux2014_x86_64.whl');
    assert.deepEqual(name, {
      filename: 'torch-2.13.0+cpu-cp311-cp311-manylinux_2_17_x86_64.manylinux2014_x86_64.whl',
      project: 'torch',
      version: '2.13.0+cpu',
      pythonTags: ['cp311'],
      abiTags: ['cp311'],
      platformTags: ['manylinux_2_17_x86_64', 'manylinux2014_x86_64'],
    });
    assert.equal(parseWheelName('torch-2.5.1%2Bcpu-cp311-cp311-linux_x86_64.whl')?.version, '2.5.1+cpu');
    assert.equal(parseWheelName('not-a-wheel.tar.gz'), null);
  });

  it('knows the glibc each manylinux tag needs', () => {
    assert.deepEqual(glibcOfTag('manylinux_2_28_x86_64'), [2, 28]);
    assert.deepEqual(glibcOfTag('manylinux2014_aarch64'), [2, 17]);
    assert.equal(glibcOfTag('linux_x86_64'), null);
  });

  const cases: [string, string, boolean][] = [
    ['2.13.0+cpu', '==2.13.0', true],
    ['2.13.0+cpu', '==2.13', true],
    ['2.13.0', '==2.13.0+cpu', false],
    ['2.13.0+cpu', '>=2.5,<2.7', false],
    ['2.6.0', '>=2.5,<2.7', true],
    ['2.6.1', '~=2.6.0', true],
    ['2.7.0', '~=2.6.0', false],
    ['2.13.1', '==2.13.*', true],
    ['2.13.0', '!=2.13.0', false],
    ['2.13.0', '', true],
  ];
  for (const [version, specifier, expected] of cases) {
    it(`${version} ${expected ? 'satisfies' : 'does not satisfy'} "${specifier}"`, () => {
      assert.equal(satisfies(version, specifier), expected);
    });
  }
});
