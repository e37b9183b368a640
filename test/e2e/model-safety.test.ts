import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { runWithTorch } from '../support/host-torch';
import { prepareFixtureWheels, startWheelIndex } from '../support/wheel-index';
import { REPO, SlsResult, lastJson, makeService, runSls, serviceYaml } from '../support/sls';

const EVENT = JSON.parse(fs.readFileSync(path.join(REPO, 'example-service', 'event.json'), 'utf8'));

function codesIn(result: SlsResult): string[] {
  return [...`${result.stdout}\n${result.stderr}`.matchAll(/\[(TORCH_[A-Z_]+)\]/g)].map((match) => match[1]);
}

describe('untrusted content: which loaders package on which torch (real CLI)', function () {
  const cleanup: string[] = [];
  after(() => cleanup.forEach((dir) => fs.rmSync(dir, { recursive: true, force: true })));

  // These rows never reach an index: the exact pin settles the torch version before pip runs.
  const refused: [string, string, string][] = [
    ['the state_dict loader on torch 2.5.1', 'torch==2.5.1\n', '{ path: model/model.pt, loader: state_dict, factory: "net:build" }'],
    ['the default (weights-only) loader on torch 2.9.1', 'torch==2.9.1\n', 'model/weights.pt'],
    ['the pickle loader on torch 2.9.1', 'torch==2.9.1\n', '{ path: model/module.pt, loader: pickle }'],
  ];
  for (const [label, requirements, model] of refused) {
    it(`${label} is refused with TORCH_UNSAFE_TORCH_VERSION before pip runs`, async () => {
      const dir = makeService({
        files: { 'requirements.txt': requirements, 'serverless.yml': serviceYaml({ model, torchIndexUrl: 'http://127.0.0.1:9/whl/cpu/', indexUrl: 'http://127.0.0.1:9/simple/' }) },
      });
      cleanup.push(dir);
      if (model.includes('module.pt')) await runWithTorch('import torch, net\ntorch.save(net.build(), "model/module.pt")', dir);
      if (model.includes('weights.pt')) await runWithTorch('import torch, net\ntorch.save(net.build().state_dict(), "model/weights.pt")', dir);
      const result = await runSls('serverless', ['package'], dir);
      const output = result.stdout + result.stderr;
      assert.notEqual(result.code, 0);
      assert.deepEqual(codesIn(result), ['TORCH_UNSAFE_TORCH_VERSION'], output);
      assert.match(output, /torch 2\.[59]\.1 has (CVE-2025-32434 .* and )?CVE-2026-24747 .*could run code in your function\. Use torch 2\.10\.0 or newer .*allowUnsafeTorch: true/);
      assert.doesNotMatch(output, /pip/, 'pip ran');
      process.stdout.write(`        ${output.slice(output.indexOf('[TORCH_UNSAFE_TORCH_VERSION]')).split('\n')[0]}\n`);
    });
  }

  it('allowUnsafeTorch: true lets torch 2.5.1 through to resolution', async () => {
    const wheels = await prepareFixtureWheels();
    const index = await startWheelIndex({ torchWheels: [wheels.torchWheelRetagged], otherWheels: wheels.dependencyWheels });
    try {
      const dir = makeService({
        files: { 'requirements.txt': 'torch==2.5.1\n', 'serverless.yml': serviceYaml({ torchIndexUrl: index.torchUrl, indexUrl: index.simpleUrl, extraCustom: '    allowUnsafeTorch: true' }) },
      });
      cleanup.push(dir);
      const result = await runSls('serverless', ['package'], dir);
      // The index has only 2.13.0: getting as far as asking it proves the refusal was lifted.
      assert.deepEqual(codesIn(result), ['TORCH_VERSION_NOT_FOUND'], result.stdout + result.stderr);
    } finally {
      await index.close();
    }
  });

  it('a pickled module with loader: pickle on torch 2.13 packages with a warning and runs', async () => {
    const wheels = await prepareFixtureWheels();
    const index = await startWheelIndex({ torchWheels: [wheels.torchWheelRetagged], otherWheels: wheels.dependencyWheels });
    try {
      const dir = makeService({ files: { 'serverless.yml': serviceYaml({ model: '{ path: model/module.pt, loader: pickle }', torchIndexUrl: index.torchUrl, indexUrl: index.simpleUrl }) } });
      cleanup.push(dir);
      await runWithTorch('import torch, net\ntorch.manual_seed(0)\ntorch.save(net.build(), "model/module.pt")', dir);
      const result = await runSls('serverless', ['package'], dir);
      const output = result.stdout + result.stderr;
      assert.equal(result.code, 0, output);
      assert.match(output, /custom\.torch\.model\.loader is "pickle": every cold start runs torch\.load\(weights_only=False\) on model\/module\.pt, which executes whatever code the file holds/);
      const invoked = await runSls('serverless', ['invoke', 'local', '-f', 'predict', '-p', path.join(REPO, 'example-service', 'event.json')], dir);
      assert.equal(invoked.code, 0, invoked.stdout + invoked.stderr);
      assert.equal((lastJson(invoked.stdout) as { predictions: number[] }).predictions.length, EVENT.inputs.length);
    } finally {
      await index.close();
    }
  });
});
