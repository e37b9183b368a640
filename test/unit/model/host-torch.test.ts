import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { resolveConfig } from '../../../lib/config/resolve-config';
import { ensureHostTorch } from '../../../lib/model/host-torch';
import { openCache } from '../../../lib/util/cache';
import { RunResult, Runner } from '../../../lib/util/process';
import { silentReporter } from '../../../lib/util/reporter';

describe('host torch for quantizing', () => {
  let dir: string;
  beforeEach(() => {
    dir = fs.mkdtempSync(path.join(os.tmpdir(), 'host-torch-'));
    fs.writeFileSync(path.join(dir, 'model.pt'), 'x');
  });
  afterEach(() => fs.rmSync(dir, { recursive: true, force: true }));

  /** An interpreter without torch whose pip download fails the way pip does when the index does not answer. */
  function unreachableIndex(download: RunResult): Runner {
    return async (_command, args) => {
      if (args[0] === '-I') return { code: 0, stdout: '3.11 linux x86_64 -\n', stderr: '' };
      if (args[2] === '--version' || args[2] === 'config') return { code: 0, stdout: '', stderr: '' };
      if (args[2] === 'download') return download;
      throw new Error(`unexpected ${args.join(' ')}`);
    };
  }

  const ensure = (runner: Runner) => {
    const config = resolveConfig({ model: 'model.pt', cacheDir: path.join(dir, 'cache'), torchIndexUrl: 'http://127.0.0.1:9/whl/cpu' }, dir);
    return ensureHostTorch({ config, torchVersion: '2.13.0', cache: openCache(config.cacheDir), runner, reporter: silentReporter });
  };

  it('an index that does not answer is TORCH_INDEX_UNREACHABLE, though pip says the reason on stdout and "no matching distribution" on stderr', async () => {
    const runner = unreachableIndex({
      code: 1,
      stdout:
        'Looking in indexes: http://127.0.0.1:9/whl/cpu\n' +
        "Could not fetch URL http://127.0.0.1:9/whl/cpu/torch/: connection error: HTTPConnectionPool(host='127.0.0.1', port=9): Max retries exceeded with url: /whl/cpu/torch/ " +
        "(Caused by NewConnectionError('<pip._vendor.urllib3.connection.HTTPConnection object at 0x7f>: Failed to establish a new connection: [Errno 111] Connection refused')) - skipping\n",
      stderr: 'ERROR: Could not find a version that satisfies the requirement torch==2.13.0 (from versions: none)\nERROR: No matching distribution found for torch==2.13.0\n',
    });
    await assert.rejects(ensure(runner), { code: 'TORCH_INDEX_UNREACHABLE', message: /\[Errno 111\] Connection refused/ });
  });

  it('an index that answers without the version is TORCH_NO_HOST_WHEEL', async () => {
    const runner = unreachableIndex({ code: 1, stdout: 'Looking in indexes: http://127.0.0.1:9/whl/cpu\n', stderr: 'ERROR: No matching distribution found for torch==2.13.0\n' });
    await assert.rejects(ensure(runner), { code: 'TORCH_NO_HOST_WHEEL' });
  });
});
