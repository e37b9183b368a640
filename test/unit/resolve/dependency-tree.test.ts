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
import { sha256 } from '../../../lib/util/hash';
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
    assert.deepEqual(pip.pipCommands().filter((command) => command === 'download' || command === 'install'), ['download', 'download', 'install']);
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

  it('resolves the target\'s zstandard wheel alone, installs it with the requirements and records it as the decoder', async () => {
    const pip = recordingRunner();
    const tree = await build(pip.runner);
    const download = pip.calls.filter((call) => call.args[2] === 'download')[1].args;
    assert.equal(download.at(-1), 'zstandard');
    assert.deepEqual(download.slice(download.indexOf('--python-version'), download.indexOf('--python-version') + 2), ['--python-version', '3.11']);
    assert.ok(download.includes('manylinux_2_26_x86_64'), 'for the target\'s platform tags');
    assert.equal(download[download.indexOf('--index-url') + 1], 'http://127.0.0.1:9/simple', 'from the requirements\' index');
    const copy = pip.calls.find((call) => call.args[2] === 'install')!.requirements!.split('\n');
    assert.ok(copy.some((line) => /\/zstandard-0\.25\.0-cp311-[^ ]+\.whl$/.test(line)), copy.join('\n'));
    assert.deepEqual(tree.decoder, { codec: 'zstd', module: 'zstandard', version: '0.25.0', entries: ['zstandard'], added: true });
  });

  it('falls back to zlib, saying why, when the index has no zstandard wheel for the target', async () => {
    const tree = await build(recordingRunner({ zstandardOnIndex: false }).runner);
    assert.deepEqual(tree.decoder, { codec: 'zlib', reason: 'http://127.0.0.1:9/simple has no zstandard wheel for python3.11 x86_64' });
    assert.ok(!tree.files.some((file) => file.path.startsWith('zstandard/')));
  });

  it('gives the zstandard wheel a --hash line in hash-checking mode, and uses the requirements\' own zstandard when they name it', async () => {
    // The recording runner's torch wheel holds the bytes "wheel".
    const hashed = parseRequirements(`torch==2.13.0 --hash=sha256:${sha256('wheel')}\nsympy==1.14.0 --hash=sha256:${'b'.repeat(64)}\n`, '/svc', null);
    const pip = recordingRunner();
    await buildDependencyTree({ config, target, requirements: hashed, cache: openCache(config.cacheDir), runner: pip.runner, reporter: silentReporter });
    const copy = pip.calls.find((call) => call.args[2] === 'install')?.requirements ?? '';
    assert.match(copy, /zstandard-0\.25\.0-[^ ]+\.whl --hash=sha256:[0-9a-f]{64}/);
    const own = recordingRunner();
    const withOwn = parseRequirements('torch==2.13.0\nzstandard==0.25.0\n', '/svc', null);
    await buildDependencyTree({ config: { ...config, cacheDir: path.join(dir, 'other') }, target, requirements: withOwn, cache: openCache(path.join(dir, 'other')), runner: own.runner, reporter: silentReporter });
    assert.deepEqual(own.calls.filter((call) => call.args[2] === 'download').map((call) => call.args.at(-1)), ['torch==2.13.0'], 'no second zstandard');
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
