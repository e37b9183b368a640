import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { execFileSync } from 'node:child_process';
import { lastJson, makeService, runSls, serviceYaml } from '../support/sls';
import { listTree, totalBytes } from '../../lib/util/file-tree';

const LIMIT = 262_144_000;

function unzippedBytes(zip: string): number {
  return Number(execFileSync('python3', ['-c', 'import sys, zipfile; print(sum(i.file_size for i in zipfile.ZipFile(sys.argv[1]).infolist()))', zip], { encoding: 'utf8' }));
}
import { WheelIndex, prepareFixtureWheels, startWheelIndex } from '../support/wheel-index';

// A handler that reports what it sees: the event, its environment, its context, what its layers
// and its PYTHONPATH give it.
const PROBE_PY = `import os
import sys

import helper
import only_in_first
import shared


def main(event, context, model):
    return {
        "event": event,
        "env": {name: os.environ.get(name) for name in ("FROM_PROVIDER", "FROM_FUNCTION", "BUCKET", "FROM_OPTION", "IS_LOCAL")},
        "context": {"custom": getattr(context, "custom", None), "function_name": context.function_name},
        "layers": [only_in_first.WHO, shared.WHO],
        "helper": helper.VALUE,
        "helper_after_layers": sys.path.index(os.path.dirname(helper.__file__)) > sys.path.index("/opt/python".replace("/opt", os.environ["SERVERLESS_TORCH_OPT_DIR"])),
    }
`;

const FUNCTIONS = `  inspect:
    handler: probe.main
    environment:
      FROM_FUNCTION: function-value
      PYTHONPATH: lib
    layers:
      - { Ref: FirstLambdaLayer }
      - { Ref: SecondLambdaLayer }
      - arn:aws:lambda:us-east-1:123456789012:layer:published-elsewhere:3
layers:
  first:
    path: layers/first
  second:
    path: layers/second`;

describe('invoke local gives the handler what the framework\'s own invoke local gives it (real CLI)', function () {
  let index: WheelIndex;
  let service: string;

  before(async () => {
    const wheels = await prepareFixtureWheels();
    index = await startWheelIndex({ torchWheels: [wheels.torchWheelRetagged], otherWheels: wheels.dependencyWheels });
    service = makeService({
      files: {
        'serverless.yml': serviceYaml({
          torchIndexUrl: index.torchUrl,
          indexUrl: index.simpleUrl,
          provider: '  environment:\n    FROM_PROVIDER: provider-value\n    BUCKET: { Ref: ModelBucket }',
          functions: FUNCTIONS,
        }),
        'probe.py': PROBE_PY,
        'lib/helper.py': 'VALUE = "from PYTHONPATH"\n',
        'layers/first/python/only_in_first.py': 'WHO = "first"\n',
        'layers/first/python/shared.py': 'WHO = "first"\n',
        'layers/second/python/shared.py': 'WHO = "second"\n',
      },
    });
  });
  after(async () => {
    await index?.close();
    if (service) fs.rmSync(service, { recursive: true, force: true });
  });

  it('resolved environment values, -e options, --context fields, {} for no data, PYTHONPATH, and every local layer file by file', async () => {
    const result = await runSls('serverless', ['invoke', 'local', '-f', 'inspect', '-e', 'FROM_OPTION=option-value', '--context', '{"custom": "from --context"}'], service);
    assert.equal(result.code, 0, `${result.stdout}\n${result.stderr}`);
    const answer = lastJson(result.stdout) as any;
    assert.deepEqual(answer.event, {});
    assert.deepEqual(answer.env, {
      FROM_PROVIDER: 'provider-value',
      FROM_FUNCTION: 'function-value',
      BUCKET: 'digits-dev-modelbucket-1a2b3c',
      FROM_OPTION: 'option-value',
      IS_LOCAL: 'true',
    });
    assert.deepEqual(answer.context, { custom: 'from --context', function_name: 'digits-dev-inspect' });
    assert.deepEqual(answer.layers, ['first', 'second'], 'the second layer replaces shared.py and leaves only_in_first.py');
    assert.equal(answer.helper, 'from PYTHONPATH');
    assert.equal(answer.helper_after_layers, true);
    assert.match(result.stdout + result.stderr, /invoke local cannot include arn:aws:lambda:us-east-1:123456789012:layer:published-elsewhere:3/);
  });

  it('counts the local layers against Lambda\'s limit when packaging, and says how much room the ARN has left', async () => {
    // 45 MB the user's own layer brings: more than the room torch's layers leave without it.
    fs.writeFileSync(path.join(service, 'layers', 'first', 'python', 'weights.bin'), Buffer.alloc(45_000_000, 7));
    const result = await runSls('serverless', ['package'], service);
    assert.equal(result.code, 0, `${result.stdout}\n${result.stderr}`);
    assert.match(result.stdout + result.stderr, /cannot measure arn:aws:lambda:us-east-1:123456789012:layer:published-elsewhere:3 \(published elsewhere\): together they must unzip to at most/);
    const state = JSON.parse(fs.readFileSync(path.join(service, '.serverless', 'serverless-state.json'), 'utf8'));
    const ours = [state.service.functions.inspect.package.artifact, ...Object.entries<any>(state.service.layers).filter(([key]) => key.startsWith('torch')).map(([, layer]) => layer.package.artifact)];
    const users = ['first', 'second'].map((name) => totalBytes(listTree(path.join(service, 'layers', name))));
    const total = ours.reduce((sum, artifact) => sum + unzippedBytes(path.resolve(service, artifact)), 0) + users.reduce((sum, bytes) => sum + bytes, 0);
    assert.ok(total <= LIMIT, `function, torch's layers and the user's come to ${total} bytes`);
  });
});
