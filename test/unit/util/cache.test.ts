import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { commitEntry, openCache } from '../../../lib/util/cache';

describe('cache', () => {
  let root: string;
  beforeEach(() => (root = fs.mkdtempSync(path.join(os.tmpdir(), 'torch-cache-'))));
  afterEach(() => fs.rmSync(root, { recursive: true, force: true }));

  it('removes the work directories of killed runs on this machine and keeps the others', () => {
    const host = createHash('sha256').update(os.hostname()).digest('hex').slice(0, 6);
    const exited = spawnSync(process.execPath, ['-e', '']).pid!;
    const work = (name: string) => {
      fs.mkdirSync(path.join(root, 'tmp', name, 'entry'), { recursive: true });
      return name;
    };
    const killed = work(`tree-0123456789abcdef-${host}-${exited}-0a1b2c3d`);
    const running = work(`tree-0123456789abcdef-${host}-${process.pid}-0a1b2c3d`);
    const otherMachine = work(`tree-0123456789abcdef-${host === 'ffffff' ? 'eeeeee' : 'ffffff'}-${exited}-0a1b2c3d`);
    const cache = openCache(root);
    const left = fs.readdirSync(path.join(root, 'tmp'));
    assert.ok(!left.includes(killed), 'the killed run\'s work directory is still there');
    assert.ok(left.includes(running) && left.includes(otherMachine));
    assert.match(path.basename(cache.workDir('layers-x')), new RegExp(`^layers-x-${host}-${process.pid}-[0-9a-f]{8}$`));
  });

  it('an entry appears whole, and a second commit of the same entry keeps the first', () => {
    const cache = openCache(root);
    const first = cache.workDir('a');
    fs.writeFileSync(path.join(first, 'record.json'), '"first"');
    const second = cache.workDir('a');
    fs.writeFileSync(path.join(second, 'record.json'), '"second"');
    commitEntry(first, cache.entry('trees', 'k'));
    commitEntry(second, cache.entry('trees', 'k'));
    assert.equal(fs.readFileSync(path.join(cache.entry('trees', 'k'), 'record.json'), 'utf8'), '"first"');
    assert.ok(!fs.existsSync(second));
  });
});
