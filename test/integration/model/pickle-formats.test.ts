import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { resolveConfig } from '../../../lib/config/resolve-config';
import { HostTorch } from '../../../lib/model/host-torch';
import { inspectModel } from '../../../lib/model/inspect';
import { TEST_CACHE } from '../../support/sls';
import { MODELS_PY, runWithTorch, testHostTorch } from '../../support/torch-models';
import { WheelIndex, prepareFixtureWheels, startWheelIndex } from '../../support/wheel-index';

describe('a pickled module is told from a state dict in every format torch.save writes (torch 2.13.0)', function () {
  let index: WheelIndex;
  let host: HostTorch;
  let dir: string;

  before(async () => {
    const wheels = await prepareFixtureWheels();
    index = await startWheelIndex({ torchWheels: [wheels.torchWheel], otherWheels: wheels.dependencyWheels });
    host = await testHostTorch(index);
    dir = fs.mkdtempSync(path.join(TEST_CACHE, 'pickle-formats-'));
    fs.writeFileSync(path.join(dir, 'models.py'), MODELS_PY);
    await runWithTorch(
      host,
      dir,
      `import torch, models
m = models.mlp()
torch.save(m, "module-protocol4.pt", pickle_protocol=4)
torch.save(m, "module-legacy.pt", _use_new_zipfile_serialization=False)
torch.save(m.state_dict(), "state-protocol4.pt", pickle_protocol=4)
torch.save(m.state_dict(), "state-legacy.pt", _use_new_zipfile_serialization=False)
`,
    );
  });
  after(async () => {
    await index?.close();
    fs.rmSync(dir, { recursive: true, force: true });
  });

  const inspect = (file: string) => inspectModel(resolveConfig({ model: file, cacheDir: TEST_CACHE }, dir).model!);

  for (const file of ['module-protocol4.pt', 'module-legacy.pt']) {
    it(`${file} needs the pickle loader, said at package time`, async () => {
      await assert.rejects(inspect(file), { code: 'TORCH_MODEL_NEEDS_PICKLE_LOADER', message: /models\.MLP/ });
    });
  }

  for (const file of ['state-protocol4.pt', 'state-legacy.pt']) {
    it(`${file} loads weights-only`, async () => {
      assert.equal((await inspect(file)).loader, 'weights');
    });
  }
});
