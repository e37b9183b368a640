import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { resolveConfig } from '../../../lib/config/resolve-config';
import { packageTorchFunctions } from '../../../lib/pipeline/package-functions';
import { planFunctions } from '../../../lib/pipeline/plan-functions';
import { deployedLayerName } from '../../../lib/pipeline/target-layers';
import { targetPlatform } from '../../../lib/resolve/target';
import { TorchFunction } from '../../../lib/pipeline/types';
import { silentReporter } from '../../../lib/util/reporter';
import { readZipEntry, readZipIndex } from '../../../lib/zip/read';
import { writeZip } from '../../../lib/zip/write';
import { recordingRunner } from '../../support/recording-runner';

// A torch.save checkpoint in miniature: a zip whose data.pkl names no class (a plain state dict).
const naming = { service: 'svc', stage: 'dev' };
const STATE_DICT_PICKLE = Buffer.from('\x80\x02}q\x00.', 'latin1');

describe('packageTorchFunctions, the list of stages (pip played by a recording runner)', () => {
  let service: string;
  let outputDir: string;

  beforeEach(async () => {
    service = fs.mkdtempSync(path.join(os.tmpdir(), 'pipeline-test-'));
    outputDir = path.join(service, '.serverless', 'staging');
    fs.writeFileSync(path.join(service, 'handler.py'), 'def predict(event, context, model):\n    return 1\n');
    fs.writeFileSync(path.join(service, 'requirements.txt'), 'torch==2.13.0\n');
    await writeZip(path.join(service, 'model.pt'), [{ name: 'archive/data.pkl', source: { data: STATE_DICT_PICKLE } }]);
  });
  afterEach(() => fs.rmSync(service, { recursive: true, force: true }));

  const config = () => resolveConfig({ model: 'model.pt', cacheDir: path.join(service, 'cache'), indexUrl: 'http://127.0.0.1:9/simple' }, service);
  const fn = (name: string, overrides: Partial<TorchFunction> = {}): TorchFunction => ({
    name,
    handler: 'handler.predict',
    runtime: 'python3.11',
    architecture: 'x86_64',
    memorySize: 3008,
    userLayers: [],
    ephemeralStorageSize: null,
    files: ['handler.py', 'requirements.txt'],
    artifactName: 'svc-torch.zip',
    model: config().model,
    ...overrides,
  });

  it('packages a function: its zip holds the code, the model, the shim and its manifest; the tree becomes a layer', async () => {
    const pip = recordingRunner();
    const output = await packageTorchFunctions({ config: config(), functions: [fn('predict')], naming, outputDir, runner: pip.runner, reporter: silentReporter });
    const [predict] = output.functions;
    assert.equal(predict.handler, 'serverless_torch.shim.handler');
    assert.equal(predict.environment.SERVERLESS_TORCH_HANDLER, 'handler.predict');
    assert.match(predict.environment.SERVERLESS_TORCH_MODEL, /^m[0-9a-f]{12}$/);
    assert.deepEqual(predict.layers, ['torchDepsPy311X8664']);
    const names = (await readZipIndex(predict.artifact)).map((entry) => entry.name);
    for (const name of ['handler.py', 'model.pt', 'serverless_torch/shim.py', 'serverless_torch/unpack.py', 'serverless_torch/manifest.json']) {
      assert.ok(names.includes(name), `${name} in ${names.join(', ')}`);
    }
    assert.ok(!names.includes('serverless_torch/invoke_local.py'), 'the local runner never ships');
    const manifest = JSON.parse((await readZipEntry(predict.artifact, 'serverless_torch/manifest.json')).toString('utf8'));
    assert.equal(manifest.format, 2);
    assert.deepEqual(Object.keys(manifest.models), [predict.environment.SERVERLESS_TORCH_MODEL]);
    assert.equal(manifest.models[predict.environment.SERVERLESS_TORCH_MODEL].loader, 'weights');
    const layerFiles = (await readZipIndex(output.layers[0].artifact)).map((entry) => entry.name);
    assert.ok(layerFiles.includes('python/torch/lib/libtorch_cpu.so'));
    assert.ok(!layerFiles.some((name) => name.startsWith('python/torch/test/')));
    assert.equal(predict.report.totalUnzippedBytes, predict.report.code.unzippedBytes + output.layers[0].unzippedBytes);
  });

  it('resolves one tree per target, and functions packaged together share one zip', async () => {
    const pip = recordingRunner();
    const output = await packageTorchFunctions({
      config: config(),
      functions: [fn('a'), fn('b'), fn('c', { runtime: 'python3.12' })],
      naming,
      outputDir,
      runner: pip.runner,
      reporter: silentReporter,
    });
    assert.equal(pip.pipCommands().filter((command) => command === 'install').length, 2);
    assert.deepEqual(output.layers.map((layer) => layer.name), ['torchDepsPy311X8664', 'torchDepsPy312X8664']);
    assert.equal(new Set(output.functions.map((packaged) => packaged.artifact)).size, 1);
    const again = recordingRunner();
    await packageTorchFunctions({ config: config(), functions: [fn('a'), fn('c', { runtime: 'python3.12' })], naming, outputDir, runner: again.runner, reporter: silentReporter });
    assert.deepEqual(again.pipCommands().filter((command) => command === 'install' || command === 'download'), [], 'warm cache: no pip');
  });

  it('refuses a function whose own layers leave no room, before any pip runs', async () => {
    const pip = recordingRunner();
    await assert.rejects(
      packageTorchFunctions({ config: config(), functions: [fn('predict', { userLayers: [1, 2, 3, 4, 5].map((n) => ({ label: `arn:aws:lambda:us-east-1:1:layer:l${n}:1`, kind: 'remote' as const, unzippedBytes: null })) })], naming, outputDir, runner: pip.runner, reporter: silentReporter }),
      { code: 'TORCH_TOO_MANY_LAYERS', message: /"predict" already has 5 layers/ },
    );
    assert.deepEqual(pip.pipCommands(), []);
  });

  it('plans functions without running anything: a missing handler module is named', () => {
    const models = { byId: new Map(), ofFunction: new Map() };
    assert.throws(
      () => planFunctions({ config: config(), functions: [fn('predict', { handler: 'missing.predict', model: null })], models, inS3: new Set(), reporter: silentReporter }),
      { code: 'TORCH_HANDLER_NOT_FOUND', message: /missing\.py is not in the package/ },
    );
  });
});

