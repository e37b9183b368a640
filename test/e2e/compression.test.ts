import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { LOCAL_SCRIPTS_DIR } from '../../lib/util/plugin-paths';
import { runWithTorch } from '../support/host-torch';
import { layOutPackaged, packagedFunction } from '../support/lambda-layout';
import { TEST_CACHE, lastJson, makeService, runSls, serviceYaml, zipMembers } from '../support/sls';
import { FixtureWheels, WheelIndex, isZstandardWheel, prepareFixtureWheels, startWheelIndex } from '../support/wheel-index';

const LIMIT = 262_144_000;
const MODEL_BYTES = 140_000_000;

/** deps.json of the packed layer, read with Python's zipfile. */
function depsJson(layerZip: string): any {
  const script = 'import sys, zipfile; sys.stdout.write(zipfile.ZipFile(sys.argv[1]).read("serverless-torch/deps.json").decode())';
  return JSON.parse(execFileSync('python3', ['-c', script, layerZip], { encoding: 'utf8', maxBuffer: 64 * 1024 * 1024 }));
}

function unzippedBytes(zips: string[]): number {
  const script = 'import sys, zipfile; print(sum(i.file_size for z in sys.argv[1:] for i in zipfile.ZipFile(z).infolist()))';
  return Number(execFileSync('python3', ['-c', script, ...zips], { encoding: 'utf8' }));
}

/**
 * Runs the packaged function once, laid out as Lambda lays it out (read-only /var/task and /opt,
 * an empty /tmp), with python3.11 -I -S as the runtime would: nothing from this machine's
 * site-packages. Returns the result line.
 */
async function runInLambdaLayout(service: string, event: unknown): Promise<{ result: any; stderr: string }> {
  const root = fs.mkdtempSync(path.join(os.tmpdir(), 'lambda-layout-'));
  try {
    const packaged = packagedFunction(service, 'predict');
    const layout = await layOutPackaged(packaged, root, TEST_CACHE);
    execFileSync('chmod', ['-R', 'a-w', layout.taskRoot]);
    const stderrFile = path.join(root, 'stderr');
    const out = execFileSync('python3.11', ['-I', '-S', path.join(LOCAL_SCRIPTS_DIR, 'invoke_local.py')], {
      input: `${JSON.stringify(event)}\n`,
      env: {
        PATH: '/usr/bin:/bin',
        LAMBDA_TASK_ROOT: layout.taskRoot,
        SERVERLESS_TORCH_OPT_DIR: layout.optDir,
        SERVERLESS_TORCH_TMP_DIR: layout.tmpDir,
        // The function's own environment: its handler and which of the manifest's models is its own.
        ...packaged.environment,
        SERVERLESS_TORCH_RESULT_FD: '1',
        AWS_LAMBDA_FUNCTION_MEMORY_SIZE: '3008',
      },
      encoding: 'utf8',
      maxBuffer: 64 * 1024 * 1024,
      stdio: ['pipe', 'pipe', fs.openSync(stderrFile, 'w')],
    });
    const line = out.trim().split('\n').filter((candidate) => candidate.startsWith('{"result"')).pop();
    const stderr = fs.readFileSync(stderrFile, 'utf8');
    assert.ok(line, `no result:\n${out}\n${stderr}`);
    return { result: JSON.parse(line).result, stderr };
  } finally {
    execFileSync('chmod', ['-R', 'u+w', root]);
    fs.rmSync(root, { recursive: true, force: true });
  }
}

