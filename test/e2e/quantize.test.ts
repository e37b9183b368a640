import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { execFileSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { HostTorch } from '../../lib/model/host-torch';
import { REPO, lastJson, makeService, runSls, serviceYaml } from '../support/sls';
import { runWithTorch, testHostTorch, MODELS_PY } from '../support/torch-models';
import { WheelIndex, prepareFixtureWheels, startWheelIndex } from '../support/wheel-index';

const EXPECTED = JSON.parse(fs.readFileSync(path.join(REPO, 'example-service', 'model', 'expected.json'), 'utf8'));
const EVENT_PATH = path.join(REPO, 'example-service', 'event.json');
const QUANTIZE = '    quantize: dynamic\n    sampleInput: model/sample.json';

function sha256(data: Buffer): string {
  return createHash('sha256').update(data).digest('hex');
}

/** One member of a zip, read with Python's zipfile (independent of the plugin's reader). */
function zipMember(zipPath: string, member: string): Buffer {
  return execFileSync('python3', ['-c', 'import sys, zipfile; sys.stdout.buffer.write(zipfile.ZipFile(sys.argv[1]).read(sys.argv[2]))', zipPath, member], {
    maxBuffer: 64 * 1024 * 1024,
  });
}

/** The one model a manifest.json (format 2) lists. */
function onlyModel(manifestJson: Buffer): any {
  const manifest = JSON.parse(manifestJson.toString('utf8'));
  assert.equal(manifest.format, 2);
  const models = Object.values(manifest.models);
  assert.equal(models.length, 1);
  return models[0];
}

describe('quantize: dynamic end to end (real CLI, torch 2.13.0)', function () {
  let index: WheelIndex;
  let service: string;
  let firstPackage: string;
  let host: HostTorch;
  const zipPath = () => path.join(service, '.serverless', 'digits-torch.zip');

  before(async () => {
    const wheels = await prepareFixtureWheels();
    index = await startWheelIndex({ torchWheels: [wheels.torchWheelRetagged], otherWheels: wheels.dependencyWheels });
    service = makeService({ files: { 'serverless.yml': serviceYaml({ torchIndexUrl: index.torchUrl, indexUrl: index.simpleUrl, extraCustom: QUANTIZE }) } });
    const result = await runSls('serverless', ['package', '--verbose'], service);
    firstPackage = result.stdout + result.stderr;
    assert.equal(result.code, 0, `sls package failed:\n${firstPackage}`);
    // The torch the plugin installed for this machine while packaging, found in its cache.
    host = await testHostTorch(index);
  });

  after(async () => {
    await index?.close();
    if (service) fs.rmSync(service, { recursive: true, force: true });
  });

  it('ships the quantized model at the configured path, with its own sha256 and how to load it', () => {
    const manifest = onlyModel(zipMember(zipPath(), 'serverless_torch/manifest.json'));
    const model = zipMember(zipPath(), 'model/model.pt');
    const original = fs.readFileSync(path.join(service, 'model', 'model.pt'));
    assert.equal(manifest.path, 'model/model.pt');
    assert.equal(manifest.loader, 'state_dict');
    assert.equal(manifest.factory, 'net:build');
    assert.deepEqual(manifest.quantized, { dtype: 'qint8', modules: ['Linear', 'LSTM', 'GRU'], engines: { aarch64: 'qnnpack' } });
    assert.equal(manifest.sha256, sha256(model));
    assert.ok(model.length < original.length / 2, `${original.length} → ${model.length} bytes`);
    assert.equal(sha256(fs.readFileSync(path.join(service, 'model', 'model.pt'))), sha256(original), "the user's file is untouched");
  });

  it('reports the size before and after, the output difference and the latency of each', () => {
    assert.match(firstPackage, /model model\/model\.pt \(state_dict, int8\)/);
    assert.match(firstPackage, /quantize: dynamic \(int8 2 Linear\): model 20\.9 KiB → 8\.5 KiB, 2\.5x smaller/);
    assert.match(
      firstPackage,
      /on model\/sample\.json: max output difference \d\.\d+(e-\d+)? \(\d+\.\d\d% of the largest output\); per call [\d.]+ ms float, [\d.]+ ms int8 \(median of \d+, 1 thread, x86 engine, on this machine\)/,
    );
  });

  it('packaging again runs no quantization and yields a byte-identical function zip', async () => {
    const before = sha256(fs.readFileSync(zipPath()));
    const result = await runSls('serverless', ['package', '--verbose'], service);
    const output = result.stdout + result.stderr;
    assert.equal(result.code, 0, output);
    assert.match(output, /Quantized model: cached result [0-9a-f]{16} .*quantization skipped/);
    assert.doesNotMatch(output, /Quantizing model\/model\.pt/);
    assert.match(output, /2\.5x smaller \(cached\)/);
    assert.equal(sha256(fs.readFileSync(zipPath())), before);
  });

  it("invoke local answers with the quantized model's own output", async () => {
    const result = await runSls('serverless', ['invoke', 'local', '-f', 'predict', '-p', EVENT_PATH], service);
    assert.equal(result.code, 0, `${result.stdout}\n${result.stderr}`);
    const answer = lastJson(result.stdout) as { predictions: number[]; logits: number[][] };
    const packagedModel = path.join(service, '.serverless', 'quantized-model.pt');
    fs.writeFileSync(packagedModel, zipMember(zipPath(), 'model/model.pt'));
    const direct = JSON.parse(
      await runWithTorch(host, service, `import json, torch, net
m = torch.ao.quantization.quantize_dynamic(net.build(), {torch.nn.Linear, torch.nn.LSTM, torch.nn.GRU}, dtype=torch.qint8)
m.load_state_dict(torch.load(${JSON.stringify(packagedModel)}, weights_only=True))
m.eval()
with torch.inference_mode():
    print(json.dumps(m(torch.tensor(json.load(open("event.json"))["inputs"], dtype=torch.float32)).tolist()))`),
    ) as number[][];
    assert.deepEqual(answer.predictions, EXPECTED.predictions);
    let fromFloat = 0;
    answer.logits.forEach((row, i) =>
      row.forEach((value, j) => {
        assert.ok(Math.abs(value - direct[i][j]) < 1e-5, `logit [${i}][${j}] ${value} vs quantized ${direct[i][j]}`);
        fromFloat = Math.max(fromFloat, Math.abs(value - EXPECTED.logits[i][j]));
      }),
    );
    assert.ok(fromFloat > 1e-3 && fromFloat < 1, `the answer differs from the float model's by ${fromFloat}`);
  });

  it('invoke local runs a quantized LSTM, shipped as TorchScript, exactly as packaged', async () => {
    const other = makeService({
      files: {
        'serverless.yml': serviceYaml({
          torchIndexUrl: index.torchUrl,
          indexUrl: index.simpleUrl,
          model: '{ path: model/lstm.pt, factory: "models:lstm" }',
          extraCustom: '    quantize: dynamic',
          functions: '  predict:\n    handler: lstm_handler.predict',
        }),
        'models.py': MODELS_PY,
        'lstm_handler.py': 'import torch\n\n\ndef predict(event, context, model):\n    with torch.inference_mode():\n        return {"outputs": model(torch.tensor(event["inputs"])).tolist()}\n',
      },
    });
    try {
      await runWithTorch(host, other, `import json, torch, models
torch.manual_seed(0)
torch.save(models.lstm().state_dict(), "model/lstm.pt")
json.dump({"inputs": torch.randn(2, 7, 32).tolist()}, open("lstm-event.json", "w"))`);
      const result = await runSls('serverless', ['invoke', 'local', '-f', 'predict', '-p', 'lstm-event.json'], other);
      assert.equal(result.code, 0, `${result.stdout}\n${result.stderr}`);
      // invoke local packages into a temporary directory: package to read the file it shipped (the same, from the cache).
      const packagedRun = await runSls('serverless', ['package'], other);
      assert.equal(packagedRun.code, 0, packagedRun.stderr);
      const zip = path.join(other, '.serverless', 'digits-torch.zip');
      const manifest = onlyModel(zipMember(zip, 'serverless_torch/manifest.json'));
      assert.equal(manifest.loader, 'torchscript');
      assert.equal(manifest.factory, null);
      const packaged = path.join(other, 'packaged-lstm.pt');
      fs.writeFileSync(packaged, zipMember(zip, 'model/lstm.pt'));
      const direct = JSON.parse(
        await runWithTorch(host, other, `import json, torch
m = torch.jit.load(${JSON.stringify(packaged)}).eval()
with torch.inference_mode():
    print(json.dumps(m(torch.tensor(json.load(open("lstm-event.json"))["inputs"])).tolist()))`),
      ) as number[][];
      const answer = (lastJson(result.stdout) as { outputs: number[][] }).outputs;
      assert.equal(answer.length, 2);
      answer.forEach((row, i) => row.forEach((value, j) => assert.ok(Math.abs(value - direct[i][j]) < 1e-5, `[${i}][${j}] ${value} vs ${direct[i][j]}`)));
    } finally {
      fs.rmSync(other, { recursive: true, force: true });
    }
  });

  it('a model with only Conv2d layers gets a notice and ships its float file', async () => {
    const other = makeService({
      files: {
        'serverless.yml': serviceYaml({
          torchIndexUrl: index.torchUrl,
          indexUrl: index.simpleUrl,
          model: '{ path: model/conv.pt, factory: "models:conv" }',
          extraCustom: '    quantize: dynamic',
        }),
        'models.py': MODELS_PY,
      },
    });
    try {
      await runWithTorch(host, other, 'import torch, models\ntorch.manual_seed(0)\ntorch.save(models.conv().state_dict(), "model/conv.pt")');
      const result = await runSls('serverless', ['package'], other);
      const output = result.stdout + result.stderr;
      assert.equal(result.code, 0, output);
      assert.match(output, /quantize: dynamic gains nothing for model\/conv\.pt: it has no Linear, LSTM, GRU layers/);
      assert.match(output, /nothing quantized \(no Linear, LSTM or GRU layers\); the float model ships/);
      const zip = path.join(other, '.serverless', 'digits-torch.zip');
      assert.equal(sha256(zipMember(zip, 'model/conv.pt')), sha256(fs.readFileSync(path.join(other, 'model', 'conv.pt'))));
      const manifest = onlyModel(zipMember(zip, 'serverless_torch/manifest.json'));
      assert.equal(manifest.quantized, undefined);
    } finally {
      fs.rmSync(other, { recursive: true, force: true });
    }
  });
});
