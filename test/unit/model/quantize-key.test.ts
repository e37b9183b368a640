import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { serviceSourcesDigest } from '../../../lib/model/quantize';

describe('the quantized model cache key', () => {
  let service: string;
  beforeEach(() => {
    service = fs.mkdtempSync(path.join(os.tmpdir(), 'quantize-key-'));
    fs.writeFileSync(path.join(service, 'net.py'), 'from layers import Block\n\ndef build():\n    return Block()\n');
    fs.mkdirSync(path.join(service, 'models'));
    fs.writeFileSync(path.join(service, 'models', 'layers.py'), 'WIDTH = 64\n');
    fs.writeFileSync(path.join(service, 'layers.py'), 'import torch\nclass Block(torch.nn.Linear):\n    pass\n');
  });
  afterEach(() => fs.rmSync(service, { recursive: true, force: true }));

  it('changes when a module the factory imports changes, not only the factory\'s own file', async () => {
    const before = await serviceSourcesDigest(service);
    fs.writeFileSync(path.join(service, 'layers.py'), 'import torch\nclass Block(torch.nn.Conv1d):\n    pass\n');
    assert.notEqual(await serviceSourcesDigest(service), before);
  });

  it('covers packages in subdirectories and ignores caches and dependencies', async () => {
    const before = await serviceSourcesDigest(service);
    fs.writeFileSync(path.join(service, 'models', 'layers.py'), 'WIDTH = 128\n');
    const changed = await serviceSourcesDigest(service);
    assert.notEqual(changed, before);
    fs.mkdirSync(path.join(service, 'node_modules', 'x'), { recursive: true });
    fs.writeFileSync(path.join(service, 'node_modules', 'x', 'a.py'), '');
    fs.mkdirSync(path.join(service, '__pycache__'));
    fs.writeFileSync(path.join(service, '__pycache__', 'b.py'), '');
    fs.writeFileSync(path.join(service, 'README.md'), 'not code');
    assert.equal(await serviceSourcesDigest(service), changed);
  });
});