describe('zstd-packed dependencies end to end (real CLI, pip, torch 2.13.0)', function () {
  let wheels: FixtureWheels;
  const cleanup: string[] = [];
  const indexes: WheelIndex[] = [];

  before(async () => {
    wheels = await prepareFixtureWheels();
  });

  after(async () => {
    for (const index of indexes) await index.close();
    for (const dir of cleanup) fs.rmSync(dir, { recursive: true, force: true });
  });

  /** Packages a copy of the example, with `files` written over it, against an index serving `otherWheels`. */
  async function packaged(options: { otherWheels: string[]; model?: string; files?: Record<string, string | Buffer>; functions?: string }): Promise<{ service: string; output: string }> {
    const index = await startWheelIndex({ torchWheels: [wheels.torchWheelRetagged], otherWheels: options.otherWheels });
    indexes.push(index);
    const yaml = serviceYaml({ torchIndexUrl: index.torchUrl, indexUrl: index.simpleUrl, model: options.model, functions: options.functions });
    const service = makeService({ files: { ...(options.files ?? {}), 'serverless.yml': yaml } });
    cleanup.push(service);
    const result = await runSls('serverless', ['package', '--verbose'], service);
    const output = result.stdout + result.stderr;
    assert.equal(result.code, 0, output);
    return { service, output };
  }

  it('with no zstandard wheel for the target on the index, falls back to zlib, says so in the report, and runs', async () => {
    const { service, output } = await packaged({ otherWheels: wheels.dependencyWheels.filter((wheel) => !isZstandardWheel(wheel)) });
    assert.match(output, /zstd decoder for python3\.11-x86_64: none \(http:\/\/127\.0\.0\.1:\d+\/simple\/ has no zstandard wheel for python3\.11 x86_64\)/);
    assert.match(output, /compressed with zlib level 6: .*; zlib because http:\/\/127\.0\.0\.1:\d+\/simple\/ has no zstandard wheel for python3\.11 x86_64: unpacking at cold start takes about 4 times longer/);
    const layers = packagedFunction(service, 'predict').layerZips;
    assert.equal(depsJson(layers[1]).codec, 'zlib');
    assert.ok(!zipMembers(layers[0]).some((member) => member.startsWith('python/zstandard/')), 'no decoder shipped for nothing');
    const invoked = await runSls('serverless', ['invoke', 'local', '-f', 'predict', '-p', path.join(service, 'event.json')], service);
    assert.equal(invoked.code, 0, invoked.stdout + invoked.stderr);
    assert.ok(Array.isArray((lastJson(invoked.stdout) as any).predictions));
  });

  it(`a ${MODEL_BYTES / 1e6} MB TorchScript model packages within Lambda's limit and runs in the Lambda-like layout`, async () => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'big-model-'));
    cleanup.push(dir);
    // Random weights: a 64 → 4096 → 4096 → 4096 → 384 MLP is 36.5 M float32 parameters, 146 MB.
    const made = await runWithTorch(
      `import json, torch
torch.manual_seed(0)
net = torch.nn.Sequential(torch.nn.Linear(64, 4096), torch.nn.ReLU(), torch.nn.Linear(4096, 4096), torch.nn.ReLU(),
                          torch.nn.Linear(4096, 4096), torch.nn.ReLU(), torch.nn.Linear(4096, 384)).eval()
torch.jit.save(torch.jit.script(net), "model.pt")
x = torch.linspace(-1, 1, 64).reshape(1, 64)
print(json.dumps({"inputs": x.tolist(), "output": net(x).sum().item()}))
`,
      dir,
    );
    const { inputs, output } = JSON.parse(made.trim().split('\n').pop()!);
    const model = fs.readFileSync(path.join(dir, 'model.pt'));
    assert.ok(model.length >= MODEL_BYTES, `${model.length} bytes`);
    const handler = 'import torch\n\ndef predict(event, context, model):\n    with torch.no_grad():\n        return {"output": model(torch.tensor(event["inputs"])).sum().item()}\n';
    const { service, output: log } = await packaged({
      otherWheels: wheels.dependencyWheels,
      model: '{ path: model/model.pt, loader: torchscript }',
      files: { 'model/model.pt': model, 'handler.py': handler },
      functions: '  predict:\n    handler: handler.predict',
    });
    const fn = packagedFunction(service, 'predict');
    const total = unzippedBytes([fn.functionZip, ...fn.layerZips]);
    assert.ok(total <= LIMIT, `${total} bytes unzipped`);
    const deps = depsJson(fn.layerZips[fn.layerZips.length - 1]);
    assert.equal(deps.codec, 'zstd');
    assert.ok(deps.files.some(([name]: [string]) => name.endsWith('.py')), 'Python packages travel compressed too');
    assert.match(log, /Compressed with zstd level \d+ \(the fastest to decode that fits/);
    process.stdout.write(`        ${model.length} bytes of model: ${log.match(/Compressed with zstd level \d+/)![0]}, ${total} bytes unzipped in all\n`);
    const { result, stderr } = await runInLambdaLayout(service, { inputs });
    assert.ok(Math.abs(result.output - output) <= 1e-3 * Math.max(1, Math.abs(output)), `${result.output} vs ${output}`);
    assert.match(stderr, /serverless-torch init: unpack \d+\.\d\d s \(\d+\.\d MiB, \d+ files, zstd, threads \d\)/);
  });
});
