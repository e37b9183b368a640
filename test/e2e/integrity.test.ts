import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { invokeExample, layOutPackaged, packagedFunction } from '../support/lambda-layout';
import { FixtureWheels, WheelIndex, prepareFixtureWheels, startWheelIndex } from '../support/wheel-index';
import { REPO, SlsResult, TEST_CACHE, makeService, runSls, serviceYaml } from '../support/sls';

const EVENT = JSON.parse(fs.readFileSync(path.join(REPO, 'example-service', 'event.json'), 'utf8'));

function sha256(file: string): string {
  return createHash('sha256').update(fs.readFileSync(file)).digest('hex');
}

function codesIn(result: SlsResult): string[] {
  return [...`${result.stdout}\n${result.stderr}`.matchAll(/\[(TORCH_[A-Z_]+)\]/g)].map((match) => match[1]);
}

function report(result: SlsResult): void {
  const output = `${result.stdout}\n${result.stderr}`;
  process.stdout.write(`        ${output.slice(output.indexOf('[TORCH_')).split('\n')[0]}\n`);
}

/** requirements.txt with an == pin and a sha256 for torch and every dependency, as `pip-compile --generate-hashes` writes it. */
function pinnedRequirements(wheels: FixtureWheels, wrong: { project?: string } = {}): string {
  const lines = [wheels.torchWheelRetagged, ...wheels.dependencyWheels].map((wheel) => {
    const [project, version] = path.basename(wheel).split('-');
    const digest = project === wrong.project ? createHash('sha256').update('not the wheel').digest('hex') : sha256(wheel);
    return `${project}==${version.replace(/\+.*$/, '')} \\\n    --hash=sha256:${digest}`;
  });
  return `# generated with hashes\n${lines.join('\n')}\n`;
}

describe('integrity: --hash pins and the model digest (real CLI)', function () {
  let wheels: FixtureWheels;
  let index: WheelIndex;
  const cleanup: string[] = [];

  before(async () => {
    wheels = await prepareFixtureWheels();
    index = await startWheelIndex({ torchWheels: [wheels.torchWheelRetagged], otherWheels: wheels.dependencyWheels });
  });

  after(async () => {
    await index?.close();
    for (const dir of cleanup) fs.rmSync(dir, { recursive: true, force: true });
  });

  function service(files: Record<string, string>, extraCustom?: string): { dir: string; cacheDir: string } {
    // Each its own cache: a tree built for the right pins must not answer for the wrong ones.
    const cacheDir = fs.mkdtempSync(path.join(os.tmpdir(), 'serverless-torch-integrity-cache-'));
    const yaml = serviceYaml({ torchIndexUrl: index.torchUrl, indexUrl: index.simpleUrl, extraCustom }).replace(`cacheDir: ${TEST_CACHE}`, `cacheDir: ${cacheDir}`);
    const dir = makeService({ files: { 'serverless.yml': yaml, ...files } });
    cleanup.push(dir, cacheDir);
    return { dir, cacheDir };
  }

  it('a wrong --hash pin on a dependency fails with TORCH_WHEEL_HASH_MISMATCH', async () => {
    const { dir } = service({ 'requirements.txt': pinnedRequirements(wheels, { project: 'sympy' }) });
    const result = await runSls('serverless', ['package'], dir);
    assert.notEqual(result.code, 0);
    assert.deepEqual(codesIn(result), ['TORCH_WHEEL_HASH_MISMATCH'], result.stdout + result.stderr);
    report(result);
    const sympy = wheels.dependencyWheels.find((wheel) => path.basename(wheel).startsWith('sympy-'))!;
    assert.match(
      result.stdout + result.stderr,
      new RegExp(`pip refused sympy-1\\.14\\.0-py3-none-any\\.whl from \\S+ \\(asked to install the requirements\\): expected sha256 [0-9a-f]{64}, got ${sha256(sympy)}\\.`),
    );
  });

  it('a wrong --hash pin on torch fails with TORCH_WHEEL_HASH_MISMATCH before anything is installed', async () => {
    const { dir } = service({ 'requirements.txt': pinnedRequirements(wheels, { project: 'torch' }) });
    const result = await runSls('serverless', ['package'], dir);
    assert.notEqual(result.code, 0);
    assert.deepEqual(codesIn(result), ['TORCH_WHEEL_HASH_MISMATCH'], result.stdout + result.stderr);
    report(result);
    assert.match(
      result.stdout + result.stderr,
      new RegExp(`torch-2\\.13\\.0\\+cpu-cp311-cp311-manylinux_2_17_x86_64\\.manylinux2014_x86_64\\.whl from \\S+ has sha256 ${sha256(wheels.torchWheelRetagged)}, but requirements\\.txt pins torch to sha256 [0-9a-f]{64}\\.`),
    );
  });

  let packaged: { dir: string; cacheDir: string };

  it('right --hash pins on every line package, and the function answers', async () => {
    packaged = service({ 'requirements.txt': pinnedRequirements(wheels) });
    const result = await runSls('serverless', ['package'], packaged.dir);
    assert.equal(result.code, 0, result.stdout + result.stderr);
    const fn = packagedFunction(packaged.dir, 'predict');
    const root = fs.mkdtempSync(path.join(os.tmpdir(), 'serverless-torch-layout-'));
    cleanup.push(root);
    const layout = await layOutPackaged(fn, root, packaged.cacheDir);
    const { outcomes } = await invokeExample(layout, fn.environment, [EVENT]);
    assert.equal((outcomes[0].result as { predictions: number[] }).predictions.length, EVENT.inputs.length);
  });

  it('a model changed inside the packaged function zip makes the shim refuse to load it', async () => {
    assert.ok(packaged, 'needs the package of the previous test');
    const fn = packagedFunction(packaged.dir, 'predict');
    const tampered = path.join(path.dirname(fn.functionZip), 'tampered.zip');
    // One byte of the weights flipped, the zip rewritten around it: what a poisoned upload looks like.
    execFileSync('python3', [
      '-c',
      `import sys, zipfile
src, dst = zipfile.ZipFile(sys.argv[1]), zipfile.ZipFile(sys.argv[2], "w", zipfile.ZIP_DEFLATED)
for info in src.infolist():
    data = src.read(info)
    if info.filename == "model/model.pt":
        data = bytearray(data); data[len(data) // 2] ^= 0x01; data = bytes(data)
    dst.writestr(info, data)
dst.close()`,
      fn.functionZip,
      tampered,
    ]);
    const root = fs.mkdtempSync(path.join(os.tmpdir(), 'serverless-torch-layout-'));
    cleanup.push(root);
    const layout = await layOutPackaged(fn, root, packaged.cacheDir, tampered);
    const { outcomes, exitCode } = await invokeExample(layout, fn.environment, [EVENT]);
    assert.equal(exitCode, 1);
    assert.equal(outcomes.length, 1);
    const initError = outcomes[0].initError!;
    assert.equal(initError.errorType, 'InitError');
    assert.match(initError.errorMessage, /model file \S+model\/model\.pt changed since packaging: expected sha256 [0-9a-f]{64}, got [0-9a-f]{64}; package the function again/);
  });
});
