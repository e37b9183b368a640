import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import * as path from 'node:path';
import { findInterpreter } from '../../../lib/resolve/interpreter';
import { targetPlatform } from '../../../lib/resolve/target';
import { runProcess } from '../../../lib/util/process';
import { boto3Site } from '../../support/boto3';
import { s3ServerCommand } from '../../support/s3-server';
import { REPO } from '../../support/sls';

// python3.9 runs fetch.py's own tests (test_fetch.py, with the rest of python/tests) but not
// these: the wheel store's boto3 (1.43) needs Python >= 3.10, as current boto3 does.
const RUNTIMES = ['python3.10', 'python3.11', 'python3.12', 'python3.13'];

describe('fetch.py against s3rver with the real botocore (python/tests/s3_fetch.py)', () => {
  let boto3: string;
  before(async () => {
    boto3 = await boto3Site();
  });

  for (const runtime of RUNTIMES) {
    it(`downloads, verifies, reuses and reports each failure on ${runtime}`, async () => {
      const interpreter = await findInterpreter(targetPlatform(runtime, 'x86_64'), runProcess);
      const result = spawnSync(interpreter.path, ['-m', 'unittest', '-v', 'tests.s3_fetch'], {
        cwd: path.join(REPO, 'python'),
        encoding: 'utf8',
        // What a function has: no AWS configuration of this machine, nothing but the harness.
        env: {
          PATH: process.env.PATH,
          HOME: process.env.HOME,
          LANG: 'C.UTF-8',
          SERVERLESS_TORCH_TEST_S3_SERVER: JSON.stringify(s3ServerCommand()),
          SERVERLESS_TORCH_TEST_BOTO3: boto3,
        },
        timeout: 300_000,
      });
      assert.equal(result.status, 0, `${result.stdout}\n${result.stderr}`);
      assert.match(result.stderr, /Ran [1-9]\d* tests/);
      assert.match(result.stderr, /\nOK\n/);
      assert.doesNotMatch(result.stderr, /skipped/);
    });
  }
});
