import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { openCache } from '../../../lib/util/cache';
import { ResolvedConfig } from '../../../lib/config/options';
import { resolveConfig } from '../../../lib/config/resolve-config';
import { TorchError } from '../../../lib/util/errors';
import { HostTorch } from '../../../lib/model/host-torch';
import { inspectModel } from '../../../lib/model/inspect';
import { Runner } from '../../../lib/util/process';
import { QUANTIZE_SCRIPT, enginesFor, quantizeModel } from '../../../lib/model/quantize';
import { Reporter } from '../../../lib/util/reporter';
import { TEST_CACHE } from '../../support/sls';
import { HOST_PYTHON, isolatedRunner, runWithTorch, testHostTorch, writeTestModels } from '../../support/torch-models';
import { TORCH_VERSION, WheelIndex, prepareFixtureWheels, startWheelIndex } from '../../support/wheel-index';

const TORCH = `${TORCH_VERSION}+cpu`;

function recordingReporter(): Reporter & { notices: string[]; verboseLines: string[] } {
  const notices: string[] = [];
  const verboseLines: string[] = [];
  return {
    notices,
    verboseLines,
    progress: () => undefined,
    info: () => undefined,
    notice: (message) => notices.push(message),
    warning: (message) => notices.push(message),
    verbose: (message) => verboseLines.push(message),
  };
}

function recordingRunner(): Runner & { calls: string[][] } {
  const calls: string[][] = [];
  const runner = (async (command, args, options) => {
    calls.push([command, ...args]);
    return isolatedRunner(command, args, options);
  }) as Runner & { calls: string[][] };
  runner.calls = calls;
  return runner;
}