describe('layer names', () => {
  const target = targetPlatform('python3.11', 'x86_64');

  it('carry the service and the stage, so stacks in one account and region publish their own layers', () => {
    assert.equal(deployedLayerName({ service: 'digits', stage: 'dev' }, target, 'deps'), 'digits-dev-torch-deps-py311-x86-64');
    assert.notEqual(deployedLayerName({ service: 'digits', stage: 'prod' }, target, 'deps'), deployedLayerName({ service: 'digits', stage: 'dev' }, target, 'deps'));
    assert.equal(deployedLayerName({ service: 'digits', stage: 'dev' }, targetPlatform('python3.13', 'arm64'), 'packed'), 'digits-dev-torch-packed-py313-arm64');
  });

  it('stay within Lambda\'s rules: 64 characters of [A-Za-z0-9-_], long prefixes kept apart by a digest', () => {
    const long = (stage: string) => deployedLayerName({ service: 'a-very-long-service-name-for-image-classification', stage }, target, 'packed');
    for (const name of [long('staging-eu'), long('staging-us'), deployedLayerName({ service: 'svc', stage: 'feature/x.y' }, target, 'deps')]) {
      assert.match(name, /^[A-Za-z0-9_-]{1,64}$/, name);
    }
    assert.notEqual(long('staging-eu'), long('staging-us'));
    assert.ok(long('staging-eu').endsWith('-torch-packed-py311-x86-64'));
  });
});

describe('where each model travels (store), from measured sizes (pip played by a recording runner)', () => {
  let service: string;
  before(() => {
    service = fs.mkdtempSync(path.join(os.tmpdir(), 'store-test-'));
    fs.writeFileSync(path.join(service, 'handler.py'), 'def predict(event, context, model):\n    return 1\n\n\ndef load(path):\n    return path\n');
    fs.writeFileSync(path.join(service, 'requirements.txt'), 'torch==2.13.0\n');
    // 270 MB of zeros, larger than any zip may be and sparse on disk, read by a custom loader.
    const fd = fs.openSync(path.join(service, 'big.bin'), 'w');
    fs.ftruncateSync(fd, 270_000_000);
    fs.closeSync(fd);
    fs.writeFileSync(path.join(service, 'small.bin'), Buffer.alloc(4));
  });
  after(() => fs.rmSync(service, { recursive: true, force: true }));

  const packageWith = (model: unknown, reporter = silentReporter) => {
    const config = resolveConfig({ model, cacheDir: path.join(service, 'cache'), indexUrl: 'http://127.0.0.1:9/simple' }, service);
    const outputDir = fs.mkdtempSync(path.join(service, 'out-'));
    const fn: TorchFunction = { name: 'predict', handler: 'handler.predict', runtime: 'python3.11', architecture: 'x86_64', memorySize: 3008, userLayers: [], ephemeralStorageSize: null, files: ['handler.py'], artifactName: 'svc.zip', model: config.model };
    return { outputDir, run: packageTorchFunctions({ config, functions: [fn], naming, outputDir, runner: recordingRunner().runner, reporter }) };
  };

  it('store: auto sends a model that does not fit to S3, says so, and the zip carries its manifest entry without its bytes', async () => {
    const notices: string[] = [];
    const { outputDir, run } = packageWith({ path: 'big.bin', loader: 'custom', load: 'handler:load' }, { ...silentReporter, notice: (message) => notices.push(message) });
    const output = await run;
    assert.ok(notices.some((notice) => /big\.bin \(257\.5 MiB\) goes to S3 \(store: auto\)/.test(notice)), notices.join('\n'));
    const [predict] = output.functions;
    assert.match(predict.modelObject!.key, /^serverless-torch\/models\/[0-9a-f]{64}\/big\.bin$/);
    assert.ok(!(await readZipIndex(predict.artifact)).some((entry) => entry.name === 'big.bin'));
    const manifest = JSON.parse((await readZipEntry(predict.artifact, 'serverless_torch/manifest.json')).toString('utf8'));
    assert.equal(manifest.models[predict.environment.SERVERLESS_TORCH_MODEL].s3.key, predict.modelObject!.key);
    const objects = JSON.parse(fs.readFileSync(path.join(outputDir, 'serverless-torch-models.json'), 'utf8'));
    assert.equal(fs.statSync(path.join(outputDir, objects[0].file)).size, 270_000_000);
    // The download needs /tmp: counted, and within the default 512 MB here (nothing else unpacks).
    assert.equal(predict.report.tmpBytes, 270_000_000);
    assert.equal(predict.ephemeralStorageSize, null);
  });

  it('store: package refuses a model that does not fit, and store: s3 sends even a small one', async () => {
    await assert.rejects(packageWith({ path: 'big.bin', loader: 'custom', load: 'handler:load', store: 'package' }).run, { code: 'TORCH_PACKAGE_TOO_LARGE' });
    const output = await packageWith({ path: 'small.bin', loader: 'custom', load: 'handler:load', store: 's3' }).run;
    assert.match(output.functions[0].modelObject!.key, /\/small\.bin$/);
  });
});
