import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { ResolvedConfig } from '../../../lib/config/options';
import { parseRequirements } from '../../../lib/config/requirements';
import { resolveConfig } from '../../../lib/config/resolve-config';
import { buildDependencyTree } from '../../../lib/resolve/dependency-tree';
import { targetPlatform } from '../../../lib/resolve/target';
import { openCache } from '../../../lib/util/cache';
import { silentReporter } from '../../../lib/util/reporter';
import { pipArguments, recordingRunner } from '../../support/recording-runner';

describe('dependency tree (pip played by a recording runner)', () => {
  let dir: string;
  let config: ResolvedConfig;
  const target = targetPlatform('python3.11', 'x86_64');
  const requirements = parseRequirements('torch==2.13.0\nsympy\n', '/svc', null);

  beforeEach(() => {
    dir = fs.mkdtempSync(path.join(os.tmpdir(), 'tree-test-'));
    fs.mkdirSync(path.join(dir, 'model'));
    fs.writeFileSync(path.join(dir, 'model', 'model.pt'), 'x');
    config = resolveConfig({ model: 'model/model.pt', cacheDir: path.join(dir, 'cache'), indexUrl: 'http://127.0.0.1:9/simple' }, dir);
  });
  afterEach(() => fs.rmSync(dir, { recursive: true, force: true }));

  const build = (runner: ReturnType<typeof recordingRunner>['runner']) =>
    buildDependencyTree({ config, target, requirements, cache: openCache(config.cacheDir), runner, reporter: silentReporter });

  it('downloads torch from the torch index alone, installs the rest with torch pinned to that file, and strips', async () => {
    const pip = recordingRunner();
    const tree = await build(pip.runner);
    assert.deepEqual(pip.pipCommands().filter((command) => command === 'download' || command === 'install'), ['download', 'install']);
    const download = pipArguments(pip.calls.find((call) => pipArguments(call.args)?.[0] === 'download')!.args)!;
    assert.equal(download[download.indexOf('--index-url') + 1], config.torchIndexUrl);
    assert.equal(download.at(-1), 'torch==2.13.0');
    const install = pip.calls.find((call) => pipArguments(call.args)?.[0] === 'install')!;
    const copy = install.requirements!.split('\n');
    assert.equal(JSON.parse(install.args[1]).python_version, '3.11', 'markers are evaluated for the target');
    assert.ok(copy.includes('sympy'));
    assert.ok(copy.some((line) => line.endsWith('/torch-2.13.0+cpu-cp311-cp311-manylinux_2_28_x86_64.whl')), copy.join('\n'));
    const paths = tree.files.map((file) => file.path);
    assert.ok(paths.includes('torch/lib/libtorch_cpu.so') && paths.includes('torch/bin/torch_shm_manager'));
    assert.ok(!paths.some((file) => file.startsWith('torch/test/') || file.startsWith('torch/include/')), paths.join(', '));
    assert.deepEqual(tree.torch, { version: '2.13.0+cpu', wheel: 'torch-2.13.0+cpu-cp311-cp311-manylinux_2_28_x86_64.whl' });
    assert.equal(tree.bytecode, null, 'no interpreter of the runtime answered the recording runner');
  });

  it('a second build with the same inputs runs no pip: the cached tree is used', async () => {
    await build(recordingRunner().runner);
    const again = recordingRunner();
    const tree = await build(again.runner);
    assert.deepEqual(again.pipCommands().filter((command) => command === 'download' || command === 'install'), []);
    assert.ok(fs.existsSync(path.join(tree.dir, 'torch', '__init__.py')));
  });

  it('refuses GPU packages that a requirement brought in, and caches nothing', async () => {
    const pip = recordingRunner({ installed: { 'torch/__init__.py': '', 'nvidia/cublas/lib/libcublas.so.12': 'ELF' } });
    await assert.rejects(build(pip.runner), { code: 'TORCH_GPU_PACKAGES_RESOLVED', message: /nvidia\/cublas/ });
    assert.deepEqual(fs.readdirSync(path.join(config.cacheDir, 'tmp')), []);
    assert.ok(!fs.existsSync(path.join(config.cacheDir, 'trees')));
  });
});
