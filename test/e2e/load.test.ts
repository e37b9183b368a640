import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { InvokeOutcome } from '../../lib/local/invoke';
import { invokeExample, layOutPackaged, packagedFunction } from '../support/lambda-layout';
import { WheelIndex, prepareFixtureWheels, startWheelIndex } from '../support/wheel-index';
import { REPO, TEST_CACHE, makeService, runSls, serviceYaml } from '../support/sls';

const EVENT = JSON.parse(fs.readFileSync(path.join(REPO, 'example-service', 'event.json'), 'utf8'));
const EXPECTED = JSON.parse(fs.readFileSync(path.join(REPO, 'example-service', 'model', 'expected.json'), 'utf8'));
const BAD_EVENT = { inputs: [[1, 2]] };
const INVOCATIONS = 1000;
// Resident memory may grow this much from the 10th to the 1,000th invocation: allocator noise,
// not a leak (a leak of one tensor or traceback per call would pass it within a few hundred).
const RSS_MARGIN = 4 * 1024 * 1024;

const mib = (bytes: number) => `${(bytes / 1048576).toFixed(1)} MiB`;

describe('load: 1,000 invocations in one warm process (packaged example, invoke-local runner)', function () {
  let index: WheelIndex;
  let outcomes: InvokeOutcome[];
  let exitCode: number;
  const cleanup: string[] = [];

  before(async () => {
    const wheels = await prepareFixtureWheels();
    index = await startWheelIndex({ torchWheels: [wheels.torchWheelRetagged], otherWheels: wheels.dependencyWheels });
    const service = makeService({ files: { 'serverless.yml': serviceYaml({ torchIndexUrl: index.torchUrl, indexUrl: index.simpleUrl }) } });
    cleanup.push(service);
    const result = await runSls('serverless', ['package'], service);
    assert.equal(result.code, 0, result.stdout + result.stderr);
    const fn = packagedFunction(service, 'predict');
    const root = fs.mkdtempSync(path.join(os.tmpdir(), 'serverless-torch-load-'));
    cleanup.push(root);
    const layout = await layOutPackaged(fn, root, TEST_CACHE);
    // One in ten raises in the user's handler (a ValueError for a row of 2 values instead of 64).
    const events = Array.from({ length: INVOCATIONS }, (_, i) => (i % 10 === 9 ? BAD_EVENT : EVENT));
    const started = Date.now();
    ({ outcomes, exitCode } = await invokeExample(layout, fn.environment, events, { SERVERLESS_TORCH_REPORT_RSS: '1' }));
    process.stdout.write(`        ${INVOCATIONS} invocations in ${((Date.now() - started) / 1000).toFixed(1)} s including the cold start\n`);
  });

  after(async () => {
    await index?.close();
    for (const dir of cleanup) fs.rmSync(dir, { recursive: true, force: true });
  });

  it('answers every event in one process that exits cleanly', () => {
    assert.equal(exitCode, 0);
    assert.equal(outcomes.length, INVOCATIONS);
    assert.equal(outcomes.filter((outcome) => outcome.initError).length, 0);
  });

  it('a handler exception fails only its own invocation: the next one answers exactly as before', () => {
    outcomes.forEach((outcome, i) => {
      if (i % 10 === 9) {
        assert.equal(outcome.error?.errorType, 'ValueError', `invocation ${i + 1}`);
        assert.match(outcome.error!.errorMessage, /inputs\[0\] must be a list of 64 pixel values/);
      } else {
        assert.deepEqual((outcome.result as { predictions: number[] }).predictions, EXPECTED.predictions, `invocation ${i + 1}`);
      }
    });
  });

  it('keeps resident memory flat from the 10th to the 1,000th invocation', () => {
    const rss = outcomes.map((outcome) => outcome.rss!);
    assert.ok(rss.every((value) => Number.isInteger(value) && value > 0), 'every line reports rss');
    const figures = [1, 10, 100, 500, 1000].map((n) => `#${n} ${mib(rss[n - 1])}`).join(', ');
    const growth = rss[INVOCATIONS - 1] - rss[9];
    process.stdout.write(`        RSS: ${figures}; peak ${mib(Math.max(...rss))}; #10 → #1000: ${growth >= 0 ? '+' : ''}${(growth / 1024).toFixed(0)} KiB\n`);
    assert.ok(growth <= RSS_MARGIN, `RSS grew by ${mib(growth)} from the 10th to the 1,000th invocation (${figures})`);
  });
});