describe('quantize: dynamic on real models (torch 2.13.0 on this machine)', function () {
  let index: WheelIndex;
  let host: HostTorch;
  let serviceDir: string;

  before(async () => {
    const wheels = await prepareFixtureWheels();
    index = await startWheelIndex({ torchWheels: [wheels.torchWheel], otherWheels: wheels.dependencyWheels });
    host = await testHostTorch(index);
    serviceDir = fs.mkdtempSync(path.join(TEST_CACHE, 'quantize-service-'));
    await writeTestModels(host, serviceDir);
  });

  after(async () => {
    await index?.close();
  });

  function config(model: unknown, sampleInput?: string): ResolvedConfig {
    return resolveConfig(
      { model, quantize: 'dynamic', sampleInput, python: HOST_PYTHON, torchIndexUrl: index.torchUrl, indexUrl: index.simpleUrl, cacheDir: TEST_CACHE, requirements: false },
      serviceDir,
    );
  }

  async function quantize(model: unknown, sampleInput?: string, options: { architectures?: string[]; runner?: Runner; reporter?: Reporter } = {}) {
    const resolved = config(model, sampleInput);
    return quantizeModel({
      config: resolved,
      model: await inspectModel(resolved.model!),
      sourcePath: resolved.model!.sourcePath,
      torchVersion: TORCH,
      architectures: options.architectures ?? ['x86_64'],
      cache: openCache(TEST_CACHE),
      runner: options.runner ?? isolatedRunner,
      reporter: options.reporter ?? recordingReporter(),
    });
  }

  /** Output of the packaged file loaded as the shim loads it, on the sample, with the host torch. */
  async function packagedOutput(loader: string, file: string, sample: string, factory?: string): Promise<number[]> {
    const load = {
      torchscript: `m = torch.jit.load(${JSON.stringify(file)}).eval()`,
      pickle: `m = torch.load(${JSON.stringify(file)}, weights_only=False).eval()`,
      state_dict: `import models
m = torch.ao.quantization.quantize_dynamic(models.${factory}(), {torch.nn.Linear, torch.nn.LSTM, torch.nn.GRU}, dtype=torch.qint8, inplace=True)
m.load_state_dict(torch.load(${JSON.stringify(file)}, weights_only=True, mmap=True))
m.eval()`,
    }[loader];
    const out = await runWithTorch(host, serviceDir, `import json, torch
${load}
with torch.inference_mode():
    print(json.dumps(m(torch.tensor(json.load(open(${JSON.stringify(sample)})))).flatten().tolist()))`);
    return JSON.parse(out);
  }

  it('makes the Linear-heavy state dict at least 3x smaller, within tolerance, still loading weights-only', async () => {
    const { packaged, report } = await quantize({ path: 'mlp.pt', factory: 'models:mlp' }, 'mlp.json');
    assert.equal(report.quantized, true);
    assert.deepEqual(report.layers, { Linear: 3 });
    assert.equal(packaged.manifest.loader, 'state_dict');
    assert.equal(packaged.manifest.factory, 'models:mlp');
    assert.deepEqual(packaged.manifest.quantized, { dtype: 'qint8', modules: ['Linear', 'LSTM', 'GRU'], engines: { aarch64: 'qnnpack' } });
    assert.equal(fs.statSync(packaged.source).size, packaged.manifest.bytes);
    assert.ok(report.floatBytes / report.bytes >= 3, `${report.floatBytes} → ${report.bytes} bytes`);
    const measured = report.engines[report.hostEngine];
    assert.ok(measured.maxAbsDiff! < 0.05 && measured.maxRelDiff! < 0.1, JSON.stringify(measured));
    assert.ok(measured.floatMs! > 0 && measured.quantizedMs! > 0 && measured.calls! >= 15, JSON.stringify(measured));
    // The packaged file, loaded as the shim loads it, answers like the float model within the reported difference.
    const [float, quantized] = await Promise.all([
      runWithTorch(host, serviceDir, `import json, torch, models
m = models.mlp(); m.load_state_dict(torch.load("mlp.pt")); m.eval()
print(json.dumps(m(torch.tensor(json.load(open("mlp.json")))).flatten().tolist()))`).then(JSON.parse),
      packagedOutput('state_dict', packaged.source, 'mlp.json', 'mlp'),
    ]);
    const difference = Math.max(...float.map((value: number, i: number) => Math.abs(value - quantized[i])));
    assert.ok(Math.abs(difference - measured.maxAbsDiff!) < 1e-6, `${difference} vs reported ${measured.maxAbsDiff}`);
  });

  it('re-packaging an unchanged model runs nothing: the cached result is used', async () => {
    const first = await quantize({ path: 'mlp.pt', factory: 'models:mlp' }, 'mlp.json');
    const runner = recordingRunner();
    const reporter = recordingReporter();
    const again = await quantize({ path: 'mlp.pt', factory: 'models:mlp' }, 'mlp.json', { runner, reporter });
    assert.deepEqual(runner.calls, []);
    assert.equal(again.report.reused, true);
    assert.equal(again.packaged.manifest.sha256, first.packaged.manifest.sha256);
    assert.ok(reporter.verboseLines.some((line) => /quantization skipped/.test(line)));
  });

  it('quantizes again when the sample input changes', async () => {
    fs.copyFileSync(path.join(serviceDir, 'mlp.json'), path.join(serviceDir, 'mlp-copy.json'));
    fs.appendFileSync(path.join(serviceDir, 'mlp-copy.json'), '\n');
    const runner = recordingRunner();
    const { report } = await quantize({ path: 'mlp.pt', factory: 'models:mlp' }, 'mlp-copy.json', { runner });
    assert.equal(report.reused, false);
    assert.ok(runner.calls.some((call) => call.includes(QUANTIZE_SCRIPT)));
  });

  it('quantizes a TorchScript model and ships TorchScript', async () => {
    const { packaged, report } = await quantize('mlp.ts.pt', 'mlp.json');
    assert.equal(packaged.manifest.loader, 'torchscript');
    assert.deepEqual(report.layers, { Linear: 3 });
    assert.ok(report.floatBytes / report.bytes >= 3, `${report.floatBytes} → ${report.bytes} bytes`);
    assert.ok(report.engines[report.hostEngine].maxAbsDiff! < 0.05);
  });

  it('quantizes a pickled module and ships it pickled', async () => {
    const { packaged, report } = await quantize({ path: 'mlp.pickle.pt', loader: 'pickle' }, 'mlp.json');
    assert.equal(packaged.manifest.loader, 'pickle');
    assert.ok(report.floatBytes / report.bytes >= 3);
  });

  it('quantizes an LSTM from a state dict and ships it as TorchScript, whose weights load without pickled code', async () => {
    const reporter = recordingReporter();
    const { packaged, report } = await quantize({ path: 'lstm.pt', factory: 'models:lstm' }, 'lstm.json', { reporter });
    assert.deepEqual(report.layers, { LSTM: 1, Linear: 1 });
    assert.equal(packaged.manifest.loader, 'torchscript');
    assert.equal(packaged.manifest.factory, null);
    assert.ok(report.floatBytes / report.bytes >= 3, `${report.floatBytes} → ${report.bytes} bytes`);
    const measured = report.engines[report.hostEngine];
    assert.ok(measured.maxAbsDiff! < 0.01, JSON.stringify(measured));
    assert.ok(reporter.notices.some((notice) => /packaged as TorchScript/.test(notice)), reporter.notices.join('\n'));
    const output = await packagedOutput('torchscript', packaged.source, 'lstm.json');
    assert.equal(output.length, 2 * 4);
  });

  it('leaves the LSTM of a TorchScript model float and says so', async () => {
    const reporter = recordingReporter();
    const { report } = await quantize('lstm.ts.pt', 'lstm.json', { reporter });
    assert.deepEqual(report.layers, { Linear: 1 });
    assert.ok(reporter.notices.some((notice) => /LSTM\/GRU layers stay float/.test(notice)), reporter.notices.join('\n'));
  });

  it('a Conv2d-only model gets a notice and ships its float file unchanged', async () => {
    const reporter = recordingReporter();
    const resolved = config({ path: 'conv.pt', factory: 'models:conv' }, 'conv.json');
    const model = await inspectModel(resolved.model!);
    const { packaged, report } = await quantizeModel({
      config: resolved, model, sourcePath: resolved.model!.sourcePath, torchVersion: TORCH, architectures: ['x86_64'], cache: openCache(TEST_CACHE), runner: isolatedRunner, reporter,
    });
    assert.equal(report.quantized, false);
    assert.deepEqual(packaged.manifest, model);
    assert.equal(packaged.source, path.join(serviceDir, 'conv.pt'));
    assert.ok(reporter.notices.some((notice) => /gains nothing for conv\.pt: it has no Linear, LSTM, GRU layers/.test(notice)), reporter.notices.join('\n'));
  });

  it('measures with qnnpack, the engine arm64 functions use', async () => {
    const { report } = await quantize({ path: 'mlp.pt', factory: 'models:mlp' }, 'mlp.json', { architectures: ['x86_64', 'arm64'] });
    assert.ok(report.engines.qnnpack.maxAbsDiff! < 0.05, JSON.stringify(report.engines));
    assert.ok(report.engines[report.hostEngine].loaded);
    assert.deepEqual(enginesFor(['arm64', 'x86_64', 'arm64']), ['default', 'qnnpack']);
  });

  const refusals: [string, unknown, string | undefined, string, RegExp][] = [
    ['a sample of the wrong shape', { path: 'mlp.pt', factory: 'models:mlp' }, 'lstm.json', 'TORCH_SAMPLE_INPUT_INVALID', /does not accept sampleInput lstm\.json \(a float32 tensor of shape \[2, 7, 32\]\).*mat1 and mat2/],
    ['a factory that builds another architecture', { path: 'mlp.pt', factory: 'models:conv' }, undefined, 'TORCH_QUANTIZE_MODEL_INVALID', /could not load mlp\.pt with the state_dict loader.*Missing key/],
    ['a factory that does not exist', { path: 'mlp.pt', factory: 'models:nope' }, undefined, 'TORCH_QUANTIZE_MODEL_INVALID', /has no attribute 'nope'/],
  ];
  for (const [label, model, sample, code, message] of refusals) {
    it(`${label} is refused with ${code}`, async () => {
      await assert.rejects(quantize(model, sample), (error: unknown) => error instanceof TorchError && error.code === code && message.test(error.message));
    });
  }

  it('a sample that is not an array of numbers is refused before the model runs', async () => {
    fs.writeFileSync(path.join(serviceDir, 'words.json'), '{"inputs": [["a", "b"]]}');
    await assert.rejects(quantize({ path: 'mlp.pt', factory: 'models:mlp' }, 'words.json'), (error: unknown) =>
      error instanceof TorchError && error.code === 'TORCH_SAMPLE_INPUT_INVALID' && /holds 'a', which is not a number/.test(error.message));
  });

  it('plain weights (no factory) have no module to quantize', async () => {
    const runner = recordingRunner();
    await assert.rejects(quantize('mlp.pt', undefined, { runner }), (error: unknown) => error instanceof TorchError && error.code === 'TORCH_QUANTIZE_NEEDS_MODULE');
    assert.deepEqual(runner.calls, []);
  });
});
