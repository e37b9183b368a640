import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { parseRequirements } from '../../../lib/config/requirements';
import { resolveConfig } from '../../../lib/config/resolve-config';
import { buildDependencyTree } from '../../../lib/resolve/dependency-tree';
import { targetPlatform } from '../../../lib/resolve/target';
import { openCache } from '../../../lib/util/cache';
import { Runner, runProcess } from '../../../lib/util/process';
import { silentReporter } from '../../../lib/util/reporter';
import { makeWheel } from '../../support/fake-wheel';
import { WheelIndex, pipEnv, prepareFixtureWheels, startWheelIndex } from '../../support/wheel-index';

// pip with pip's own configuration removed: only the indexes the service names.
const runner: Runner = (command, args, options) => runProcess(command, args, { ...options, env: pipEnv() });

describe('environment markers are evaluated for the Lambda target, not the build machine (real pip)', function () {
  let dir: string;
  let index: WheelIndex;

  before(async () => {
    dir = fs.mkdtempSync(path.join(os.tmpdir(), 'markers-test-'));
    const wheels = await prepareFixtureWheels();
    const fromStore = (project: string) => wheels.dependencyWheels.filter((wheel) => path.basename(wheel).toLowerCase().startsWith(project));
    const extra = path.join(dir, 'extra');
    fs.mkdirSync(extra);
    // What the test requires beyond torch's own dependencies, from pip's local store.
    for (const project of ['exceptiongroup', 'colorama']) {
      const result = await runProcess('python3', ['-m', 'pip', 'download', '--no-deps', '--disable-pip-version-check', '-d', extra, project]);
      assert.equal(result.code, 0, result.stderr);
    }
    const torchFor310Arm = await makeWheel({ dir, project: 'torch', version: '2.13.0+cpu', tag: 'cp310-cp310-manylinux_2_17_aarch64' });
    index = await startWheelIndex({
      torchWheels: [torchFor310Arm],
      otherWheels: [...fs.readdirSync(extra).map((file) => path.join(extra, file)), ...fromStore('typing_extensions')],
    });
  });
  after(async () => {
    await index?.close();
    fs.rmSync(dir, { recursive: true, force: true });
  });

  it('a python3.10 arm64 target gets what its markers ask for, though pip runs under this machine\'s Python 3.11 on x86_64', async () => {
    const service = path.join(dir, 'service');
    fs.mkdirSync(path.join(service, 'model'), { recursive: true });
    fs.writeFileSync(path.join(service, 'model', 'model.pt'), 'x');
    const config = resolveConfig({ model: 'model/model.pt', torchIndexUrl: index.torchUrl, indexUrl: index.simpleUrl, cacheDir: path.join(dir, 'cache'), python: 'python3.11' }, service);
    const requirements = parseRequirements(
      ['torch==2.13.0', 'exceptiongroup; python_version < "3.11"', 'colorama; platform_machine == "aarch64"', 'tomli; python_version >= "3.11"'].join('\n'),
      service,
      null,
    );
    const tree = await buildDependencyTree({ config, target: targetPlatform('python3.10', 'arm64'), requirements, cache: openCache(config.cacheDir), runner, reporter: silentReporter });
    const top = new Set(tree.files.map((file) => file.path.split('/')[0]));
    assert.ok(top.has('exceptiongroup'), `python_version < "3.11" holds on python3.10: ${[...top].join(', ')}`);
    assert.ok(top.has('colorama'), 'platform_machine == "aarch64" holds on arm64');
    assert.ok(top.has('typing_extensions.py'), "exceptiongroup's own marker (python_version < \"3.13\") holds too");
    assert.ok(!top.has('tomli'), 'python_version >= "3.11" does not hold on python3.10');
  });
});
