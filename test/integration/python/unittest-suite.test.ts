import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { resolveConfig } from '../../../lib/config/resolve-config';
import { ensureHostPackage } from '../../../lib/resolve/host-package';
import { findInterpreter } from '../../../lib/resolve/interpreter';
import { targetPlatform } from '../../../lib/resolve/target';
import { openCache } from '../../../lib/util/cache';
import { runProcess } from '../../../lib/util/process';
import { silentReporter } from '../../../lib/util/reporter';
import { REPO, TEST_CACHE } from '../../support/sls';
import { isolatedRunner } from '../../support/torch-models';
import { WheelIndex, prepareFixtureWheels, startWheelIndex } from '../../support/wheel-index';

// The shim runs inside every Lambda Python runtime the plugin supports; its own unittest suite
// runs here under each interpreter the machine has for those versions (3.14 has none here).
const RUNTIMES = ['python3.9', 'python3.10', 'python3.11', 'python3.12', 'python3.13'];
// The wheel store has zstandard for CPython 3.11 only: there the suite also runs every unpack
// test on zstd frames, with zstandard installed the way the plugin installs it for compressing.
const WITH_ZSTD = 'python3.11';

describe('the Python shim, unpacker and local runner (python/tests)', () => {
  let index: WheelIndex;
  let zstandardSite: string;

  before(async () => {
    const wheels = await prepareFixtureWheels();
    index = await startWheelIndex({ torchWheels: [wheels.torchWheelRetagged], otherWheels: wheels.dependencyWheels });
    const serviceDir = fs.mkdtempSync(path.join(TEST_CACHE, 'zstandard-service-'));
    fs.writeFileSync(path.join(serviceDir, 'model.pt'), '');
    const config = resolveConfig({ model: 'model.pt', python: WITH_ZSTD, torchIndexUrl: index.torchUrl, indexUrl: index.simpleUrl, cacheDir: TEST_CACHE, requirements: false }, serviceDir);
    const host = await ensureHostPackage({ config, request: { project: 'zstandard', version: null, purpose: 'the unpacker tests' }, cache: openCache(TEST_CACHE), runner: isolatedRunner, reporter: silentReporter });
    assert.ok(host.sitePath, `${WITH_ZSTD} must not have its own zstandard: the suite must run with the one the plugin installs`);
    zstandardSite = host.sitePath;
  });

  after(() => index?.close());

  for (const runtime of RUNTIMES) {
    it(`pass their unittest suite on ${runtime}${runtime === WITH_ZSTD ? ', zstd frames included' : ''}`, async () => {
      const interpreter = await findInterpreter(targetPlatform(runtime, 'x86_64'), runProcess);
      const result = spawnSync(interpreter.path, ['-m', 'unittest', 'discover', '-v', '-s', 'python/tests', '-t', 'python'], {
        cwd: REPO,
        encoding: 'utf8',
        env: { PATH: process.env.PATH, HOME: process.env.HOME, LANG: 'C.UTF-8', ...(runtime === WITH_ZSTD ? { PYTHONPATH: zstandardSite } : {}) },
      });
      assert.equal(result.status, 0, `${result.stdout}\n${result.stderr}`);
      assert.match(result.stderr, /Ran [1-9]\d* tests/);
      assert.match(result.stderr, /\nOK/);
      const zstdTests = (result.stderr.match(/\(tests\.test_unpack\.Zstd\w+[.)]/g) ?? []).length;
      if (runtime === WITH_ZSTD) assert.ok(zstdTests >= 30, `${zstdTests} zstd tests ran:\n${result.stderr}`);
      else assert.equal(zstdTests, 0);
    });
  }
});
