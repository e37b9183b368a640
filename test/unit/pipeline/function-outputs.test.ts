import assert from 'node:assert/strict';
import { BuiltLayers } from '../../../lib/bundle/layer-build';
import { UNZIPPED_LIMIT } from '../../../lib/bundle/limits';
import { BuiltService, functionOutput } from '../../../lib/pipeline/function-outputs';
import { TorchFunction } from '../../../lib/pipeline/types';
import { formatReport } from '../../../lib/bundle/report';
import { DependencyTree } from '../../../lib/resolve/dependency-tree';
import { targetPlatform } from '../../../lib/resolve/target';
import { Reporter } from '../../../lib/util/reporter';

const MiB = 1024 * 1024;

function recordingReporter(): Reporter & { said: string[] } {
  const said: string[] = [];
  const say = (message: string) => said.push(message);
  return { said, progress: say, info: say, notice: say, warning: say, verbose: say };
}

/** A built service whose one target has a deps layer and a packed layer unpacking `tmpBytes` into /tmp. */
function service(options: { functionBytes: number; layerBytes: number; tmpBytes: number }): BuiltService {
  const built: BuiltLayers = {
    key: 'k',
    layers: [
      { role: 'deps', path: '/c/deps.zip', bytes: 1, unzippedBytes: options.layerBytes / 2, sha256: '' },
      { role: 'packed', path: '/c/packed.zip', bytes: 1, unzippedBytes: options.layerBytes / 2, sha256: '' },
    ],
    tmpBytes: options.tmpBytes,
    uncompressedBytes: 0,
    compressedBytes: options.tmpBytes,
    libraries: [],
    reservedForFunction: 0,
    compression: { codec: 'zstd', level: -1, fallback: null, archiveBytes: options.layerBytes / 2, frames: 1, units: ['torch/lib/libtorch_cpu.so'] },
  };
  const layer = (name: string, unzippedBytes: number) => ({ name, layerName: `svc-dev-${name}`, artifact: `/out/${name}.zip`, runtime: 'python3.12', architecture: 'x86_64', description: '', bytes: 1, unzippedBytes });
  return {
    contents: new Map([['fn.zip', { entries: [], unzippedBytes: options.functionBytes, modelBytes: options.functionBytes / 2, handlerForms: { predict: 'event-context-model' as const } }]]),
    zips: new Map([['fn.zip', { path: '/out/fn.zip', bytes: 1 }]]),
    trees: new Map([['python3.12-x86_64', { torch: { version: '2.13.0+cpu', wheel: 'torch.whl' }, bytecode: { compiled: 1, bytes: 1, failed: [], python: 'python3.12' } } as unknown as DependencyTree]]),
    layers: new Map([['python3.12-x86_64', { built, outputs: [layer('deps', options.layerBytes / 2), layer('packed', options.layerBytes / 2)] }]]),
    packaged: new Map([['m1', { manifest: { id: 'm1', kind: 'file' as const, path: 'model.pt', loader: 'weights' as const, factory: null, sha256: '', bytes: options.functionBytes / 2 }, source: '/svc/model.pt' }]]),
    quantization: new Map(),
  };
}

const fn = (overrides: Partial<TorchFunction> = {}): TorchFunction => ({
  name: 'predict',
  handler: 'handler.predict',
  runtime: 'python3.12',
  architecture: 'x86_64',
  memorySize: 3008,
  userLayers: [],
  ephemeralStorageSize: null,
  files: [],
  artifactName: 'fn.zip',
  model: null,
  ...overrides,
});

describe('function outputs, from built sizes', () => {
  const target = targetPlatform('python3.12', 'x86_64');

  it('raises /tmp (ephemeralStorageSize) only when the unpacked dependencies need more than 512 MB, and says so', () => {
    const reporter = recordingReporter();
    const small = functionOutput({ fn: fn(), target, modelId: 'm1' }, service({ functionBytes: MiB, layerBytes: 200 * MiB, tmpBytes: 300 * MiB }), reporter);
    assert.equal(small.ephemeralStorageSize, null);
    const large = functionOutput({ fn: fn(), target, modelId: 'm1' }, service({ functionBytes: MiB, layerBytes: 200 * MiB, tmpBytes: 600 * MiB }), reporter);
    assert.equal(large.ephemeralStorageSize, 664);
    assert.equal(large.report.ephemeralStorageSize, 664);
    assert.ok(reporter.said.some((message) => /\/tmp set to 664 MB/.test(message)), reporter.said.join('\n'));
  });

  it('refuses a function that passes the limit with its layers, naming both sizes', () => {
    assert.throws(
      () => functionOutput({ fn: fn(), target, modelId: 'm1' }, service({ functionBytes: 60 * MiB, layerBytes: UNZIPPED_LIMIT - 50 * MiB, tmpBytes: 0 }), recordingReporter()),
      { code: 'TORCH_PACKAGE_TOO_LARGE', message: /comes to \d+ bytes unzipped with its layers/ },
    );
  });

  it('warns about the init budget at a small memory size, and not for SnapStart functions', () => {
    const lean = recordingReporter();
    functionOutput({ fn: fn({ memorySize: 256 }), target, modelId: 'm1' }, service({ functionBytes: MiB, layerBytes: 200 * MiB, tmpBytes: 330 * MiB }), lean);
    assert.ok(lean.said.some((message) => /init limit/.test(message)), lean.said.join('\n'));
    const snap = recordingReporter();
    functionOutput({ fn: fn({ memorySize: 256, snapStart: true }), target, modelId: 'm1' }, service({ functionBytes: MiB, layerBytes: 200 * MiB, tmpBytes: 330 * MiB }), snap);
    assert.ok(!snap.said.some((message) => /init limit/.test(message)));
  });
});

describe('memory for torch', () => {
  const target = targetPlatform('python3.12', 'x86_64');
  const said = (memorySize: number, functionBytes: number) => {
    const reporter = recordingReporter();
    functionOutput({ fn: fn({ memorySize }), target, modelId: 'm1' }, service({ functionBytes, layerBytes: 200 * MiB, tmpBytes: 0 }), reporter);
    return reporter.said.filter((message) => /keep resident/.test(message));
  };

  it('warns below what torch and the model keep resident, with the measured figure and a size that fits', () => {
    const [warning] = said(256, MiB);
    assert.match(warning, /memorySize 256 MB is below what torch and the model keep resident, about 320 MB \(torch with the interpreter 290\.0 MiB, measured/);
    assert.match(warning, /Set memorySize to 320 MB or more/);
  });

  it('counts the model: 330 MB is enough with a 0.5 MiB model and not with a 20 MiB one', () => {
    assert.deepEqual(said(330, MiB), []);
    assert.equal(said(330, 40 * MiB).length, 1);
  });
});

describe('the package report', () => {
  it('says which tools of the build machine shaped the layers, since they are in the cache key', () => {
    const output = functionOutput({ fn: fn(), target: targetPlatform('python3.12', 'x86_64'), modelId: 'm1' }, service({ functionBytes: MiB, layerBytes: 200 * MiB, tmpBytes: 0 }), recordingReporter());
    const text = formatReport(output.report);
    assert.match(text, /layers built with: symbols kept \(no strip tool for the target here\); bytecode compiled by python3\.12/);
    assert.match(formatReport({ ...output.report, buildTools: { strip: 'llvm-strip', bytecode: null } }), /symbols stripped with llvm-strip; no bytecode/);
  });
});
