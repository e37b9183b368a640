import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { findInterpreter } from '../../../lib/resolve/interpreter';
import { runProcess } from '../../../lib/util/process';
import { targetPlatform } from '../../../lib/resolve/target';
import { REPO } from '../../support/sls';

// The shim runs inside every Lambda Python runtime the plugin supports; its own unittest suite
// runs here under each interpreter the machine has for those versions (3.14 has none here).
const RUNTIMES = ['python3.9', 'python3.10', 'python3.11', 'python3.12', 'python3.13'];

describe('the Python shim, unpacker and local runner (python/tests)', () => {
  for (const runtime of RUNTIMES) {
    it(`pass their unittest suite on ${runtime}`, async () => {
      const interpreter = await findInterpreter(targetPlatform(runtime, 'x86_64'), runProcess);
      const result = spawnSync(interpreter.path, ['-m', 'unittest', 'discover', '-s', 'python/tests', '-t', 'python'], {
        cwd: REPO,
        encoding: 'utf8',
        env: { PATH: process.env.PATH, HOME: process.env.HOME, LANG: 'C.UTF-8' },
      });
      assert.equal(result.status, 0, `${result.stdout}\n${result.stderr}`);
      assert.match(result.stderr, /Ran [1-9]\d* tests/);
      assert.match(result.stderr, /\nOK/);
    });
  }

});
