import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { FixtureWheels, WheelIndex, prepareFixtureWheels, startWheelIndex } from '../support/wheel-index';
import { CLIS, REPO, exampleYaml, lastJson, makeService, runSls, serviceYaml, zipMembers } from '../support/sls';

const PYTHON311 = execFileSync('python3.11', ['-c', 'import sys; print(sys.executable)'], { encoding: 'utf8' }).trim();
const EXPECTED = JSON.parse(fs.readFileSync(path.join(REPO, 'example-service', 'model', 'expected.json'), 'utf8'));
const EVENT_PATH = path.join(REPO, 'example-service', 'event.json');
const LIMIT = 262_144_000;

function assertSamePrediction(actual: any): void {
  assert.deepEqual(actual.predictions, EXPECTED.predictions);
  actual.logits.forEach((row: number[], i: number) =>
    row.forEach((value, j) => assert.ok(Math.abs(value - EXPECTED.logits[i][j]) < 1e-4, `logit [${i}][${j}] ${value} vs ${EXPECTED.logits[i][j]}`)),
  );
}

function sha256(file: string): string {
  return require('node:crypto').createHash('sha256').update(fs.readFileSync(file)).digest('hex');
}

describe('packaging the example service end to end (real CLI, pip, torch 2.13.0)', function () {
  let wheels: FixtureWheels;
  let index: WheelIndex;
  let service: string;
  let template: any;

  before(async () => {
    wheels = await prepareFixtureWheels();
    index = await startWheelIndex({ torchWheels: [wheels.torchWheelRetagged], otherWheels: wheels.dependencyWheels });
    service = makeService({ files: { 'serverless.yml': serviceYaml({ torchIndexUrl: index.torchUrl, indexUrl: index.simpleUrl }) } });
    const result = await runSls('serverless', ['package', '--verbose'], service);
    assert.equal(result.code, 0, `sls package failed:\n${result.stdout}\n${result.stderr}`);
    template = JSON.parse(fs.readFileSync(path.join(service, '.serverless', 'cloudformation-template-update-stack.json'), 'utf8'));
  });

  after(async () => {
    await index?.close();
    if (service) fs.rmSync(service, { recursive: true, force: true });
  });

  it('points the torch function at the shim and keeps the opted-out function as it was', () => {
    const predict = template.Resources.PredictLambdaFunction.Properties;
    assert.equal(predict.Handler, 'serverless_torch.shim.handler');
    assert.equal(predict.Environment.Variables.SERVERLESS_TORCH_HANDLER, 'handler.predict');
    const health = template.Resources.HealthLambdaFunction.Properties;
    assert.equal(health.Handler, 'health.main');
    assert.equal(health.Layers, undefined);
  });

  it('wires layers with compatible runtimes and architectures, at most five per function', () => {
    const predict = template.Resources.PredictLambdaFunction.Properties;
    assert.ok(predict.Layers.length >= 1 && predict.Layers.length <= 5);
    for (const ref of predict.Layers) {
      const layer = template.Resources[ref.Ref].Properties;
      assert.deepEqual(layer.CompatibleRuntimes, ['python3.11']);
      assert.deepEqual(layer.CompatibleArchitectures, ['x86_64']);
    }
  });

  it('names the layers after the service and the stage, as the framework names everything else', () => {
    const predict = template.Resources.PredictLambdaFunction.Properties;
    const names = predict.Layers.map((ref: { Ref: string }) => template.Resources[ref.Ref].Properties.LayerName).sort();
    assert.ok(names.length >= 1);
    for (const name of names) assert.match(name, /^digits-dev-torch-(deps|packed)-py311-x86-64$/);
  });

  it('keeps function code plus layers under 262,144,000 bytes unzipped', () => {
    const state = JSON.parse(fs.readFileSync(path.join(service, '.serverless', 'serverless-state.json'), 'utf8'));
    const artifacts = [state.service.functions.predict.package.artifact, ...Object.values<any>(state.service.layers).map((layer) => layer.package.artifact)];
    const unzipped = artifacts.reduce((sum: number, artifact: string) => {
      const out = execFileSync('python3', ['-c', 'import sys, zipfile; print(sum(i.file_size for i in zipfile.ZipFile(sys.argv[1]).infolist()))', path.resolve(service, artifact)], { encoding: 'utf8' });
      return sum + Number(out);
    }, 0);
    assert.ok(unzipped < LIMIT, `${unzipped} bytes unzipped`);
  });

  it('ships no GPU library, no foreign bytecode and none of what inference does not need', () => {
    const layerZips = fs.readdirSync(path.join(service, '.serverless')).filter((file) => file.startsWith('torch'));
    const members = layerZips.flatMap((file) => zipMembers(path.join(service, '.serverless', file), true));
    assert.ok(members.some((member) => member.endsWith('torch/__init__.py')));
    assert.ok(members.some((member) => /^serverless-torch\/deps-[0-9a-f]{16}\.zst$/.test(member)), 'the zstd archive travels in the packed layer');
    assert.ok(members.includes('python/zstandard/__init__.py'), 'the zstd decoder ships uncompressed, importable before anything is unpacked');
    // Bytecode ships only when compiled for the runtime's own Python (cpython-311 here).
    for (const bad of [/^(python\/)?(nvidia|triton)[^/]*\//, /libtorch_cuda/, /torch\/test\//, /torch\/include\//, /\.pyi$/, /__pycache__\/(?![^/]+\.cpython-311\.pyc$)/]) {
      assert.ok(!members.some((member) => bad.test(member)), `a member matches ${bad}`);
    }
    assert.ok(members.some((member) => /torch-2\.13\.0\+cpu\.dist-info\/METADATA$/.test(member)), 'dist-info is kept');
    assert.ok(members.includes('python/torch/__pycache__/__init__.cpython-311.pyc'), 'torch ships bytecode for python3.11');
    assert.ok(!members.some((member) => member.startsWith('python/sympy/') && member.endsWith('.pyc')), 'bytecode only for what import torch imports');
  });

  it('puts the shim, its manifest and the model in the function package, without node_modules', () => {
    const members = zipMembers(path.join(service, '.serverless', 'digits-torch.zip'));
    for (const expected of ['serverless_torch/shim.py', 'serverless_torch/unpack.py', 'serverless_torch/manifest.json', 'model/model.pt', 'handler.py', 'net.py']) {
      assert.ok(members.includes(expected), `${expected} missing`);
    }
    assert.ok(!members.some((member) => member.startsWith('node_modules/')));
  });

  it('packaging twice yields byte-identical artifacts', async () => {
    const before = Object.fromEntries(
      fs.readdirSync(path.join(service, '.serverless')).filter((f) => f.endsWith('.zip')).map((f) => [f, sha256(path.join(service, '.serverless', f))]),
    );
    const result = await runSls('serverless', ['package'], service);
    assert.equal(result.code, 0, result.stderr);
    const after = Object.fromEntries(
      fs.readdirSync(path.join(service, '.serverless')).filter((f) => f.endsWith('.zip')).map((f) => [f, sha256(path.join(service, '.serverless', f))]),
    );
    assert.deepEqual(after, before);
  });

  it('reports what the package weighs against each limit', async () => {
    const result = await runSls('serverless', ['package'], service);
    const output = result.stdout + result.stderr;
    assert.match(output, /predict \(python3\.11 x86_64, torch 2\.13\.0\+cpu/);
    assert.match(output, /total \/ limit 250\.0 MiB/);
    assert.match(output, /\/tmp at cold start/);
    assert.match(output, /compressed with zstd level -?\d+: 1 of the dependencies in \d+ frames/);
  });

  for (const cli of CLIS) {
    it(`invoke local with ${cli} runs the packaged shim and returns the model's own output`, async () => {
      const result = await runSls(cli, ['invoke', 'local', '-f', 'predict', '-p', EVENT_PATH], service);
      assert.equal(result.code, 0, `${result.stdout}\n${result.stderr}`);
      assertSamePrediction(lastJson(result.stdout));
    });
  }

  it('invoke local surfaces an error from the user handler unchanged', async () => {
    const result = await runSls('serverless', ['invoke', 'local', '-f', 'predict', '-d', '{"inputs": [[1, 2]]}'], service);
    assert.notEqual(result.code, 0);
    const error = lastJson(result.stdout) as any;
    assert.equal(error.errorType, 'ValueError');
    assert.match(error.errorMessage, /inputs\[0\] must be a list of 64 pixel values/);
  });

  it('the artifacts run self-contained with python -S in a Lambda-like layout', () => {
    const root = fs.mkdtempSync(path.join(os.tmpdir(), 'lambda-layout-'));
    try {
      const state = JSON.parse(fs.readFileSync(path.join(service, '.serverless', 'serverless-state.json'), 'utf8'));
      const fn = state.service.functions.predict;
      const layerKeys = Object.keys(state.service.layers);
      const layerZips = template.Resources.PredictLambdaFunction.Properties.Layers.map((ref: { Ref: string }) => {
        const key = layerKeys.find((name) => `${name.charAt(0).toUpperCase()}${name.slice(1)}LambdaLayer` === ref.Ref)!;
        return path.resolve(service, state.service.layers[key].package.artifact);
      });
      const unzip = `import sys, zipfile, os
zipfile.ZipFile(sys.argv[1]).extractall(sys.argv[2])
for info in zipfile.ZipFile(sys.argv[1]).infolist():
    mode = info.external_attr >> 16
    if mode & 0o111: os.chmod(os.path.join(sys.argv[2], info.filename), mode & 0o777)`;
      execFileSync('python3', ['-c', unzip, path.resolve(service, fn.package.artifact), path.join(root, 'var/task')]);
      for (const zip of layerZips) execFileSync('python3', ['-c', unzip, zip, path.join(root, 'opt')]);
      fs.mkdirSync(path.join(root, 'tmp'));
      execFileSync('chmod', ['-R', 'a-w', path.join(root, 'var'), path.join(root, 'opt')]);
      const out = execFileSync(
        PYTHON311,
        // The local runner stays in the plugin (it never ships): run from the repository.
        ['-I', '-S', path.join(REPO, 'python', 'local', 'invoke_local.py')],
        {
          input: fs.readFileSync(EVENT_PATH, 'utf8').replace(/\n/g, ' ') + '\n',
          env: {
            PATH: '/usr/bin:/bin',
            LAMBDA_TASK_ROOT: path.join(root, 'var/task'),
            SERVERLESS_TORCH_OPT_DIR: path.join(root, 'opt'),
            SERVERLESS_TORCH_TMP_DIR: path.join(root, 'tmp'),
            SERVERLESS_TORCH_HANDLER: 'handler.predict',
            SERVERLESS_TORCH_MODEL: template.Resources.PredictLambdaFunction.Properties.Environment.Variables.SERVERLESS_TORCH_MODEL,
            SERVERLESS_TORCH_RESULT_FD: '1',
            AWS_LAMBDA_FUNCTION_MEMORY_SIZE: '3008',
          },
          encoding: 'utf8',
          stdio: ['pipe', 'pipe', 'pipe'],
        },
      );
      const line = out.trim().split('\n').filter((l) => l.startsWith('{"result"')).pop()!;
      assertSamePrediction(JSON.parse(line).result);
    } finally {
      execFileSync('chmod', ['-R', 'u+w', root]);
      fs.rmSync(root, { recursive: true, force: true });
    }
  });

  it('osls packages the same service into the same artifacts', async () => {
    const other = makeService({ files: { 'serverless.yml': serviceYaml({ torchIndexUrl: index.torchUrl, indexUrl: index.simpleUrl }) } });
    try {
      const result = await runSls('osls', ['package'], other);
      assert.equal(result.code, 0, `${result.stdout}\n${result.stderr}`);
      for (const file of fs.readdirSync(path.join(service, '.serverless')).filter((f) => f.startsWith('torch') && f.endsWith('.zip'))) {
        assert.equal(sha256(path.join(other, '.serverless', file)), sha256(path.join(service, '.serverless', file)), file);
      }
    } finally {
      fs.rmSync(other, { recursive: true, force: true });
    }
  });

  // Last: deploy function leaves .serverless/ as the framework's single-function packaging does.
  it('deploy function ships the same shimmed zip as a full package', async () => {
    const packaged = sha256(path.join(service, '.serverless', 'digits-torch.zip'));
    const result = await runSls('serverless', ['deploy', 'function', '-f', 'predict'], service);
    assert.equal(result.code, 0, `${result.stdout}\n${result.stderr}`);
    const upload = result.awsRequests.find((request) => request.method === 'updateFunctionCode');
    assert.ok(upload, `no code upload among ${result.awsRequests.map((request) => request.method).join(', ')}`);
    assert.equal(sha256(upload.params.ZipFile.savedTo), packaged);
    const configuration = result.awsRequests.find((request) => request.method === 'updateFunctionConfiguration');
    assert.equal(configuration?.params.Handler, 'serverless_torch.shim.handler');
    assert.equal(configuration?.params.Environment.Variables.SERVERLESS_TORCH_HANDLER, 'handler.predict');
    assert.match(result.stdout + result.stderr, /dependency layers stay those of the last full deploy/);
  });
});

describe('the example service as its serverless.yml is written (indexes and runtime pointed at the local wheels)', function () {
  let index: WheelIndex;
  let service: string;

  before(async () => {
    const wheels = await prepareFixtureWheels();
    index = await startWheelIndex({ torchWheels: [wheels.torchWheelRetagged], otherWheels: wheels.dependencyWheels });
    service = makeService({ files: { 'serverless.yml': exampleYaml({ torchIndexUrl: index.torchUrl, indexUrl: index.simpleUrl }) } });
    const result = await runSls('serverless', ['package'], service);
    assert.equal(result.code, 0, `sls package failed:\n${result.stdout}\n${result.stderr}`);
  });
  after(async () => {
    await index?.close();
    if (service) fs.rmSync(service, { recursive: true, force: true });
  });

  it('ships the model only to the torch function: the health function (torch: false) has no model/', () => {
    const health = zipMembers(path.join(service, '.serverless', 'digits.zip'));
    assert.ok(health.includes('health.py'));
    assert.ok(!health.some((member) => member.startsWith('model/')), health.join(', '));
    assert.ok(zipMembers(path.join(service, '.serverless', 'digits-torch.zip')).includes('model/model.pt'));
  });
});

describe('refusing a torch wheel the runtime cannot run', () => {
  it('the untouched manylinux_2_28 torch is refused for python3.11, naming the runtimes that work', async () => {
    const wheels = await prepareFixtureWheels();
    const index = await startWheelIndex({ torchWheels: [wheels.torchWheel], otherWheels: wheels.dependencyWheels });
    const service = makeService({ files: { 'serverless.yml': serviceYaml({ torchIndexUrl: index.torchUrl, indexUrl: index.simpleUrl }) } });
    try {
      const result = await runSls('serverless', ['package'], service);
      assert.notEqual(result.code, 0);
      const output = result.stdout + result.stderr;
      assert.match(output, /TORCH_NEEDS_NEWER_GLIBC/);
      assert.match(output, /needs glibc 2\.28 but python3\.11 runs on Amazon Linux 2 with glibc 2\.26/);
      assert.match(output, /python3\.12 or python3\.13 or python3\.14/);
      assert.doesNotMatch(output, /at .*\.js:\d+/, 'no stack trace without --verbose');
      const leftovers = fs.existsSync(path.join(service, '.serverless')) ? fs.readdirSync(path.join(service, '.serverless')) : [];
      assert.deepEqual(leftovers.filter((file) => file.includes('torch') || file === 'serverless-state.json' || file.includes('update-stack')), []);
    } finally {
      await index.close();
      fs.rmSync(service, { recursive: true, force: true });
    }
  });
});

describe('invoke local refuses what it cannot run faithfully', () => {
  const yaml = (runtime: string, architecture: string) =>
    serviceYaml({ runtime, architecture, torchIndexUrl: 'http://127.0.0.1:9/whl/cpu/', indexUrl: 'http://127.0.0.1:9/simple/' });

  it('says so when the machine has no interpreter of the runtime\'s minor version', async () => {
    const service = makeService({ files: { 'serverless.yml': yaml('python3.14', 'x86_64') } });
    try {
      const result = await runSls('serverless', ['invoke', 'local', '-f', 'predict', '-p', EVENT_PATH], service, { PATH: '/usr/bin:/bin', PYENV_ROOT: '/nonexistent' });
      assert.notEqual(result.code, 0);
      assert.match(result.stdout + result.stderr, /TORCH_NO_LOCAL_PYTHON.*Python 3\.14.*python3\.14/s);
    } finally {
      fs.rmSync(service, { recursive: true, force: true });
    }
  });

  it('says so when the function is built for another processor', async () => {
    const service = makeService({ files: { 'serverless.yml': yaml('python3.11', process.arch === 'arm64' ? 'x86_64' : 'arm64') } });
    try {
      const result = await runSls('serverless', ['invoke', 'local', '-f', 'predict', '-p', EVENT_PATH], service);
      assert.notEqual(result.code, 0);
      assert.match(result.stdout + result.stderr, /TORCH_INVOKE_ARCHITECTURE_MISMATCH/);
    } finally {
      fs.rmSync(service, { recursive: true, force: true });
    }
  });

  it('a missing model file fails in one message with its code, the path and the fix, without a stack trace', async () => {
    const service = makeService({
      files: { 'serverless.yml': serviceYaml({ model: 'model/missing.pt', torchIndexUrl: 'http://127.0.0.1:9/whl/cpu/', indexUrl: 'http://127.0.0.1:9/simple/' }) },
    });
    try {
      const result = await runSls('serverless', ['package'], service);
      assert.notEqual(result.code, 0);
      const output = result.stdout + result.stderr;
      assert.match(output, /\[TORCH_MODEL_NOT_FOUND\] custom\.torch\.model is "model\/missing\.pt", but .*missing\.pt does not exist\. Check the path/);
      assert.doesNotMatch(output, /\n\s+at .*\(.*\.js:\d+:\d+\)/);
      const leftovers = fs.existsSync(path.join(service, '.serverless')) ? fs.readdirSync(path.join(service, '.serverless')) : [];
      assert.deepEqual(leftovers.filter((file) => file.endsWith('.zip') || file === 'serverless-state.json'), []);
    } finally {
      fs.rmSync(service, { recursive: true, force: true });
    }
  });
});

describe('services with individually packaged and non-Python functions', () => {
  it('packages each torch function on its own and leaves a Node.js function alone', async () => {
    const wheels = await prepareFixtureWheels();
    const index = await startWheelIndex({ torchWheels: [wheels.torchWheelRetagged], otherWheels: wheels.dependencyWheels });
    const service = makeService({
      files: {
        'serverless.yml': serviceYaml({
          torchIndexUrl: index.torchUrl,
          indexUrl: index.simpleUrl,
          packageSection: "package:\n  individually: true\n  patterns:\n    - '!node_modules/**'\n    - '!data/**'",
          functions: [
            '  predict:\n    handler: handler.predict',
            '  again:\n    handler: handler.predict\n    memorySize: 1769',
            '  web:\n    handler: web.main\n    runtime: nodejs20.x',
          ].join('\n'),
        }),
        'web.js': 'exports.main = async () => ({ ok: true });\n',
      },
    });
    try {
      const result = await runSls('serverless', ['package'], service);
      assert.equal(result.code, 0, `${result.stdout}\n${result.stderr}`);
      const dir = path.join(service, '.serverless');
      const predict = zipMembers(path.join(dir, 'predict.zip'));
      const again = zipMembers(path.join(dir, 'again.zip'));
      assert.ok(predict.includes('serverless_torch/shim.py') && again.includes('serverless_torch/shim.py'));
      assert.ok(!zipMembers(path.join(dir, 'web.zip')).some((member) => member.startsWith('serverless_torch/')));
      const template = JSON.parse(fs.readFileSync(path.join(dir, 'cloudformation-template-update-stack.json'), 'utf8'));
      assert.equal(template.Resources.WebLambdaFunction.Properties.Handler, 'web.main');
      assert.equal(template.Resources.WebLambdaFunction.Properties.Layers, undefined);
      assert.deepEqual(template.Resources.AgainLambdaFunction.Properties.Layers, template.Resources.PredictLambdaFunction.Properties.Layers);
    } finally {
      await index.close();
      fs.rmSync(service, { recursive: true, force: true });
    }
  });
});
