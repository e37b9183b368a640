import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { buildStaged } from '../../../lib/pipeline/staging';

describe('buildStaged', () => {
  let dir: string;
  beforeEach(() => (dir = fs.mkdtempSync(path.join(os.tmpdir(), 'staging-'))));
  afterEach(() => fs.rmSync(dir, { recursive: true, force: true }));

  it('moves files and directories into place over what an earlier run left (deploy function keeps .serverless/)', async () => {
    fs.mkdirSync(path.join(dir, 'models', 'old'), { recursive: true });
    fs.writeFileSync(path.join(dir, 'models', 'old', 'model.pt'), 'old');
    fs.writeFileSync(path.join(dir, 'svc.zip'), 'old');
    const output = await buildStaged(dir, async (staging) => {
      fs.mkdirSync(path.join(staging, 'models', 'new'), { recursive: true });
      fs.writeFileSync(path.join(staging, 'models', 'new', 'model.pt'), 'new');
      fs.writeFileSync(path.join(staging, 'svc.zip'), 'new');
      return { functions: [{ artifact: path.join(staging, 'svc.zip') } as any], layers: [] };
    });
    assert.equal(output.functions[0].artifact, path.join(dir, 'svc.zip'));
    assert.equal(fs.readFileSync(path.join(dir, 'svc.zip'), 'utf8'), 'new');
    assert.deepEqual(fs.readdirSync(path.join(dir, 'models')), ['new']);
    assert.deepEqual(fs.readdirSync(dir).sort(), ['models', 'svc.zip'], 'no staging directory left');
  });

  it('leaves what was there untouched when the build fails', async () => {
    fs.writeFileSync(path.join(dir, 'svc.zip'), 'old');
    await assert.rejects(
      buildStaged(dir, async (staging) => {
        fs.mkdirSync(staging, { recursive: true });
        fs.writeFileSync(path.join(staging, 'svc.zip'), 'half');
        throw new Error('pip failed');
      }),
      /pip failed/,
    );
    assert.deepEqual(fs.readdirSync(dir), ['svc.zip']);
    assert.equal(fs.readFileSync(path.join(dir, 'svc.zip'), 'utf8'), 'old');
  });
});
